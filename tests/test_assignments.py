"""The instructor's edition: every exercise has a worked solution in nbgrader's markup, and nbgrader's own
tooling turns the solution notebooks (which nbval runs) into valid student versions without the solutions."""
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
NBGRADER = Path(sys.executable).with_name("nbgrader")


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def exercise_count(nb) -> int:
    """Numbered items (``1. ``) in the notebook's Exercises section, before its solutions and Further reading."""
    count, inside = 0, False
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.search(r"^## Exercises", cell.source, re.M):
            inside = True
        elif cell.cell_type == "markdown" and re.search(r"^## Further reading", cell.source, re.M):
            inside = False
        if inside and cell.cell_type == "markdown" and not nbgrader_meta(cell).get("solution"):
            count += len(re.findall(r"^\d+\. ", cell.source, re.M))
    return count


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_exercise_has_a_worked_solution_and_one_is_checked(path):
    nb = nbformat.read(path, as_version=4)
    n = exercise_count(nb)
    assert n >= 3, f"{path.name}: {n} numbered exercises; the course asks for at least three"
    ids = [nbgrader_meta(c).get("grade_id", "") for c in nb.cells if nbgrader_meta(c).get("solution")]
    for k in range(1, n + 1):
        assert any(i.startswith(f"ex{k}-") for i in ids), f"{path.name}: exercise {k} has no solution cell (grade_id ex{k}-…)"
    for cell in nb.cells:
        if nbgrader_meta(cell).get("solution") and cell.cell_type == "code":
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, cell.source[:200]
    checks = [c for c in nb.cells if nbgrader_meta(c).get("grade") and c.cell_type == "code"]
    assert any("assert" in c.source or "check" in c.source for c in checks), f"{path.name}: no exercise is checked"
    grade_ids = [nbgrader_meta(c)["grade_id"] for c in nb.cells if nbgrader_meta(c)]
    assert len(grade_ids) == len(set(grade_ids)), f"{path.name}: grade ids repeat"


@pytest.fixture(scope="module")
def student_versions(tmp_path_factory) -> Path:
    """nbgrader generate_assignment over every notebook, as `make assignments` runs it."""
    root = tmp_path_factory.mktemp("nbgrader")
    source = root / "source" / "course"
    source.mkdir(parents=True)
    for path in NOTEBOOKS:
        (source / path.name).write_bytes(path.read_bytes())
    proc = subprocess.run([str(NBGRADER), "generate_assignment", "course", f"--CourseDirectory.root={root}", "--force",
                           "--no-db"], capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "release" / "course"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_student_version_is_valid_keeps_the_lesson_and_drops_the_solutions(path, student_versions):
    solution, student = nbformat.read(path, as_version=4), nbformat.read(student_versions / path.name, as_version=4)
    nbformat.validate(student)
    assert [c.source for c in student.cells if "BEGIN SOLUTION" in c.source] == []
    first = next(i for i, c in enumerate(solution.cells) if nbgrader_meta(c).get("solution"))
    # Up to the first exercise the student runs exactly the cells nbval ran in the solution version.
    assert [c.source for c in student.cells[:first]] == [c.source for c in solution.cells[:first]]
    for mine, theirs in zip(solution.cells, student.cells):
        if nbgrader_meta(mine).get("solution") and mine.cell_type == "code":
            assert "NotImplementedError" in theirs.source and mine.source != theirs.source
        if nbgrader_meta(mine).get("grade") and not nbgrader_meta(mine).get("solution"):
            assert theirs.source == mine.source  # the checks stay, locked
