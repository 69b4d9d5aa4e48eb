"""Evaluation: one table for teacher and students alike (introduced in notebook 07).

Accuracy, macro-F1, the classification report and confusion matrix; top-1 agreement and KL with the
teacher (fidelity, Stanton et al. 2021); expected calibration error; parameter count, size on disk,
CPU latency and throughput at batch 1 and 64; accuracy when a modality is missing at test time;
temperature scaling, t and bootstrap intervals (notebook 07).
"""
from __future__ import annotations

import statistics
import time
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import count_parameters
from .train import predict


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{what}: {a.shape[0]} rows vs {b.shape[0]}; evaluate both on the same examples")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    _check_pair(logits, labels, "accuracy")
    return (logits.argmax(1) == labels).float().mean().item()


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """Accuracy, macro-F1, sklearn's classification report (dict) and the confusion matrix."""
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    _check_pair(logits, labels, "classification_metrics")
    pred, true = logits.argmax(1).numpy(), labels.numpy()
    n = logits.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for {n} classes")
    return {
        "accuracy": float((pred == true).mean()),
        "macro_f1": float(f1_score(true, pred, average="macro", labels=list(range(n)), zero_division=0)),
        "report": classification_report(true, pred, labels=list(range(n)), target_names=names,
                                         output_dict=True, zero_division=0),
        "confusion": confusion_matrix(true, pred, labels=list(range(n))),
    }


def agreement_with_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> dict:
    """Top-1 agreement and mean KL(teacher ‖ student) at T=1 (fidelity, not accuracy)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}: "
                         "teacher and student must predict the same classes for the same examples")
    kl = F.kl_div(student_logits.log_softmax(1), teacher_logits.log_softmax(1), log_target=True, reduction="batchmean")
    return {"agreement": (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item(),
            "kl_to_teacher": kl.item()}


def calibration(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Expected calibration error (equal-width confidence bins) and the per-bin data of a reliability diagram."""
    _check_pair(logits, labels, "calibration")
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    bins = []
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            acc, avg_conf, share = correct[inside].mean().item(), conf[inside].mean().item(), inside.float().mean().item()
            ece += share * abs(acc - avg_conf)
            bins.append({"lo": lo.item(), "hi": hi.item(), "accuracy": acc, "confidence": avg_conf, "count": int(inside.sum())})
    return {"ece": ece, "bins": bins}


def size_on_disk(model: nn.Module) -> int:
    """Bytes of the model's weights serialised as safetensors."""
    from safetensors.torch import save

    return len(save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))


def first_rows(data: Mapping[str, torch.Tensor], keys: Sequence[str]):
    """A batch maker for ``latency``: the first ``bs`` rows of the given tensor columns."""
    return lambda bs: {k: data[k][:bs] for k in keys}


LATENCY_THREADS = 1  # latency is measured on one core: comparable across machines and runs


@torch.no_grad()
def latency(model: nn.Module, make_batch, batch_sizes: Sequence[int] = (1, 64), repeats: int = 20,
            warmup: int = 3, threads: int | None = LATENCY_THREADS) -> dict:
    """Median CPU latency (ms per batch) and throughput (examples/s) at each batch size, on ``threads``
    CPU threads (one by default; None keeps the current setting).

    ``make_batch(bs)`` returns the model's input dict for ``bs`` examples (see ``first_rows``).
    """
    model = model.eval().cpu()
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _timed(model, make_batch, batch_sizes, repeats, warmup)
    finally:
        torch.set_num_threads(previous)


def _timed(model: nn.Module, make_batch, batch_sizes: Sequence[int], repeats: int, warmup: int) -> dict:
    out = {}
    for bs in batch_sizes:
        inputs = make_batch(bs)
        for _ in range(warmup):
            model(inputs)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(inputs)
            times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1000
        out[f"latency_ms_b{bs}"] = ms
        out[f"throughput_b{bs}"] = bs / (ms / 1000)
    return out


def missing_modality_accuracy(model: nn.Module, data: Mapping[str, torch.Tensor]) -> dict:
    """For a model over several modalities: accuracy with each one removed at test time
    (its features replaced by zeros), keyed ``acc_without_<input key>``."""
    inputs = getattr(model, "inputs", ())
    if len(inputs) < 2:
        return {}
    labels = data["label"]
    return {f"acc_without_{k}": accuracy(predict(model, data, drop={k}), labels) for k in inputs}


def evaluate(model: nn.Module, data: Mapping[str, torch.Tensor], teacher_logits: torch.Tensor | None = None,
             class_names: Sequence[str] | None = None, timing: bool = True) -> dict:
    """Every metric of the course's evaluation table for one model on one split."""
    logits = predict(model, data, device="cpu")
    labels = data["label"]
    metrics = classification_metrics(logits, labels, class_names)
    row = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
           "ece": calibration(logits, labels)["ece"], "params": count_parameters(model),
           "size_mb": size_on_disk(model) / 1e6}
    if teacher_logits is not None:
        row.update(agreement_with_teacher(logits, teacher_logits))
    if timing:
        row.update(latency(model, first_rows(data, getattr(model, "inputs", list(data)))))
    row.update(missing_modality_accuracy(model, data))
    return row


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Mean ± std of a − b over paired runs (same seeds), how many stds the mean is from 0 (``z``; None when
    the std is 0, e.g. for a single seed), and the paired t-interval ``low``–``high`` at ``level`` (None for
    one seed). Judge it with ``verdict``."""
    if len(a) != len(b):
        raise ValueError(f"paired runs need the same seeds on both sides: {len(a)} vs {len(b)} values")
    diff = np.asarray(a) - np.asarray(b)
    mean, std = summarize(diff)
    out = {"mean": mean, "std": std, "n": len(diff), "z": mean / std if std > 0 else None}
    interval = paired_interval(out, level)
    out["low"], out["high"] = interval if interval else (None, None)
    return out


def paired_interval(delta: Mapping, level: float = 0.95) -> tuple[float, float] | None:
    """The Student-t interval for the mean of a paired Δ from its ``mean``, ``std`` and ``n`` (the same as
    ``t_interval`` over the per-seed differences; works on stored results that kept only those three);
    None for a single seed, which has no spread."""
    from scipy import stats

    if delta["n"] < 2:
        return None
    half = stats.t.ppf((1 + level) / 2, delta["n"] - 1) * delta["std"] / np.sqrt(delta["n"])
    return float(delta["mean"] - half), float(delta["mean"] + half)


VERDICT_LEVEL = 0.95  # the course's one rule (notebook 07): a paired Δ's 95 % t-interval over seeds


def verdict(delta: Mapping, level: float = VERDICT_LEVEL) -> str:
    """The course's one rule for a paired difference over seeds (notebook 07 defines it; the publisher, the
    notebooks and the tests use it): ``win`` when its 95 % paired t-interval lies above 0, ``loss`` when it
    lies below 0, ``no clear change`` when it contains 0 or when there is a single seed (no interval).
    ``delta`` is what ``paired_difference`` returns (``mean``, ``std``, ``n``). The interval speaks about the
    mean over these seeds on this test split; how large a difference the split itself can show is a separate
    question (notebooks 03 and 07: about 290 base emoji)."""
    interval = paired_interval(delta, level)
    if interval is None:
        return "no clear change"
    low, high = interval
    return "win" if low > 0 else "loss" if high < 0 else "no clear change"


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """Temperature scaling (Guo et al. 2017; notebook 07): the one scalar T > 0 minimising the NLL of
    ``softmax(logits / T)`` on held-out (validation) rows, by L-BFGS on log T. Divide test logits by it."""
    _check_pair(logits, labels, "fit_temperature")
    logits, labels = logits.detach().float(), labels.long()
    log_t = torch.zeros(1, requires_grad=True)  # T = exp(log_t) stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def nll():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(nll)
    return log_t.exp().item()


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean of ``values`` (e.g. paired per-seed differences; notebook 07)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        raise ValueError("a t-interval needs at least two values (seeds); one run has no spread")
    mean, std = summarize(values)
    return paired_interval({"mean": mean, "std": std, "n": len(values)}, level)


def bootstrap_interval(values: Sequence[float], groups: Sequence | None = None, level: float = 0.95,
                       n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` (Efron & Tibshirani 1993; notebook 07).

    With ``groups`` (one label per value, e.g. the base emoji of each test row), whole groups are resampled
    with replacement and the mean is taken over the rows they bring: rows of one group are not independent."""
    values = np.asarray(values, dtype=float)
    keys = np.arange(len(values)) if groups is None else np.asarray(groups)
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} group labels for {len(values)} values: give one group per value")
    _, group_of = np.unique(keys, return_inverse=True)
    n_groups = group_of.max() + 1
    sums, sizes = np.bincount(group_of, values, n_groups), np.bincount(group_of, minlength=n_groups)
    draws = np.random.default_rng(seed).integers(0, n_groups, (n_resamples, n_groups))  # (B, groups)
    means = sums[draws].sum(1) / sizes[draws].sum(1)  # (B,)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Negative log-likelihood of the true class, the mean of −log softmax(z)_y over rows (nats; notebook 07):
    a proper score, with no bins to choose, that punishes confident errors most. 0 for a certain, right model."""
    _check_pair(logits, labels, "nll")
    return F.cross_entropy(logits.detach().float(), labels.long()).item()


def brier_score(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Brier score (Brier 1950; notebook 07): the mean over rows of Σ_k (p_k − [k = y])², from 0 (certain and
    right) to 2 (certain and wrong); a proper score, with no bins to choose, bounded unlike the NLL."""
    _check_pair(logits, labels, "brier_score")
    probs = logits.detach().float().softmax(1)  # (N, C)
    return ((probs - F.one_hot(labels.long(), probs.shape[1])) ** 2).sum(1).mean().item()
