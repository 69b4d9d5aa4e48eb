"""One training loop for teachers and students (introduced in notebook 04, distillation in 05).

Data is a dict of tensors with one row per example (``TensorData``): the inputs each model reads
(``image``, ``text_ids``, ``image_feat``, ...), ``label`` (-1 = unlabelled) and ``index``. Caching what
a frozen teacher computes is then just one more column: ``teacher_logits`` (N, C), or
``teacher_logits`` of shape (N, V, C) for V cached augmented views (the augmentation picks the view).
A teacher that must see the *same* random view as the student is run online instead (``teacher=``).

``fit`` does: seeded shuffling (a fresh generator per epoch, so a resumed run repeats exactly),
mixed precision on GPU, gradient clipping, a one-cycle or cosine schedule, early stopping on a
validation metric with the best weights restored, a NaN/inf guard naming the step and the loss
term, per-epoch history, and checkpoints you can resume from.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import losses

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

    With ``world_size`` > 1 (distributed data parallel), every rank draws the same permutation and
    keeps every ``world_size``-th row of each global batch: the ranks together see exactly the
    batches a single process would.
    """
    n = check_data(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if world_size > 1 and len(idx) < world_size:
            break  # a last batch too small to give every rank a row is dropped, so all ranks take the same steps
        idx = idx[rank::world_size]
        yield {k: v[idx] for k, v in data.items()}


def distributed_context() -> tuple[int, int]:
    """(rank, world size) of the current ``torch.distributed`` process group, or (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Step(nn.Module):
    """One training step's forward: the student's logits and, for feature distillation, the feature
    term (through the trainable adapter). Wrapped in DDP when distributed, so that the student and the
    adapter both have their gradients synchronised."""

    def __init__(self, model: nn.Module, feature_loss: nn.Module | None):
        super().__init__()
        self.model, self.feature_loss = model, feature_loss

    def forward(self, batch):
        if self.feature_loss is None:
            return self.model(batch), None
        if "teacher_feat" not in batch:
            raise KeyError("feature distillation needs batch['teacher_feat']: cache_teacher_outputs(..., features=True)")
        feat = self.model.embed(batch)
        return self.model.head(feat), self.feature_loss(feat.float(), batch["teacher_feat"].float())


def to_device(batch: Mapping, device: torch.device, non_blocking: bool = True) -> dict:
    return {k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in batch.items()}


# ----------------------------------------------------------------------------------- objectives
@dataclass
class Objective:
    """What a training step minimises, from the student's logits and the batch.

    ``kind``: "ce" (labels only), "soft" (KL at temperature T, times T²), "hard" (CE to the teacher's
    argmax) or "logit" (½‖z_s − z_t‖², centred). Total = (1 − α)·CE(labels) + α·distillation (the convex
    form; ``form="additive"`` gives CE + α·distillation, the source article's). Rows whose label is -1
    (unlabelled) contribute only the distillation term. ``label_smoothing`` applies to the label term.
    ``feature_weight`` > 0 adds β·feature loss between the student's ``embed`` and ``teacher_feat`` through
    ``feature_loss`` (a module such as ``losses.FitNetHint``, trained with the student).
    """

    kind: str = "ce"
    T: float = 4.0
    alpha: float = 0.5
    form: str = "convex"
    label_smoothing: float = 0.0
    feature_weight: float = 0.0
    feature_loss: nn.Module | None = None

    def __post_init__(self):
        if self.kind not in ("ce", "soft", "hard", "logit"):
            raise ValueError(f"Objective.kind must be 'ce', 'soft', 'hard' or 'logit', got {self.kind!r}")
        if not (isinstance(self.T, (int, float)) and math.isfinite(self.T) and self.T > 0):
            raise ValueError(f"temperature T must be a positive finite number, got {self.T!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}: it weighs the distillation term")
        if self.form not in ("convex", "additive"):
            raise ValueError(f"form must be 'convex' or 'additive', got {self.form!r}")
        if self.feature_weight > 0 and self.feature_loss is None:
            raise ValueError("feature_weight > 0 needs feature_loss (e.g. losses.FitNetHint(student_dim, teacher_dim))")

    @property
    def uses_teacher(self) -> bool:
        return self.kind != "ce" or self.feature_weight > 0

    def terms(self, student_logits: torch.Tensor, batch: Mapping, feature_term: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The loss terms of one batch, and ``total``. ``feature_term`` is ``feature_loss(student
        features, teacher features)``, computed by the caller (the training step)."""
        labels = batch["label"]
        labelled = labels >= 0
        terms: dict[str, torch.Tensor] = {}
        if labelled.any():
            terms["ce"] = F.cross_entropy(student_logits[labelled].float(), labels[labelled],
                                          label_smoothing=self.label_smoothing)
        else:
            terms["ce"] = student_logits.new_zeros(())
        if self.kind == "ce" and self.feature_weight == 0:
            if not labelled.any():
                raise ValueError("a batch has no labelled rows and the objective is labels only: "
                                 "use a distillation objective for unlabelled data, or drop those rows")
            terms["total"] = terms["ce"]
            return terms
        total = terms["ce"] if self.kind == "ce" else None
        if self.kind != "ce":
            if "teacher_logits" not in batch:
                raise KeyError("a distillation objective needs batch['teacher_logits']: cache the teacher's "
                               "logits as a data column (cache_teacher_outputs) or pass teacher= to fit")
            t = batch["teacher_logits"].float()
            s = student_logits.float()
            if self.kind == "soft":
                dis = losses.soft_distillation_loss(s, t, self.T)
            elif self.kind == "hard":
                dis = losses.hard_distillation_loss(s, t)
            else:
                dis = losses.logit_matching_loss(s, t)
            terms["distill"] = dis
            frac = labelled.float().mean()  # the label term covers only the labelled share of the batch
            if self.form == "convex":
                total = (1 - self.alpha) * frac * terms["ce"] + self.alpha * dis
            else:
                total = frac * terms["ce"] + self.alpha * dis
        if self.feature_weight > 0:
            if feature_term is None:
                raise ValueError("feature distillation needs the feature term: compute feature_loss(student "
                                 "features, batch['teacher_feat']) and pass it as feature_term")
            terms["feature"] = feature_term
            total = total + self.feature_weight * terms["feature"]
        terms["total"] = total
        return terms


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

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be ≥ 1, got {self.epochs}, {self.batch_size}")
        if self.scheduler not in ("onecycle", "cosine", "none"):
            raise ValueError(f"scheduler must be 'onecycle', 'cosine' or 'none', got {self.scheduler!r}")
        if self.monitor not in ("val_acc", "val_loss"):
            raise ValueError(f"monitor must be 'val_acc' or 'val_loss', got {self.monitor!r}")


@dataclass
class History:
    """Per-epoch records, the best epoch, and the time spent."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = float("nan")
    seconds: float = 0.0

    def column(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs if key in e]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


def _make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    if config.scheduler == "onecycle" and total >= 3:  # warm up for 25 % of the steps (at least 2)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                                   pct_start=max(0.25, 2 / total))
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return None


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


def fit(model: nn.Module, train: Mapping[str, torch.Tensor], val: Mapping[str, torch.Tensor] | None = None,
        objective: Objective | None = None, config: TrainConfig | None = None,
        teacher: nn.Module | None = None, augment: Callable[[dict, torch.Generator], dict] | None = None,
        checkpoint_dir: str | Path | None = None, resume: bool = False,
        stop_after_steps: int | None = None) -> History:
    """Train ``model`` on ``train``; select on ``val``. Returns the ``History``.

    - ``objective``: labels only by default; a distillation ``Objective`` reads ``teacher_logits``
      (and ``teacher_feat``) from the batch: cached columns, or computed online by ``teacher`` on the
      same (augmented) batch the student sees. The teacher is frozen and kept in eval mode.
    - ``augment(batch, generator)``: a batch transform for the student's inputs (seeded).
    - ``checkpoint_dir``: the training state is saved there after every epoch (safetensors + JSON,
      atomic); with ``resume=True`` training continues from it and ends exactly as an uninterrupted run.
    - ``stop_after_steps``: stop abruptly after that many optimiser steps (to test interruption).
    """
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
    params = list(model.parameters())
    if objective.feature_loss is not None:
        objective.feature_loss.to(device)
        params += list(objective.feature_loss.parameters())
    if teacher is not None:
        teacher.eval().to(device)
        for p in teacher.parameters():
            p.requires_grad_(False)
    elif objective.uses_teacher and "teacher_logits" not in train and objective.kind != "ce":
        raise KeyError("the objective distils but train has no 'teacher_logits' column and no teacher= was given")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    scheduler = _make_scheduler(optimizer, config, steps_per_epoch)
    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    history = History()
    best_state = None
    start_epoch = 0
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and ckpt is not None and (ckpt / "state.json").exists():
        start_epoch, history, best_state = _load_state(ckpt, model, optimizer, scheduler, objective, device)
    rank, world_size = distributed_context()
    if device.type == "cuda":  # page-locked host memory: batches copy to the GPU asynchronously
        train = {k: v.pin_memory() for k, v in train.items()}
    step_module: nn.Module = _Step(model, objective.feature_loss if objective.feature_weight > 0 else None)
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_module = DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:  # after DDP, as PyTorch recommends
        step_module = torch.compile(step_module)
    step = start_epoch * steps_per_epoch
    t0 = time.perf_counter() - history.seconds
    epochs = range(start_epoch, config.epochs)
    if config.progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=type(model).__name__, leave=False)
    for epoch in epochs:
        model.train()
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        sums, count = {}, 0
        for batch in batches(train, config.batch_size, shuffle=True, generator=gen, rank=rank, world_size=world_size):
            if augment is not None:
                batch = augment(batch, gen)
            batch = to_device(batch, device)
            if teacher is not None:
                with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    batch["teacher_logits"] = teacher(batch).float()
            elif batch.get("teacher_logits") is not None and batch["teacher_logits"].dim() == 3:
                raise ValueError("teacher_logits has a views axis (N, V, C): pass an augment that picks a view "
                                 "(see cached_view_augment)")
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits, feature_term = step_module(batch)
                terms = objective.terms(logits, batch, feature_term)
            loss = terms["total"]
            if not torch.isfinite(loss):
                detail = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step} ({detail}); "
                                         "lower the learning rate, check the inputs for NaN, or raise the temperature")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            step += 1
            bs = batch["label"].shape[0]
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item() * bs
            count += bs
            if stop_after_steps is not None and step >= stop_after_steps:
                raise KeyboardInterrupt(f"stopped after {step} steps (stop_after_steps)")
        if world_size > 1:  # training metrics over all ranks
            import torch.distributed as dist

            totals = torch.tensor([count, *sums.values()], dtype=torch.float64, device=device)
            dist.all_reduce(totals)
            count, sums = totals[0].item(), dict(zip(sums, totals[1:].tolist()))
        record = {"epoch": epoch, **{f"train_{k}": v / count for k, v in sums.items()},
                  "lr": optimizer.param_groups[0]["lr"]}
        if val is not None:
            record["val_loss"], record["val_acc"] = evaluate_loss_acc(model, val, device)
            score = record[config.monitor] * (1 if config.monitor == "val_acc" else -1)
            if history.best_epoch < 0 or score > history.best_score:
                history.best_epoch, history.best_score = epoch, score
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.epochs.append(record)
        history.seconds = time.perf_counter() - t0
        if ckpt is not None and rank == 0:
            _save_state(ckpt, model, optimizer, scheduler, objective, epoch + 1, history, best_state, config)
        if (config.patience is not None and val is not None and epoch - history.best_epoch >= config.patience):
            break
    if config.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - t0
    return history


# ------------------------------------------------------------------------------- train state
def _save_state(folder: Path, model, optimizer, scheduler, objective, next_epoch, history, best_state, config) -> None:
    from .checkpoint import atomic_save_tensors, atomic_write_json

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    if objective.feature_loss is not None:
        tensors.update({f"feature_loss.{k}": v for k, v in objective.feature_loss.state_dict().items()})
    opt_state = optimizer.state_dict()
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    atomic_save_tensors(tensors, folder / "state.safetensors")
    atomic_write_json({"next_epoch": next_epoch, "history": asdict(history), "config": asdict(config),
                       "optimizer_param_groups": opt_state["param_groups"],
                       "scheduler": scheduler.state_dict() if scheduler is not None else None},
                      folder / "state.json")


def _load_state(folder: Path, model, optimizer, scheduler, objective, device):
    from safetensors.torch import load_file

    meta = json.loads((folder / "state.json").read_text(encoding="utf8"))
    tensors = load_file(str(folder / "state.safetensors"))
    own = model.state_dict()
    saved = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if set(saved) != set(own) or any(saved[k].shape != own[k].shape for k in own):
        raise ValueError(f"the training state in {folder} belongs to another model or configuration; "
                         "delete the folder or use another checkpoint_dir")
    model.load_state_dict(saved)
    best = {k[len("best."):]: v.to(device) for k, v in tensors.items() if k.startswith("best.")} or None
    if objective.feature_loss is not None:
        objective.feature_loss.load_state_dict({k[len("feature_loss."):]: v for k, v in tensors.items()
                                                if k.startswith("feature_loss.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    h = meta["history"]
    history = History(epochs=h["epochs"], best_epoch=h["best_epoch"], best_score=h["best_score"], seconds=h["seconds"])
    return meta["next_epoch"], history, best


# ------------------------------------------------------------------------- teacher caching
@torch.no_grad()
def cache_teacher_outputs(teacher: nn.Module, data: Mapping[str, torch.Tensor], features: bool = False,
                          batch_size: int = 256, device=None) -> dict[str, torch.Tensor]:
    """Run the frozen teacher once over ``data``; returns columns to add: ``teacher_logits`` (and ``teacher_feat``).

    Valid whenever the teacher's inputs do not change between epochs (no augmentation on its side).
    """
    out = {"teacher_logits": predict(teacher, data, batch_size, device)}
    if features:
        from .env import pick_device

        dev = torch.device(device) if device is not None else pick_device()
        teacher.eval().to(dev)
        keys = set(teacher.inputs) & set(data)
        out["teacher_feat"] = torch.cat([teacher.embed(to_device({k: b[k] for k in keys}, dev)).float().cpu()
                                         for b in batches(data, batch_size)])
    return out


def shift_augment(max_shift: int = 4, flip: bool = False, key: str = "image"):
    """A batch augmentation for image students: a random translation by up to ``max_shift`` pixels
    (the border is extended by replicating edge pixels, i.e. the white background) and optional
    horizontal flips. Seeded by the loop's generator, so runs repeat."""

    def augment(batch: dict, gen: torch.Generator) -> dict:
        x = batch[key]  # (B, 3, H, W)
        b, _, h, w = x.shape
        padded = F.pad(x, (max_shift,) * 4, mode="replicate")
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None]).long()  # (B, H)
        cols = (dx[:, None] + torch.arange(w)[None]).long()  # (B, W)
        out = padded[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]
        if flip:
            mask = torch.rand(b, generator=gen) < 0.5
            out[mask] = out[mask].flip(-1)
        return {**batch, key: out}

    return augment


def cached_view_augment(keys: tuple[str, ...] = ("image", "teacher_logits")):
    """Pick one of V cached views per example: each ``keys`` column has shape (N, V, ...) and the same
    view index is used for all of them, so the student sees the very view the teacher labelled."""

    def augment(batch: dict, gen: torch.Generator) -> dict:
        n, n_views = batch[keys[0]].shape[:2]
        pick = torch.randint(0, n_views, (n,), generator=gen)
        return {**batch, **{k: batch[k][torch.arange(n), pick] for k in keys}}

    return augment
