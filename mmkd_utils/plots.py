"""Figures used across the course: training curves, reliability diagram, confusion matrix, results.

Each function draws on a given (or new) matplotlib axis and returns it, with a title and axis labels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _axis(ax=None, figsize=(5, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def training_curves(histories: dict, key: str = "val_acc", ax=None, title: str | None = None):
    """One line per run: ``histories`` maps a label to a ``train.History``. Introduced in notebook 04."""
    ax = _axis(ax)
    for label, hist in histories.items():
        ax.plot([e["epoch"] + 1 for e in hist.epochs], hist.column(key), label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title or f"{key.replace('_', ' ')} per epoch")
    ax.legend(fontsize=8)
    return ax


def reliability_diagram(calibration: dict, ax=None, title: str = "Reliability diagram"):
    """Accuracy vs confidence per bin, from ``evaluate.calibration``; the diagonal is perfect calibration.
    Introduced in notebook 08."""
    ax = _axis(ax)
    bins = calibration["bins"]
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    widths = [b["hi"] - b["lo"] for b in bins]
    ax.bar(centers, [b["accuracy"] for b in bins], width=widths, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(centers, [b["confidence"] for b in bins], "o", color="tab:red", label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max softmax probability)")
    ax.set_ylabel("accuracy in bin")
    ax.set_title(f"{title} (ECE = {calibration['ece']:.3f})")
    ax.legend(fontsize=8, loc="upper left")
    return ax


def confusion_matrix(matrix, class_names: Sequence[str], ax=None, title: str = "Confusion matrix", normalize: bool = True):
    """A confusion matrix (rows: true class, columns: predicted), row-normalised by default."""
    ax = _axis(ax, figsize=(6, 5))
    m = np.asarray(matrix, dtype=float)
    if normalize:
        m = m / np.clip(m.sum(1, keepdims=True), 1, None)
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, label="share of the true class" if normalize else "count")
    return ax


def results_bars(table: Sequence[dict], ax=None, title: str = "Test accuracy (mean ± std over seeds)"):
    """Horizontal bars of mean test accuracy with std error bars, one per (model, method) row of a results table."""
    ax = _axis(ax, figsize=(7, 0.35 * len(table) + 1.2))
    labels = [f"{e['model']} · {e['method']}" for e in table]
    means = [100 * e["accuracy_mean"] for e in table]
    stds = [100 * e["accuracy_std"] for e in table]
    y = np.arange(len(table))[::-1]
    ax.barh(y, means, xerr=stds, color=["tab:gray" if e["model"].startswith("teacher") else "tab:blue" for e in table],
            capsize=3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("test accuracy (%)")
    ax.set_xlim(max(0, min(means) - 10), min(100, max(means) + 5))
    ax.set_title(title)
    return ax
