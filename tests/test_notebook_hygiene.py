"""Every notebook follows CONTRIBUTING.md: clean stored outputs, its own Colab badge, the anatomy, listed in README."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from mmkd_utils.notebooks import colab_url

from conftest import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]
SECTIONS = ["What you will learn", "Prerequisites", "Runtime", "Summary", "Exercises", "Further reading"]
# An absolute path such as /home/me/mmkd/data (not a URL, not a relative a/b/c).
ABSOLUTE_PATH = re.compile(r"(?<![:/\w.])/(?:[A-Za-z_][\w.-]*/){2,}")


def read(path: Path):
    return nbformat.read(path, as_version=4)


def rel(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def markdown(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def output_texts(output) -> list[str]:
    if output.output_type == "stream":
        return [output.text]
    if output.output_type == "error":
        return [*output.traceback, output.evalue]
    return [v for k, v in output.get("data", {}).items() if k.startswith("text/") and isinstance(v, str)]


def readme() -> str:
    path = REPO_ROOT / "README.md"
    assert path.exists(), "README.md is missing: it must list every notebook and give `make lab` / `make test`"
    return path.read_text(encoding="utf8")


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_valid_nbformat(path):
    nbformat.validate(read(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_file_name_is_numbered_snake_case(path):
    assert re.fullmatch(r"\d\d_[a-z0-9]+(_[a-z0-9]+)*\.ipynb", path.name), \
        f"{path.name}: name notebooks NN_snake_case.ipynb (e.g. 03_soft_targets.ipynb)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_outputs_hold_no_errors(path):
    for i, cell in enumerate(read(path).cells):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{rel(path)} cell {i}: stored error {out.get('ename')}"
            if out.output_type == "stream":
                assert "Traceback (most recent call last)" not in out.text, f"{rel(path)} cell {i}: a traceback"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_outputs_show_no_absolute_paths(path):
    for i, cell in enumerate(read(path).cells):
        for out in cell.get("outputs", []):
            for text in output_texts(out):
                match = ABSOLUTE_PATH.search(text)
                assert not match, f"{rel(path)} cell {i}: output shows the absolute path {match.group(0)!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_widget_state(path):
    nb = read(path)
    assert "widgets" not in nb.metadata, f"{rel(path)}: widget state in metadata (run `make notebooks`)"
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {}), f"{rel(path)} cell {i}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_colab_badge_points_at_its_own_path(path):
    cells = markdown(read(path))
    assert cells, f"{rel(path)} has no markdown cell"
    links = re.findall(r"\((https://colab\.research\.google\.com/(?!assets/)[^)\s]+)\)", cells[0])  # not the badge image
    assert links == [colab_url(rel(path))], \
        f"{rel(path)}: the first markdown cell's Colab badge must be mmkd_utils.notebooks.colab_badge({rel(path)!r})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_title_and_sections(path):
    cells = markdown(read(path))
    number = path.name[:2]
    assert re.match(rf"# {number} · \S", cells[0]), f"{rel(path)}: the first cell starts with '# {number} · Title'"
    text = "\n".join(cells)
    for section in SECTIONS:
        assert re.search(rf"^(#+ *|\*\*){section}", text, re.M), f"{rel(path)}: no '{section}' section"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_setup_cell_and_no_sys_path(path):
    sources = code(read(path))
    assert sources and "mmkd_utils.setup(" in sources[0], f"{rel(path)}: the first code cell is the setup cell"
    for source in sources:
        assert not re.search(r"\bsys\.path\b", source), f"{rel(path)}: sys.path manipulation (install the package)"


def readme_notebook_links() -> set[str]:
    """The notebooks README.md links to (relative links such as `[00 · Setup](notebooks/00_….ipynb)`)."""
    return set(re.findall(r"\]\((?:\./)?(notebooks/[^)\s#]+\.ipynb)(?:#[^)\s]*)?\)", readme()))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_listed_in_readme(path):
    assert rel(path) in readme_notebook_links(), f"README.md's notebook list does not link {rel(path)}"


def test_readme_links_only_existing_notebooks():
    missing = sorted(p for p in readme_notebook_links() if not (REPO_ROOT / p).exists())
    assert not missing, f"README.md links notebooks that do not exist: {missing}"


def test_ci_and_readme_use_the_make_commands():
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf8")
    assert re.search(r"^\s*make check\s*$", ci, re.M), ".ci/run must run `make check` (the README's test command)"
    two_commands = re.search(r"```bash\n(.*?)```", readme(), flags=re.S).group(1)
    for command in ("make lab", "make check"):
        assert re.search(rf"^{command}\s", two_commands, re.M), f"README.md's two commands do not give `{command}`"
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf8")
    assert re.search(r"^check: test test-browser test-oldest$", makefile, re.M), "make check must run every test target"


def test_every_badge_and_setup_cell_address_the_one_repository():
    from mmkd_utils.notebooks import REPO_SLUG, repo_addresses

    for path in [REPO_ROOT / "README.md", *NOTEBOOKS]:
        found = repo_addresses(path.read_text(encoding="utf8"))
        assert found <= {REPO_SLUG}, f"{rel(path)} addresses {found - {REPO_SLUG}}, not REPO_SLUG {REPO_SLUG!r}"
    setup_cells = {code(read(p))[0] for p in NOTEBOOKS}
    assert len(setup_cells) == 1 and f"github.com/{REPO_SLUG} " in setup_cells.pop()


def test_one_command_points_the_course_at_a_fork(tmp_path):
    """`python -m mmkd_utils.notebooks --repo OWNER/NAME` calls retarget; here on a copy of the course."""
    import shutil

    from mmkd_utils.notebooks import repo_addresses, retarget

    for part in ("README.md", "notebooks", "mmkd_utils/notebooks.py"):
        source, target = REPO_ROOT / part, tmp_path / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    changed = retarget("my-uni/kd-course", root=tmp_path)
    assert {p.name for p in changed} == {"README.md", "notebooks.py", *(p.name for p in NOTEBOOKS)}
    for path in [tmp_path / "README.md", *sorted((tmp_path / "notebooks").glob("*.ipynb"))]:
        assert repo_addresses(path.read_text(encoding="utf8")) == {"my-uni/kd-course"}, path.name
    assert 'REPO_SLUG = "my-uni/kd-course"' in (tmp_path / "mmkd_utils/notebooks.py").read_text()
    with pytest.raises(ValueError, match="owner/name"):
        retarget("not a slug", root=tmp_path)
