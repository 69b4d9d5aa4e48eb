"""Data regimes and row operations on ``TensorData`` (a dict of tensors, one row per example).

Introduced in notebook 05: how few labels, wrong labels, held-out folds and a transfer set are made,
seeded so that every run of an experiment sees the same rows.

- ``corrupt_labels``: flip a share of the labels, hide all but a share (label -1 = unlabelled).
- ``folds_by_group`` / ``folds_by_row``: K folds for cross-fitting, keeping near-duplicates together.
- ``transfer_vocabulary``: generic words from a tokenizer's vocabulary, for a text transfer set.
- ``labelled_only`` and ``append_rows``: select and join rows.
"""
from __future__ import annotations

from typing import Mapping

import torch

TensorData = dict  # dict[str, torch.Tensor], every tensor with the same first dimension


def corrupt_labels(labels: torch.Tensor, num_classes: int, label_fraction: float = 1.0, noise: float = 0.0,
                   seed: int = 0) -> torch.Tensor:
    """Simulate the data regimes: flip a ``noise`` share of labels to another class (uniformly), then
    hide all but a ``label_fraction`` share (set to -1). Seeded, so every run sees the same rows."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    labels = labels.clone()
    n = labels.shape[0]
    if noise > 0:
        flip = torch.randperm(n, generator=gen)[: round(noise * n)]
        offset = torch.randint(1, num_classes, (flip.shape[0],), generator=gen)
        labels[flip] = (labels[flip] + offset) % num_classes
    if label_fraction < 1:
        hidden = torch.randperm(n, generator=gen)[round(label_fraction * n):]
        labels[hidden] = -1
    return labels


def folds_by_group(groups: list, k: int, seed: int = 0) -> torch.Tensor:
    """A fold id in [0, k) for every row, with all rows of a group (a base emoji and its skin-tone
    variants, near-duplicates) in the same fold; groups are dealt to folds in a seeded random order."""
    if k < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got k={k}")
    names = list(dict.fromkeys(groups))
    if len(names) < k:
        raise ValueError(f"{len(names)} group(s) cannot fill {k} folds: use fewer folds (--crossfit)")
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(20_000 + seed)).tolist()
    fold_of = {names[i]: rank % k for rank, i in enumerate(order)}
    return torch.tensor([fold_of[g] for g in groups], dtype=torch.long)


def folds_by_row(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Row-level folds, for data without a grouping column: every row is its own group."""
    return folds_by_group(list(range(n)), k, seed)


def transfer_vocabulary(tokenizer, n: int, seed: int = 0) -> list[str]:
    """``n`` words drawn (seeded) from a Hugging Face tokenizer's vocabulary: whole lower-case ASCII words
    of at least 3 letters — generic English, chosen without looking at any split of the data."""
    words = sorted(w for w in tokenizer.get_vocab() if w.isascii() and w.isalpha() and w.islower() and len(w) >= 3)
    if n > len(words):
        raise ValueError(f"transfer_words={n} but the tokenizer's vocabulary has only {len(words)} such words")
    pick = torch.randperm(len(words), generator=torch.Generator().manual_seed(30_000 + seed))[:n]
    return [words[i] for i in sorted(pick.tolist())]


def labelled_only(split: Mapping[str, torch.Tensor]) -> TensorData:
    """The rows of a ``TensorData`` split that have a label (label ≥ 0)."""
    keep = split["label"] >= 0
    return {k: v[keep] for k, v in split.items()}


def append_rows(data: Mapping[str, torch.Tensor], extra: Mapping[str, torch.Tensor]) -> TensorData:
    """The columns of ``extra`` with its rows after those of ``data``; token ids (``text_ids``, padded with
    id 0) are widened to the longer of the two. Columns of ``data`` that ``extra`` lacks are dropped."""
    out = {}
    for k, more in extra.items():
        base = data[k]
        if k == "text_ids":
            width = max(base.shape[1], more.shape[1])
            base, more = (torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in (base, more))
        out[k] = torch.cat([base, more])
    return out
