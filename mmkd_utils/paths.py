"""Where the course's files live: the shipped data folder and the feature cache."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The course checkout: the folder holding ``data/`` (works for an editable install or a clone)."""
    candidates = [PACKAGE_DIR.parent, Path.cwd(), *Path.cwd().parents]
    for cand in candidates:
        if (cand / "data" / "openmoji" / "MANIFEST.json").exists():
            return cand
    return PACKAGE_DIR.parent


def data_dir() -> Path:
    """The folder of shipped datasets: ``$MMKD_DATA_DIR`` if set, else ``<checkout>/data``."""
    env = os.environ.get("MMKD_DATA_DIR")
    return Path(env) if env else repo_root() / "data"


def cache_dir() -> Path:
    """The feature cache: ``$MMKD_CACHE_DIR`` if set, else ``<checkout>/.mmkd-cache`` (git-ignored)."""
    env = os.environ.get("MMKD_CACHE_DIR")
    path = Path(env) if env else repo_root() / ".mmkd-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
