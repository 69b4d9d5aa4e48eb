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


def write_csv(path: Path, rows: list[dict], drop: str | None = None) -> None:
    with path.open("w", newline="", encoding="utf8") as f:
        writer = csv.DictWriter(f, [c for c in rows[0] if c != drop], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_folder(folder: Path, n: int = 20, with_split: bool = False, drop: str | None = None,
                 file_column: str = "file", prefix: str = "", start: int = 0, metadata: bool = True) -> list[dict]:
    """n solid-colour PNGs (in folder/prefix) and a metadata.csv; returns the rows written."""
    (folder / prefix).mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    rows = []
    for i in range(start, start + n):
        label = names[i % 3]
        Image.new("RGB", (10, 12), COLOURS[label]).save(folder / prefix / f"img{i}.png")
        row = {file_column: f"{prefix}img{i}.png", "text": f"a {label} square number {i}", "label": label}
        if with_split:
            row["split"] = SPLITS[i % 3]
        rows.append(row)
    if metadata:
        write_csv(folder / "metadata.csv", rows, drop)
    return rows


def _check_rows(ds, rows, label="label"):
    assert set(ds) == set(SPLITS)
    assert list(ds["train"].features) == ["image", "text", label]
    assert mdata.label_columns(ds) == [label] and mdata.modalities(ds) == ("image", "text")
    assert ds["train"].features[label].names == ["blue", "green", "red"]  # sorted label strings
    by_text = {r["text"]: r for r in rows}
    seen = []
    for s in SPLITS:
        for r in ds[s]:
            want = by_text[r["text"]]
            assert ds[s].features[label].names[r[label]] == want["label"]
            assert r["image"].mode == "RGB" and r["image"].size == (10, 12)
            assert r["image"].getpixel((3, 3)) == COLOURS[want["label"]]
            seen.append(r["text"])
    assert sorted(seen) == sorted(by_text)


FILE_COLUMNS = pytest.mark.parametrize("file_column", ["file", "file_name"])  # by hand / via load_dataset


@FILE_COLUMNS
def test_load_image_folder_random_split(tmp_path, file_column):
    rows = write_folder(tmp_path, n=20, file_column=file_column)
    ds = mdata.load_image_folder(tmp_path)
    _check_rows(ds, rows)
    assert [ds[s].num_rows for s in SPLITS] == [14, 3, 3]  # 70 / 15 / 15 % of 20


@FILE_COLUMNS
def test_load_image_folder_with_split_column(tmp_path, file_column):
    rows = write_folder(tmp_path, n=9, with_split=True, file_column=file_column)
    ds = mdata.load_image_folder(tmp_path)
    _check_rows(ds, rows)
    for s in SPLITS:
        assert sorted(ds[s]["text"]) == sorted(r["text"] for r in rows if r["split"] == s)


def test_load_image_folder_hf_split_subfolders_each_with_metadata(tmp_path):
    rows = {s: write_folder(tmp_path / s, n=n, file_column="file_name", start=10 * k)
            for k, (s, n) in enumerate(zip(SPLITS, (6, 3, 3)))}
    ds = mdata.load_image_folder(tmp_path)
    _check_rows(ds, [r for s in SPLITS for r in rows[s]])
    for s in SPLITS:
        assert sorted(ds[s]["text"]) == sorted(r["text"] for r in rows[s])


def test_load_image_folder_hf_split_subfolders_with_one_root_metadata(tmp_path):
    rows = {s: write_folder(tmp_path, n=n, file_column="file_name", prefix=f"{s}/", start=10 * k, metadata=False)
            for k, (s, n) in enumerate(zip(SPLITS, (6, 3, 3)))}
    write_csv(tmp_path / "metadata.csv", [r for s in SPLITS for r in rows[s]])
    ds = mdata.load_image_folder(tmp_path)
    _check_rows(ds, [r for s in SPLITS for r in rows[s]])
    for s in SPLITS:
        assert sorted(ds[s]["text"]) == sorted(r["text"] for r in rows[s])


def test_load_image_folder_copies_the_images_in(tmp_path):
    write_folder(tmp_path / "f", n=6, file_column="file_name")
    ds = mdata.load_image_folder(tmp_path / "f")
    for p in (tmp_path / "f").iterdir():
        p.unlink()
    assert ds["test"][0]["image"].size == (10, 12)


@FILE_COLUMNS
def test_load_image_folder_without_text_is_image_only(tmp_path, file_column):
    write_folder(tmp_path, n=6, drop="text", file_column=file_column)
    ds = mdata.load_image_folder(tmp_path)
    assert list(ds["train"].features) == ["image", "label"] and mdata.modalities(ds) == ("image",)


def test_load_image_folder_several_label_columns_keep_their_names(tmp_path):
    rows = write_folder(tmp_path, n=8, file_column="file_name", metadata=False)
    for i, r in enumerate(rows):
        r["category"], r["size"], r["score"] = r.pop("label"), (2, 10)[i % 2], i / 10
    write_csv(tmp_path / "metadata.csv", rows)
    ds = mdata.load_image_folder(tmp_path, label_column=["category", "size"])
    assert list(ds["train"].features) == ["image", "text", "category", "size"]  # score dropped
    assert mdata.label_columns(ds) == ["category", "size"]
    assert ds["train"].features["size"].names == ["2", "10"]  # integers sorted as numbers
    for r in (r for s in SPLITS for r in ds[s]):
        i = int(r["text"].split()[-1])
        assert ds["train"].features["size"].int2str(r["size"]) == str((2, 10)[i % 2])
        assert ds["train"].features["category"].int2str(r["category"]) == rows[i]["category"]


def test_load_image_folder_without_metadata(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        mdata.load_image_folder(tmp_path)


@FILE_COLUMNS
def test_load_image_folder_without_label_column(tmp_path, file_column):
    write_folder(tmp_path, n=3, drop="label", file_column=file_column)
    with pytest.raises(ValueError, match=rf"no 'label' column \(it has \['{file_column}', 'text'\]\).*label_column"):
        mdata.load_image_folder(tmp_path)


def test_load_image_folder_without_a_file_column(tmp_path):
    write_folder(tmp_path, n=3, file_column="path")
    with pytest.raises(ValueError, match="no 'file_name or file' column.*file_column"):
        mdata.load_image_folder(tmp_path)
    assert mdata.load_image_folder(tmp_path, file_column="path", fractions=(1 / 3,) * 3)


def test_load_image_folder_refuses_fractional_labels(tmp_path):
    rows = write_folder(tmp_path, n=6, file_column="file_name", metadata=False)
    for i, r in enumerate(rows):
        r["label"] = f"0.{37 + i}"
    write_csv(tmp_path / "metadata.csv", rows)
    with pytest.raises(ValueError, match="'label' holds values like 0.37, not categories"):
        mdata.load_image_folder(tmp_path)
    write_csv(tmp_path / "metadata.csv", [dict(r, label=i % 2 if i != 3 else "") for i, r in enumerate(rows)])
    with pytest.raises(ValueError, match="'label' holds values like None, not categories.*rows without one"):
        mdata.load_image_folder(tmp_path)


def test_load_image_folder_refuses_all_distinct_labels(tmp_path):
    rows = write_folder(tmp_path, n=21, file_column="file_name", metadata=False)
    write_csv(tmp_path / "metadata.csv", [dict(r, label=f"item {i}") for i, r in enumerate(rows)])
    with pytest.raises(ValueError, match="each of the 21 rows has its own 'label' value.*not a category"):
        mdata.load_image_folder(tmp_path)
    write_csv(tmp_path / "metadata.csv", [dict(r, label=f"item {i}") for i, r in enumerate(rows[:20])])
    assert len(mdata.load_image_folder(tmp_path)["train"].features["label"].names) == 20  # ≤ 20 rows: allowed


@FILE_COLUMNS
def test_load_image_folder_with_one_image(tmp_path, file_column):
    write_folder(tmp_path, n=1, file_column=file_column)
    with pytest.raises(ValueError, match=r"1 row\(s\) are too few.*at least 6 are needed"):
        mdata.load_image_folder(tmp_path)


def test_load_image_folder_random_split_with_an_empty_split(tmp_path):
    write_folder(tmp_path, n=10, file_column="file_name")
    with pytest.raises(ValueError, match=r"10 row\(s\) are too few.*fractions \(0.9, 0.05, 0.05\).*"
                                         r"validation split would be empty.*at least 16 are needed"):
        mdata.load_image_folder(tmp_path, fractions=(0.9, 0.05, 0.05))


def test_load_image_folder_split_column_may_leave_a_split_empty(tmp_path):  # as notebook 00's three shapes do
    write_folder(tmp_path, n=2, with_split=True, file_column="file_name")  # train, validation only
    ds = mdata.load_image_folder(tmp_path)
    assert [ds[s].num_rows for s in SPLITS] == [1, 1, 0]
    assert ds["test"].features == ds["train"].features


@FILE_COLUMNS
def test_load_image_folder_with_a_corrupt_image(tmp_path, file_column):
    write_folder(tmp_path, n=3, file_column=file_column)
    (tmp_path / "img1.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"row 3 of .*cannot read image .*img1\.png"):
        mdata.load_image_folder(tmp_path)


@FILE_COLUMNS
def test_load_image_folder_with_empty_text(tmp_path, file_column):
    rows = write_folder(tmp_path, n=3, file_column=file_column)
    rows[2]["text"] = ""
    write_csv(tmp_path / "metadata.csv", rows)
    with pytest.raises(ValueError, match="row 4 of .*non-empty string"):
        mdata.load_image_folder(tmp_path)


# ----------------------------------------------------------------- label columns, modalities
def test_label_columns_modalities_and_check_label_column(openmoji):
    assert mdata.label_columns(openmoji) == mdata.label_columns(openmoji["train"]) == ["group", "subgroup"]
    assert mdata.modalities(openmoji) == ("image", "text")
    assert mdata.modalities(openmoji["train"].remove_columns("image")) == ("text",)
    mdata.check_label_column(openmoji, "group")
    with pytest.raises(ValueError, match=r"no column 'label'.*\['group', 'subgroup'\].*--label COLUMN"):
        mdata.check_label_column(openmoji, "label")
    with pytest.raises(ValueError, match=r"'base' is not categorical.*\['group', 'subgroup'\].*--label COLUMN"
                                         r".*class_encode_column\('base'\)"):
        mdata.check_label_column(openmoji["train"], "base")


# ------------------------------------------------------------------------- Hugging Face datasets
def test_load_hf_local_parquet_renames_and_carves_splits(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"name {i}" for i in range(40)]
    pq.write_table(pa.table({"caption": names, "kind": [("cat", "dog")[i % 2] for i in range(40)]}),
                   tmp_path / "rows.parquet")
    ds = mdata.load_hf("parquet", image_column=None, text_column="caption", label_column="kind",
                       data_files={"train": str(tmp_path / "rows.parquet")})
    assert [ds[s].num_rows for s in SPLITS] == [28, 6, 6]
    assert set(ds["train"].column_names) == {"text", "label"}
    assert mdata.label_columns(ds) == ["label"] and ds["test"].features["label"].names == ["cat", "dog"]
    assert mdata.modalities(ds) == ("text",)
    for s in SPLITS:
        for r in ds[s]:
            assert ds[s].features["label"].int2str(r["label"]) == ("cat", "dog")[int(r["text"].split()[-1]) % 2]
    assert sorted(t for s in SPLITS for t in ds[s]["text"]) == sorted(names)
    with pytest.raises(ValueError, match=r"has no column\(s\) \['label'\]; it has \['caption', 'kind'\]"):
        mdata.load_hf("parquet", image_column=None, text_column="caption",
                      data_files={"train": str(tmp_path / "rows.parquet")})


def test_load_hf_local_imagefolder_with_a_test_split(tmp_path):
    for k, (s, n) in enumerate((("train", 20), ("test", 3))):
        write_folder(tmp_path / s, n=n, file_column="file_name", start=100 * k)
    ds = mdata.load_hf("imagefolder", data_dir=str(tmp_path), text_column="text", label_column="label")
    assert [ds[s].num_rows for s in SPLITS] == [16, 4, 3]  # validation: 0.15 / 0.85 of train's 20 rows
    assert ds["train"][0]["image"].size == (10, 12)
    assert sorted(ds["test"]["text"])[0] == "a blue square number 101"


# ---------------------------------------------------------------------------------- digits
def test_load_digits_dataset():
    from mmkd_utils.classic import load_digits_dataset

    ds = load_digits_dataset()
    assert sum(ds[s].num_rows for s in SPLITS) == 1797
    assert ds["train"].features["label"].names == [str(d) for d in range(10)]
    assert set().union(*(set(ds[s]["label"]) for s in SPLITS)) == set(range(10))
    image = ds["test"][0]["image"]
    assert image.size == (8, 8) and image.mode == "L"
