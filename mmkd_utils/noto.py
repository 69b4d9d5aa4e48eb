"""An out-of-distribution test set: the OpenMoji *test* emoji drawn by another designer (Noto Color Emoji).

Introduced in notebook 07 (does the student inherit the teacher's robustness to a new visual style?).
``make data`` renders it once with Debian's ``fonts-noto-color-emoji`` (SIL OFL 1.1) and ships the images
in ``data/noto/``, so learners need no system package. It is for evaluation only: nothing is ever selected
on it. Emoji the font does not cover are dropped and counted: a sequence the font has no glyph for falls
apart into several symbols (its advance is wider than one emoji), and a code point newer than the font
renders nothing.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import openmoji as openmoji_build  # build() has a parameter named openmoji
from .openmoji import STORE_PX, _png
from .paths import repo_root

NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
NOTO_PACKAGE = "fonts-noto-color-emoji"
NOTO_PPEM = 109  # the only size of the font's bitmaps (CBDT)
# Canvas drawn on, then downsampled to STORE_PX: 146 px makes the median drawing fill the same share of the
# image as OpenMoji's (83 % of its side, measured on the test emoji), so style, not scale, is what shifts.
NOTO_CANVAS = 146
COLUMNS = ("text", "text_zh", "emoji", "codepoints", "base")


def default_path() -> Path:
    return repo_root() / "data" / "noto"


def load_font(path: str | Path = NOTO_FONT):
    from PIL import ImageFont

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the Noto set is rendered from Debian's {NOTO_PACKAGE} "
                                f"(`apt-get install {NOTO_PACKAGE}`). Learners need it not: data/noto/ ships the images.")
    return ImageFont.truetype(str(path), NOTO_PPEM, layout_engine=ImageFont.Layout.RAQM)


def coverage(emoji: str, font, single: str = "\U0001F600", unassigned: str = "\u0378") -> str:
    """"ok" if ``font`` draws ``emoji`` as one glyph; "split" if it falls apart into several symbols
    (advance wider than one emoji's); "missing" if it draws nothing or the font's missing-glyph box (what
    it draws for the unassigned U+0378), as for a code point newer than the font."""
    if font.getlength(emoji) > 1.05 * font.getlength(single):
        return "split"
    left, top, right, bottom = font.getbbox(emoji)
    if right <= left or bottom <= top:
        return "missing"
    return "missing" if np.array_equal(render(emoji, font), render(unassigned, font)) else "ok"


def render(emoji: str, font) -> np.ndarray:
    """One emoji on white, centred on the Noto canvas, downsampled to (STORE_PX, STORE_PX, 3) uint8 like OpenMoji's."""
    return openmoji_build.render(emoji, font, canvas=NOTO_CANVAS)


def content_hash(rows: list[dict]) -> str:
    """SHA-256 over every field and decoded pixel, in order (independent of the PNG encoder)."""
    return openmoji_build.content_hash(rows, fields=(*COLUMNS, "group", "subgroup"))


def build(out: str | Path | None = None, openmoji: str | Path | None = None, font_path: str | Path = NOTO_FONT) -> dict:
    """Render every OpenMoji test emoji with Noto; keep those it covers; write ``test.parquet`` + MANIFEST.json."""
    import datasets
    from PIL import Image

    font = load_font(font_path)
    source = Path(openmoji) if openmoji else repo_root() / "data" / "openmoji"
    test = datasets.Dataset.from_parquet(str(source / "test.parquet"))
    rows, dropped = [], {"split": [], "missing": []}
    for r in test:
        status = coverage(r["emoji"], font)
        if status != "ok":
            dropped[status].append(r["codepoints"])
            continue
        rows.append({**{k: r[k] for k in COLUMNS}, "group": r["group"], "subgroup": r["subgroup"],
                     "pixels": render(r["emoji"], font)})
    out = Path(out) if out else default_path()
    out.mkdir(parents=True, exist_ok=True)
    cols = {k: [r[k] for r in rows] for k in (*COLUMNS, "group", "subgroup")}
    cols["image"] = [{"bytes": _png(Image.fromarray(r["pixels"])), "path": None} for r in rows]
    datasets.Dataset.from_dict(cols, features=test.features).to_parquet(str(out / "test.parquet"))
    manifest = {"name": "noto-test", "of": "data/openmoji/test.parquet", "n_source": len(test), "n_rows": len(rows),
                "n_base_emoji": len({r["base"] for r in rows}), "dropped": {k: len(v) for k, v in dropped.items()},
                "dropped_codepoints": dropped, "content_sha256": content_hash(rows), "image_px": STORE_PX,
                "canvas_px": NOTO_CANVAS, "font": {"package": NOTO_PACKAGE, "version": _font_version(),
                                                  "sha256": hashlib.sha256(Path(font_path).read_bytes()).hexdigest()}}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf8")
    return manifest


def _font_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", NOTO_PACKAGE], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def counts_line(manifest: dict) -> str:
    """The datasheet's count sentence (data/README.md, between the ``noto`` markers), made from MANIFEST.json."""
    d = manifest["dropped_codepoints"]
    return (f"{manifest['n_rows']} of {manifest['n_source']} test emoji kept ({manifest['n_base_emoji']} distinct base "
            f"emoji); dropped: {len(d['split'])} that fall apart, {len(d['missing'])} it does not draw "
            f"({', '.join(d['split'] + d['missing']) or 'none'}).")


def update_datasheet(readme: Path, manifest: dict) -> None:
    from .publish import replace_block

    text = readme.read_text(encoding="utf8")
    readme.write_text(replace_block(text, "noto", counts_line(manifest)), encoding="utf8")


def load_noto(path: str | Path | None = None):
    """The shipped Noto test set: a ``datasets.Dataset`` with the OpenMoji test split's columns and labels."""
    import datasets

    file = (Path(path) if path else default_path()) / "test.parquet"
    if not file.exists():
        raise FileNotFoundError(f"{file} is missing: it ships with the repository (data/noto/); rebuild it with "
                                "`make data` (needs Debian's fonts-noto-color-emoji)")
    return datasets.Dataset.from_parquet(str(file))


def main(argv: list[str] | None = None) -> None:
    """``python -m mmkd_utils.noto build``: rebuild data/noto/ and the datasheet's counts line."""
    import sys

    if (sys.argv[1:] if argv is None else list(argv)) != ["build"]:
        raise SystemExit("usage: python -m mmkd_utils.noto build")
    m = build()
    update_datasheet(repo_root() / "data" / "README.md", m)
    print(f"Noto test set: {m['n_rows']} of {m['n_source']} test emoji kept; dropped {m['dropped']} -> data/noto/")


if __name__ == "__main__":
    main()
