"""A whole experiment: teachers → label-only students → distilled students → evaluation → results.

Introduced in notebook 05; run from the shell with ``python -m mmkd_utils run --config cpu``. Results
go to ``<out_dir>/<name>/``: ``results.json`` (every run, every seed, the config and library versions),
``results.md`` (the table: mean ± std over seeds, and the paired difference to labels only) and a figure.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import data as data_mod
from . import evaluate as ev
from .config import ExperimentConfig
from .env import library_versions, pick_device, seed_everything
from .models import FusionClassifier, HashingTokenizer, ImageCNN, MultimodalStudent, TextBag
from .train import Objective, cache_teacher_outputs, cached_view_augment, fit, predict, shift_augment

TEACHER_INPUTS = {"fusion": ("image_feat", "text_feat"), "text": ("text_feat",), "image": ("image_feat",)}


# ------------------------------------------------------------------------------------------ data
def prepare_data(config: ExperimentConfig, dataset=None, progress: bool = False) -> dict:
    """Tensor columns for every split: what the teachers read (frozen-encoder features, cached on disk)
    and what the students read (32 px pixels, hashed token ids), plus ``label`` and ``index``.

    Returns ``{"train": {...}, "validation": {...}, "test": {...}, "class_names": [...], "clean_train_label": ...}``.
    """
    from .encoders import encode_split, load_image_encoder, load_text_encoder

    ds = dataset if dataset is not None else data_mod.load_openmoji()
    if config.subset is not None:
        ds = type(ds)({s: split.shuffle(seed=config.data_seed).select(range(min(config.subset, len(split))))
                       for s, split in ds.items()})
    device = pick_device(config.device)
    text_encoder = load_text_encoder(config.text_encoder)
    image_encoder = load_image_encoder(config.image_encoder)
    tokenizer = HashingTokenizer(config.text_buckets)
    out = {"class_names": data_mod.class_names(ds["train"], config.label)}
    for split_name, split in ds.items():
        out[split_name] = {
            "image_feat": encode_split(split, image_encoder, "image", image_size=config.teacher_image_size,
                                       device=device, progress=progress),
            "text_feat": encode_split(split, text_encoder, "text", max_length=config.max_length,
                                      device=device, progress=progress),
            "image": data_mod.images_tensor(split, config.student_image_size),  # (N, 3, s, s)
            "text_ids": tokenizer(list(split["text"])),  # (N, L)
            "label": torch.tensor(list(split[config.label]), dtype=torch.long),
            "index": torch.arange(len(split)),
        }
    # Raw inputs for timing the teacher end to end (encoders + head), as it would run when deployed.
    out["encoders"] = {"image_feat": image_encoder, "text_feat": text_encoder}
    out["dataset"] = ds  # the DatasetDict the tensors were made from (after ``subset``)
    out["raw_test"] = raw_teacher_inputs(ds["test"].select(range(min(64, len(ds["test"])))), config, text_encoder)
    if config.teacher_views:  # V augmented views of every training image: teacher features + student pixels
        from .views import encode_views

        out["train_views"] = encode_views(ds["train"], image_encoder, config.teacher_views,
                                          teacher_size=config.teacher_image_size,
                                          student_size=config.student_image_size, seed=config.data_seed, device=device)
    if config.transfer_words:  # a transfer set: unlabelled words the teacher labels for the text student
        import datasets

        words = datasets.Dataset.from_dict({"text": transfer_vocabulary(text_encoder.tokenizer, config.transfer_words,
                                                                        config.data_seed)})
        n = len(words)
        out["transfer"] = {"text_feat": encode_split(words, text_encoder, "text", max_length=config.max_length,
                                                     device=device, progress=progress),
                           "text_ids": tokenizer(list(words["text"])), "label": torch.full((n,), -1, dtype=torch.long),
                           "index": torch.arange(n) + len(ds["train"])}
    if config.crossfit:
        out["train_folds"] = folds_by_group(list(ds["train"]["base"]), config.crossfit, config.data_seed)
    out["clean_train_label"] = out["train"]["label"].clone()
    out["train"]["label"] = corrupt_labels(out["train"]["label"], len(out["class_names"]),
                                           config.label_fraction, config.label_noise, config.data_seed)
    return out


def raw_teacher_inputs(split, config: ExperimentConfig, text_encoder) -> dict:
    """What the end-to-end teacher reads for ``split``: images at the teacher's size and tokenised names,
    keyed like the features they become (``image_feat``, ``text_feat``)."""
    tokens = text_encoder.tokenizer(list(split["text"]), padding=True, truncation=True,
                                    max_length=config.max_length, return_tensors="pt")
    return {"image_feat": data_mod.images_tensor(split, config.teacher_image_size),  # (N, 3, s, s)
            "text_feat": {k: tokens[k] for k in ("input_ids", "attention_mask")}}


def slice_inputs(raw: dict, keys, rows) -> dict:
    """Rows ``rows`` (a slice or index tensor) of the raw inputs ``keys``; a tokenised text input is a
    dict of tensors and is sliced tensor by tensor."""
    return {k: ({n: t[rows] for n, t in raw[k].items()} if isinstance(raw[k], dict) else raw[k][rows]) for k in keys}


def corrupt_labels(labels: torch.Tensor, num_classes: int, label_fraction: float = 1.0, noise: float = 0.0,
                   seed: int = 0) -> torch.Tensor:
    """Simulate the data regimes: flip a ``noise`` share of labels to another class (uniformly), then
    hide all but a ``label_fraction`` share (set to -1). Seeded, so every run sees the same rows."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    labels = labels.clone()
    n = labels.shape[0]
    if noise > 0:
        flip = torch.randperm(n, generator=gen)[: round(noise * n)]
        offset = torch.randint(1, num_classes, (flip.shape[0],), generator=gen)
        labels[flip] = (labels[flip] + offset) % num_classes
    if label_fraction < 1:
        hidden = torch.randperm(n, generator=gen)[round(label_fraction * n):]
        labels[hidden] = -1
    return labels


def transfer_vocabulary(tokenizer, n: int, seed: int = 0) -> list[str]:
    """``n`` words drawn (seeded) from a Hugging Face tokenizer's vocabulary: whole lower-case ASCII words
    of at least 3 letters — generic English, chosen without looking at any split of the data."""
    words = sorted(w for w in tokenizer.get_vocab() if w.isascii() and w.isalpha() and w.islower() and len(w) >= 3)
    if n > len(words):
        raise ValueError(f"transfer_words={n} but the tokenizer's vocabulary has only {len(words)} such words")
    pick = torch.randperm(len(words), generator=torch.Generator().manual_seed(30_000 + seed))[:n]
    return [words[i] for i in sorted(pick.tolist())]


def transfer_columns(teacher: FusionClassifier, data: dict) -> dict[str, torch.Tensor]:
    """The transfer set's rows for a text student: its token ids and the teacher's logits on each word (a
    fusion teacher reads the text alone, with the image dropped)."""
    transfer = data["transfer"]
    drop = {k for k in teacher.inputs if k != "text_feat"}
    logits = predict(teacher, transfer, drop=drop) if drop else predict(teacher, transfer)
    return {"text_ids": transfer["text_ids"], "label": transfer["label"], "index": transfer["index"],
            "teacher_logits": logits}


def append_rows(data: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The columns of ``extra`` with its rows after those of ``data``; token ids (``text_ids``, padded with
    id 0) are widened to the longer of the two."""
    out = {}
    for k, more in extra.items():
        base = data[k]
        if k == "text_ids":
            width = max(base.shape[1], more.shape[1])
            base, more = (torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in (base, more))
        out[k] = torch.cat([base, more])
    return out


def folds_by_group(groups: list, k: int, seed: int = 0) -> torch.Tensor:
    """A fold id in [0, k) for every row, with all rows of a group (a base emoji and its skin-tone
    variants, near-duplicates) in the same fold; groups are dealt to folds in a seeded random order."""
    names = list(dict.fromkeys(groups))
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(20_000 + seed)).tolist()
    fold_of = {names[i]: rank % k for rank, i in enumerate(order)}
    return torch.tensor([fold_of[g] for g in groups], dtype=torch.long)


def crossfit_logits(kind: str, config: ExperimentConfig, data: dict, seed: int) -> torch.Tensor:
    """Held-out teacher logits for every training row: K teachers of ``kind``, each trained (labelled
    rows only, same recipe, selected on validation) on all folds but one, predict the fold they left out."""
    folds, train = data["train_folds"], data["train"]
    logits = torch.empty(folds.shape[0], len(data["class_names"]))
    for k in range(int(folds.max()) + 1):
        seed_everything(seed * 1_000 + k)
        teacher = build_teacher(kind, config, data)
        fit(teacher, labelled_only({n: v[folds != k] for n, v in train.items()}), data["validation"],
            config=_with_seed(config.teacher_train, seed * 1_000 + k, config))
        logits[folds == k] = predict(teacher, {n: v[folds == k] for n, v in train.items()})
    return logits


def labelled_only(split: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The rows of a ``TensorData`` split that have a label (label ≥ 0)."""
    keep = split["label"] >= 0
    return {k: v[keep] for k, v in split.items()}


# -------------------------------------------------------------------------------------- models
def build_teacher(kind: str, config: ExperimentConfig, data: dict) -> FusionClassifier:
    """A fusion head over the cached features of ``kind``'s modalities: "fusion" (image + text), "text" or
    "image" (introduced in notebook 04). Seed the RNGs first for a reproducible initialisation."""
    keys = TEACHER_INPUTS[kind]
    return FusionClassifier({k: data["train"][k].shape[1] for k in keys}, len(data["class_names"]),
                            hidden=config.teacher_hidden, fusion=config.fusion, dropout=config.teacher_dropout,
                            modality_dropout=config.modality_dropout if len(keys) > 1 else 0.0)


def build_student(kind: str, config: ExperimentConfig, num_classes: int) -> torch.nn.Module:
    """A tiny student that sees "image", "text" or both ("multimodal") (introduced in notebook 05)."""
    if kind == "image":
        return ImageCNN(num_classes, config.cnn_width)
    if kind == "text":
        return TextBag(num_classes, config.text_buckets, config.text_dim)
    return MultimodalStudent(num_classes, config.cnn_width, config.text_buckets, config.text_dim)


def objective_for(method: str, config: ExperimentConfig, student_dim: int, teacher_dim: int) -> Objective:
    """The training objective of a method: "labels", "soft", "hard", "logit", or "feature" (labels plus a
    FitNets hint from the student's features to the teacher's fused features)."""
    from .losses import FitNetHint

    if method == "labels":
        return Objective("ce")
    if method == "feature":
        return Objective("ce", feature_weight=config.feature_weight, feature_loss=FitNetHint(student_dim, teacher_dim))
    return Objective(method, T=config.T, alpha=config.alpha)


# ----------------------------------------------------------------------------------------- run
def run_seed(config: ExperimentConfig, data: dict, seed: int, progress: bool = False,
             read_test: bool = True) -> list[dict]:
    """Every row of the experiment for one seed: teachers, then each student × method.

    With ``read_test=False`` (tuning) only the teacher the students learn from is trained, and only
    validation accuracy is recorded: the test split is never touched.
    """
    rows = []
    teachers = {}
    test = data["test"]
    for kind in (TEACHER_INPUTS if read_test else (config.distill_from,)):
        seed_everything(seed)
        teacher = build_teacher(kind, config, data)
        hist = fit(teacher, labelled_only(data["train"]), data["validation"], config=_with_seed(config.teacher_train, seed, config))
        teachers[kind] = teacher
        if not read_test:
            continue
        row = ev.evaluate(teacher, test, class_names=data["class_names"], timing=False)
        row.update(_teacher_pipeline_cost(teacher, data, timing=False))
        rows.append({"model": f"teacher ({kind})", "role": "teacher", "method": "labels", "seed": seed,
                     "best_epoch": hist.best_epoch, "val_accuracy": hist.best_score, "train_seconds": hist.seconds, **row})
    teacher = teachers[config.distill_from]
    cached = {s: cache_teacher_outputs(teacher, data[s], features=True) for s in (("train", "test") if read_test else ("train",))}
    train = {**data["train"], **cached["train"]}
    if "train_folds" in data:  # cross-fitting: held-out logits replace the teacher's own (features stay)
        train["teacher_logits"] = crossfit_logits(config.distill_from, config, data, seed)
    teacher_dim = cached["train"]["teacher_feat"].shape[1]
    views = multi_view_columns(teacher, data) if "train_views" in data else None
    transfer = transfer_columns(teacher, data) if "transfer" in data else None
    for student_kind in config.students:
        for method in config.methods:
            seed_everything(seed)
            student = build_student(student_kind, config, len(data["class_names"]))
            objective = objective_for(method, config, student.out_dim, teacher_dim)
            student_train, augment = train, None
            if views is not None and student_kind in ("image", "multimodal"):
                # every method, labels only too, trains on the same views; a distilled one on the teacher's outputs for them
                keys = tuple(views) if objective.uses_teacher else ("image",)
                student_train, augment = {**train, **{k: views[k] for k in keys}}, cached_view_augment(keys)
            elif config.augment and student_kind in ("image", "multimodal"):
                augment = shift_augment()
            if transfer is not None and student_kind == "text" and objective.kind != "ce":
                student_train = append_rows(train, transfer)
            student_train = student_train if objective.uses_teacher else labelled_only(student_train)
            hist = fit(student, student_train, data["validation"], objective,
                       _with_seed(config.student_train, seed, config), augment=augment)
            rows.append({"model": f"{student_kind} student", "role": "student", "method": method, "seed": seed,
                         "best_epoch": hist.best_epoch, "val_accuracy": hist.best_score, "train_seconds": hist.seconds,
                         **(ev.evaluate(student, test, cached["test"]["teacher_logits"], data["class_names"],
                                        timing=False) if read_test else {})})
            if progress:
                r = rows[-1]
                print(f"  seed {seed} {r['model']:<20} {method:<8} val acc {r['val_accuracy']:.3f} ({hist.seconds:.0f} s)",
                      flush=True)
    return rows


def multi_view_columns(teacher: FusionClassifier, data: dict) -> dict[str, torch.Tensor]:
    """The training columns for image-seeing students under cached views: ``image`` (N, V, 3, s, s) and
    the teacher's ``teacher_logits`` (N, V, C) and ``teacher_feat`` (N, V, D) on each view, computed once
    from the cached view features (a fusion teacher reads the unchanged text features beside them)."""
    views = data["train_views"]
    per_view = []
    for v in range(views["image_feat"].shape[1]):
        columns = {**data["train"], "image_feat": views["image_feat"][:, v]}
        per_view.append(cache_teacher_outputs(teacher, columns, features=True))
    return {"image": views["image"], **{k: torch.stack([p[k] for p in per_view], dim=1) for k in per_view[0]}}


def end_to_end_teacher(head: FusionClassifier, encoders: dict) -> FusionClassifier:
    """The teacher as deployed: its pretrained encoders in front of the trained fusion head."""
    import copy

    full = copy.deepcopy(head)
    full.encoders = torch.nn.ModuleDict({k: encoders[k] for k in head.inputs})
    return full.eval()


def _teacher_pipeline_cost(head: FusionClassifier, data: dict, timing: bool) -> dict:
    """Parameters, size and latency of the teacher *with* its encoders (the head alone would flatter it)."""
    full = end_to_end_teacher(head, data["encoders"])
    cost = {"params": ev.count_parameters(full), "size_mb": ev.size_on_disk(full) / 1e6}
    if timing:
        cost.update(ev.latency(full, lambda bs: slice_inputs(data["raw_test"], head.inputs, slice(0, bs)), repeats=10))
    return cost


def _with_seed(train_config, seed: int, config: ExperimentConfig):
    from dataclasses import replace

    return replace(train_config, seed=seed, device=config.device)


def model_costs(config: ExperimentConfig, data: dict) -> dict[str, dict]:
    """CPU latency and throughput at batch 1 and 64 of each teacher (with its encoders) and each student,
    measured once, after training, in this process alone (timings taken while other runs compete for the
    cores would be noise). Weights do not change the cost, so a freshly built model stands in."""
    costs = {}
    for kind in TEACHER_INPUTS:
        costs[f"teacher ({kind})"] = _teacher_pipeline_cost(build_teacher(kind, config, data), data, timing=True)
    for kind in config.students:
        student = build_student(kind, config, len(data["class_names"]))
        costs[f"{kind} student"] = {"params": ev.count_parameters(student), "size_mb": ev.size_on_disk(student) / 1e6,
                                    **ev.latency(student, ev.first_rows(data["test"], student.inputs), repeats=30)}
    return costs


def _seed_worker(config: ExperimentConfig, seed: int, threads: int, dataset, read_test: bool = True) -> list[dict]:
    torch.set_num_threads(threads)
    return run_seed(config, prepare_data(config, dataset), seed, read_test=read_test)


def tune(config: ExperimentConfig, temperatures: tuple[float, ...], alphas: tuple[float, ...], jobs: int = 1) -> dict:
    """Choose T and α on the validation split only: every (T, α) pair, every seed and method of
    ``config``; the test split is never read. Writes ``<out_dir>/<name>/tune.{json,md}`` and returns
    the grid with the best pair per (student, method) by mean validation accuracy."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor
    from dataclasses import replace

    start = time.perf_counter()
    tasks = [(replace(config, T=t, alpha=a), seed) for t in temperatures for a in alphas for seed in config.seeds]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        runs = list(pool.map(_seed_worker, *zip(*[(c, s, threads, None, False) for c, s in tasks])))
    grid: dict[tuple, list[float]] = {}
    for (cfg, _), rows in zip(tasks, runs):
        for r in rows:
            if r["role"] == "student":
                grid.setdefault((r["model"], r["method"], cfg.T, cfg.alpha), []).append(r["val_accuracy"])
    entries = [{"model": m, "method": k, "T": t, "alpha": a, **_val_summary(v)} for (m, k, t, a), v in grid.items()]
    best = {}
    for e in entries:
        key = f"{e['model']} · {e['method']}"
        if key not in best or e["val_accuracy_mean"] > best[key]["val_accuracy_mean"]:
            best[key] = e
    result = {"config": _jsonable(asdict(config)), "temperatures": list(temperatures), "alphas": list(alphas),
              "versions": library_versions(), "seconds": time.perf_counter() - start, "grid": entries, "best": best}
    lines = ["| student · method | T | α | val acc (%) |", "|---|---:|---:|---|"]
    lines += [f"| {e['model']} · {e['method']} | {e['T']} | {e['alpha']} | {_val_cell(e, best[e['model'] + ' · ' + e['method']])} |"
              for e in entries]
    _write_selection(config, "tune", result, lines)
    return result


def _val_summary(values: list[float]) -> dict:
    mean, std = ev.summarize(values)
    return {"val_accuracy_mean": mean, "val_accuracy_std": std, "n_seeds": len(values)}


def _val_cell(entry: dict, best: dict) -> str:
    return (f"{100 * entry['val_accuracy_mean']:.1f} ± {100 * entry['val_accuracy_std']:.1f}"
            f"{' ← best' if entry is best else ''}")


def _write_selection(config: ExperimentConfig, stem: str, result: dict, lines: list[str]) -> None:
    """A validation-only selection's files: ``<out_dir>/<name>/<stem>.json`` and its table ``<stem>.md``."""
    from .checkpoint import atomic_write_json

    out = Path(config.out_dir) / config.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(result, out / f"{stem}.json")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf8")


def select_fusion(config: ExperimentConfig, fusions: tuple[str, ...] = ("concat", "gated", "attention")) -> dict:
    """Choose the fusion teacher's fusion type on the validation split only: train it with each type for
    every seed of ``config`` and record its best validation accuracy; the test split is never read.
    Writes ``<out_dir>/<name>/fusion.{json,md}`` and returns the grid and the best type."""
    from dataclasses import replace

    start = time.perf_counter()
    data = prepare_data(config)
    data["test"] = None  # not read: selection uses validation only
    scores: dict[str, list[float]] = {}
    for fusion in fusions:
        for seed in config.seeds:
            seed_everything(seed)
            teacher = build_teacher("fusion", replace(config, fusion=fusion), data)
            hist = fit(teacher, labelled_only(data["train"]), data["validation"], config=_with_seed(config.teacher_train, seed, config))
            scores.setdefault(fusion, []).append(hist.best_score)
    grid = [{"fusion": f, **_val_summary(v)} for f, v in scores.items()]
    best = max(grid, key=lambda e: e["val_accuracy_mean"])
    result = {"config": _jsonable(asdict(config)), "versions": library_versions(),
              "seconds": time.perf_counter() - start, "grid": grid, "best": best["fusion"]}
    lines = ["| fusion | teacher val acc (%) |", "|---|---|"] + [f"| {e['fusion']} | {_val_cell(e, best)} |" for e in grid]
    _write_selection(config, "fusion", result, lines)
    return result


def run(config: ExperimentConfig, progress: bool = True, dataset=None, jobs: int = 1) -> dict:
    """Run the experiment over all seeds and write ``results.json``, ``results.md`` and a figure.

    ``jobs`` > 1 trains that many seeds at once in separate processes, each with an equal share of the
    CPU threads (faster on a CPU than one process with all threads: tiny models scale poorly).
    """
    import os

    start = time.perf_counter()
    data = prepare_data(config, dataset, progress=progress)
    rows = []
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_seed_worker, config, seed, threads, dataset) for seed in config.seeds]
            for seed, future in zip(config.seeds, futures):
                rows += future.result()
                if progress:
                    print(f"  seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)
    else:
        for seed in config.seeds:
            rows += run_seed(config, data, seed, progress=progress)
    costs = model_costs(config, data) if config.timing else {}
    result = {"config": _jsonable(asdict(config)), "versions": library_versions(),
              "device": str(pick_device(config.device)), "torch_threads": torch.get_num_threads(), "jobs": jobs,
              "latency_threads": ev.LATENCY_THREADS, "seconds": time.perf_counter() - start, "rows": rows,
              "costs": costs, "table": summary_table(rows, costs)}
    from .train import distributed_context

    if distributed_context()[0] == 0:  # under torchrun, rank 0 writes
        result["world_size"] = distributed_context()[1]
        write_results(result, Path(config.out_dir) / config.name)
    return result


def remeasure(results_dir: str | Path) -> dict:
    """Measure the latency of an experiment's models again (same configuration, this process alone)
    and rewrite its results files; accuracies are untouched. For results whose timing was taken
    under load or with another thread setting."""
    from .config import ExperimentConfig

    results_dir = Path(results_dir)
    result = json.loads((results_dir / "results.json").read_text(encoding="utf8"))
    fields = dict(result["config"])
    for key in ("teacher_train", "student_train"):
        from .train import TrainConfig

        fields[key] = TrainConfig(**fields[key])
    config = ExperimentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    result["costs"] = model_costs(config, prepare_data(config))
    result["latency_threads"] = ev.LATENCY_THREADS
    result["table"] = summary_table(result["rows"], result["costs"])
    write_results(result, results_dir)
    return result


def summary_table(rows: list[dict], costs: dict[str, dict] | None = None) -> list[dict]:
    """Mean ± std over seeds per (model, method), the paired difference to that model's label-only runs,
    and the model's size and CPU latency from ``costs`` (see ``model_costs``)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"]), []).append(r)
    table = []
    for (model, method), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        entry = {"model": model, "method": method, "n_seeds": len(runs)}
        for metric in ("val_accuracy", "accuracy", "macro_f1", "ece", "agreement"):
            if metric in runs[0]:
                entry[f"{metric}_mean"], entry[f"{metric}_std"] = ev.summarize([r[metric] for r in runs])
        entry["params"] = runs[0]["params"]
        for key in ("latency_ms_b1", "latency_ms_b64", "throughput_b64"):
            if costs and key in costs.get(model, {}):
                entry[key] = costs[model][key]
        base = groups.get((model, "labels"))
        if method != "labels" and base is not None:
            base = sorted(base, key=lambda r: r["seed"])
            if [r["seed"] for r in base] == [r["seed"] for r in runs]:
                entry["vs_labels"] = ev.paired_difference([r["accuracy"] for r in runs], [r["accuracy"] for r in base])
        table.append(entry)
    return table


def markdown_table(table: list[dict]) -> str:
    """The results table in markdown (accuracy and macro-F1 as mean ± std over seeds, in %)."""
    lines = ["| model | method | val acc (%) | test acc (%) | macro-F1 (%) | Δ test acc vs labels only (paired) "
             "| agreement w/ teacher (%) | params | CPU latency b=1 (ms) |",
             "|---|---|---|---|---|---|---|---:|---:|"]
    for e in table:
        acc = f"{100 * e['accuracy_mean']:.1f} ± {100 * e['accuracy_std']:.1f}"
        f1 = f"{100 * e['macro_f1_mean']:.1f} ± {100 * e['macro_f1_std']:.1f}"
        if "vs_labels" in e:
            d = e["vs_labels"]
            delta = f"{100 * d['mean']:+.1f} ± {100 * d['std']:.1f}" + (" **" if abs(d["mean"]) > 2 * d["std"] and d["n"] > 1 else "")
        else:
            delta = "—"
        agree = f"{100 * e['agreement_mean']:.1f}" if "agreement_mean" in e else "—"
        val = f"{100 * e['val_accuracy_mean']:.1f}" if "val_accuracy_mean" in e else "—"
        latency = f"{e['latency_ms_b1']:.2f}" if "latency_ms_b1" in e else "—"
        lines.append(f"| {e['model']} | {e['method']} | {val} | {acc} | {f1} | {delta} | {agree} | {e['params']:,} | {latency} |")
    return "\n".join(lines)


KEEP_TARGET, PARAMS_TARGET, LATENCY_TARGET = 0.95, 10.0, 5.0  # the course's compression target


def compression_summary(table: list[dict], teacher: str) -> list[dict]:
    """For each student, its distilled method with the best mean *validation* accuracy (never chosen on
    test), and how it compares with the teacher it learnt from: the share of the teacher's test accuracy
    it keeps, and how many times fewer parameters and lower CPU latency (batch 1) it has."""
    by_key = {(e["model"], e["method"]): e for e in table}
    t = by_key.get((f"teacher ({teacher})", "labels"))
    out = []
    for model in dict.fromkeys(e["model"] for e in table if e["model"].endswith("student")):
        distilled = [e for e in table if e["model"] == model and e["method"] != "labels" and "val_accuracy_mean" in e]
        if t is None or not distilled or "accuracy_mean" not in t:
            continue
        best = max(distilled, key=lambda e: e["val_accuracy_mean"])
        entry = {"model": model, "method": best["method"], "keeps": best["accuracy_mean"] / t["accuracy_mean"],
                 "fewer_params": t["params"] / best["params"]}
        if (model, "labels") in by_key:  # what the student keeps without a teacher: the credit KD can claim
            entry["keeps_labels_only"] = by_key[(model, "labels")]["accuracy_mean"] / t["accuracy_mean"]
        if "latency_ms_b1" in t and "latency_ms_b1" in best:
            entry["faster"] = t["latency_ms_b1"] / best["latency_ms_b1"]
        entry["meets_target"] = (entry["keeps"] >= KEEP_TARGET and entry["fewer_params"] >= PARAMS_TARGET
                                 and entry.get("faster", 0.0) >= LATENCY_TARGET)
        out.append(entry)
    return out


def compression_markdown(table: list[dict], teacher: str) -> str:
    """One line per student: does its best distilled method (chosen on validation) keep ≥ 95 % of the
    teacher's accuracy with ≥ 10× fewer parameters and ≥ 5× lower latency?"""
    lines = []
    for e in compression_summary(table, teacher):
        faster = f"{e['faster']:.0f}× lower latency" if "faster" in e else "latency not measured"
        verdict = "meets" if e["meets_target"] else "misses"
        alone = f" (labels only: {100 * e['keeps_labels_only']:.1f} %)" if "keeps_labels_only" in e else ""
        lines.append(f"- {e['model']}, {e['method']} (best distilled method on validation): keeps "
                     f"{100 * e['keeps']:.1f} %{alone} of the {teacher} teacher's test accuracy with {e['fewer_params']:.0f}× "
                     f"fewer parameters and {faster} — {verdict} the 95 % / 10× / 5× target.")
    return "\n".join(lines)


def write_results(result: dict, out: Path) -> None:
    from .checkpoint import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(result, out / "results.json")
    cfg = result["config"]
    header = (f"# Results: `{cfg['name']}`\n\nLabel: {cfg['label']}; label fraction {cfg['label_fraction']}; "
              f"label noise {cfg['label_noise']}; students distil from the {cfg['distill_from']} teacher "
              f"(T={cfg['T']}, α={cfg['alpha']}); seeds {cfg['seeds']}; {result['seconds'] / 60:.1f} min on "
              f"{result['device']} ({result['torch_threads']} threads).\n"
              "Mean ± std over seeds on the test split; Δ is the paired difference to the same student "
              "trained on labels only (same seeds); ** marks |Δ| > 2 std.\n\n")
    (out / "results.md").write_text(header + markdown_table(result["table"]) + "\n", encoding="utf8")
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    from .plots import results_bars

    fig = Figure(figsize=(7, 0.35 * len(result["table"]) + 1.2))
    results_bars(result["table"], ax=fig.add_subplot(),
                 title=f"{cfg['name']}: test accuracy, mean ± std over {len(cfg['seeds'])} seed(s)")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=110)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------ publishing
def command_for(config: dict, jobs: int = 1) -> str:
    """The command line that reruns an experiment: its configuration's differences from ``cpu``."""
    from .config import get_config

    default = _jsonable(asdict(get_config(config.get("base", "cpu"))))
    args = []
    for key, value in config.items():
        if key in ("teacher_train", "student_train"):  # the CLI sets their epochs and learning rate
            args += [f"--{key.split('_')[0]}_{k} {value[k]}" for k in ("epochs", "lr") if value[k] != default[key][k]]
            continue
        if value == default.get(key):
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else value
        args.append(f"--{key} {shown}")
    args += [f"--jobs {jobs}"] if jobs > 1 else []
    return " ".join(["python -m mmkd_utils run --config cpu", *args])


def readme_block(results_dir: str | Path) -> str:
    """The README's block for one results folder, from results.json: how to rerun it, where and how
    long it ran, and its table."""
    if (Path(results_dir) / "bench.json").exists():  # a benchmark folder (python -m mmkd_utils bench)
        from .bench import bench_markdown

        return bench_markdown(json.loads((Path(results_dir) / "bench.json").read_text(encoding="utf8"))).rstrip("\n")
    result = json.loads((Path(results_dir) / "results.json").read_text(encoding="utf8"))
    caption = (f"`{command_for(result['config'], result.get('jobs', 1))}` — {result['seconds'] / 60:.0f} min on "
               f"{result['device']} ({result['torch_threads']} threads, {result.get('jobs', 1)} seed(s) at a time; latency "
               f"on {result.get('latency_threads', '?')} thread), "
               f"torch {result['versions']['torch']}, seeds {', '.join(map(str, result['config']['seeds']))}; "
               f"students distil from the {result['config']['distill_from']} teacher at T = {result['config']['T']}, "
               f"α = {result['config']['alpha']}.")
    summary = compression_markdown(result["table"], result["config"]["distill_from"])
    return caption + "\n\n" + markdown_table(result["table"]) + (f"\n\n{summary}" if summary else "")


def publish(readme: str | Path = "README.md", results_root: str | Path = "results") -> list[str]:
    """Refresh every ``<!-- results:NAME:start -->`` … ``<!-- results:NAME:end -->`` block of the README
    from ``results/NAME/results.json``; returns the names refreshed."""
    import re

    readme = Path(readme)
    text = readme.read_text(encoding="utf8")
    names = re.findall(r"<!-- results:([\w.-]+):start -->", text)
    for name in names:
        start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
        if end not in text:
            raise ValueError(f"{readme}: {start} has no matching {end}")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{readme_block(Path(results_root) / name)}\n{end}{tail}"
    readme.write_text(text, encoding="utf8")
    return names
