"""Course notebooks: execute them in place and strip volatile metadata (``make notebooks``; ``--clean-only``
cleans without executing), and point every Colab badge and setup cell at a fork
(``python -m mmkd_utils.notebooks --repo OWNER/NAME``).

Stored notebooks are what the code produces now: this is the one command that re-runs and cleans
them. Widget state and execution timings are removed and the kernel metadata is stored as JupyterLab
writes it, so that opening a notebook does not mark it modified; progress bars are off while executing
(``TQDM_DISABLE=1``), so stored outputs are small and stable. The repository's address lives in one
place, ``REPO_SLUG`` below; ``retarget`` rewrites it there and wherever it is written out (badges,
setup cells, the README), and a test checks that they all agree.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

REPO_SLUG = "mmkd-course/mmkd"  # GitHub owner/name; Colab badges and the Colab setup cell use it
BRANCH = "main"


def colab_url(notebook_path: str) -> str:
    """The Colab URL of a notebook, from its path in the repository (e.g. ``notebooks/00_setup_and_tour.ipynb``)."""
    return f"https://colab.research.google.com/github/{REPO_SLUG}/blob/{BRANCH}/{notebook_path}"


def colab_badge(notebook_path: str) -> str:
    """Markdown for an "Open in Colab" badge pointing at ``notebook_path``."""
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook_path)})")


# The kernel metadata JupyterLab writes when it opens a notebook with the venv's kernel: the "python3"
# kernelspec as ipykernel installs it (Colab runs a kernel of that name too; the "mmkd" kernel that
# `make setup` registers is the same Python under another name) and the language_info that ipykernel
# reports. Stored exactly so, opening and saving a notebook changes nothing (`make test-browser` checks);
# only a Python of another version rewrites one line, language_info.version.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def language_info() -> dict:
    """The language_info that ipykernel reports for this Python (what JupyterLab stores on save)."""
    return {"codemirror_mode": {"name": "ipython", "version": sys.version_info[0]}, "file_extension": ".py",
            "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
            "pygments_lexer": f"ipython{sys.version_info[0]}", "version": sys.version.split()[0]}


def clean(nb) -> None:
    """Strip widget state and execution timings and store the kernel metadata JupyterLab writes, in place."""
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = language_info()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        for out in cell.get("outputs", []):
            out.get("metadata", {}).pop("execution", None)
            data = out.get("data", {})
            data.pop("application/vnd.jupyter.widget-view+json", None)


def execute(path: str | Path, timeout: int = 600) -> float:
    """Run a notebook top to bottom in its folder, clean it and save it; returns seconds taken."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"  # datasets' map/filter bars ignore TQDM_DISABLE
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    clean(nb)
    nbformat.write(nb, path)
    return seconds


def clean_file(path: str | Path) -> bool:
    """Apply ``clean`` to a stored notebook without executing it; returns whether the file changed."""
    import nbformat

    path = Path(path)
    before = path.read_text(encoding="utf8")
    nb = nbformat.reads(before, as_version=4)
    clean(nb)
    after = nbformat.writes(nb)
    after += "" if after.endswith("\n") else "\n"  # as nbformat.write ends a file
    if after != before:
        path.write_text(after, encoding="utf8")
    return after != before


def repo_addresses(text: str) -> set[str]:
    """Every GitHub owner/name that ``text`` addresses in a Colab link or a GitHub URL."""
    return set(re.findall(r"(?:colab\.research\.google\.com/github|github\.com)/([\w.-]+/[\w.-]+?)(?:/|\.git\b|\s|\))", text))


def retarget(slug: str, root: str | Path | None = None) -> list[Path]:
    """Point every badge, setup cell and README link at the GitHub repository ``slug`` ("owner/name"), from
    ``REPO_SLUG`` (this module's constant is rewritten too). Returns the files changed."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", slug):
        raise ValueError(f"--repo must be a GitHub owner/name such as my-university/mmkd, got {slug!r}")
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    files = [root / "README.md", *sorted((root / "notebooks").glob("*.ipynb")), root / "mmkd_utils" / "notebooks.py"]
    changed = []
    for path in files:
        text = path.read_text(encoding="utf8")
        new = text.replace(f"/github/{REPO_SLUG}/", f"/github/{slug}/").replace(f"github.com/{REPO_SLUG} ", f"github.com/{slug} ")
        if path.name == "notebooks.py":
            new = new.replace(f'REPO_SLUG = "{REPO_SLUG}"', f'REPO_SLUG = "{slug}"')
        if new != text:
            path.write_text(new, encoding="utf8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> None:
    args = list(argv if argv is not None else sys.argv[1:])
    if args[:1] == ["--repo"] and len(args) == 2:
        for path in retarget(args[1]):
            print(f"{path}: now points at {args[1]}")
        return
    if args[:1] == ["--clean-only"] and len(args) > 1 and not any(a.startswith("-") for a in args[1:]):
        for p in args[1:]:
            print(f"{p}: {'cleaned' if clean_file(p) else 'already clean'}")
        return
    if not args or any(a.startswith("-") for a in args):
        raise SystemExit("usage: python -m mmkd_utils.notebooks notebooks/NN_name.ipynb [...]                (execute and clean)\n"
                         "       python -m mmkd_utils.notebooks --clean-only notebooks/NN_name.ipynb [...] (clean only)\n"
                         "       python -m mmkd_utils.notebooks --repo OWNER/NAME                         (point badges at a fork)")
    for p in args:
        print(f"{p}: {execute(p):.1f} s", flush=True)


if __name__ == "__main__":
    main()
