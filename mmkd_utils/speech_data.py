"""Building ``data/speech/`` (``make data`` = ``python -m mmkd_utils.speech_data build``; see data/README.md):
the manifest of every voice's synthesised clips (``build``), its datasheet line, and the speech modality's real
voice: the English words of Debian's ``ktuberling-data`` (one speaker) that are an emoji name or whole word(s)
inside names of one group, resampled to 16 kHz and shipped in ``data/speech/human/`` with their licence.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .paths import repo_root
from .speech import (KTUBERLING_PACKAGE, PROBE_ROWS, SAMPLE_RATE, SPLITS, VOICES, _missing, clips_hash, default_path,
                     engine_versions, get_voice, human_metadata, package_version, resample, split_rows_hash, spoken)

KTUBERLING_DIR = Path("/usr/share/ktuberling/sounds/en")

# ktuberling's file names, as the words they hold (a scene prefix dropped; four spellings corrected)
SPELLING = {"palmtree": "palm tree", "broccolli": "broccoli", "fallingstar": "falling star", "sphynx": "sphinx"}
SCENE_PREFIXES = ("egypt_", "moon_", "pizzeria_", "tv_")


def ktuberling_word(stem: str) -> str:
    for prefix in SCENE_PREFIXES:
        if stem.startswith(prefix):
            stem = stem[len(prefix):]
    return SPELLING.get(stem, stem.replace("_", " "))


def match_word(word: str, rows: list[dict]) -> tuple[str, list[dict]]:
    """("exact", [the row]) if ``word`` is an emoji name; ("inside", rows) if it is whole word(s) of some names;
    ("none", [])."""
    exact = [r for r in rows if r["text"].lower() == word.lower()]
    if exact:
        return "exact", exact
    pattern = re.compile(rf"(?<![\w-]){re.escape(word.lower())}(?![\w-])")
    inside = [r for r in rows if pattern.search(r["text"].lower())]
    return ("inside", inside) if inside else ("none", [])


def build_human(out: Path, openmoji=None, source: Path = KTUBERLING_DIR) -> dict:
    """Resample ktuberling's English words that match a name to 16 kHz FLAC in ``out``; write metadata.csv."""
    import csv

    import soundfile

    from .data import load_openmoji

    if not source.is_dir():
        raise _missing(KTUBERLING_PACKAGE, f"the recordings folder {source}")
    ds = openmoji if openmoji is not None else load_openmoji()
    names = ds["train"].features["group"].names
    rows = [dict(r, split=s) for s in SPLITS for r in ds[s].remove_columns("image")]
    out.mkdir(parents=True, exist_ok=True)
    kept, dropped = [], {"no_name": [], "several_groups": []}
    for file in sorted(source.glob("*.ogg")):
        word = ktuberling_word(file.stem)
        kind, matched = match_word(word, rows)
        if kind == "none":
            dropped["no_name"].append(word)
            continue
        groups = sorted({r["group"] for r in matched})
        if len(groups) > 1:
            dropped["several_groups"].append(word)
            continue
        samples, rate = soundfile.read(str(file), dtype="int16", always_2d=True)
        clip = resample(samples.mean(1).round().astype(np.int16), rate)
        name = f"{word.replace(' ', '_')}.flac"
        soundfile.write(str(out / name), clip, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        kept.append({"file_name": name, "word": word, "kind": kind, "group": names[groups[0]],
                     "n_names": len(matched), "codepoints": " ".join(r["codepoints"] for r in matched),
                     "splits": " ".join(sorted({r["split"] for r in matched})), "source": file.name,
                     "sha256": clips_hash([clip])})
    with (out / "metadata.csv").open("w", newline="", encoding="utf8") as f:
        writer = csv.DictWriter(f, fieldnames=list(kept[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
    copyright_file = Path("/usr/share/doc") / KTUBERLING_PACKAGE / "copyright"
    if copyright_file.exists():
        shutil.copyfile(copyright_file, out / "LICENSE-ktuberling-copyright.txt")
    return {"package": KTUBERLING_PACKAGE, "version": package_version(KTUBERLING_PACKAGE),
            "n_english_words": len(list(source.glob("*.ogg"))), "n_kept": len(kept),
            "n_exact": sum(r["kind"] == "exact" for r in kept), "n_inside": sum(r["kind"] == "inside" for r in kept),
            "dropped": {k: len(v) for k, v in dropped.items()}, "dropped_words": dropped,
            "content_sha256": hashlib.sha256("".join(r["sha256"] for r in kept).encode()).hexdigest()}


def load_human(path: str | Path | None = None) -> tuple[list[dict], list[np.ndarray]]:
    """The shipped human recordings: their metadata rows (word, kind, group name, codepoints of the names it
    matches, …) and their clips (int16, 16 kHz)."""
    import soundfile

    folder = Path(path) if path else default_path() / "human"
    rows = human_metadata(folder)
    clips = [soundfile.read(str(folder / r["file_name"]), dtype="int16")[0] for r in rows]
    return rows, clips


# ------------------------------------------------------------------------------- manifest
def build(out: str | Path | None = None, voices=None, openmoji=None, progress: bool = True) -> dict:
    """Synthesise every voice's clips (into the cache), hash them, rebuild data/speech/human; write MANIFEST.json."""
    import time

    from .data import load_openmoji

    out = Path(out) if out else default_path()
    ds = openmoji if openmoji is not None else load_openmoji()
    manifest = {"name": "openmoji-speech", "of": "data/openmoji", "sample_rate": SAMPLE_RATE, "probe_rows": PROBE_ROWS,
                "engines": engine_versions(), "rows": {s: {"n": len(ds[s]), "sha256": split_rows_hash(ds[s])} for s in SPLITS},
                "voices": {}}
    for name in voices or VOICES:
        v = get_voice(name)
        entry = {**asdict(v), "splits": {}}
        for s in v.splits:
            start = time.perf_counter()
            clips = spoken(ds[s], v)
            seconds = [len(c) / SAMPLE_RATE for c in clips]
            entry["splits"][s] = {"n_clips": len(clips), "sha256": clips_hash(clips),
                                  "empty": [ds[s][i]["codepoints"] for i, c in enumerate(clips) if len(c) == 0],
                                  "mean_seconds": round(float(np.mean(seconds)), 3),
                                  "probe": [clips_hash([c]) for c in clips[:PROBE_ROWS]]}
            if progress:
                print(f"{name} {s}: {len(clips)} clips, {time.perf_counter() - start:.1f} s", flush=True)
        manifest["voices"][name] = entry
    manifest["human"] = build_human(out / "human", ds)
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf8")
    return manifest


def counts_line(manifest: dict) -> str:
    """The datasheet's count sentences (data/README.md, between the ``speech`` markers), made from MANIFEST.json."""
    lines = []
    for name, v in manifest["voices"].items():
        parts = ", ".join(f"{s} {e['n_clips']}" for s, e in v["splits"].items())
        empty = sum(len(e["empty"]) for e in v["splits"].values())
        mean = np.mean([e["mean_seconds"] for e in v["splits"].values()])
        lines.append(f"| {name} | {v['role']} | {v['engine']} `{v['voice']}` | {v['speed'] or '–'} | {v['pitch'] or '–'} "
                     f"| {parts} | {mean:.2f} | {empty} |")
    h = manifest["human"]
    d = h["dropped_words"]
    return ("| voice | role | engine, voice | words/min | pitch | clips per split | mean s | empty |\n"
            "|---|---|---|---:|---:|---|---:|---:|\n" + "\n".join(lines) + "\n\n"
            f"Human recordings: {h['n_kept']} of {h['n_english_words']} English words kept ({h['n_exact']} exact emoji "
            f"names, {h['n_inside']} inside a name); dropped: {len(d['no_name'])} in no name, "
            f"{len(d['several_groups'])} inside names of several groups ({', '.join(d['several_groups']) or 'none'}).")


def update_datasheet(readme: Path, manifest: dict) -> None:
    from .publish import replace_block

    text = readme.read_text(encoding="utf8")
    readme.write_text(replace_block(text, "speech", counts_line(manifest)), encoding="utf8")


def main(argv: list[str] | None = None) -> None:
    """``python -m mmkd_utils.speech_data build``: synthesise every voice into the cache, rebuild data/speech/."""
    import sys

    if (sys.argv[1:] if argv is None else list(argv)) != ["build"]:
        raise SystemExit("usage: python -m mmkd_utils.speech_data build")
    m = build()
    update_datasheet(repo_root() / "data" / "README.md", m)
    print(f"speech: {len(m['voices'])} voices, {m['human']['n_kept']} human words -> data/speech/")


if __name__ == "__main__":
    main()
