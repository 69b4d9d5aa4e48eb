"""mmkd_utils.notebooks: `clean` stores the kernel metadata JupyterLab writes on save, and `--clean-only`
applies it to stored notebooks without executing them."""
from __future__ import annotations

import shutil

import nbformat
import pytest

from mmkd_utils.notebooks import clean, main

from conftest import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def jupyterlab_metadata() -> dict:
    """What JupyterLab writes on save with the venv's kernel: ipykernel's kernelspec and its language_info."""
    from ipykernel.ipkernel import IPythonKernel
    from ipykernel.kernelspec import KERNEL_NAME, get_kernel_dict

    spec = get_kernel_dict()
    return {"kernelspec": {"display_name": spec["display_name"], "language": spec["language"], "name": KERNEL_NAME},
            "language_info": IPythonKernel.language_info}


def old_style_notebook():
    """A notebook as the previous `clean` stored it, with the volatile metadata that `clean` removes."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", metadata={"ExecuteTime": {"end_time": "x"}})])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_clean_stores_what_jupyterlab_writes():
    nb = old_style_notebook()
    clean(nb)
    assert {k: nb.metadata[k] for k in ("kernelspec", "language_info")} == jupyterlab_metadata()
    assert nb.metadata["kernelspec"]["name"] == "python3", "Colab runs a kernel named python3"
    assert "widgets" not in nb.metadata and "ExecuteTime" not in nb.cells[0].metadata


def test_clean_only_cleans_without_executing_and_is_idempotent(tmp_path, capsys):
    path = tmp_path / "00_example.ipynb"
    nbformat.write(old_style_notebook(), path)
    main(["--clean-only", str(path)])
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"] == jupyterlab_metadata()["kernelspec"]
    assert nb.cells[0].outputs == [] and nb.cells[0].execution_count is None, "--clean-only must not execute"
    text = path.read_text(encoding="utf8")
    main(["--clean-only", str(path)])
    assert path.read_text(encoding="utf8") == text
    assert capsys.readouterr().out.splitlines() == [f"{path}: cleaned", f"{path}: already clean"]


def test_clean_only_changes_nothing_but_the_metadata(tmp_path):
    source = REPO_ROOT / "notebooks" / "02_losses.ipynb"
    path = tmp_path / source.name
    shutil.copy(source, path)
    main(["--clean-only", str(path)])
    before, after = nbformat.read(source, as_version=4), nbformat.read(path, as_version=4)
    assert after.cells == before.cells and (after.nbformat, after.nbformat_minor) == (before.nbformat, before.nbformat_minor)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_stored_kernel_metadata_is_what_jupyterlab_writes(path):
    """Else opening the notebook in JupyterLab marks it modified. language_info.version is the Python's own
    version, so only its presence is checked here (`make test-browser` checks the whole file on this machine)."""
    metadata = nbformat.read(path, as_version=4).metadata
    expected = jupyterlab_metadata()
    found_info = {k: v for k, v in metadata.get("language_info", {}).items() if k != "version"}
    assert metadata.get("kernelspec") == expected["kernelspec"] and "version" in metadata.get("language_info", {}) \
        and found_info == {k: v for k, v in expected["language_info"].items() if k != "version"}, \
        f"notebooks/{path.name}: stale kernel metadata: run `python -m mmkd_utils.notebooks --clean-only notebooks/{path.name}`"


@pytest.mark.parametrize("argv", [["--clean-only"], ["--clean-only", "--repo", "a/b"]])
def test_clean_only_usage(argv):
    with pytest.raises(SystemExit, match="usage"):
        main(argv)
