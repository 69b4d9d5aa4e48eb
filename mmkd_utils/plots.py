"""Figures used across the course: training curves, reliability diagram, confusion matrix, results.

Each function draws on a given (or new) matplotlib axis and returns it, with a title and axis labels.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _axis(ax=None, figsize=(5, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def training_curves(histories: Mapping, key: str = "val_acc", ax=None, title: str | None = None,
                    mark_best: bool = True):
    """One line per run of ``key`` against the epoch (counted from 1); ``histories`` maps a label to a
    ``train.History``. With ``mark_best`` each line gets a star at its ``History.best_epoch``, the epoch
    whose weights ``fit`` kept (chosen on the validation split), and the legend names that epoch.
    Introduced in notebook 04."""
    if not isinstance(histories, Mapping) or not histories:
        raise TypeError("histories must be a non-empty dict {label: History}, e.g. {'teacher': history}; "
                        f"got {type(histories).__name__}")
    ax = _axis(ax)
    for label, hist in histories.items():
        rows = [e for e in hist.epochs if key in e]  # e.g. no val_acc in a run without a validation split
        if not rows:
            available = sorted({k for e in hist.epochs for k in e if k != "epoch"})
            raise KeyError(f"history {label!r} has no {key!r} in any epoch; its keys are {available}"
                           + (" (val_* needs fit(..., val=...))" if key.startswith("val_") else ""))
        x, y = [e["epoch"] + 1 for e in rows], [e[key] for e in rows]
        best = [e for e in rows if e["epoch"] == hist.best_epoch] if mark_best else []
        legend = f"{label} (best: epoch {hist.best_epoch + 1})" if best else label
        (line,) = ax.plot(x, y, label=legend)
        if best:
            ax.plot(best[0]["epoch"] + 1, best[0][key], "*", color=line.get_color(), markersize=13,
                    markeredgecolor="black", zorder=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title or f"{key.replace('_', ' ')} per epoch" + (" (★ best validation epoch)" if mark_best else ""))
    ax.legend(fontsize=8)
    return ax


def reliability_diagram(calibration: dict, ax=None, title: str = "Reliability diagram"):
    """Accuracy vs confidence per bin, from ``evaluate.calibration``; the diagonal is perfect calibration.
    Introduced in notebook 04 (the teacher), used again in 08."""
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
    """A confusion matrix (rows: true class, columns: predicted), row-normalised by default. Introduced in
    notebook 04."""
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
