"""Course notebooks: execute them in place and strip volatile metadata (``make notebooks``).

Stored notebooks are what the code produces now: this is the one command that re-runs and cleans
them. Widget state, execution timings and machine-specific metadata are removed; progress bars are
off while executing (``TQDM_DISABLE=1``), so stored outputs are small and stable.
"""
from __future__ import annotations

import os
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


def clean(nb) -> None:
    """Strip widget state, execution timings and volatile kernel metadata, in place."""
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata.get("language_info", {}).pop("version", None)
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


def main(argv: list[str] | None = None) -> None:
    paths = argv if argv is not None else sys.argv[1:]
    if not paths:
        raise SystemExit("usage: python -m mmkd_utils.notebooks notebooks/NN_name.ipynb [...]")
    for p in paths:
        print(f"{p}: {execute(p):.1f} s", flush=True)


if __name__ == "__main__":
    main()
