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


# ------------------------------------------------------------------------ a run's training state
def save_training_state(folder: Path, model, optimizer, scheduler, objective, next_epoch: int, history, best_state,
                        config) -> None:
    """The whole state of a run after an epoch (weights, best weights, optimiser, schedule, RNG, history), so
    that ``fit(..., resume=True)`` ends exactly as an uninterrupted run. Written by ``train.fit``."""
    from dataclasses import asdict

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    for module in objective.trainable_modules():
        tensors.update({f"feature_loss.{k}": v for k, v in module.state_dict().items()})
    opt_state = optimizer.state_dict()
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    atomic_save_tensors(tensors, folder / "state.safetensors")
    atomic_write_json({"next_epoch": next_epoch, "history": asdict(history), "config": asdict(config),
                       "optimizer_param_groups": opt_state["param_groups"],
                       "scheduler": scheduler.state_dict() if scheduler is not None else None},
                      folder / "state.json")


def load_training_state(folder: Path, model, optimizer, scheduler, objective, device) -> tuple[int, dict, dict | None]:
    """Restore what ``save_training_state`` wrote into ``model``, ``optimizer``, ``scheduler`` and the feature
    loss; returns (next epoch, the history as a dict, the best weights so far or None)."""
    from safetensors.torch import load_file

    meta = json.loads((folder / "state.json").read_text(encoding="utf8"))
    tensors = load_file(str(folder / "state.safetensors"))
    own = model.state_dict()
    saved = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if set(saved) != set(own) or any(saved[k].shape != own[k].shape for k in own):
        raise ValueError(f"the training state in {folder} belongs to another model or configuration; "
                         "delete the folder or use another checkpoint_dir")
    model.load_state_dict(saved)
    best = {k[len("best."):]: v.to(device) for k, v in tensors.items() if k.startswith("best.")} or None
    for module in objective.trainable_modules():
        module.load_state_dict({k[len("feature_loss."):]: v for k, v in tensors.items()
                                                if k.startswith("feature_loss.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta["next_epoch"], meta["history"], best
