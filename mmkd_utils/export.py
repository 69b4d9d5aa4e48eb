"""Deploying a student: ONNX export, int8 quantisation (dynamic, and static for convolutions), timing, a validated
``predict`` on raw inputs, a safetensors bundle with what it needs to run, and a model card. Introduced in
notebook 08.

The students take a batch dict; ONNX takes tensors, so ``TensorInputs`` wraps a student into a module
whose positional arguments are its input columns in ``model.inputs`` order.
"""
from __future__ import annotations

import contextlib
import logging
import statistics
import subprocess
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .data import IMAGENET_MEAN, IMAGENET_STD
from .models import HashingTokenizer, ImageCNN, MultimodalStudent, TextBag

KINDS = {ImageCNN: "image", TextBag: "text", MultimodalStudent: "multimodal"}
SUPPORTED_MODES = ("RGB", "RGBA", "L", "LA", "P")  # what the training pictures were converted from


@contextlib.contextmanager
def _quiet(*loggers: str, level: int = logging.ERROR):
    """Silence the exporter's and the quantiser's informational logs (they change nothing here)."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)


class TensorInputs(nn.Module):
    """``forward(*tensors)`` = ``model({key: tensor})``, keys in ``model.inputs`` order (for export)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.keys = model, tuple(model.inputs)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.keys, tensors)))


# torch.onnx.export(dynamo=True, dynamic_shapes=...) and ONNXProgram.save(external_data=...): the torch.export-based
# exporter, documented for torch 2.6 and newer; torch 2.4's export(dynamo=True) has no dynamic_shapes argument.
# requirements.txt's floor for torch is this version (tests/test_export.py checks that they agree).
MIN_TORCH = (2, 6)


def _check_torch(version: str) -> None:
    major, minor = (int("".join(c for c in part if c.isdigit()) or 0) for part in version.split(".")[:2])
    if (major, minor) < MIN_TORCH:
        raise RuntimeError(f"export_onnx needs torch>={MIN_TORCH[0]}.{MIN_TORCH[1]} (the torch.export-based ONNX "
                           f"exporter with dynamic_shapes); this is torch {version}: pip install -U torch")


def export_onnx(model: nn.Module, example: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Export ``model`` to one ONNX file with torch's torch.export-based exporter (``dynamo=True``; torch >= 2.6);
    the batch size and the number of tokens are dynamic. ``example``: a batch dict with at least 2 rows of every
    input column."""
    _check_torch(torch.__version__)
    wrapped, path = TensorInputs(model.eval().cpu()).eval(), Path(path)
    args = tuple(example[k][:2].cpu() for k in wrapped.keys)
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
    dynamic = tuple(  # one entry, *tensors, holding one dict per tensor
        {0: batch, 1: tokens} if a.dim() == 2 else {0: batch} for a in args)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), _quiet("onnxscript", "onnx_ir"):  # the inputs share "batch", as meant
        warnings.filterwarnings("ignore", message=".*will not be used, since it shares")
        program = torch.onnx.export(wrapped, args, dynamo=True, input_names=list(wrapped.keys),
                                    output_names=["logits"], dynamic_shapes=(dynamic,), verbose=False)
    program.save(str(path), external_data=False)  # one self-contained file, so its size is the model's
    return path


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session on ``threads`` threads (one by default, as ``evaluate.latency``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session, data: Mapping[str, torch.Tensor], batch_size: int = 512) -> torch.Tensor:
    """Logits (N, C) of an ONNX session over the columns of ``data`` that the model reads."""
    keys = [i.name for i in session.get_inputs()]
    n, out = len(data[keys[0]]), []
    for start in range(0, n, batch_size):
        feed = {k: data[k][start:start + batch_size].numpy() for k in keys}
        out.append(torch.from_numpy(session.run(None, feed)[0]))
    return torch.cat(out)


def quantize_int8(source: str | Path, target: str | Path, op_types: Sequence[str] | None = None) -> Path:
    """Dynamic int8 quantisation (``onnxruntime.quantization.quantize_dynamic``): weights stored as int8,
    activations quantised on the fly; by default convolutions, matrix products and embedding lookups, or only
    the ``op_types`` given (e.g. ["Gather", "MatMul"])."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(""):  # the root logger: it advises pre-processing, which changes nothing for these models
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(op_types) if op_types else None)
    return Path(target)


def quantize_int8_static(source: str | Path, target: str | Path, calibration: Mapping[str, torch.Tensor],
                         op_types: Sequence[str] = ("Conv",), rest: Sequence[str] = ("Gather", "Gemm", "MatMul"),
                         rows: int = 256, batch_size: int = 32, seed: int = 0, reduce_range: bool = True) -> Path:
    """Static int8 quantisation (``quantize_static`` in the QDQ format, ``QuantFormat.QDQ``) of the ``op_types``
    layers: weights stored as int8 and the activation scales fixed once, from ``rows`` rows drawn (seeded) from
    ``calibration`` (training or validation rows, never test; min-max ranges); then dynamic int8 (``quantize_int8``)
    for the ``rest``, or nothing more if ``rest`` is empty. ONNX Runtime advises static quantisation for CNNs and
    dynamic for transformers and RNNs ("Quantize ONNX models", method selection): by default the image path's
    convolutions are static and the text path's embedding and linear layers dynamic (notebook 08).

    ``reduce_range``: 7-bit weights, ONNX Runtime's advice for x86 CPUs without VNNI, whose u8 x s8 instruction
    (VPMADDUBSW) can saturate; with 8-bit weights the course's student changes many more predictions there."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    keys = [i.name for i in ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).get_inputs()]
    n = len(calibration[keys[0]])
    picked = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:rows]

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{k: calibration[k][picked[s:s + batch_size]].numpy() for k in keys}
                                 for s in range(0, len(picked), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    target = Path(target)
    static = target.with_name(target.stem + ".static-only.onnx") if rest else target
    with _quiet(""):  # the root logger: it advises pre-processing (shape inference, graph optimisation), optional here
        quantize_static(str(source), str(static), Batches(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), reduce_range=reduce_range)
    if rest:
        quantize_int8(static, target, op_types=rest)
        static.unlink()
    return target


def call_times(models: Mapping[str, object], data: Mapping[str, torch.Tensor], batch_sizes: Sequence[int] = (1, 64),
               repeats: int = 50, warmup: int = 5) -> dict[str, dict]:
    """Median time per call of each model on the first ``bs`` rows of ``data``, on one CPU thread: ``latency_ms_b<bs>``
    (the wall clock) and ``cpu_ms_b<bs>`` (the calling thread's CPU time, ``time.thread_time``). ``models``: ONNX
    Runtime sessions (``onnx_session``, one thread) or PyTorch modules, called in turn, one call each per round,
    so that the machine's other load falls on all of them alike. On a busy machine the wall clock also counts the
    time spent waiting for a core and the CPU time does not; on an idle core the two agree."""
    def runner(model, bs):
        if isinstance(model, nn.Module):
            batch = {k: data[k][:bs] for k in model.inputs}
            return lambda: model(batch)
        feed = {i.name: data[i.name][:bs].numpy() for i in model.get_inputs()}
        return lambda: model.run(None, feed)

    previous, out = torch.get_num_threads(), {name: {} for name in models}
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for bs in batch_sizes:
                calls = {name: runner(model.eval() if isinstance(model, nn.Module) else model, bs)
                         for name, model in models.items()}
                wall, cpu = {name: [] for name in calls}, {name: [] for name in calls}
                for round_ in range(warmup + repeats):
                    for name, call in calls.items():
                        start_wall, start_cpu = time.perf_counter(), time.thread_time()
                        call()
                        if round_ >= warmup:
                            cpu[name].append(time.thread_time() - start_cpu)
                            wall[name].append(time.perf_counter() - start_wall)
                for name in calls:
                    out[name][f"latency_ms_b{bs}"] = statistics.median(wall[name]) * 1000
                    out[name][f"cpu_ms_b{bs}"] = statistics.median(cpu[name]) * 1000
    finally:
        torch.set_num_threads(previous)
    return out


def onnx_latency(session, data: Mapping[str, torch.Tensor], batch_sizes: Sequence[int] = (1, 64),
                 repeats: int = 50, warmup: int = 5) -> dict:
    """Median wall-clock ms per call of one ONNX session on the first rows of ``data`` (``call_times`` for one)."""
    times = call_times({"session": session}, data, batch_sizes, repeats, warmup)["session"]
    return {key: value for key, value in times.items() if key.startswith("latency_ms")}


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``), to label timings."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


# ------------------------------------------------------------------------ bundle: weights + what they need
def source_commit() -> str:
    """``git rev-parse HEAD`` of the course, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def deployment_spec(model: nn.Module, config, class_names: Sequence[str], **extra) -> dict:
    """What a student needs next to its weights: its kind and sizes, the class names, the picture's
    preprocessing, the tokenizer's settings and the source commit (JSON-ready)."""
    kind = KINDS.get(type(model))
    if kind is None:
        raise ValueError(f"{type(model).__name__} is not a course student; deploy an ImageCNN, TextBag or MultimodalStudent")
    tokenizer = HashingTokenizer(config.text_buckets)
    return {"kind": kind, "inputs": list(model.inputs), "class_names": list(class_names),
            "build": {"cnn_width": config.cnn_width, "text_buckets": config.text_buckets, "text_dim": config.text_dim},
            "image": {"size": config.student_image_size, "resample": "bilinear", "scale": 1 / 255,
                      "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "convert_from": list(SUPPORTED_MODES)},
            "tokenizer": {"type": "HashingTokenizer", "n_buckets": tokenizer.n_buckets,
                          "char_ngrams": tokenizer.char_ngrams, "max_tokens": tokenizer.max_tokens},
            "source_commit": source_commit(), **extra}


def save_student(model: nn.Module, folder: str | Path, spec: dict, metrics: dict | None = None) -> Path:
    """Weights as ``model.safetensors`` and the spec in ``checkpoint.json`` (atomic, no pickle)."""
    _check_labels(model, spec["class_names"])
    return save_checkpoint(model, folder, spec, metrics)


def load_student(folder: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a student saved by ``save_student``; returns (model in eval mode, its spec)."""
    import json

    from .recipes import build_student

    spec = json.loads((Path(folder) / "checkpoint.json").read_text(encoding="utf8"))["config"]
    model = build_student(spec["kind"], SimpleNamespace(**spec["build"]), len(spec["class_names"]))
    load_checkpoint(model, folder)  # checks the architecture, the shapes and the weights' hash
    return model.eval(), spec


# ------------------------------------------------------------------------ predict on raw inputs
def _check_labels(model: nn.Module, class_names: Sequence[str]) -> None:
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    if head.out_features != len(class_names):
        raise ValueError(f"the model has {head.out_features} outputs but the label set has {len(class_names)} "
                         "classes; pass the class names the model was trained with (its checkpoint.json).")


def load_image(image):
    """A PIL image from a path or a PIL image, with a message that names the fix when it is neither."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}; pass the path of a PNG or JPEG file.")
        try:
            with Image.open(path) as opened:
                opened.load()
                return opened.copy()
        except UnidentifiedImageError:
            raise ValueError(f"{path} is not an image PIL can read; pass a PNG or JPEG file "
                             "(or a PIL.Image.Image).") from None
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a file path or a PIL.Image.Image, got {type(image).__name__}; "
                        "open arrays with PIL.Image.fromarray first.")
    return image


def image_tensor(image, spec: dict) -> torch.Tensor:
    """(3, s, s): the training pictures' preprocessing (``data.ImageTransform``), read from the spec."""
    from PIL import Image

    image = load_image(image)
    if image.mode not in spec["image"]["convert_from"]:
        raise ValueError(f"image mode {image.mode!r} is not one the model was trained on "
                         f"({', '.join(spec['image']['convert_from'])}); convert it with image.convert('RGB').")
    image = image.convert("RGB") if image.mode != "RGB" else image
    size = spec["image"]["size"]
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, s, s)
    mean, std = torch.tensor(spec["image"]["mean"]), torch.tensor(spec["image"]["std"])
    return (x - mean[:, None, None]) / std[:, None, None]


def predict(model: nn.Module, spec: dict, image=None, name: str | None = None, top_k: int = 3,
            missing_ok: bool = False) -> list[tuple[str, float]]:
    """The ``top_k`` classes with their probabilities for one picture (path or PIL image) and/or name.

    A student that reads both raises when one is missing, unless ``missing_ok`` (that branch then gives
    zeros, as in ``missing_modality_accuracy``; its accuracy falls, notebook 08)."""
    _check_labels(model, spec["class_names"])
    if not 1 <= top_k <= len(spec["class_names"]):
        raise ValueError(f"top_k must be between 1 and {len(spec['class_names'])}, got {top_k}")
    if image is None and name is None:
        raise ValueError("give an image (a path or a PIL image) and/or a name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name must be a non-empty string such as 'grinning face', got {name!r}")
    batch, given = {}, {"image": image is not None, "text_ids": name is not None}
    for key in spec["inputs"]:
        if not given[key] and not (missing_ok and len(spec["inputs"]) > 1):
            what = "an image" if key == "image" else "a name"
            raise ValueError(f"this {spec['kind']} student needs {what}; pass it"
                             + (", or missing_ok=True to run without it" if len(spec["inputs"]) > 1 else ""))
    if given["image"] and "image" in spec["inputs"]:
        batch["image"] = image_tensor(image, spec)[None]  # (1, 3, s, s)
    if given["text_ids"] and "text_ids" in spec["inputs"]:
        t = spec["tokenizer"]
        batch["text_ids"] = HashingTokenizer(t["n_buckets"], t["char_ngrams"], t["max_tokens"])([name])  # (1, L)
    if not batch:
        raise ValueError(f"this {spec['kind']} student reads {spec['inputs']}; none of them was given")
    drop = {k for k in spec["inputs"] if k not in batch}
    with torch.no_grad():
        logits = model.eval()(batch, drop=drop) if drop else model.eval()(batch)  # (1, C)
    probs = logits.softmax(1)[0]
    top = probs.topk(top_k)
    return [(spec["class_names"][i], float(p)) for p, i in zip(top.values, top.indices)]


# ------------------------------------------------------------------------ model card
def model_card(spec: dict, published: dict, live: dict, model_name: str, method: str) -> str:
    """A model card (Mitchell et al. 2019) in markdown for the one file that ships, from its measurements, with the
    published results of the same recipe trained in full beside them (a different model, said so).

    ``live``: {"ships": name of the format that ships (a key of "formats"), "file": its file name, "shrunk": how it
    was trained, "split_sizes": {split: n}, "accuracy": {"validation": acc, "test": acc} and "macro_f1": test
    macro-F1, all of the shipped file; "per_group": {group: (test accuracy, n)} of the shipped file; "without":
    {"image": acc, "text_ids": acc} (optional: its weights in PyTorch with one branch zeroed); "formats": {name:
    {"validation_accuracy", "size_mb", "cpu_ms_b1"}}; "machine": where the times were measured}."""
    rows = [r for r in published["table"] if r["model"] == model_name and r["method"] == method]
    if not rows:
        raise ValueError(f"no row for {model_name!r} / {method!r} in the results; use one of "
                         f"{sorted({(r['model'], r['method']) for r in published['table']})}")
    if live["ships"] not in live["formats"]:
        raise ValueError(f"the shipped format {live['ships']!r} is not among the measured ones {sorted(live['formats'])}")
    row, accuracy = rows[0], live["accuracy"]
    per_group = sorted(live["per_group"].items(), key=lambda kv: kv[1][0])
    trained = spec.get("distilled_from") or (f"the {published['config'].get('distill_from', 'fusion')} teacher, "
                                             f"T = {published['config']['T']}, alpha = {published['config']['alpha']}")
    lines = [f"# Model card: {model_name} ({method} distillation), `{live['file']}` ({live['ships']})", "",
             "## Model details",
             f"- This card describes one file, `{live['file']}` ({live['ships']}): a {spec['kind']} student reading "
             f"{', '.join(spec['inputs'])}; source commit `{spec['source_commit']}`.",
             f"- Distilled from {trained}; trained with {live['shrunk']}.", "",
             "## Intended use",
             "- Sorting an emoji (its picture and/or its Unicode name) into one of "
             f"{len(spec['class_names'])} Unicode groups; a teaching model, not for decisions about people.", "",
             "## Data",
             f"- OpenMoji, split sizes {live['split_sizes']}; labels: the Unicode group.", "",
             "## Accuracy of this file",
             f"- Measured on `{live['file']}` itself, one row per call: test accuracy {accuracy['test']:.3f}, "
             f"test macro-F1 {live['macro_f1']:.3f}, validation accuracy {accuracy['validation']:.3f}.",
             "", "| group | test rows | accuracy |", "|---|---:|---:|"]
    lines += [f"| {g} | {n} | {a:.3f} |" for g, (a, n) in per_group]
    lines += ["", "## What it does badly",
              "- Weakest groups: " + "; ".join(f"{g}: {a:.3f} on {n} test rows" for g, (a, n) in per_group[:3])
              + f". Macro-F1 {live['macro_f1']:.3f} (each group counts alike) against accuracy "
              f"{accuracy['test']:.3f} (each row counts alike)."]
    for key, acc in live.get("without", {}).items():
        lines.append(f"- Without its {'picture' if key == 'image' else 'name'}: accuracy {acc:.3f} (its weights in "
                     "PyTorch with that branch zeroed; the file itself needs both inputs).")
    lines += ["", "## The same recipe trained in full (not this file)",
              f"- Published ({row['n_seeds']} seeds, full training): accuracy {row['accuracy_mean']:.3f} ± "
              f"{row['accuracy_std']:.3f}, macro-F1 {row['macro_f1_mean']:.3f} ± {row['macro_f1_std']:.3f}.",
              "", f"## Formats measured (CPU time per call at batch 1, median, on {live['machine']}; not a phone)", "",
              "| format | validation accuracy | size (MB) | CPU time (ms) | ships |", "|---|---:|---:|---:|---|"]
    lines += [f"| {k} | {v['validation_accuracy']:.3f} | {v['size_mb']:.2f} | {v['cpu_ms_b1']:.3f} | "
              f"{'yes' if k == live['ships'] else ''} |" for k, v in live["formats"].items()]
    return "\n".join(lines) + "\n"
