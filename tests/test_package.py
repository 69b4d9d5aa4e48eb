"""The package's shape: no import cycle, no oversized module, notebooks import from each block's home."""
import ast
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mmkd_utils"
MAX_LINES = 390  # "about 350": data.py and losses.py sit just above it


def imports_of(path: Path) -> set[str]:
    """Every mmkd_utils module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmkd_utils."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mmkd_utils.")}
    return {m.split(".")[0] for m in found} - {path.stem}


def test_no_import_cycle():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    for module in graph:
        seen, stack = set(), [(module, [module])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                assert nxt != module, "import cycle: " + " → ".join(path + [nxt])
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))


def test_no_module_is_oversized():
    sizes = {p.name: len(p.read_text(encoding="utf8").splitlines()) for p in PACKAGE.glob("*.py")}
    assert not {n: s for n, s in sizes.items() if s > MAX_LINES}


def test_notebooks_import_building_blocks_from_their_home():
    """The experiment orchestrator is for whole runs: a notebook takes its building blocks (prepare_data,
    build_teacher, labelled_only, ...) from the module that defines them."""
    blocks = {"prepare_data", "build_teacher", "build_student", "train_teacher", "labelled_only", "corrupt_labels",
              "cache_teacher_outputs", "summary_table", "markdown_table"}
    for notebook in sorted((PACKAGE.parent / "notebooks").glob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text(encoding="utf8"))["cells"]
                         if c["cell_type"] == "code")
        for block in blocks:
            assert f"experiment.{block}" not in code, f"{notebook.name} takes {block} from mmkd_utils.experiment"
