"""Checkpoints: weights as safetensors (no pickle), config and metrics as JSON, written atomically.

Introduced in notebook 04 (training the teacher). A write goes to a temporary file in the same folder
and is then renamed over the target, so an interrupted save never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def atomic_write_json(obj: Any, path: str | Path) -> None:
    """Write JSON, atomically."""
    text = json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n"
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf8"))


def save_checkpoint(model: nn.Module, folder: str | Path, config: dict, metrics: dict | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Save ``model`` weights (``model.safetensors``) and ``checkpoint.json`` (config, metrics, shapes)."""
    folder = Path(folder)
    state = model.state_dict()
    tensors = {f"model.{k}": v for k, v in state.items()}
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v
    atomic_save_tensors(tensors, folder / "model.safetensors")
    # The JSON is written second and records the weights' hash: a save interrupted between the two
    # files is detected on load instead of pairing new weights with old metadata.
    atomic_write_json({"architecture": type(model).__name__, "config": config, "metrics": metrics or {},
                       "shapes": {k: list(v.shape) for k, v in state.items()},
                       "weights_sha256": _sha256(folder / "model.safetensors")}, folder / "checkpoint.json")
    return folder


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_checkpoint(model: nn.Module, folder: str | Path, expected_config: dict | None = None) -> dict:
    """Load weights saved by ``save_checkpoint`` into ``model``; returns the checkpoint's JSON.

    Raises a ``ValueError`` naming the difference when the checkpoint was made for another
    architecture or configuration.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights_path = folder / "checkpoint.json", folder / "model.safetensors"
    if not meta_path.exists() or not weights_path.exists():
        raise FileNotFoundError(f"{folder} is not a checkpoint: it needs checkpoint.json and model.safetensors "
                                "(written by mmkd_utils.checkpoint.save_checkpoint).")
    meta = json.loads(meta_path.read_text(encoding="utf8"))
    if meta["architecture"] != type(model).__name__:
        raise ValueError(f"checkpoint {folder} holds a {meta['architecture']}, not a {type(model).__name__}; "
                         "build the model the checkpoint was saved from.")
    if expected_config is not None:
        diff = {k: (meta["config"].get(k), v) for k, v in expected_config.items() if meta["config"].get(k) != v}
        if diff:
            raise ValueError(f"checkpoint {folder} was saved with another configuration "
                             f"(key: (saved, requested)) {diff}; use the same configuration or retrain.")
    own = model.state_dict()
    shapes = {k: list(v.shape) for k, v in own.items()}
    if shapes != meta["shapes"]:
        bad = sorted(k for k in set(shapes) | set(meta["shapes"]) if shapes.get(k) != meta["shapes"].get(k))
        raise ValueError(f"checkpoint {folder} does not fit this model: parameters differ in {bad[:5]}"
                         f"{' …' if len(bad) > 5 else ''}; the model was built with another configuration.")
    if meta.get("weights_sha256") != _sha256(weights_path):
        raise ValueError(f"checkpoint {folder}: model.safetensors does not match checkpoint.json (a save was "
                         "interrupted, or a file was replaced); save the checkpoint again.")
    tensors = load_file(str(weights_path))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    meta["extra"] = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta
