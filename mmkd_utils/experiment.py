"""A whole experiment: teachers → label-only students → distilled students → evaluation → results.

Introduced in notebook 05; run from the shell with ``python -m mmkd_utils run --config cpu`` (or
``--data FOLDER --label COLUMN`` for your own data). The pieces live where their names say: tensors in
``prepare``, builders and the method table in ``recipes``, what the student learns from in ``signals``,
tables in ``report`` and publishing in ``publish``. Results go to ``<out_dir>/<name>/``: ``results.json`` (every run,
every seed with each test row's right/wrong, the config and library versions), ``results.md`` (the table) and ``results.png``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from . import evaluate as ev
from .config import ExperimentConfig
from .env import library_versions, pick_device, seed_everything
from .prepare import PreparedData, prepare_data, slice_inputs
from .recipes import STUDENTS, TEACHERS, build_student, build_teacher, end_to_end_teacher, objective_for, seeded, train_teacher
from .regimes import labelled_only
from .report import jsonable, summary_table, val_cell, val_summary, write_results, write_selection
from .signals import SeedContext, active_signals, cache_teacher_outputs
from .speech import HELD_OUT_VOICES
from .train import distributed_context, fit, predict
from .views import shift_augment


def runnable(config: ExperimentConfig, data: PreparedData) -> tuple[list[str], list[str], list[str]]:
    """The teachers and students of ``config`` whose modalities the data has, and a note for each one
    skipped. Raises if the teacher the students distil from cannot run, or if no student can."""
    def lacking(modalities):
        return [m for m in modalities if m not in data.modalities]

    def hint(modality):
        return (" (the audio modality needs --speech VOICES, or --speech recorded for a folder whose metadata.csv "
                "has an audio_file column)") if modality == "audio" else ""

    # the audio teachers are only considered with --speech: without it, no run mentions them
    kinds = {k: m for k, m in TEACHERS.items() if (config.speech or "audio" not in m)
             and (not config.teachers or k in config.teachers or k == config.distill_from)}
    teachers = [k for k, mods in kinds.items() if not lacking(mods)]
    students = [s for s in config.students if not lacking(STUDENTS[s])]
    notes = [f"skipped the {k} teacher: the dataset has no {lacking(m)[0]} column" for k, m in kinds.items() if lacking(m)]
    notes += [f"skipped the {s} student: the dataset has no {lacking(STUDENTS[s])[0]} column{hint(lacking(STUDENTS[s])[0])}"
              for s in config.students if lacking(STUDENTS[s])]
    if config.distill_from not in teachers:
        missing = lacking(TEACHERS[config.distill_from])[0]
        raise ValueError(f"the students distil from the {config.distill_from} teacher, which needs "
                         f"{missing}, and the dataset has only {list(data.modalities)}{hint(missing)}: "
                         f"use --distill_from {teachers[0]}")
    if not students:
        raise ValueError(f"no student of {list(config.students)} can read {list(data.modalities)}: "
                         f"use --students {','.join(s for s in STUDENTS if not lacking(STUDENTS[s]))}"
                         f"{hint('audio') if 'audio' in config.students else ''}")
    return teachers, students, notes


def run_seed(config: ExperimentConfig, data: PreparedData, seed: int, progress: bool = False,
             read_test: bool = True) -> list[dict]:
    """Every row of the experiment for one seed: teachers, then each student × method.

    With ``read_test=False`` (tuning) only the teacher the students learn from is trained, and only
    validation accuracy is recorded: the test split is never touched.
    """
    teacher_kinds, students, _ = runnable(config, data)
    rows, teachers = [], {}
    for kind in (teacher_kinds if read_test else (config.distill_from,)):
        teachers[kind], hist = train_teacher(kind, config, data, seed)
        if read_test:
            row = {**ev.evaluate(teachers[kind], data.test, class_names=data.class_names, timing=False),
                   **teacher_pipeline_cost(teachers[kind], data, timing=False)}
            rows.append({"model": f"teacher ({kind})", "role": "teacher", "method": "labels", "seed": seed,
                         "best_epoch": hist.best_epoch, "val_accuracy": hist.best_score, "train_seconds": hist.seconds,
                         **row, **record_test_rows(teachers[kind], data), **ood_metrics(teachers[kind], data),
                         **speech_metrics(teachers[kind], data)})
    teacher = teachers[config.distill_from]
    test_logits = cache_teacher_outputs(teacher, data.test)["teacher_logits"] if read_test else None
    ood_logits = cache_teacher_outputs(teacher, data.ood)["teacher_logits"] if read_test and data.ood is not None else None
    ctx = SeedContext(config, data, seed, teacher)
    signals = active_signals(config).values()
    for signal in signals:
        signal.for_seed(ctx)
    teacher_dim = ctx.train["teacher_feat"].shape[1]
    for student_kind in students:
        for method in config.methods:
            seed_everything(seed)
            student = build_student(student_kind, config, data.num_classes)
            objective = objective_for(method, config, student.out_dim, teacher_dim)
            train, augment = ctx.train, (shift_augment() if config.augment and "image" in STUDENTS[student_kind] else None)
            for signal in signals:
                train, augment = signal.student_data(ctx, student_kind, objective, train, augment)
            hist = fit(student, train if objective.uses_teacher else labelled_only(train), data.validation, objective,
                       seeded(config.student_train, seed, config.device, config.log_dir, f"{student_kind}-student-{method}"),
                       augment=augment)
            rows.append({"model": f"{student_kind} student", "role": "student", "method": method, "seed": seed,
                         "best_epoch": hist.best_epoch, "val_accuracy": hist.best_score, "train_seconds": hist.seconds,
                         **(ev.evaluate(student, data.test, test_logits, data.class_names, timing=False) if read_test else {}),
                         **(record_test_rows(student, data) if read_test else {}),
                         **(ood_metrics(student, data, ood_logits) if read_test else {}),
                         **(speech_metrics(student, data) if read_test else {})})
            if progress:
                print(f"  seed {seed} {student_kind + ' student':<20} {method:<8} val acc {hist.best_score:.3f} "
                      f"({hist.seconds:.0f} s)", flush=True)
    return rows


def record_test_rows(model, data: PreparedData) -> dict:
    """What every run keeps of the test split beyond its summary metrics: which rows ``model`` gets right
    (``test_correct``, 1 or 0 per row in the split's order), so that any two runs can later be compared row by
    row and bootstrapped over the test split's base emoji (notebook 07), and two proper scores of its
    probabilities beside the binned ECE: ``nll`` and ``brier``."""
    logits, labels = predict(model, data.test, device="cpu"), data.test["label"]
    return {"test_correct": (logits.argmax(1) == labels).int().tolist(), "nll": ev.nll(logits, labels),
            "brier": ev.brier_score(logits, labels)}


def ood_metrics(model, data: PreparedData, teacher_logits: torch.Tensor | None = None) -> dict:
    """``model`` on the out-of-distribution test set (``config.ood_test``), keys prefixed ``ood_``: accuracy,
    macro-F1, agreement with the teacher, and which rows it gets right (so that it can be bootstrapped over
    emoji, like the in-domain ``test_correct`` of every run). Empty without one."""
    if data.ood is None:
        return {}
    logits = predict(model, data.ood, device="cpu")
    metrics = ev.classification_metrics(logits, data.ood["label"])
    row = {"ood_accuracy": metrics["accuracy"], "ood_macro_f1": metrics["macro_f1"],
           "ood_correct": (logits.argmax(1) == data.ood["label"]).int().tolist()}
    if teacher_logits is not None:
        row["ood_agreement"] = ev.agreement_with_teacher(logits, teacher_logits)["agreement"]
    return row


def speech_metrics(model, data: PreparedData) -> dict:
    """With ``config.speech``, for a model that hears: its accuracy and right/wrong rows on the test split
    spoken by each voice (``speech_accuracy`` / ``speech_correct``, keyed by voice, and "human" for the
    human words where the model reads audio alone). Empty otherwise, and with ``--speech recorded`` (a folder's
    own recordings: no voices to test on, so the audio models are tested on the test split alone)."""
    if not data.speech_tests or not any(k.startswith("audio") for k in model.inputs):
        return {}
    acc, correct = {}, {}
    for name, split in data.speech_tests.items():
        if name == "human" and set(model.inputs) - {"audio", "audio_feat"}:
            continue  # the human words have no picture or name of their own
        right = predict(model, split, device="cpu").argmax(1) == split["label"]
        acc[name], correct[name] = right.float().mean().item(), right.int().tolist()
    if all(v in acc for v in HELD_OUT_VOICES):  # the voices no run trains on (equal sizes)
        acc["held-out"] = sum(acc[v] for v in HELD_OUT_VOICES) / len(HELD_OUT_VOICES)
    return {"speech_accuracy": acc, "speech_correct": correct}


def teacher_pipeline_cost(head, data: PreparedData, timing: bool) -> dict:
    """Parameters, size and latency of the teacher *with* its encoders (the head alone would flatter it). The
    audio teachers' Whisper encoder runs in CTranslate2, not torch: it is not counted (``uncounted``)."""
    if "audio_feat" in head.inputs:
        counted = [head] + [data.encoders[k] for k in head.inputs if k in data.encoders]
        return {"params": sum(ev.count_parameters(m) for m in counted),
                "size_mb": sum(ev.size_on_disk(m) for m in counted) / 1e6, "uncounted": "the Whisper tiny.en encoder (CTranslate2)"}
    full = end_to_end_teacher(head, data.encoders)
    cost = {"params": ev.count_parameters(full), "size_mb": ev.size_on_disk(full) / 1e6}
    if timing:
        cost.update(ev.latency(full, lambda bs: slice_inputs(data.raw_test, head.inputs, slice(0, bs)), repeats=10))
    return cost


def model_costs(config: ExperimentConfig, data: PreparedData) -> dict[str, dict]:
    """CPU latency and throughput at batch 1 and 64 of each teacher (with its encoders) and each student,
    measured once, after training, in this process alone (timings taken while other runs compete for the
    cores would be noise). Weights do not change the cost, so a freshly built model stands in."""
    teachers, students, _ = runnable(config, data)
    costs = {f"teacher ({k})": teacher_pipeline_cost(build_teacher(k, config, data), data, timing=True) for k in teachers}
    for kind in students:
        student = build_student(kind, config, data.num_classes)
        costs[f"{kind} student"] = {"params": ev.count_parameters(student), "size_mb": ev.size_on_disk(student) / 1e6,
                                    **ev.latency(student, ev.first_rows(data.test, student.inputs), repeats=30)}
    return costs


def _seed_worker(config: ExperimentConfig, seed: int, threads: int, dataset, read_test: bool = True) -> list[dict]:
    torch.set_num_threads(threads)
    return run_seed(config, prepare_data(config, dataset), seed, read_test=read_test)


def _in_parallel(tasks: list[tuple], jobs: int) -> list[list[dict]]:
    """``_seed_worker(*task)`` for every task, ``jobs`` processes at once ('spawn': each re-imports ``__main__``)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    hint = ("run(..., jobs > 1) starts worker processes that re-import the script that called it; a script must "
            "make that call under `if __name__ == \"__main__\":` (or use jobs=1)")
    if mp.parent_process() is not None and getattr(__import__("__main__"), "__name__", "") == "__mp_main__":
        raise RuntimeError(f"called while a worker process was importing your script: {hint}")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            return list(pool.map(_seed_worker, *zip(*[(c, s, threads, d, r) for c, s, d, r in tasks])))
    except BrokenProcessPool as err:
        raise RuntimeError(f"a worker process died before finishing. If this was a script: {hint}. "
                           "Otherwise the machine may be out of memory: use fewer jobs.") from err


def run(config: ExperimentConfig, progress: bool = True, dataset=None, jobs: int = 1) -> dict:
    """Run the experiment over all seeds and write ``results.json``, ``results.md`` and a figure.

    ``jobs`` > 1 trains that many seeds at once in separate processes, each with an equal share of the
    CPU threads (faster on a CPU than one process with all threads: tiny models scale poorly). Call it
    under ``if __name__ == "__main__":`` in a script.
    """
    start = time.perf_counter()
    data = prepare_data(config, dataset, progress=progress)
    _, _, notes = runnable(config, data)
    notes += [s.rule for s in active_signals(config).values() if s.rule]
    if progress:
        for note in notes:
            print(f"note: {note}", flush=True)
    if jobs > 1:
        runs = _in_parallel([(config, seed, dataset, True) for seed in config.seeds], jobs)
        rows = [r for seed_rows in runs for r in seed_rows]
    else:
        rows = [r for seed in config.seeds for r in run_seed(config, data, seed, progress=progress)]
    costs = model_costs(config, data) if config.timing else {}
    result = {"config": jsonable(asdict(config)), "versions": library_versions(),
              "device": str(pick_device(config.device)), "torch_threads": torch.get_num_threads(), "jobs": jobs,
              "latency_threads": ev.LATENCY_THREADS, "seconds": time.perf_counter() - start, "rows": rows,
              "costs": costs, "table": summary_table(rows, costs)}
    if notes:
        result["notes"] = notes
    if distributed_context()[0] == 0:  # under torchrun, rank 0 writes
        result["world_size"] = distributed_context()[1]
        write_results(result, Path(config.out_dir) / config.name)
    return result


def tune(config: ExperimentConfig, temperatures: tuple[float, ...], alphas: tuple[float, ...], jobs: int = 1) -> dict:
    """Choose T and α on the validation split only: every (T, α) pair, every seed and method of
    ``config``; the test split is never read. Writes ``<out_dir>/<name>/tune.{json,md}`` and returns
    the grid with the best pair per (student, method) by mean validation accuracy."""
    start = time.perf_counter()
    tasks = [(replace(config, T=t, alpha=a), seed) for t in temperatures for a in alphas for seed in config.seeds]
    runs = _in_parallel([(c, s, None, False) for c, s in tasks], jobs)
    grid: dict[tuple, list[float]] = {}
    for (cfg, _), rows in zip(tasks, runs):
        for r in rows:
            if r["role"] == "student":
                grid.setdefault((r["model"], r["method"], cfg.T, cfg.alpha), []).append(r["val_accuracy"])
    entries = [{"model": m, "method": k, "T": t, "alpha": a, **val_summary(v)} for (m, k, t, a), v in grid.items()]
    best = {}
    for e in entries:
        key = f"{e['model']} · {e['method']}"
        if key not in best or e["val_accuracy_mean"] > best[key]["val_accuracy_mean"]:
            best[key] = e
    result = {"config": jsonable(asdict(config)), "temperatures": list(temperatures), "alphas": list(alphas),
              "versions": library_versions(), "seconds": time.perf_counter() - start, "grid": entries, "best": best}
    lines = ["| student · method | T | α | val acc (%) |", "|---|---:|---:|---|"]
    lines += [f"| {e['model']} · {e['method']} | {e['T']} | {e['alpha']} | {val_cell(e, best[e['model'] + ' · ' + e['method']])} |"
              for e in entries]
    write_selection(config, "tune", result, lines)
    return result


def select_fusion(config: ExperimentConfig, fusions: tuple[str, ...] = ("concat", "gated", "attention")) -> dict:
    """Choose the fusion teacher's fusion type on the validation split only: train it with each type for
    every seed of ``config`` and record its best validation accuracy; the test split is never read.
    Writes ``<out_dir>/<name>/fusion.{json,md}`` and returns the grid and the best type."""
    start = time.perf_counter()
    data = prepare_data(config)
    data.test = None  # not read: selection uses validation only
    scores: dict[str, list[float]] = {}
    for fusion in fusions:
        for seed in config.seeds:
            _, hist = train_teacher("fusion", replace(config, fusion=fusion), data, seed)
            scores.setdefault(fusion, []).append(hist.best_score)
    grid = [{"fusion": f, **val_summary(v)} for f, v in scores.items()]
    best = max(grid, key=lambda e: e["val_accuracy_mean"])
    result = {"config": jsonable(asdict(config)), "versions": library_versions(),
              "seconds": time.perf_counter() - start, "grid": grid, "best": best["fusion"]}
    lines = ["| fusion | teacher val acc (%) |", "|---|---|"] + [f"| {e['fusion']} | {val_cell(e, best)} |" for e in grid]
    write_selection(config, "fusion", result, lines)
    return result


def config_from_result(result: dict, **overrides) -> ExperimentConfig:
    """The ``ExperimentConfig`` a results.json was written with (JSON lists back to tuples)."""
    from .train import TrainConfig

    fields = dict(result["config"])
    for key in ("teacher_train", "student_train"):
        fields[key] = TrainConfig(**fields[key])
    return replace(ExperimentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}), **overrides)


def remeasure(results_dir: str | Path) -> dict:
    """Measure the latency of an experiment's models again (same configuration, this process alone)
    and rewrite its results files; accuracies are untouched. For results whose timing was taken
    under load or with another thread setting."""
    results_dir = Path(results_dir)
    result = json.loads((results_dir / "results.json").read_text(encoding="utf8"))
    config = config_from_result(result)
    result["costs"] = model_costs(config, prepare_data(config))
    result["latency_threads"] = ev.LATENCY_THREADS
    result["table"] = summary_table(result["rows"], result["costs"])
    write_results(result, results_dir)
    return result


def compare_runs(published: dict, rerun: dict, shared_only: bool = False) -> dict:
    """Row by row (model, method, seed): how many test accuracies a rerun reproduced bit for bit, and per
    model the largest change of one seed and of the mean over seeds (in accuracy, 0–1). With
    ``shared_only`` the runs may differ in students or methods, and only the rows both have are compared."""
    def key(r):
        return r["model"], r["method"], r["seed"]

    mine = {key(r): r["accuracy"] for r in rerun["rows"]}
    rows = [r for r in published["rows"] if key(r) in mine] if shared_only else published["rows"]
    if not shared_only and set(mine) != {key(r) for r in rows}:
        raise ValueError("the rerun has other rows than the published run: not the same configuration")
    models: dict[str, dict] = {}
    for r in rows:
        m = models.setdefault(r["model"], {"rows": 0, "exact": 0, "max_seed_change": 0.0, "max_mean_change": 0.0})
        m["rows"] += 1
        m["exact"] += int(mine[key(r)] == r["accuracy"])
        m["max_seed_change"] = max(m["max_seed_change"], abs(mine[key(r)] - r["accuracy"]))
    means = {(e["model"], e["method"]): e["accuracy_mean"] for e in rerun["table"]}
    for e in published["table"]:
        if (e["model"], e["method"]) in means and e["model"] in models:
            m = models[e["model"]]
            m["max_mean_change"] = max(m["max_mean_change"], abs(means[(e["model"], e["method"])] - e["accuracy_mean"]))
    return {"jobs": rerun.get("jobs", 1), "torch_threads": rerun["torch_threads"], "versions": rerun["versions"],
            "rows": sum(m["rows"] for m in models.values()), "exact": sum(m["exact"] for m in models.values()),
            "models": models, **({"shared_with": rerun["config"]["name"]} if shared_only else {})}


def reproduce(results_dir: str | Path, jobs: int | None = None, scratch: str | Path | None = None) -> dict:
    """Rerun a published experiment from its results.json (into ``scratch``, a temporary folder by default)
    and record in ``<results_dir>/reproduction.json`` what it reproduced (``compare_runs``)."""
    import tempfile

    from .checkpoint import atomic_write_json

    results_dir = Path(results_dir)
    published = json.loads((results_dir / "results.json").read_text(encoding="utf8"))
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_result(published, out_dir=str(scratch or tmp))
        rerun = run(config, progress=False, jobs=jobs or published.get("jobs", 1))
    comparison = compare_runs(published, rerun)
    path = results_dir / "reproduction.json"
    history = json.loads(path.read_text(encoding="utf8")) if path.exists() else []
    atomic_write_json(history + [comparison], path)
    return comparison


def merge_runs(folders: list[str | Path], name: str, out_dir: str | Path = "results") -> dict:
    """One result from runs of one configuration that differ only in their seeds (seeds 0–4 published, 5–9
    added later): the rows joined, the table recomputed, the costs of the first run, ``merged_from`` naming
    the runs. Each seed trains alone, with the same thread count for the same ``jobs``, so the rows are
    those one run over all the seeds gives. Writes ``<out_dir>/<name>/``."""
    results = [json.loads((Path(f) / "results.json").read_text(encoding="utf8")) for f in folders]
    def same(r):  # the configuration as a dataclass: a field added since with its default compares equal
        return replace(config_from_result(r), name="", seeds=(0,)), r["jobs"], r["versions"]
    if any(same(r) != same(results[0]) for r in results):
        raise ValueError(f"{[str(f) for f in folders]} differ in more than their seeds (configuration, jobs or "
                         "library versions): they are not one experiment")
    seeds = [s for r in results for s in r["config"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the runs share seeds {sorted(s for s in set(seeds) if seeds.count(s) > 1)}: each seed once")
    rows = [row for r in results for row in r["rows"]]
    merged = {**results[0], "config": {**results[0]["config"], "name": name, "seeds": seeds}, "rows": rows,
              "seconds": sum(r["seconds"] for r in results), "table": summary_table(rows, results[0].get("costs")),
              "merged_from": [{"run": r["config"]["name"], "seeds": r["config"]["seeds"]} for r in results]}
    write_results(merged, Path(out_dir) / name)
    return merged
