"""Environment: seeding, device choice, library versions (introduced in notebook 00)."""
from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) so that runs repeat."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def pick_device(prefer: str | None = None) -> torch.device:
    """Return the device to use: ``prefer`` if given, else cuda, then mps, then cpu."""
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} was asked for, but CUDA is not available here; "
                               "use device=None to pick automatically, or 'cpu'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries whose behaviour the results depend on."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ["mmkd_utils", "torch", "torchvision", "transformers", "datasets", "numpy", "pillow"]:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def setup(seed: int = 0, device: str | None = None, threads: int | None = None, verbose: bool = True) -> torch.device:
    """One call at the top of every notebook: seed every RNG, pick the device, print what was chosen.

    ``threads`` caps PyTorch's CPU threads (default: the number of cores, at most 8).
    """
    seed_everything(seed)
    if threads is None:
        threads = min(os.cpu_count() or 1, 8)
    torch.set_num_threads(threads)
    chosen = pick_device(device)
    if verbose:
        versions = library_versions()
        libs = ", ".join(f"{k} {v}" for k, v in versions.items())
        print(f"device: {chosen} | seed: {seed} | CPU threads: {threads}\n{libs}")
    return chosen


def bf16_native(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes in bf16 in hardware: compute capability ≥ (8, 0) (Ampere and
    later: A100, RTX 30xx, L4, H100), or any ROCm GPU.

    Not ``torch.cuda.is_bf16_supported()``: it counts bf16 that the GPU only *emulates*, and so says yes on
    a Colab T4 (compute capability 7.5), where bf16 is slow and fp16 with a GradScaler is the right path.
    Its ``including_emulation=False`` argument is newer than some torch versions the course supports; the
    compute capability answers the same question on every version."""
    if device.type != "cuda":
        return False
    if torch.version.hip:  # ROCm GPUs compute bf16 natively
        return True
    return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)


def amp_settings(config, device: torch.device) -> tuple[bool, torch.dtype]:
    """Whether mixed precision is on (``config.amp``, a ``train.TrainConfig``; CUDA only) and its dtype: bf16
    where the GPU computes it natively (``bf16_native``), else fp16 (which needs a GradScaler)."""
    enabled = config.amp and device.type == "cuda"
    return enabled, torch.bfloat16 if enabled and bf16_native(device) else torch.float16
