"""Experiment configurations: a CPU default, a GPU/full variant and a tiny test one — the same code path.

Introduced in notebook 04; ``python -m mmkd_utils run --config NAME`` runs one, and
``python -m mmkd_utils run --help`` lists every option.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from .losses import check_alpha, check_temperature
from .recipes import METHODS, STUDENTS, TEACHERS
from .signals import active_signals
from .train import TrainConfig

RECORDED = "recorded"  # speech=("recorded",): a folder's own recordings (data.load_image_folder's audio_file column)


@dataclass
class ExperimentConfig:
    """Everything one experiment needs. Each field is a CLI option (``--field value``)."""

    name: str = "cpu"
    data: str = "openmoji"  # "openmoji" (shipped) or a folder of images with a metadata.csv
    label: str = "group"  # any ClassLabel column: OpenMoji has "group" (9 classes) and "subgroup" (98)
    # teacher side: pretrained encoders (frozen, features cached) + a fusion head
    text_encoder: str = "all-MiniLM-L6-v2"
    image_encoder: str = "mobilenet_v2"
    teacher_image_size: int = 96
    max_length: int = 32
    fusion: str = "concat"
    teacher_hidden: int = 256
    teacher_dropout: float = 0.3
    modality_dropout: float = 0.2
    teacher_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=60, lr=1e-3, weight_decay=0.05, batch_size=128, patience=15))
    # students
    students: tuple[str, ...] = ("image", "text", "multimodal")  # and "audio" (with --speech)
    methods: tuple[str, ...] = ("labels", "soft", "hard", "feature")
    distill_from: str = "fusion"  # which teacher the students learn from
    teachers: tuple[str, ...] = ()  # the teachers trained and tested besides that one (empty: every one the data allows)
    student_image_size: int = 32
    cnn_width: int = 16
    text_buckets: int = 2**14
    text_dim: int = 64
    student_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, lr=3e-3, weight_decay=1e-4))
    augment: bool = True  # shift augmentation for image students
    crossfit: int = 0  # >= 2: the teacher's outputs on each training row come from a teacher that did not train on it (K folds by base emoji)
    transfer_words: int = 0  # > 0: this many words from the text encoder's vocabulary, labelled by the teacher, join the text student's training set
    teacher_views: int = 0  # > 1: image-seeing students train on this many cached views per image, each labelled by the teacher (replaces augment)
    speech: tuple[str, ...] = ()  # training voices (data/speech, notebook 11): each row is spoken by one of them, adding the audio modality; every audio model is also tested on every voice and the human words. ("recorded",) with --data FOLDER: the audio modality is the folder's own recordings (audio_file column), tested on the test split only
    audio_width: int = 8  # the audio student's CNN width (its input is 32 mel bands x 93 frames)
    ood_test: str | None = None  # "noto": also evaluate every model on data/noto, the test emoji in another design (never selected on)
    T: float = 4.0
    alpha: float = 0.5
    feature_weight: float = 1.0
    # the data regime
    label_fraction: float = 1.0  # < 1: only this share of train has labels; the teacher labels the rest
    label_noise: float = 0.0  # share of train labels flipped to another class
    data_seed: int = 0  # which rows are labelled / flipped: fixed across seeds, so runs are paired
    subset: int | None = None  # use only this many rows per split (tests)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    timing: bool = True
    out_dir: str = "results"
    device: str | None = None
    log_dir: str | None = None  # TensorBoard logs of every fit in <log_dir>/seed<seed>/<teacher-fusion, image-student-soft, ...>

    def __post_init__(self):
        for what, given, known in (("student", self.students, STUDENTS), ("method", self.methods, METHODS)):
            bad = [x for x in given if x not in known]
            if bad or not given:
                raise ValueError(f"unknown {what}(s) {bad or '(none given)'}; choose from {tuple(known)}")
        if any(t not in TEACHERS for t in self.teachers):
            raise ValueError(f"unknown teacher(s) {[t for t in self.teachers if t not in TEACHERS]}; choose from {tuple(TEACHERS)}")
        if self.distill_from not in TEACHERS:
            raise ValueError(f"distill_from must be one of {tuple(TEACHERS)}, got {self.distill_from!r}")
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"label must name a ClassLabel column of the dataset, got {self.label!r}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"label_noise must be in [0, 1), got {self.label_noise}")
        if self.teacher_views < 0 or self.teacher_views == 1:
            raise ValueError(f"teacher_views must be 0 (off) or at least 2 (view 0 is the original image), "
                             f"got {self.teacher_views}")
        if self.crossfit < 0 or self.crossfit == 1:
            raise ValueError(f"crossfit must be 0 (off) or a number of folds >= 2, got {self.crossfit}")
        if self.transfer_words < 0:
            raise ValueError(f"transfer_words must be >= 0 (0: no transfer set), got {self.transfer_words}")
        if self.ood_test not in (None, "noto"):
            raise ValueError(f"ood_test must be 'noto' (data/noto: the test emoji drawn by Noto Color Emoji) or unset, "
                             f"got {self.ood_test!r}")
        if self.ood_test and self.data != "openmoji":
            raise ValueError("ood_test='noto' redraws the shipped OpenMoji test split: it needs --data openmoji "
                             f"(got {self.data!r}); drop --ood_test for your own data")
        if self.speech == (RECORDED,):  # your folder's own recordings (its metadata.csv's audio_file column)
            if self.data == "openmoji":
                raise ValueError("speech='recorded' reads each row's recording from the 'audio_file' column of your "
                                 "folder's metadata.csv: it needs --data FOLDER. For the shipped OpenMoji names give "
                                 "training voices instead (--speech us,british-f, ...)")
        elif self.speech:
            from .speech import TRAIN_VOICES

            if RECORDED in self.speech:
                raise ValueError(f"speech: 'recorded' (your folder's recordings) stands alone, it does not mix with "
                                 f"voices; got {self.speech}. Give --speech recorded, or voices only")
            bad = [v for v in self.speech if v not in TRAIN_VOICES]
            if bad or len(set(self.speech)) != len(self.speech):
                raise ValueError(f"speech: training voices, each once, from {TRAIN_VOICES} (the held-out voices are "
                                 f"only ever tested on), or 'recorded' with --data FOLDER; got {self.speech}")
            if self.data != "openmoji":
                raise ValueError(f"speech voices speak the shipped OpenMoji names: voices need --data openmoji, not "
                                 f"{self.data!r}. For a folder, record each row and list the files in an 'audio_file' "
                                 "column of its metadata.csv, then use --speech recorded")
            if self.ood_test:
                raise ValueError("speech voices the shipped OpenMoji names, not data/noto's: it needs no --ood_test")
        if not self.seeds:
            raise ValueError("seeds is empty: give at least one seed")
        check_temperature(self.T)
        check_alpha(self.alpha)  # the experiments use the convex form: (1 - alpha)·CE + alpha·KD
        active_signals(self)  # teacher signals that cannot be combined


CONFIGS: dict[str, ExperimentConfig] = {
    # The default: offline, 2 CPU cores. MiniLM + MobileNetV2 features, tiny students.
    "cpu": ExperimentConfig(),
    # GPU / Colab: BERT-base + ResNet-18 (downloaded), bigger heads and students, longer training.
    "gpu": ExperimentConfig(
        name="gpu", text_encoder="bert-base-uncased", image_encoder="resnet18", teacher_image_size=224,
        teacher_hidden=512, cnn_width=32, student_image_size=64,
        teacher_train=TrainConfig(epochs=80, lr=1e-3, weight_decay=0.05, batch_size=256, patience=20, channels_last=True),
        student_train=TrainConfig(epochs=60, lr=3e-3, weight_decay=1e-4, batch_size=128, channels_last=True)),
    # A smoke test: a small subset, few epochs, one seed (the CLI's end-to-end test uses it).
    "tiny": ExperimentConfig(
        name="tiny", subset=160, seeds=(0,), timing=False,
        teacher_train=TrainConfig(epochs=4, lr=1e-3, batch_size=64),
        student_train=TrainConfig(epochs=2, lr=3e-3, batch_size=64)),
}


def get_config(config_name: str, **overrides) -> ExperimentConfig:
    """A named configuration with some fields replaced (``get_config("cpu", label="subgroup")``)."""
    if config_name not in CONFIGS:
        raise KeyError(f"unknown configuration {config_name!r}; choose from {sorted(CONFIGS)}")
    unknown = set(overrides) - {f.name for f in fields(ExperimentConfig)}
    if unknown:
        raise TypeError(f"ExperimentConfig has no field(s) {sorted(unknown)}")
    return replace(CONFIGS[config_name], **overrides)
