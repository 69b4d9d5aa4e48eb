"""Benchmarks: what distillation costs, measured (``python -m mmkd_utils bench``).

Side by side, in one run: seconds per epoch of a student trained on labels only, distilled from
cached teacher logits, and distilled from a teacher run online (encoders included, as needed when
the teacher must see each new augmented view); teacher vs student inference latency and throughput
on the CPU at batch 1 and 64; optionally the nbval time of each notebook. Every timing is repeated
and the median reported. Writes ``<out>/bench.json`` and ``<out>/bench.md``.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from . import evaluate as ev
from .config import ExperimentConfig, get_config
from .env import library_versions, seed_everything
from .objective import Objective
from .prepare import PreparedData, prepare_data, raw_teacher_inputs, slice_inputs
from .recipes import build_student, build_teacher, end_to_end_teacher
from .regimes import labelled_only
from .report import bench_markdown
from .signals import cache_teacher_outputs
from .train import TrainConfig, fit


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def epoch_costs(config: ExperimentConfig, data: PreparedData, student_kind: str = "image", repeats: int = 3) -> dict:
    """Median seconds for one training epoch: labels only / cached teacher logits / online teacher."""
    seed_everything(0)
    head = build_teacher("fusion", config, data)
    fit(head, labelled_only(data.train), data.validation, config=replace(config.teacher_train, epochs=5))
    train = {**data.train, **cache_teacher_outputs(head, data.train)}
    one_epoch = TrainConfig(epochs=1, lr=config.student_train.lr, batch_size=config.student_train.batch_size)
    n_classes = data.num_classes

    def run(objective, train_data, teacher=None):
        seed_everything(0)
        fit(build_student(student_kind, config, n_classes), train_data, None, objective, one_epoch, teacher=teacher)

    # The online teacher reads raw inputs: images at the teacher's size and tokenised names.
    raw_train = raw_teacher_inputs(data.dataset["train"], config, data.encoders)
    online = _OnlineTeacher(end_to_end_teacher(head, data.encoders), raw_train)
    costs = {
        "labels_only": _median_seconds(lambda: run(Objective("ce"), labelled_only(data.train)), repeats),
        "kd_cached_teacher": _median_seconds(lambda: run(Objective("soft"), train), repeats),
        "kd_online_teacher": _median_seconds(lambda: run(Objective("soft"), data.train, online), max(1, repeats - 2)),
    }
    costs["cached_over_labels"] = costs["kd_cached_teacher"] / costs["labels_only"]
    costs["online_over_labels"] = costs["kd_online_teacher"] / costs["labels_only"]
    return costs


class _OnlineTeacher(torch.nn.Module):
    """The end-to-end teacher fed from raw inputs looked up by each batch's ``index``."""

    def __init__(self, teacher, raw_inputs: dict):
        super().__init__()
        self.teacher, self.raw = teacher, raw_inputs

    def forward(self, batch):
        return self.teacher(slice_inputs(self.raw, self.raw, batch["index"].cpu()))


def inference_costs(config: ExperimentConfig, data: PreparedData) -> list[dict]:
    """Parameters, size and CPU latency / throughput at batch 1 and 64: the teacher (with its encoders)
    and each student."""
    rows = []
    seed_everything(0)
    head = build_teacher("fusion", config, data)
    teacher = end_to_end_teacher(head, data.encoders)

    def teacher_batch(bs: int) -> dict:
        return slice_inputs(data.raw_test, head.inputs, slice(0, bs))

    rows.append({"model": "teacher (fusion, with encoders)", "params": ev.count_parameters(teacher),
                 "size_mb": ev.size_on_disk(teacher) / 1e6, **ev.latency(teacher, teacher_batch, repeats=10)})
    for kind in config.students:
        student = build_student(kind, config, data.num_classes)
        rows.append({"model": f"{kind} student", "params": ev.count_parameters(student),
                     "size_mb": ev.size_on_disk(student) / 1e6,
                     **ev.latency(student, ev.first_rows(data.test, student.inputs), repeats=30)})
    return rows


def notebook_costs(paths: list[str]) -> dict[str, float]:
    """Seconds each notebook takes under ``pytest --nbval-lax`` (a fresh kernel each)."""
    out = {}
    for p in paths:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q", p],
                              capture_output=True, text=True)
        out[p] = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{p} failed under nbval:\n{proc.stdout[-2000:]}")
    return out


def run_bench(config_name: str = "cpu", out: str | Path = "results/bench", repeats: int = 3,
              notebooks: list[str] | None = None) -> dict:
    config = get_config(config_name)
    start = time.perf_counter()
    data = prepare_data(config)
    result = {"config": config_name, "versions": library_versions(), "torch_threads": torch.get_num_threads(),
              "train_rows": len(data.train["label"]), "repeats": repeats,
              "epoch_seconds": epoch_costs(config, data, repeats=repeats),
              "inference": inference_costs(config, data)}
    if notebooks:
        result["nbval_seconds"] = notebook_costs(notebooks)
    result["seconds"] = time.perf_counter() - start
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf8")
    (out / "bench.md").write_text(bench_markdown(result), encoding="utf8")
    return result
