"""One training loop for teachers and students (introduced in notebook 04, distillation in 05).

Data is a dict of tensors with one row per example (``TensorData``): the inputs each model reads
(``image``, ``text_ids``, ``image_feat``, ...), ``label`` (-1 = unlabelled) and ``index``. Caching what
a frozen teacher computes is then just one more column: ``teacher_logits`` (N, C), or
``teacher_logits`` of shape (N, V, C) for V cached augmented views (the augmentation picks the view).
A teacher that must see the *same* random view as the student is run online instead (``teacher=``).

``train_epoch`` is one pass over the data, written so that a learner can read it; ``fit`` loops over it
and adds what a practitioner needs: seeded shuffling (``epoch_generator``: a fresh generator per epoch,
so a resumed run repeats exactly), on a GPU the training data copied to it once and mixed precision
(``amp_settings``), gradient clipping, a one-cycle or cosine schedule (``make_scheduler``), early stopping
on a validation metric with the best weights restored, a NaN/inf guard naming the step and the loss term,
per-epoch history, checkpoints you can resume from, and TensorBoard curves (``TrainConfig(log_dir=...)``, nb. 10).
A hand-written loop over ``batches`` with the same seed gives bit-identical weights (notebook 05 shows it).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .env import amp_settings, bf16_native  # noqa: F401  precision is chosen beside the device (env)
from .objective import Objective

TensorData = dict  # dict[str, torch.Tensor], every tensor with the same first dimension


# ----------------------------------------------------------------------------------- batching
def check_data(data: Mapping[str, torch.Tensor], name: str = "data") -> int:
    """Validate a ``TensorData`` dict; returns its number of rows."""
    if not data:
        raise ValueError(f"{name} is empty")
    sizes = {k: v.shape[0] for k, v in data.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{name}: every tensor needs the same number of rows, got {sizes}")
    if "label" not in data:
        raise ValueError(f"{name} has no 'label' tensor (use -1 for unlabelled rows)")
    return next(iter(sizes.values()))


def batches(data: Mapping[str, torch.Tensor], batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1) -> Iterator[dict]:
    """Yield dict batches from a ``TensorData`` dict (fast: slicing, no per-example Python).

    Each batch is gathered where the tensors live: ``fit`` puts the training tensors on the GPU once, so
    its batches are indexed there and no batch is copied from host memory.

    With ``world_size`` > 1 (distributed data parallel), every rank draws the same permutation and
    keeps every ``world_size``-th row of each global batch: the ranks together see exactly the
    batches a single process would.
    """
    n = check_data(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)  # on the CPU, wherever the data is
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if world_size > 1 and len(idx) < world_size:
            break  # a last batch too small to give every rank a row is dropped, so all ranks take the same steps
        idx = idx[rank::world_size]
        on_device = {torch.device("cpu"): idx}  # the batch's index, copied once to each device the data lives on
        for v in data.values():
            if v.device not in on_device:
                on_device[v.device] = idx.to(v.device)
        yield {k: v[on_device[v.device]] for k, v in data.items()}


def distributed_context() -> tuple[int, int]:
    """(rank, world size) of the current ``torch.distributed`` process group, or (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TrainStep(nn.Module):
    """One training step's forward: the student's logits and, for feature distillation, the feature
    term ``feature_loss(model.embed(batch), batch["teacher_feat"])`` (a module's parameters, such as
    FitNetHint's adapter, are trained with the model). Wrapped in DDP when distributed, so that the
    student and the adapter both have their gradients synchronised."""

    def __init__(self, model: nn.Module, feature_loss: Callable | None = None):
        super().__init__()
        self.model, self.feature_loss = model, feature_loss

    def forward(self, batch):
        if self.feature_loss is None:
            return self.model(batch), None
        if "teacher_feat" not in batch:
            raise KeyError("feature distillation needs batch['teacher_feat']: "
                           "signals.cache_teacher_outputs(..., features=True)")
        feat = self.model.embed(batch)
        return self.model.head(feat), self.feature_loss(feat.float(), batch["teacher_feat"].float())


def to_device(batch: Mapping, device: torch.device, non_blocking: bool = True) -> dict:
    """The batch's tensors on ``device`` (other values unchanged)."""
    return {k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in batch.items()}


# ---------------------------------------------------------------------------------- the loop
@dataclass
class TrainConfig:
    """Optimisation settings. The defaults train a small model on 2 CPU cores in seconds."""

    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    scheduler: str = "onecycle"  # "onecycle", "cosine" or "none"
    grad_clip: float | None = 1.0
    patience: int | None = None  # early stopping: epochs without validation improvement
    monitor: str = "val_acc"  # "val_acc" (higher is better) or "val_loss" (lower is better)
    restore_best: bool = True
    amp: bool = True  # mixed precision, on CUDA only
    seed: int = 0
    device: str | None = None  # None: cuda, then mps, then cpu
    progress: bool = False
    channels_last: bool = False  # for CNNs on GPU
    compile: bool = False  # torch.compile the training step (GPU; pays a compile time up front)
    log_dir: str | None = None  # TensorBoard: fit writes each epoch's History record there (``log_epoch``)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be ≥ 1, got {self.epochs}, {self.batch_size}")
        if self.scheduler not in ("onecycle", "cosine", "none"):
            raise ValueError(f"scheduler must be 'onecycle', 'cosine' or 'none', got {self.scheduler!r}")
        if self.monitor not in ("val_acc", "val_loss"):
            raise ValueError(f"monitor must be 'val_acc' or 'val_loss', got {self.monitor!r}")
        if self.log_dir is not None:  # a str or a Path, kept as a str so that the config stays JSON
            self.log_dir = os.fspath(self.log_dir)


@dataclass
class History:
    """Per-epoch records, the best epoch, and the time spent: ``seconds`` in all, ``epoch_seconds`` in each
    epoch's training pass (without its validation), so that a first epoch that pays for ``torch.compile``
    or a GPU's warm-up can be reported apart from the steady state (notebook 10)."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = float("nan")
    seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)

    def column(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs if key in e]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random generator of one epoch: it shuffles the rows and drives the augmentation. A fresh one
    per epoch, derived from (seed, epoch) alone, so a run resumed at any epoch repeats exactly."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """The learning-rate schedule of ``config`` (stepped once per batch), or None."""
    total = config.epochs * steps_per_epoch
    if config.scheduler == "onecycle" and total >= 3:  # warm up for 25 % of the steps (at least 2)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                                   pct_start=max(0.25, 2 / total))
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return None


def make_optimizer(model: nn.Module, objective: Objective, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the model's parameters and those of the objective's trainable feature loss."""
    params = list(model.parameters()) + [p for m in objective.trainable_modules() for p in m.parameters()]
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@torch.no_grad()
def predict(model: nn.Module, data: Mapping[str, torch.Tensor], batch_size: int = 256,
            device: torch.device | str | None = None, **forward_kwargs) -> torch.Tensor:
    """Logits of ``model`` for every row of ``data`` (eval mode, no grad), on the CPU."""
    from .env import pick_device

    device = torch.device(device) if device is not None else pick_device()
    was_training = model.training
    model.eval().to(device)
    keys = set(getattr(model, "inputs", data.keys())) & set(data)
    outs = [model(to_device({k: b[k] for k in keys}, device), **forward_kwargs).float().cpu()
            for b in batches(data, batch_size)]
    model.train(was_training)
    return torch.cat(outs)


def evaluate_loss_acc(model: nn.Module, data: Mapping[str, torch.Tensor], device=None) -> tuple[float, float]:
    """Cross-entropy and accuracy of ``model`` on the labelled rows of ``data``."""
    logits = predict(model, data, device=device)
    labels = data["label"]
    ok = labels >= 0
    return (F.cross_entropy(logits[ok], labels[ok]).item(), (logits[ok].argmax(1) == labels[ok]).float().mean().item())


def train_epoch(model: nn.Module, train: Mapping[str, torch.Tensor], objective: Objective,
                optimizer: torch.optim.Optimizer, config: TrainConfig, epoch: int, *, scheduler=None,
                augment: Callable[[dict, torch.Generator], dict] | None = None, teacher: nn.Module | None = None,
                step_module: nn.Module | None = None, scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """One pass over ``train`` in the order of ``epoch_generator(config.seed, epoch)``; returns the mean of
    each loss term over the epoch's rows (``train_ce``, ``train_distill``, ..., ``train_total``).

    ``teacher``: a frozen teacher run online on each (augmented) batch, instead of cached columns.
    ``step_module`` (default ``TrainStep(model, feature loss)``) and ``scaler`` are what ``fit`` passes for
    distributed training, ``torch.compile`` and fp16 on a GPU.
    """
    device = next(model.parameters()).device
    use_amp, amp_dtype = amp_settings(config, device)
    scaler = scaler or torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    if step_module is None:  # not `or`: a compiled module has no truth value (it asks the module for len())
        step_module = TrainStep(model, objective.feature_loss if objective.feature_weight > 0 else None)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    rank, world_size = distributed_context()
    model.train()
    gen = epoch_generator(config.seed, epoch)
    sums, count = {}, 0
    for i, batch in enumerate(batches(train, config.batch_size, shuffle=True, generator=gen, rank=rank,
                                      world_size=world_size)):
        if augment is not None:
            batch = augment(batch, gen)
        batch = to_device(batch, device)
        if teacher is not None:
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                batch["teacher_logits"] = teacher(batch).float()
        elif batch.get("teacher_logits") is not None and batch["teacher_logits"].dim() == 3:
            raise ValueError("teacher_logits has a views axis (N, V, C): pass an augment that picks a view "
                             "(see views.cached_view_augment)")
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            logits, feature_term = step_module(batch)
            terms = objective.terms(logits, batch, feature_term)
        loss = terms["total"]
        if not torch.isfinite(loss):
            detail = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
            raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, batch {i} ({detail}); lower the learning rate, "
                                     "check the inputs for NaN, or raise the temperature")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        bs = batch["label"].shape[0]
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.item() * bs
        count += bs
    if world_size > 1:  # training metrics over all ranks
        totals = torch.tensor([count, *sums.values()], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(totals)
        give_up = time.monotonic() + 1.0  # gloo's worker thread drops totals after the collective, taking the GIL;
        while totals.is_cpu and totals._use_count() > 1 and time.monotonic() < give_up:  # if this rank is exiting
            time.sleep(1e-4)  # by then, the process aborts (SIGABRT). So wait for it, the GIL released (< 1 ms)
        count, sums = totals[0].item(), dict(zip(sums, totals[1:].tolist()))
    return {f"train_{k}": v / count for k, v in sums.items()}


def summary_writer(log_dir: str | Path, purge_step: int | None = None):
    """A TensorBoard ``SummaryWriter`` on ``log_dir`` (notebook 10). ``purge_step``: a resumed run first drops
    the points from that step on, which it is about to write again."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # imports the tensorboard package
    except ImportError as err:
        raise ImportError("TrainConfig.log_dir writes TensorBoard logs, which needs the tensorboard package: "
                          "pip install tensorboard (make setup installs it)") from err
    return SummaryWriter(os.fspath(log_dir), purge_step=purge_step or None)


def log_epoch(writer, record: Mapping[str, float]) -> None:
    """Write one epoch's ``History`` record as scalars at step ``record["epoch"]``. A key's first underscore
    becomes a slash, so that TensorBoard groups them: ``train/ce``, ``train/distill``, ``train/total`` (every
    ``train_*`` term of the objective, ``train/feature`` too), ``val/loss``, ``val/acc``; and ``lr``."""
    for key, value in record.items():
        if key != "epoch":
            writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
    writer.flush()


def _stopped_early(history: History, config: TrainConfig, val) -> bool:
    """Early stopping: ``config.patience`` epochs have passed since the best validation score."""
    return (config.patience is not None and val is not None and bool(history.epochs)
            and history.epochs[-1]["epoch"] - history.best_epoch >= config.patience)


def fit(model: nn.Module, train: Mapping[str, torch.Tensor], val: Mapping[str, torch.Tensor] | None = None,
        objective: Objective | None = None, config: TrainConfig | None = None,
        teacher: nn.Module | None = None, augment: Callable[[dict, torch.Generator], dict] | None = None,
        checkpoint_dir: str | Path | None = None, resume: bool = False) -> History:
    """Train ``model`` on ``train`` with ``train_epoch``, ``config.epochs`` times; select on ``val``.

    - ``objective``: labels only by default; a distillation ``Objective`` reads ``teacher_logits``
      (and ``teacher_feat``) from the batch: cached columns, or computed online by ``teacher`` on the
      same (augmented) batch the student sees. The teacher is frozen and kept in eval mode.
    - ``augment(batch, generator)``: a batch transform for the student's inputs (seeded).
    - ``checkpoint_dir``: the training state is saved there after every epoch (safetensors + JSON,
      atomic); with ``resume=True`` training continues from it and ends exactly as an uninterrupted run.
    - ``config.log_dir``: TensorBoard logs, one point per epoch (``log_epoch``), written by rank 0 only.
    - On a GPU the training tensors are copied to it once and batches are indexed there; mixed precision is
      bf16 or fp16 (``amp_settings``); ``config.compile`` compiles ``TrainStep`` (the forward pass and, through
      autograd, its backward), while the loss terms, clipping and the optimiser step stay eager.
    Returns the ``History``: per-epoch train terms, validation loss and accuracy, the learning rate.
    """
    from .checkpoint import load_training_state, save_training_state
    from .env import pick_device

    objective = objective or Objective()
    config = config or TrainConfig()
    n_train = check_data(train, "train")
    if val is not None:
        check_data(val, "val")
    device = pick_device(config.device)
    model.to(device)
    if config.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    for module in objective.trainable_modules():
        module.to(device)
    if teacher is not None:
        teacher.eval().to(device)
        for p in teacher.parameters():
            p.requires_grad_(False)
    elif objective.kind != "ce" and "teacher_logits" not in train:
        raise KeyError("the objective distils but train has no 'teacher_logits' column and no teacher= was given")
    optimizer = make_optimizer(model, objective, config)
    scheduler = make_scheduler(optimizer, config, math.ceil(n_train / config.batch_size))
    use_amp, amp_dtype = amp_settings(config, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    history, best_state, start_epoch = History(), None, 0
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and ckpt is not None and (ckpt / "state.json").exists():
        start_epoch, saved, best_state = load_training_state(ckpt, model, optimizer, scheduler, objective, device)
        history = History(**saved)
    rank, world_size = distributed_context()
    # The training tensors go to the device once and every batch is indexed there (pinning the host tensors does
    # nothing: fancy indexing returns unpinned memory). Data larger than the GPU needs DataLoader(pin_memory=True).
    train = to_device(train, device, non_blocking=False)
    step_module: nn.Module = TrainStep(model, objective.feature_loss if objective.feature_weight > 0 else None)
    if world_size > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:  # after DDP, as PyTorch recommends
        step_module = torch.compile(step_module)
    t0 = time.perf_counter() - history.seconds
    if _stopped_early(history, config, val):  # a resumed run that had already stopped early stays stopped
        start_epoch = config.epochs
    epochs = range(start_epoch, config.epochs)
    if config.progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=type(model).__name__, leave=False)
    writer = summary_writer(config.log_dir, start_epoch) if config.log_dir is not None and rank == 0 else None
    with writer or contextlib.nullcontext():  # the writer is closed however the loop ends
        for epoch in epochs:
            epoch_start = time.perf_counter()
            terms = train_epoch(model, train, objective, optimizer, config, epoch, scheduler=scheduler, augment=augment,
                                teacher=teacher, step_module=step_module, scaler=scaler)
            history.epoch_seconds.append(time.perf_counter() - epoch_start)  # train_epoch's .item() waits for the GPU
            record = {"epoch": epoch, **terms, "lr": optimizer.param_groups[0]["lr"]}
            if val is not None:
                record["val_loss"], record["val_acc"] = evaluate_loss_acc(model, val, device)
                score = record[config.monitor] * (1 if config.monitor == "val_acc" else -1)
                if history.best_epoch < 0 or score > history.best_score:
                    history.best_epoch, history.best_score = epoch, score
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            history.epochs.append(record)
            history.seconds = time.perf_counter() - t0
            if ckpt is not None and rank == 0:
                save_training_state(ckpt, model, optimizer, scheduler, objective, epoch + 1, history, best_state, config)
            if writer is not None:
                log_epoch(writer, record)
            if _stopped_early(history, config, val):
                break
    if config.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - t0
    return history
