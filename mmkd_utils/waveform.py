"""Waveforms, the one rate every clip of the course uses, and resampling to it: what both the speech data
(``speech``, synthesised voices) and your own recordings (``read_recording``, for ``data.load_image_folder``)
need, kept below both."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000  # every clip, whatever the engine's or the recorder's own rate


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """int16 samples at ``rate`` → int16 at 16 kHz (scipy's polyphase filter; deterministic on one machine)."""
    from math import gcd

    from scipy.signal import resample_poly

    if rate == SAMPLE_RATE:
        return samples.astype(np.int16)
    g = gcd(SAMPLE_RATE, rate)
    y = resample_poly(samples.astype(np.float64), SAMPLE_RATE // g, rate // g)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def read_recording(file, home: Path, where: str, column: str = "audio_file") -> np.ndarray:
    """The recording ``file`` (relative to ``home``, the folder of its row's metadata.csv) as int16 samples at
    16 kHz, mono: channels averaged, another rate resampled (``resample``), float samples scaled by 32768
    (``audio.to_float`` divides by it) and clipped. Raises a ``ValueError`` naming ``where`` and the fix."""
    import soundfile

    fix = (f"Fix the file (a wav or flac recording) or the row's {column!r} (its path relative to the "
           "metadata.csv), or remove that row.")
    if file is None or not str(file).strip():
        raise ValueError(f"{where}: no recording in column {column!r}. {fix}")
    path = home / str(file)
    try:
        samples, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except (OSError, RuntimeError, ValueError, TypeError) as err:  # missing, not audio, a format libsndfile lacks
        raise ValueError(f"{where}: cannot read recording {path} ({err}). {fix}") from err
    if not len(samples) or not samples.shape[1]:
        raise ValueError(f"{where}: recording {path} holds no samples. {fix}")
    mono = np.clip(np.rint(samples.mean(1) * 32768.0), -32768, 32767).astype(np.int16)
    clip = resample(mono, rate) if rate != SAMPLE_RATE else mono
    if not len(clip):
        raise ValueError(f"{where}: recording {path} is too short to resample from {rate} Hz. {fix}")
    return clip
