"""Recipes: the course's teachers, students and distillation methods, built from a configuration.

Introduced in notebook 04 (teachers) and 05 (students and methods). Each builder reads the fields it
needs from an ``ExperimentConfig`` and the sizes it needs from ``PreparedData``; nothing here runs an
experiment (that is ``experiment.run``).

- ``TEACHERS`` / ``STUDENTS``: which modalities each reads (the audio ones need ``--speech``, notebook 11).
- ``build_teacher`` + ``train_teacher``: a fusion head on the frozen encoders' cached features.
- ``build_student``: the tiny CNN, the hashed bag of words, or both.
- ``METHODS``: the table of distillation methods, name → ``Objective`` (``objective_for``).
- ``end_to_end_teacher``: the trained head with its encoders in front, as it would be deployed.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from .env import seed_everything
from .losses import FitNetHint
from .models import AudioCNN, FusionClassifier, ImageCNN, MultimodalStudent, TextBag
from .objective import Objective
from .regimes import labelled_only
from .train import History, TrainConfig, fit

FEATURE_KEY = {"image": "image_feat", "text": "text_feat", "audio": "audio_feat"}  # a modality → the teacher's cached feature column
TEACHERS: dict[str, tuple[str, ...]] = {"fusion": ("image", "text"), "text": ("text",), "image": ("image",),
                                        "audio": ("audio",), "trimodal": ("image", "text", "audio")}
STUDENTS: dict[str, tuple[str, ...]] = {"image": ("image",), "text": ("text",), "multimodal": ("image", "text"),
                                        "audio": ("audio",)}
TEACHER_INPUTS = {kind: tuple(FEATURE_KEY[m] for m in mods) for kind, mods in TEACHERS.items()}

# name → (config, student feature size, teacher feature size) → the training objective
METHODS: dict[str, Callable[..., Objective]] = {
    "labels": lambda config, student_dim, teacher_dim: Objective("ce"),
    "soft": lambda config, student_dim, teacher_dim: Objective("soft", T=config.T, alpha=config.alpha),
    "hard": lambda config, student_dim, teacher_dim: Objective("hard", T=config.T, alpha=config.alpha),
    "logit": lambda config, student_dim, teacher_dim: Objective("logit", T=config.T, alpha=config.alpha),
    "adaptive": lambda config, student_dim, teacher_dim: Objective("adaptive", T=config.T, alpha=config.alpha),
    # labels plus a FitNets hint from the student's features to the teacher's fused features
    "feature": lambda config, student_dim, teacher_dim: Objective(
        "ce", feature_weight=config.feature_weight, feature_loss=FitNetHint(student_dim, teacher_dim)),
}


def seeded(train_config: TrainConfig, seed: int, device: str | None = None, log_dir: str | None = None,
           name: str | None = None) -> TrainConfig:
    """``train_config`` with its shuffling seed and device set for one run. With ``log_dir`` (an experiment's
    TensorBoard folder, ``ExperimentConfig.log_dir``) the run logs to ``log_dir/seed{seed}/{name}``, ``name``
    saying which fit it is: ``teacher-fusion``, ``image-student-soft``, ... (notebook 10)."""
    if log_dir is None:
        return replace(train_config, seed=seed, device=device)
    if not name:
        raise ValueError("seeded(..., log_dir=...) needs the fit's name, its subfolder: e.g. name='image-student-soft'")
    return replace(train_config, seed=seed, device=device, log_dir=str(Path(log_dir) / f"seed{seed}" / name))


def build_teacher(kind: str, config, data) -> FusionClassifier:
    """A fusion head over the cached features of ``kind``'s modalities: "fusion" (image + text), "text" or
    "image". Seed the RNGs first for a reproducible initialisation (``train_teacher`` does)."""
    if kind not in TEACHER_INPUTS:
        raise ValueError(f"unknown teacher {kind!r}; choose from {sorted(TEACHER_INPUTS)}")
    keys = TEACHER_INPUTS[kind]
    missing = [k for k in keys if k not in data.train]
    if missing:
        raise ValueError(f"the {kind} teacher reads {list(keys)} but the data has no {missing}: the dataset "
                         f"lacks that modality (it has {list(data.modalities)})")
    return FusionClassifier({k: data.train[k].shape[1] for k in keys}, data.num_classes,
                            hidden=config.teacher_hidden, fusion=config.fusion, dropout=config.teacher_dropout,
                            modality_dropout=config.modality_dropout if len(keys) > 1 else 0.0)


def train_teacher(kind: str, config, data, seed: int, train: dict | None = None) -> tuple[FusionClassifier, History]:
    """Seed, build and train a ``kind`` teacher on the labelled rows of ``train`` (default: the training
    split), choosing its epoch on the validation split. Returns the teacher and its history. With
    ``config.log_dir`` a teacher on the training split logs to ``log_dir/seed{seed}/teacher-{kind}``; one on
    other rows (a crossfit fold) is not logged."""
    seed_everything(seed)
    teacher = build_teacher(kind, config, data)
    log_dir = config.log_dir if train is None else None
    history = fit(teacher, labelled_only(data.train if train is None else train), data.validation,
                  config=seeded(config.teacher_train, seed, config.device, log_dir, f"teacher-{kind}"))
    return teacher, history


def build_student(kind: str, config, num_classes: int) -> torch.nn.Module:
    """A tiny student that sees "image", "text" or both ("multimodal"), or hears ("audio", with ``--speech``)."""
    if kind == "image":
        return ImageCNN(num_classes, config.cnn_width)
    if kind == "text":
        return TextBag(num_classes, config.text_buckets, config.text_dim)
    if kind == "multimodal":
        return MultimodalStudent(num_classes, config.cnn_width, config.text_buckets, config.text_dim)
    if kind == "audio":
        return AudioCNN(num_classes, config.audio_width)
    raise ValueError(f"unknown student {kind!r}; choose from {sorted(STUDENTS)}")


def objective_for(method: str, config, student_dim: int, teacher_dim: int) -> Objective:
    """The training objective of a method in ``METHODS``: "labels", "soft", "hard", "logit", "adaptive" or
    "feature"."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    return METHODS[method](config, student_dim, teacher_dim)


def end_to_end_teacher(head: FusionClassifier, encoders: dict) -> FusionClassifier:
    """The teacher as deployed: its pretrained encoders in front of the trained fusion head."""
    full = copy.deepcopy(head)
    full.encoders = torch.nn.ModuleDict({k: encoders[k] for k in head.inputs})
    return full.eval()
