"""Command line: ``python -m mmkd_utils run --config cpu [--field value ...]``.

Every field of ``ExperimentConfig`` is an option (``--data FOLDER --label COLUMN`` runs on your own data); ``python -m mmkd_utils run --help`` lists them with
their defaults. Results go to ``<out_dir>/<name>/results.{json,md}``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Sequence

from .config import CONFIGS, ExperimentConfig, get_config

HELP = {
    "name": "name of the results subfolder (default: the config's name)",
    "data": "the dataset: openmoji (shipped) or a folder of images with a metadata.csv (file_name, text, label columns; "
            "optionally audio_file: each row's wav or flac recording, for --speech recorded)",
    "label": "the label column (a ClassLabel column): OpenMoji has group (9 classes) and subgroup (98)",
    "text_encoder": "pretrained text encoder: all-MiniLM-L6-v2 (offline) or a Hugging Face name",
    "image_encoder": "pretrained image encoder: mobilenet_v2 (offline) or a torchvision name such as resnet18",
    "teacher_image_size": "image size (px) the image encoder sees",
    "max_length": "max tokens per name for the text encoder",
    "fusion": "teacher fusion: concat, gated or attention",
    "teacher_hidden": "teacher's hidden width",
    "teacher_dropout": "teacher's dropout",
    "modality_dropout": "probability of dropping a whole modality while training the fusion teacher",
    "students": "comma-separated students: image,text,multimodal (and audio, with --speech)",
    "methods": "comma-separated methods: labels,soft,hard,logit,adaptive,feature (recipes.METHODS)",
    "distill_from": "which teacher the students learn from: fusion, text or image (audio or trimodal with --speech)",
    "student_image_size": "image size (px) the image student sees",
    "cnn_width": "width of the image student's first conv layer",
    "text_buckets": "hash buckets of the text student's tokenizer",
    "text_dim": "embedding size of the text student",
    "augment": "shift augmentation for image students (true/false)",
    "crossfit": "0, or K >= 2 folds (by base emoji): each training row's teacher logits come from a teacher "
                "trained on the other folds, so they are held-out predictions, not a memorised label",
    "transfer_words": "0, or how many words of the text encoder's vocabulary (unlabelled; the teacher labels "
                      "them) join the distilled text students' training set: a transfer set",
    "teacher_views": "0, or the number of cached augmented views per training image (view 0 = the original) "
                     "that image-seeing students train on, each labelled by the teacher (replaces --augment)",
    "teachers": "comma-separated teachers to train and test besides the one the students distil from (default: "
                "every teacher the data allows: fusion, text, image, and with --speech audio and trimodal)",
    "speech": "training voices, comma-separated (us, british-f, scottish-slow, caribbean-fast): each row spoken by "
              "one of them adds the audio modality (students audio, teachers audio and trimodal); audio models are "
              "also tested on every voice and the human words (notebook 11). With --data FOLDER: recorded, each "
              "row's own recording (metadata.csv's audio_file column: wav or flac, its path relative to the "
              "metadata.csv; made mono, 16 kHz) is the audio modality, tested on the test split only",
    "audio_width": "the audio student's CNN width",
    "ood_test": "noto: also evaluate every model on the test emoji drawn by another designer (data/noto; "
                "evaluation only, never selected on)",
    "T": "distillation temperature",
    "alpha": "weight of the distillation term: (1-alpha)*CE + alpha*KD",
    "feature_weight": "weight of the feature (FitNets hint) term",
    "label_fraction": "share of training rows that keep their label (the teacher labels the rest)",
    "label_noise": "share of training labels flipped to another class",
    "data_seed": "seed choosing which rows are labelled / flipped (fixed across seeds)",
    "subset": "use only this many rows per split (quick tests)",
    "seeds": "comma-separated seeds, e.g. 0,1,2,3,4",
    "timing": "measure CPU latency (true/false)",
    "out_dir": "folder for results",
    "device": "cuda, mps or cpu (default: the best available)",
    "log_dir": "TensorBoard logs of every fit, one subfolder each: DIR/seed0/teacher-fusion, DIR/seed0/image-student-soft, "
               "... (open with: tensorboard --logdir DIR); the results do not change",
    "teacher_epochs": "teacher training epochs", "teacher_lr": "teacher learning rate",
    "student_epochs": "student training epochs", "student_lr": "student learning rate",
}


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(annotation: str):
    if "tuple[int" in annotation:
        return lambda s: tuple(int(x) for x in s.split(",") if x)
    if "tuple[str" in annotation:
        return lambda s: tuple(x.strip() for x in s.split(",") if x.strip())
    if annotation.startswith("bool"):
        return _parse_bool
    if annotation.startswith("int"):
        return int
    if annotation.startswith("float"):
        return float
    return str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmkd_utils", description="mmkd experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment: teachers, students, distillation, evaluation",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--config", default="cpu", choices=sorted(CONFIGS), help="base configuration")
    defaults = ExperimentConfig()
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in ("teacher_train", "student_train"):
            continue
        run.add_argument(f"--{f.name}", type=_converter(str(f.type)), default=None,
                         help=f"{HELP.get(f.name, f.name)} (cpu default: {getattr(defaults, f.name)})")
    for prefix in ("teacher", "student"):
        run.add_argument(f"--{prefix}_epochs", type=int, default=None, help=HELP[f"{prefix}_epochs"])
        run.add_argument(f"--{prefix}_lr", type=float, default=None, help=HELP[f"{prefix}_lr"])
    run.add_argument("--jobs", type=int, default=1, help="seeds trained at once, in separate processes")
    run.add_argument("--tune_T", type=lambda v: tuple(float(x) for x in v.split(",")), default=None,
                     help="tune instead of run: comma-separated temperatures to try on validation (test never read)")
    run.add_argument("--tune_alpha", type=lambda v: tuple(float(x) for x in v.split(",")), default=None,
                     help="with --tune_T: comma-separated α values to try")
    run.add_argument("--tune_fusion", type=lambda v: tuple(x.strip() for x in v.split(",") if x.strip()), default=None,
                     help="select instead of run: comma-separated fusion types for the fusion teacher, compared on "
                          "validation (test never read)")
    run.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    bench = sub.add_parser("bench", help="measure epoch cost (labels / cached KD / online KD), latency, nbval time")
    bench.add_argument("--config", default="cpu", choices=sorted(CONFIGS))
    bench.add_argument("--out", default="results/bench")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--notebooks", nargs="*", default=None, help="notebooks to time under nbval")
    rep = sub.add_parser("reproduce", help="rerun a published experiment from its results.json in a scratch folder and "
                                           "record which numbers it reproduced (results/<name>/reproduction.json)")
    rep.add_argument("folders", nargs="+", help="results folders, e.g. results/compress-text")
    rep.add_argument("--jobs", type=int, default=None, help="seeds at a time (default: as published)")
    rem = sub.add_parser("remeasure", help="measure the models' CPU latency again and rewrite a results folder")
    rem.add_argument("folders", nargs="+", help="results folders, e.g. results/main")
    mrg = sub.add_parser("merge", help="join runs of one configuration that differ only in their seeds into one "
                                       "result (experiment.merge_runs)")
    mrg.add_argument("folders", nargs="+", help="results folders, e.g. results/x-seeds0-4 results/x-seeds5-9")
    mrg.add_argument("--name", required=True, help="the joined result's name: written to <out_dir>/<name>/")
    mrg.add_argument("--out_dir", default="results")
    pub = sub.add_parser("publish", help="refresh results/README.md's tables, the README's findings and "
                                         "results/findings.png from results/<name>/results.json")
    pub.add_argument("--readme", default="README.md")
    pub.add_argument("--results", default="results", help="folder holding one subfolder per experiment")
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(ExperimentConfig)
                 if getattr(args, f.name, None) is not None}
    config = get_config(args.config, **overrides)
    for prefix in ("teacher", "student"):
        changes = {k: v for k, v in (("epochs", getattr(args, f"{prefix}_epochs")), ("lr", getattr(args, f"{prefix}_lr")))
                   if v is not None}
        if changes:
            setattr(config, f"{prefix}_train", dataclasses.replace(getattr(config, f"{prefix}_train"), **changes))
    return config


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        _command(args)
    except (ValueError, FileNotFoundError) as err:  # bad input: the message names the problem and the fix
        raise SystemExit(f"error: {err}") from err


def _command(args: argparse.Namespace) -> None:
    if args.command == "bench":
        from .bench import bench_markdown, run_bench

        print(bench_markdown(run_bench(args.config, args.out, args.repeats, args.notebooks)))
    elif args.command == "remeasure":
        from .experiment import remeasure

        for folder in args.folders:
            remeasure(folder)
            print(f"remeasured {folder}")
    elif args.command == "reproduce":
        from .experiment import reproduce

        for folder in args.folders:
            c = reproduce(folder, args.jobs)
            print(f"{folder}: {c['exact']} of {c['rows']} test accuracies reproduced bit for bit (--jobs {c['jobs']})")
    elif args.command == "merge":
        from .experiment import merge_runs

        merged = merge_runs(args.folders, args.name, args.out_dir)
        print(f"wrote {args.out_dir}/{args.name}: seeds {merged['config']['seeds']} from {len(args.folders)} runs")
    elif args.command == "publish":
        from .publish import publish

        print("refreshed:", ", ".join(publish(args.readme, args.results)) or "no results blocks")
    elif args.command == "run":
        config = config_from_args(args)
        rank = _init_distributed(config)
        try:
            _run(args, config, rank)
        finally:  # under torchrun: leave the process group, whether the run ended or failed
            _close_distributed()


def _run(args: argparse.Namespace, config: ExperimentConfig, rank: int) -> None:
    """``python -m mmkd_utils run``: tune, select the fusion type, or run and print the table (rank 0 only)."""
    from .experiment import run
    from .report import markdown_table

    if args.jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("--jobs > 1 cannot be combined with torchrun: use one or the other")
    if config.log_dir and (args.tune_fusion or args.tune_T or args.tune_alpha):
        raise ValueError("--log_dir logs the fits of one run, and tuning would log every candidate into the same "
                         "folders: drop --log_dir, or run the chosen setting with it")
    if args.tune_fusion:
        from .experiment import select_fusion

        result = select_fusion(config, args.tune_fusion)
        for e in result["grid"]:
            print(f"fusion {e['fusion']}: teacher val acc {100 * e['val_accuracy_mean']:.1f} ± {100 * e['val_accuracy_std']:.1f}")
        print(f"best on validation: {result['best']}")
        return
    if args.tune_T or args.tune_alpha:
        from .experiment import tune

        result = tune(config, args.tune_T or (config.T,), args.tune_alpha or (config.alpha,), jobs=max(1, args.jobs))
        for key, e in result["best"].items():
            print(f"{key}: best on validation T={e['T']}, alpha={e['alpha']} "
                  f"(val acc {100 * e['val_accuracy_mean']:.1f} ± {100 * e['val_accuracy_std']:.1f})")
        return
    result = run(config, progress=not args.quiet and rank == 0, jobs=args.jobs)
    if rank == 0:
        print(markdown_table(result["table"]))
        print(f"\nwrote {config.out_dir}/{config.name}/results.json and results.md "
              f"({result['seconds']:.0f} s)")


def _init_distributed(config) -> int:
    """Under ``torchrun --nproc_per_node=N``: join the process group (nccl on GPUs, gloo on CPUs) and
    take this rank's GPU. Every rank trains on its share of each batch; rank 0 writes the results."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    use_cuda = torch.cuda.is_available() and config.device in (None, "cuda")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        config.device = f"cuda:{local_rank}"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank()


def _close_distributed() -> None:
    """The end of a torchrun script: destroy the process group if this process joined one (PyTorch warns, and
    NCCL may hang at exit, when a script leaves it open)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
