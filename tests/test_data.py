"""mmkd_utils.data: the shipped OpenMoji data, the torch dataset, your-own-folder loading, digits."""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmkd_utils import data as mdata
from mmkd_utils import openmoji as mopenmoji

from conftest import OPENMOJI_DIR, REPO_ROOT

SPLITS = ("train", "validation", "test")


# ------------------------------------------------------------------ the datasheet's counts table
def datasheet_counts() -> dict:
    """Parse the generated block of data/README.md into {summary numbers, per-group and base counts}."""
    text = (REPO_ROOT / "data" / "README.md").read_text(encoding="utf8")
    block = re.search(r"<!-- counts:start -->(.*?)<!-- counts:end -->", text, re.S)
    assert block, "data/README.md lacks its <!-- counts:start --> ... <!-- counts:end --> block"
    block = block.group(1)
    summary = re.search(r"(\d+) image–name pairs, (\d+) distinct base emoji, (\d+) groups, (\d+) subgroups", block)
    assert summary, "the datasheet's summary line is missing or reworded"
    rows = [line for line in block.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["group", *SPLITS, "total"], header
    table = {}
    for line in rows[2:]:  # skip the header and the |---| line
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        table[cells[0]] = dict(zip([*SPLITS, "total"], map(int, cells[1:])))
    n_rows, n_bases, n_groups, n_subgroups = map(int, summary.groups())
    return {"n_rows": n_rows, "n_bases": n_bases, "n_groups": n_groups, "n_subgroups": n_subgroups,
            "table": table}


def test_splits_and_row_counts_match_manifest_and_datasheet(openmoji, manifest):
    sheet = datasheet_counts()
    assert set(openmoji) == set(SPLITS)
    for s in SPLITS:
        assert openmoji[s].num_rows == manifest["splits"][s] == sheet["table"]["all"][s], s
    total = sum(openmoji[s].num_rows for s in SPLITS)
    assert total == manifest["n_rows"] == sheet["n_rows"] == sheet["table"]["all"]["total"]


def test_group_counts_match_manifest_and_datasheet(openmoji, manifest):
    sheet = datasheet_counts()
    for s in SPLITS:
        names = openmoji[s].features["group"].names
        counts = Counter(names[g] for g in openmoji[s]["group"])
        assert counts == Counter(manifest["group_counts"][s]), s
        assert counts == Counter({g: sheet["table"][g][s] for g in manifest["groups"]}), s
    for g in manifest["groups"]:
        assert sum(sheet["table"][g][s] for s in SPLITS) == sheet["table"][g]["total"], g


def test_distinct_base_counts_match_manifest_and_datasheet(openmoji, manifest):
    sheet = datasheet_counts()
    bases = {s: set(openmoji[s]["base"]) for s in SPLITS}
    for s in SPLITS:
        assert len(bases[s]) == manifest["base_per_split"][s] == sheet["table"]["distinct base emoji"][s], s
    assert len(set().union(*bases.values())) == manifest["n_base_emoji"] == sheet["n_bases"]


def test_no_base_emoji_in_two_splits(openmoji):
    bases = {s: set(openmoji[s]["base"]) for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            shared = bases[a] & bases[b]
            assert not shared, f"base emoji in both {a} and {b}: {sorted(shared)[:5]}"


def test_base_is_the_emoji_without_skin_tones(openmoji):
    split = openmoji["train"]
    for emoji, base in zip(split["emoji"], split["base"]):
        assert base == "".join(ch for ch in emoji if not 0x1F3FB <= ord(ch) <= 0x1F3FF and ch != "\ufe0f")


def test_nine_groups_and_98_subgroups(openmoji, manifest):
    sheet = datasheet_counts()
    for s in SPLITS:
        assert len(openmoji[s].features["group"].names) == 9
        assert len(openmoji[s].features["subgroup"].names) == 98
    used_groups = set().union(*(set(openmoji[s]["group"]) for s in SPLITS))
    used_subgroups = set().union(*(set(openmoji[s]["subgroup"]) for s in SPLITS))
    assert len(used_groups) == 9 == sheet["n_groups"] == len(manifest["groups"])
    assert len(used_subgroups) == 98 == sheet["n_subgroups"] == manifest["n_subgroups"]


def test_images_are_64px_rgb_and_texts_non_empty(openmoji):
    for s in SPLITS:
        for image in openmoji[s]["image"]:
            assert image.size == (64, 64) and image.mode == "RGB"
        for text in openmoji[s]["text"]:
            assert isinstance(text, str) and text.strip()


def test_data_files_total_at_most_30_mb():
    total = sum(p.stat().st_size for p in OPENMOJI_DIR.iterdir() if p.is_file())
    assert total <= 30 * 2**20, f"data/openmoji holds {total / 2**20:.1f} MiB"


def _rows_as_built(openmoji, order: list[str]) -> list[dict]:
    """The shipped parquet rows, in the build's order, as content_hash expects them."""
    by_codepoints = {}
    for s in SPLITS:
        split = openmoji[s]
        groups, subgroups = split.features["group"].names, split.features["subgroup"].names
        for r in split:
            by_codepoints[r["codepoints"]] = dict(
                codepoints=r["codepoints"], text=r["text"], text_zh=r["text_zh"], group=groups[r["group"]],
                subgroup=subgroups[r["subgroup"]], base=r["base"], split=s, pixels=np.asarray(r["image"]))
    assert sorted(by_codepoints) == sorted(order)
    return [by_codepoints[c] for c in order]


def test_rebuild_is_deterministic_and_equals_the_shipped_files(openmoji, manifest):
    rows = mopenmoji.build_rows()  # renders every emoji again (~15 s)
    assert mopenmoji.content_hash(rows) == manifest["content_sha256"]
    shipped = _rows_as_built(openmoji, [r["codepoints"] for r in rows])
    assert mopenmoji.content_hash(shipped) == manifest["content_sha256"]


def test_load_openmoji_without_data_names_make_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data"):
        mdata.load_openmoji(tmp_path)


# ------------------------------------------------------------------------ the torch dataset
@pytest.fixture(scope="module")
def small_split(openmoji):
    return openmoji["train"].select(range(8))


def test_image_only_batch(small_split):
    ds = mdata.MultimodalDataset(small_split, {"image": mdata.image_modality(size=32)}, label="group")
    batch = next(iter(ds.loader(batch_size=4)))
    assert set(batch) == {"image", "label", "index"}
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].tolist() == small_split["group"][:4]
    assert batch["index"].tolist() == [0, 1, 2, 3]


def test_image_transform_normalises_with_imagenet_statistics():
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    x = mdata.ImageTransform(size=16)(white)  # (3, 16, 16)
    expected = [(1 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    assert x.shape == (3, 16, 16)
    assert torch.allclose(x[:, 0, 0], torch.tensor(expected), atol=1e-6)
    raw = mdata.ImageTransform(size=16, normalize=False)(Image.new("L", (8, 8), 51))
    assert raw.shape == (3, 16, 16) and torch.allclose(raw, torch.full_like(raw, 0.2))


def test_text_only_batch_keeps_strings_without_tokenizer(small_split):
    ds = mdata.MultimodalDataset(small_split, {"text": mdata.text_modality()}, label="subgroup")
    batch = ds.collate([ds[i] for i in range(3)])
    assert set(batch) == {"text", "label", "index"}
    assert batch["text"] == small_split["text"][:3]
    assert batch["label"].tolist() == small_split["subgroup"][:3]


def test_text_batch_with_a_real_tokenizer(small_split, text_encoder):
    tokenizer = text_encoder.tokenizer
    ds = mdata.MultimodalDataset(small_split, {"text": mdata.text_modality(tokenizer, max_length=16)},
                                 label="group")
    batch = next(iter(ds.loader(batch_size=5)))
    ids, mask = batch["text"]["input_ids"], batch["text"]["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 5 and ids.shape[1] <= 16
    first = tokenizer(small_split["text"][0])["input_ids"]
    assert ids[0, :len(first)].tolist() == first  # the first name fits in 16 tokens
    assert mask.sum(1).tolist() == [min(len(tokenizer(t)["input_ids"]), 16) for t in small_split["text"][:5]]


def test_image_text_and_a_custom_modality_together(small_split):
    modalities = {"image": mdata.image_modality(size=24), "text": mdata.text_modality(),
                  "emoji_str": mdata.Modality(column="emoji")}
    ds = mdata.MultimodalDataset(small_split, modalities, label="group")
    batch = next(iter(ds.loader(batch_size=8)))
    assert set(batch) == {"image", "text", "emoji_str", "label", "index"}
    assert batch["image"].shape == (8, 3, 24, 24)
    assert batch["text"] == small_split["text"]
    assert batch["emoji_str"] == small_split["emoji"]


def test_modality_on_a_missing_column_is_refused(small_split):
    with pytest.raises(ValueError, match="'audio'.*lacks"):
        mdata.MultimodalDataset(small_split, {"sound": mdata.Modality(column="audio")}, label="group")


def test_missing_label_column_is_refused(small_split):
    with pytest.raises(ValueError, match="label column 'label' not in the dataset"):
        mdata.MultimodalDataset(small_split, {"text": mdata.text_modality()})  # OpenMoji has group/subgroup


def test_empty_text_is_refused_at_collate():
    with pytest.raises(ValueError, match="non-empty string"):
        mdata.text_modality().collate(["a cat", "  "])


def test_image_transform_refuses_non_pil_input():
    with pytest.raises(TypeError, match="expected a PIL image, got ndarray"):
        mdata.ImageTransform()(np.zeros((8, 8, 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_image_transform_refuses_unsupported_modes(mode):
    with pytest.raises(ValueError, match=f"image mode '{re.escape(mode)}' is not supported"):
        mdata.ImageTransform()(Image.new(mode, (8, 8)))


# ------------------------------------------------------------------------- your own folder
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def write_folder(folder: Path, n: int = 20, with_split: bool = False, drop: str | None = None) -> list[dict]:
    """n solid-colour PNGs and a metadata.csv; returns the rows written."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        label = names[i % 3]
        Image.new("RGB", (10, 12), COLOURS[label]).save(folder / f"img{i}.png")
        row = {"file": f"img{i}.png", "text": f"a {label} square number {i}", "label": label}
        if with_split:
            row["split"] = SPLITS[i % 3]
        rows.append(row)
    columns = [c for c in rows[0] if c != drop]
    with (folder / "metadata.csv").open("w", newline="", encoding="utf8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _check_rows(ds, rows):
    assert set(ds) == set(SPLITS)
    assert ds["train"].features["label"].names == ["blue", "green", "red"]  # sorted label strings
    by_text = {r["text"]: r for r in rows}
    seen = []
    for s in SPLITS:
        for r in ds[s]:
            want = by_text[r["text"]]
            assert ds[s].features["label"].names[r["label"]] == want["label"]
            assert r["image"].mode == "RGB" and r["image"].size == (10, 12)
            assert r["image"].getpixel((3, 3)) == COLOURS[want["label"]]
            seen.append(r["text"])
    assert sorted(seen) == sorted(by_text)


def test_load_image_folder_random_split(tmp_path):
    rows = write_folder(tmp_path, n=20)
    ds = mdata.load_image_folder(tmp_path)
    _check_rows(ds, rows)
    assert [ds[s].num_rows for s in SPLITS] == [14, 3, 3]  # 70 / 15 / 15 % of 20


def test_load_image_folder_with_split_column(tmp_path):
    rows = write_folder(tmp_path, n=9, with_split=True)
    ds = mdata.load_image_folder(tmp_path)
    _check_rows(ds, rows)
    for s in SPLITS:
        assert sorted(ds[s]["text"]) == sorted(r["text"] for r in rows if r["split"] == s)


def test_load_image_folder_without_metadata(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        mdata.load_image_folder(tmp_path)


def test_load_image_folder_without_label_column(tmp_path):
    write_folder(tmp_path, n=3, drop="label")
    with pytest.raises(ValueError, match="no 'label' column"):
        mdata.load_image_folder(tmp_path)


def test_load_image_folder_with_a_corrupt_image(tmp_path):
    write_folder(tmp_path, n=3)
    (tmp_path / "img1.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"row 3 of .*cannot read image .*img1\.png"):
        mdata.load_image_folder(tmp_path)


def test_load_image_folder_with_empty_text(tmp_path):
    rows = write_folder(tmp_path, n=3)
    rows[2]["text"] = ""
    with (tmp_path / "metadata.csv").open("w", newline="", encoding="utf8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match="row 4 of .*non-empty string"):
        mdata.load_image_folder(tmp_path)


# ---------------------------------------------------------------------------------- digits
def test_load_digits_dataset():
    ds = mdata.load_digits_dataset()
    assert sum(ds[s].num_rows for s in SPLITS) == 1797
    assert ds["train"].features["label"].names == [str(d) for d in range(10)]
    assert set().union(*(set(ds[s]["label"]) for s in SPLITS)) == set(range(10))
    image = ds["test"][0]["image"]
    assert image.size == (8, 8) and image.mode == "L"
