"""Teacher signals: what a student learns from a frozen teacher, one small class each.

Introduced in notebook 05 (clean cached outputs) and 06 (the others). Every signal in ``SIGNALS`` says
which configuration field switches it on, what it cannot be combined with, which modality it needs,
and any rule a user should know; ``experiment.run_seed`` calls the same three hooks on each, so a new
way of using the teacher is one new class here and no new branch elsewhere.

- ``clean``: the teacher's logits and features on each training row, computed once (always on).
- ``crossfit`` (``--crossfit K``): held-out logits from K teachers, each trained without the rows it labels.
- ``teacher_views`` (``--teacher_views V``): V augmented views per image, each labelled by the teacher.
- ``transfer_words`` (``--transfer_words N``): N unlabelled words the teacher labels, for text students.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from .recipes import STUDENTS, train_teacher
from .regimes import append_rows, folds_by_group, folds_by_row, transfer_vocabulary
from .train import batches, predict, to_device


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


@dataclass
class SeedContext:
    """What the signals share during one seed: the teacher the students learn from, and ``train``, the
    training columns every student starts from (inputs, labels, and the teacher's outputs)."""

    config: object
    data: object  # PreparedData
    seed: int
    teacher: nn.Module
    train: dict = field(default_factory=dict)
    store: dict = field(default_factory=dict)  # per-signal columns computed for this seed


class TeacherSignal:
    """The three hooks, each a no-op unless a signal needs it."""

    name: str = ""  # its key in SIGNALS and the ExperimentConfig field that switches it on
    conflicts: tuple[str, ...] = ()  # signals it cannot be combined with
    needs: tuple[str, ...] = ()  # modalities the dataset must have
    rule: str = ""  # printed when the signal is on: what it changes that a user may not expect

    def active(self, config) -> bool:
        return bool(getattr(config, self.name))

    def prepare(self, config, data, device="cpu", progress: bool = False) -> dict | None:
        """Once per experiment, from the dataset (``data.dataset``): what this signal needs on disk or in memory."""
        return None

    def for_seed(self, ctx: SeedContext) -> None:
        """Once per seed, after the teacher is trained: update ``ctx.train`` or fill ``ctx.store[self.name]``."""

    def student_data(self, ctx: SeedContext, student: str, objective, train: dict, augment):
        """For each student and method: the rows it trains on and the batch augmentation."""
        return train, augment


class CleanOutputs(TeacherSignal):
    name = "clean"

    def active(self, config) -> bool:
        return True

    def for_seed(self, ctx: SeedContext) -> None:
        ctx.train = {**ctx.data.train, **cache_teacher_outputs(ctx.teacher, ctx.data.train, features=True)}


def crossfit_logits(kind: str, config, data, seed: int) -> torch.Tensor:
    """Held-out teacher logits for every training row: K teachers of ``kind``, each trained (labelled
    rows only, same recipe, selected on validation) on all folds but one, predict the fold they left out."""
    folds, train = data.signals["crossfit"]["folds"], data.train
    logits = torch.empty(folds.shape[0], data.num_classes)
    for k in range(int(folds.max()) + 1):
        teacher, _ = train_teacher(kind, config, data, seed * 1_000 + k, train={n: v[folds != k] for n, v in train.items()})
        logits[folds == k] = predict(teacher, {n: v[folds == k] for n, v in train.items()})
    return logits


class CrossFit(TeacherSignal):
    name = "crossfit"
    conflicts = ("teacher_views",)  # the views are labelled by the teacher that trained on every row
    rule = "cross-fitting: each training row's teacher logits come from a teacher trained on the other folds"

    def prepare(self, config, data, device="cpu", progress=False):
        train = data.dataset["train"]
        if "base" in train.column_names:  # OpenMoji: a base emoji and its skin-tone variants stay together
            return {"folds": folds_by_group(list(train["base"]), config.crossfit, config.data_seed)}
        print(f"note: --crossfit: the dataset has no 'base' column to keep near-duplicates together, "
              f"so the {config.crossfit} folds are made row by row")
        return {"folds": folds_by_row(len(train), config.crossfit, config.data_seed)}

    def for_seed(self, ctx):  # held-out logits replace the teacher's own (its features stay)
        ctx.train["teacher_logits"] = crossfit_logits(ctx.config.distill_from, ctx.config, ctx.data, ctx.seed)


def multi_view_columns(teacher: nn.Module, data) -> dict[str, torch.Tensor]:
    """The training columns for image-seeing students under cached views: ``image`` (N, V, 3, s, s) and
    the teacher's ``teacher_logits`` (N, V, C) and ``teacher_feat`` (N, V, D) on each view, computed once
    from the cached view features (a fusion teacher reads the unchanged text features beside them)."""
    views = data.signals["teacher_views"]
    per_view = []
    for v in range(views["image_feat"].shape[1]):
        columns = {**data.train, "image_feat": views["image_feat"][:, v]}
        per_view.append(cache_teacher_outputs(teacher, columns, features=True))
    return {"image": views["image"], **{k: torch.stack([p[k] for p in per_view], dim=1) for k in per_view[0]}}


class CachedViews(TeacherSignal):
    name = "teacher_views"
    conflicts = ("crossfit",)
    needs = ("image",)
    rule = ("cached views: every image-seeing student, labels only included, trains on the same views, "
            "which replace --augment's shift augmentation")

    def prepare(self, config, data, device="cpu", progress=False):
        from .views import encode_views

        return encode_views(data.dataset["train"], data.encoders["image_feat"], config.teacher_views, device=device,
                            teacher_size=config.teacher_image_size, student_size=config.student_image_size,
                            seed=config.data_seed)

    def for_seed(self, ctx):
        ctx.store[self.name] = multi_view_columns(ctx.teacher, ctx.data)

    def student_data(self, ctx, student, objective, train, augment):
        from .views import cached_view_augment

        if "image" not in STUDENTS[student]:
            return train, augment
        views = ctx.store[self.name]
        keys = tuple(views) if objective.uses_teacher else ("image",)  # a distilled student gets the teacher's outputs per view
        return {**train, **{k: views[k] for k in keys}}, cached_view_augment(keys)


def transfer_columns(teacher: nn.Module, data) -> dict[str, torch.Tensor]:
    """The transfer set's rows for a text student: its token ids and the teacher's logits on each word (a
    fusion teacher reads the text alone, with the image dropped)."""
    transfer = data.signals["transfer_words"]
    drop = {k for k in teacher.inputs if k != "text_feat"}
    logits = predict(teacher, transfer, drop=drop) if drop else predict(teacher, transfer)
    return {"text_ids": transfer["text_ids"], "label": transfer["label"], "index": transfer["index"],
            "teacher_logits": logits}


class TransferSet(TeacherSignal):
    name = "transfer_words"
    needs = ("text",)
    rule = ("transfer set: its unlabelled words, labelled by the teacher, join the text students that learn from "
            "the teacher's logits (soft, hard, logit); label-only and feature students cannot use unlabelled rows")

    def prepare(self, config, data, device="cpu", progress=False):
        import datasets

        from .encoders import encode_split
        from .models import HashingTokenizer

        encoder = data.encoders["text_feat"]
        words = datasets.Dataset.from_dict({"text": transfer_vocabulary(encoder.tokenizer, config.transfer_words,
                                                                        config.data_seed)})
        n = len(words)
        return {"text_feat": encode_split(words, encoder, "text", max_length=config.max_length, device=device,
                                          progress=progress),
                "text_ids": HashingTokenizer(config.text_buckets)(list(words["text"])),
                "label": torch.full((n,), -1, dtype=torch.long), "index": torch.arange(n) + len(data.dataset["train"])}

    def for_seed(self, ctx):
        ctx.store[self.name] = transfer_columns(ctx.teacher, ctx.data)

    def student_data(self, ctx, student, objective, train, augment):
        if student != "text" or objective.kind == "ce":
            return train, augment
        return append_rows(train, ctx.store[self.name]), augment


SIGNALS: dict[str, TeacherSignal] = {s.name: s for s in (CleanOutputs(), CrossFit(), CachedViews(), TransferSet())}


def active_signals(config, modalities: tuple[str, ...] | None = None) -> dict[str, TeacherSignal]:
    """The signals ``config`` switches on, in hook order; raises if two conflict or, given the dataset's
    ``modalities``, if one needs a modality the dataset lacks."""
    on = {name: s for name, s in SIGNALS.items() if s.active(config)}
    for name, signal in on.items():
        clash = [c for c in signal.conflicts if c in on]
        if clash:
            raise ValueError(f"--{name} and --{clash[0]} cannot be combined: {signal.name} is declared to conflict "
                             f"with {clash[0]} (signals.SIGNALS); choose one")
        lacking = [m for m in signal.needs if modalities is not None and m not in modalities]
        if lacking:
            raise ValueError(f"--{name} needs the {lacking[0]} modality, which the dataset lacks; drop --{name}")
    return on
