"""mmkd_utils: the training core of the mmkd course (knowledge distillation in multimodal learning).

Introduced in notebook 00. Submodules, one home per idea: ``data`` (datasets and preprocessing),
``encoders`` (frozen pretrained encoders, cached features), ``prepare`` (a dataset → ``PreparedData``),
``regimes`` (few or noisy labels, folds, transfer words), ``models``, ``losses``, ``objective``, ``train``
(``train_epoch``, ``fit``), ``views``, ``recipes`` (teachers, students, methods), ``signals`` (what the
student learns from the teacher), ``evaluate``, ``report``, ``publish``, ``experiment`` (whole runs),
``export`` (deployment), ``classic`` (reproductions), ``noto`` (the out-of-distribution test set), ``config``,
``checkpoint``.
"""
from __future__ import annotations

import os

# PyTorch's OpenMP threads busy-wait by default; on a small shared CPU (2 cores, a notebook kernel beside
# another process) that makes tiny models train up to 20x slower. Passive waiting costs nothing here.
# It only takes effect if torch is imported after mmkd_utils (as in every notebook's setup cell).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from .env import setup, seed_everything, pick_device, library_versions  # noqa: E402,F401

__all__ = ["setup", "seed_everything", "pick_device", "library_versions", "__version__"]
