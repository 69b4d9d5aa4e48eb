"""Spoken emoji names: the speech modality's data (issue 23; notebook 11 will introduce it).

Every OpenMoji row's English name, spoken by several synthetic voices, and a few real human recordings:

- **Training voices** (``TRAIN_VOICES``): Debian's ``espeak-ng`` in four accents, speeds and pitches, for
  every row of every split (train, validation, test), so every row keeps its picture, name and label.
- **Held-out voices** (``HELD_OUT_VOICES``): two more espeak-ng voices (other accents, an extreme speed and
  pitch) and a second engine, Debian's ``flite`` (CMU's ``slt`` voice), on the validation and test rows only:
  voices no student trains on.
- **Human recordings** (``speech_data.load_human``): the English words of Debian's ``ktuberling-data`` (one speaker)
  that are an emoji name or a whole word inside one, shipped in ``data/speech/human/``.

The synthesised audio is not shipped (200–290 MB per training voice at 16 kHz): it is synthesised on demand
(espeak-ng through its C library in a fresh process per call; the ``flite`` program), resampled to 16 kHz, and kept
in the feature cache (``.mmkd-cache``). ``data/speech/MANIFEST.json`` holds, per voice and split, the
SHA-256 of every clip's samples in order, and per-clip hashes of a few probe rows; a synthesis whose
hash differs from the manifest (another engine build) warns, and every cache key holds the audio's hash,
so a change is detected, never silently reused. ``make data`` rebuilds the manifest and ``data/speech/human`` (``speech_data``).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .paths import repo_root
from .waveform import SAMPLE_RATE, resample  # noqa: F401 (16 kHz for every clip; speech.resample stays importable)

SPLITS = ("train", "validation", "test")
ESPEAK_PACKAGE, ESPEAK_LIBRARY = "espeak-ng", "libespeak-ng.so.1"
FLITE_PACKAGE, FLITE_PROGRAM = "flite", "flite"
KTUBERLING_PACKAGE = "ktuberling-data"
PROBE_ROWS = 3  # per split: the first rows, whose clips' hashes the manifest keeps one by one (quick tests)


class SpeechToolMissing(RuntimeError):
    """A Debian package the speech data is synthesised with is not installed."""


@dataclass(frozen=True)
class Voice:
    """One synthetic voice: an engine, its voice name, and (espeak-ng) speed in words per minute and pitch 0–99."""

    engine: str  # "espeak-ng" or "flite"
    voice: str  # espeak-ng: a voice with an optional variant ("en-us+f3"); flite: a built-in voice ("slt")
    speed: int | None = None
    pitch: int | None = None
    role: str = "train"  # "train": every split; "held-out": validation and test only (never trained on)

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS if self.role == "train" else ("validation", "test")


VOICES: dict[str, Voice] = {
    # training voices: four accents, both sexes' variants, slow to fast, low to high
    "us": Voice("espeak-ng", "en-us", 175, 50),
    "british-f": Voice("espeak-ng", "en+f3", 160, 60),
    "scottish-slow": Voice("espeak-ng", "en-gb-scotland+m3", 130, 40),
    "caribbean-fast": Voice("espeak-ng", "en-029+f2", 210, 55),
    # held-out voices: another accent and variant at extremes of speed and pitch, and another engine
    "us-f-slow-high": Voice("espeak-ng", "en-us+f4", 120, 85, role="held-out"),
    "rp-fast-low": Voice("espeak-ng", "en-gb-x-rp+m7", 230, 20, role="held-out"),
    "flite-slt": Voice("flite", "slt", role="held-out"),
}
TRAIN_VOICES = tuple(k for k, v in VOICES.items() if v.role == "train")
HELD_OUT_VOICES = tuple(k for k, v in VOICES.items() if v.role == "held-out")


def default_path() -> Path:
    return repo_root() / "data" / "speech"


def human_metadata(path: str | Path | None = None) -> list[dict]:
    """The shipped human recordings' metadata rows (file_name, word, kind, group name, codepoints of the names
    it matches, …), without their clips (``speech_data.load_human`` reads both)."""
    import csv

    meta = (Path(path) if path else default_path() / "human") / "metadata.csv"
    if not meta.exists():
        raise FileNotFoundError(f"{meta} is missing: it ships with the repository (data/speech/human/); rebuild it "
                                f"with `make data` (needs Debian's {KTUBERLING_PACKAGE})")
    with meta.open(newline="", encoding="utf8") as f:
        return list(csv.DictReader(f))


def get_voice(name: str | Voice) -> Voice:
    if isinstance(name, Voice):
        return name
    if name not in VOICES:
        raise ValueError(f"unknown voice {name!r}: choose from {sorted(VOICES)} (training voices {list(TRAIN_VOICES)}, "
                         f"held-out voices {list(HELD_OUT_VOICES)}), or build a speech.Voice")
    return VOICES[name]


# ------------------------------------------------------------------------------------ engines
def _missing(package: str, what: str) -> SpeechToolMissing:
    return SpeechToolMissing(f"{what} is missing: the spoken names are synthesised with Debian's {package}. Install it "
                             f"with `sudo apt-get install {package}` (or `make data` as root; on Colab: "
                             f"`!apt-get install -y {package}`).")


# espeak-ng's C library, driven in a fresh Python process (numpy and ctypes only: it starts in a fraction of a
# second) in synchronous mode: the samples come back through a callback. Reads {"library", "voice", "speed",
# "pitch", "texts"} as JSON on stdin; writes the rate, the number of clips, each clip's length and the int16
# samples on stdout. A fresh process per call, because espeak-ng's output depends on what it spoke before in
# the same process (the same name, spoken three times in a row, comes out as three different byte strings):
# this way the clips are a function of the voice and the names, in order, and repeat bit for bit.
_ESPEAK_WORKER = r"""
import ctypes, json, sys
import numpy as np
job = json.load(sys.stdin)
try:
    lib = ctypes.CDLL(job["library"])
except OSError as err:
    sys.stderr.write(f"MISSING {err}"); sys.exit(3)
chunks = []
def collect(wav, n, events):
    if n > 0:
        chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    return 0
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)(collect)
rate = lib.espeak_Initialize(2, 0, None, 0)  # AUDIO_OUTPUT_SYNCHRONOUS
if rate <= 0:
    sys.stderr.write(f"espeak_Initialize failed ({rate}): is espeak-ng-data installed?"); sys.exit(4)
lib.espeak_SetSynthCallback(callback)
if lib.espeak_SetVoiceByName(job["voice"].encode()) != 0:
    sys.stderr.write("no such voice"); sys.exit(5)
for parameter, value in ((1, job["speed"]), (3, job["pitch"])):  # espeakRATE, espeakPITCH
    if value is not None:
        lib.espeak_SetParameter(parameter, int(value), 0)
clips = []
for text in job["texts"]:
    chunks.clear()
    data = text.encode("utf8") + b"\0"
    err = lib.espeak_Synth(data, ctypes.c_size_t(len(data)), 0, 1, 0, 1, None, None)  # POS_CHARACTER, UTF-8
    if err != 0:
        sys.stderr.write(f"espeak_Synth failed ({err}) on {text!r}"); sys.exit(6)
    clips.append(np.concatenate(chunks).astype("<i2") if chunks else np.zeros(0, "<i2"))
out = sys.stdout.buffer
out.write(np.array([rate, len(clips), *map(len, clips)], "<i8").tobytes())
for c in clips:
    out.write(c.tobytes())
"""


def _espeak(texts: list[str], voice: Voice, library: str) -> list[tuple[np.ndarray, int]]:
    """espeak-ng's clips of ``texts`` at its own rate, from a fresh process (``_ESPEAK_WORKER``)."""
    import sys

    job = {"library": library, "voice": voice.voice, "speed": voice.speed, "pitch": voice.pitch, "texts": list(texts)}
    proc = subprocess.run([sys.executable, "-c", _ESPEAK_WORKER], input=json.dumps(job).encode(), capture_output=True)
    if proc.returncode == 3:
        raise _missing(ESPEAK_PACKAGE, f"the espeak-ng library ({library})")
    if proc.returncode == 5:
        raise ValueError(f"espeak-ng has no voice {voice.voice!r}: list them with `espeak-ng --voices=en`; "
                         "a variant follows a '+' (en-us+f3)")
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    head = np.frombuffer(proc.stdout[:16], "<i8")
    rate, n = int(head[0]), int(head[1])
    lengths = np.frombuffer(proc.stdout[16:16 + 8 * n], "<i8")
    samples = np.frombuffer(proc.stdout[16 + 8 * n:], "<i2")
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [(samples[a:b].copy(), rate) for a, b in zip(bounds[:-1], bounds[1:])]


def _flite(texts: list[str], voice: Voice, program: str) -> list[tuple[np.ndarray, int]]:
    import wave

    exe = shutil.which(program)
    if exe is None:
        raise _missing(FLITE_PACKAGE, f"the {program!r} program")
    known = subprocess.run([exe, "-lv"], capture_output=True, text=True, timeout=60).stdout.split()
    if voice.voice not in known:
        raise ValueError(f"flite has no voice {voice.voice!r}; it has {known[2:]}")

    def one(i_text):
        i, text = i_text
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"{i}.wav"
            subprocess.run([exe, "-voice", voice.voice, "-t", text, "-o", str(out)], check=True, timeout=120,
                           capture_output=True)
            with wave.open(str(out)) as w:
                return np.frombuffer(w.readframes(w.getnframes()), np.int16).copy(), w.getframerate()

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, enumerate(texts)))


def synthesize(texts: list[str], voice: str | Voice, *, library: str = ESPEAK_LIBRARY,
               flite_program: str = FLITE_PROGRAM) -> list[np.ndarray]:
    """Each text spoken by ``voice``: one int16 array at 16 kHz per text (not cached: see ``spoken``)."""
    voice = get_voice(voice)
    if voice.engine == "espeak-ng":
        raw = _espeak(list(texts), voice, library)
    elif voice.engine == "flite":
        raw = _flite(list(texts), voice, flite_program)
    else:
        raise ValueError(f"unknown engine {voice.engine!r}: 'espeak-ng' or 'flite'")
    return [resample(x, rate) for x, rate in raw]


def clips_hash(clips: list[np.ndarray]) -> str:
    """SHA-256 over every clip's length and int16 samples, in order."""
    h = hashlib.sha256()
    for c in clips:
        c = np.ascontiguousarray(c, dtype="<i2")
        h.update(len(c).to_bytes(8, "little"))
        h.update(c.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- versions
def package_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or "not installed"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def engine_versions() -> dict[str, str]:
    """What the audio depends on: the Debian packages' versions (part of every cache key)."""
    return {p: package_version(p) for p in (ESPEAK_PACKAGE, "espeak-ng-data", "libespeak-ng1", FLITE_PACKAGE)}


# --------------------------------------------------------------------------- cached clips
def spoken(split, voice: str | Voice, *, split_name: str | None = None, manifest: dict | None = None,
           cache: bool = True) -> list[np.ndarray]:
    """The clips of ``voice`` saying every row's ``text`` of ``split`` (a ``datasets.Dataset``), in row order.

    Cached (``.mmkd-cache/speech-…``) under the voice, the engines' versions and the names; when ``split_name``
    names a whole shipped split, the audio's hash is checked against the manifest (a warning if it differs:
    another engine build speaks differently, and published numbers may not repeat)."""
    import torch

    from .encoders import cached_tensors

    v = get_voice(voice)
    texts = list(split["text"])
    key = ["speech", json.dumps(asdict(v), sort_keys=True), json.dumps(engine_versions(), sort_keys=True),
           hashlib.sha256("\n".join(texts).encode("utf8")).hexdigest(), SAMPLE_RATE]

    def compute():
        clips = synthesize(texts, v)
        lengths = torch.tensor([len(c) for c in clips], dtype=torch.int64)
        return {"samples": torch.from_numpy(np.concatenate(clips) if clips else np.zeros(0, np.int16)),
                "lengths": lengths}

    stored = cached_tensors("speech", key, compute, cache)
    bounds = np.concatenate([[0], np.cumsum(stored["lengths"].numpy())])
    samples = stored["samples"].numpy()
    clips = [samples[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if split_name is not None:
        check_against_manifest(clips, voice, split_name, manifest)
    return clips


def check_against_manifest(clips: list[np.ndarray], voice: str, split_name: str, manifest: dict | None = None) -> bool:
    """True if ``clips`` are the manifest's audio for ``voice`` on the whole ``split_name``; warns otherwise."""
    manifest = manifest if manifest is not None else load_manifest()
    entry = manifest["voices"].get(voice, {}).get("splits", {}).get(split_name)
    if entry is None:
        raise ValueError(f"the manifest has no {split_name!r} clips for voice {voice!r}")
    if clips_hash(clips) == entry["sha256"]:
        return True
    warnings.warn(f"voice {voice!r}, {split_name}: the synthesised audio differs from data/speech/MANIFEST.json "
                  f"(engines here {engine_versions()}, manifest {manifest['engines']}): another engine build; "
                  "the features are cached under this audio's own hash, but published numbers may not repeat", stacklevel=2)
    return False


# ------------------------------------------------------------------------------- manifest
def split_rows_hash(split) -> str:
    """SHA-256 of the rows' code points, names and group labels: which rows, in which order, with which labels."""
    cols = [split[c] for c in ("codepoints", "text", "group")]
    return hashlib.sha256(json.dumps([list(c) for c in cols], ensure_ascii=False).encode("utf8")).hexdigest()


def load_manifest(path: str | Path | None = None) -> dict:
    file = (Path(path) if path else default_path()) / "MANIFEST.json"
    return json.loads(file.read_text(encoding="utf8"))
