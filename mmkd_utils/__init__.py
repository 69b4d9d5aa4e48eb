"""mmkd_utils: the training core of the mmkd course (knowledge distillation in multimodal learning).

Introduced in notebook 00. Submodules: ``data`` (datasets and loaders), ``encoders`` (pretrained
text and image encoders, offline), ``losses``, ``models``, ``train``, ``evaluate``, ``config``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .env import setup, seed_everything, pick_device, library_versions  # noqa: E402,F401

__all__ = ["setup", "seed_everything", "pick_device", "library_versions", "__version__"]
