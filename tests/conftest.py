"""Shared fixtures for the unit tests: offline, quiet, and expensive things loaded once per session."""
from __future__ import annotations

import os

# Offline and quiet before anything imports transformers / datasets / tqdm.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"
os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"  # datasets' own bars ignore TQDM_DISABLE
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Hypothesis: reproducible in CI, exploring in development. Loaded here, at import, because conftest is
# imported before the test modules: a settings object such as test_losses.FAST inherits every setting it
# does not name (derandomize included) from the profile loaded when it is created. (--hypothesis-profile
# on the command line is applied later and wins.)
_defaults = settings.get_profile("default")  # not whatever Hypothesis itself loaded on seeing CI
settings.register_profile("ci", _defaults, derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", _defaults, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO_ROOT = Path(__file__).resolve().parents[1]
OPENMOJI_DIR = REPO_ROOT / "data" / "openmoji"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def manifest() -> dict:
    """data/openmoji/MANIFEST.json, as written by the build."""
    return json.loads((OPENMOJI_DIR / "MANIFEST.json").read_text(encoding="utf8"))


@pytest.fixture(scope="session")
def openmoji():
    """The shipped OpenMoji DatasetDict (train / validation / test)."""
    from mmkd_utils.data import load_openmoji

    return load_openmoji()


@pytest.fixture(scope="session")
def text_encoder():
    """The offline MiniLM text encoder, loaded once."""
    from mmkd_utils.encoders import load_text_encoder

    return load_text_encoder()


@pytest.fixture(scope="session")
def image_encoder():
    """The offline MobileNetV2 image encoder, loaded once."""
    from mmkd_utils.encoders import load_image_encoder

    return load_image_encoder("mobilenet_v2")
