"""From a dataset to tensors: what every teacher and student of an experiment reads.

Introduced in notebook 03 (the data pipeline). ``prepare_data(config)`` loads the dataset the
configuration names (``config.data``: the shipped OpenMoji data or your own folder), checks its label
column, and returns a ``PreparedData``: for each split, a ``TensorData`` dict of

- ``image_feat`` / ``text_feat``: the frozen pretrained encoders' features (the teachers' inputs,
  computed once and cached on disk under a content hash);
- ``image`` (N, 3, s, s) and ``text_ids`` (N, L): the students' inputs (small pixels, hashed tokens);
- ``label`` (-1 = unlabelled, after the configured data regime) and ``index`` (row number);
- with ``config.speech`` (``add_speech``): ``audio_feat`` and ``audio``, the audio teacher's and student's
  inputs, from the training voices (OpenMoji) or, with ``--speech recorded``, a folder's own recordings.

Only the modalities the dataset has are prepared. Whatever an active teacher signal needs beyond this
(cached views, a transfer set, folds) is prepared by the signal itself (``signals.py``) and kept in
``PreparedData.signals``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import data as data_mod
from .config import RECORDED
from .models import HashingTokenizer
from .regimes import corrupt_labels

TensorData = dict  # dict[str, torch.Tensor], every tensor with the same first dimension


@dataclass
class PreparedData:
    """Everything an experiment reads, as tensors. ``test`` is None where a selection must not read it."""

    train: TensorData
    validation: TensorData
    test: TensorData | None
    class_names: list[str]
    modalities: tuple[str, ...]  # ("image", "text"), or the one the dataset has
    dataset: object  # the DatasetDict the tensors were made from (after ``subset``)
    dataset_name: str
    label: str
    encoders: dict[str, torch.nn.Module] = field(default_factory=dict)  # feature column → frozen encoder
    raw_test: dict = field(default_factory=dict)  # the end-to-end teacher's inputs for the first test rows
    signals: dict[str, dict] = field(default_factory=dict)  # what each active teacher signal prepared
    ood: TensorData | None = None  # config.ood_test: the test emoji in another design (evaluation only)
    speech_tests: dict[str, TensorData] = field(default_factory=dict)  # config.speech: test heard by each voice, and "human"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_dataset_for(config):
    """The dataset ``config.data`` names: "openmoji" (shipped) or a folder (``data.load_image_folder``)."""
    if config.data == "openmoji":
        return data_mod.load_openmoji()
    folder = Path(config.data)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {config.data!r}: no such folder. Give 'openmoji' or a folder holding "
                                "images and a metadata.csv (file_name, text, label columns)")
    return data_mod.load_image_folder(folder, label_column=config.label)


def prepare_data(config, dataset=None, progress: bool = False) -> PreparedData:
    """Tensors for every split of ``dataset`` (default: ``config.data``) as ``config`` describes them."""
    from .encoders import load_image_encoder, load_text_encoder
    from .env import pick_device
    from .signals import active_signals

    ds = dataset if dataset is not None else load_dataset_for(config)
    data_mod.check_label_column(ds, config.label)
    if config.speech == (RECORDED,) and "audio" not in data_mod._features(ds):
        raise ValueError(f"--speech recorded hears each row's own recording, and {config.data} has none: add an "
                         "'audio_file' column to its metadata.csv (each row's wav or flac file, its path relative to "
                         "the metadata.csv), or drop --speech")
    full = ds
    if config.subset is not None:
        ds = type(ds)({s: _subset(split, config) for s, split in ds.items()})
    modalities = data_mod.modalities(ds)
    signals = active_signals(config, modalities)  # a signal may need a modality the dataset lacks
    device = pick_device(config.device)
    encoders = {}
    if "text" in modalities:
        encoders["text_feat"] = load_text_encoder(config.text_encoder)
    if "image" in modalities:
        encoders["image_feat"] = load_image_encoder(config.image_encoder)
    tokenizer = HashingTokenizer(config.text_buckets)
    splits = {name: split_tensors(split, config, encoders, tokenizer, device, progress) for name, split in ds.items()}
    class_names = data_mod.class_names(ds["train"], config.label)
    out = PreparedData(train=splits["train"], validation=splits["validation"], test=splits["test"],
                       class_names=class_names, modalities=modalities, dataset=ds, dataset_name=config.data,
                       label=config.label, encoders=encoders)
    if config.ood_test:  # the same emoji as the test split, drawn by another designer
        from .noto import load_noto

        noto = load_noto() if config.subset is None else _subset(load_noto(), config)
        out.ood = split_tensors(noto, config, encoders, tokenizer, device, progress)
    if config.speech:
        add_speech(out, config, full)
    # Raw inputs for timing the teacher end to end (encoders + head), as it would run when deployed.
    out.raw_test = raw_teacher_inputs(ds["test"].select(range(min(64, len(ds["test"])))), config, encoders)
    for name, signal in signals.items():
        prepared = signal.prepare(config, out, device=device, progress=progress)
        if prepared is not None:
            out.signals[name] = prepared
    out.train["label"] = corrupt_labels(out.train["label"], len(class_names), config.label_fraction,
                                        config.label_noise, config.data_seed)
    return out


def add_speech(out: PreparedData, config, full) -> None:
    """The audio modality (``config.speech``): each split's rows spoken by the training voices, and the test
    split heard by every voice and the human words, as evaluation sets (``out.speech_tests``). With
    ``--speech recorded``, each row's own recording (a folder's ``audio`` column, ``data.load_image_folder``)
    instead, through the same cached encoders; no voices, so no extra evaluation sets."""
    from .audio import encode_audio, human_columns, speech_columns, student_log_mel, voice_columns
    from .speech import VOICES

    if config.speech == (RECORDED,):
        for name in ("train", "validation", "test"):
            clips = [np.asarray(a, dtype=np.int16) for a in out.dataset[name]["audio"]]  # lists: datasets 3.4's numpy format needs a torchvision with VideoReader
            getattr(out, name).update({"audio_feat": encode_audio(clips), "audio": student_log_mel(clips)})
        out.modalities = (*out.modalities, "audio")
        return
    rows = {}
    for name in ("train", "validation", "test"):
        position = {cp: i for i, cp in enumerate(full[name]["codepoints"])}
        rows[name] = [position[cp] for cp in out.dataset[name]["codepoints"]]
        getattr(out, name).update(speech_columns(name, config.speech, config.data_seed, rows[name]))
    out.modalities = (*out.modalities, "audio")
    for voice in VOICES:
        out.speech_tests[voice] = {**out.test, **voice_columns("test", voice, rows["test"])}
    if config.label == "group" and config.subset is None:
        out.speech_tests["human"] = human_columns(out.class_names, config.label)


def _subset(split, config):
    """``config.subset`` rows of ``split``, drawn with ``config.data_seed`` (quick runs and tests)."""
    return split.shuffle(seed=config.data_seed).select(range(min(config.subset, len(split))))


def split_tensors(split, config, encoders: dict, tokenizer, device="cpu", progress: bool = False) -> TensorData:
    """One split's tensors: the teachers' cached features, the students' pixels and token ids, labels, row numbers."""
    from .encoders import encode_split

    columns = {}
    if "image_feat" in encoders:
        columns["image_feat"] = encode_split(split, encoders["image_feat"], "image", device=device,
                                             image_size=config.teacher_image_size, progress=progress)
    if "text_feat" in encoders:
        columns["text_feat"] = encode_split(split, encoders["text_feat"], "text", device=device,
                                            max_length=config.max_length, progress=progress)
    if "image_feat" in encoders:
        columns["image"] = data_mod.images_tensor(split, config.student_image_size)  # (N, 3, s, s)
    if "text_feat" in encoders:
        columns["text_ids"] = tokenizer(list(split["text"]))  # (N, L)
    columns["label"] = torch.tensor(list(split[config.label]), dtype=torch.long)
    columns["index"] = torch.arange(len(split))
    return columns


def raw_teacher_inputs(split, config, encoders: dict) -> dict:
    """What the end-to-end teacher reads for ``split``: images at the teacher's size and tokenised names,
    keyed like the features they become (``image_feat``, ``text_feat``)."""
    out = {}
    if "image_feat" in encoders:
        out["image_feat"] = data_mod.images_tensor(split, config.teacher_image_size)  # (N, 3, s, s)
    if "text_feat" in encoders:
        tokens = encoders["text_feat"].tokenizer(list(split["text"]), padding=True, truncation=True,
                                                 max_length=config.max_length, return_tensors="pt")
        out["text_feat"] = {k: tokens[k] for k in ("input_ids", "attention_mask")}
    return out


def slice_inputs(raw: dict, keys, rows) -> dict:
    """Rows ``rows`` (a slice or index tensor) of the raw inputs ``keys``; a tokenised text input is a
    dict of tensors and is sliced tensor by tensor."""
    return {k: ({n: t[rows] for n, t in raw[k].items()} if isinstance(raw[k], dict) else raw[k][rows]) for k in keys}
