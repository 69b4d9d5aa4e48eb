"""TensorBoard logging: ``fit`` with ``TrainConfig(log_dir=...)`` (train.py) and ``run --log_dir`` (the CLI).

The event files are read back with TensorBoard's own reader, and every point is compared with the ``History``
that ``fit`` returned: the curves a learner looks at are the numbers the code recorded.
"""
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from mmkd_utils.models import FusionClassifier
from mmkd_utils.objective import Objective
from mmkd_utils.signals import cache_teacher_outputs
from mmkd_utils.train import TrainConfig, fit

pytest.importorskip("tensorboard", reason="TrainConfig.log_dir needs the tensorboard package (requirements.txt)")

FAST = TrainConfig(epochs=4, lr=1e-2, batch_size=32)


def blobs(n=192, dim=8, classes=3, seed=0):
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    labels = torch.arange(n) % classes
    x = centers[labels] + torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return {"x": x, "label": labels, "index": torch.arange(n)}


def model():
    return FusionClassifier({"x": 8}, 3, hidden=16, dropout=0.1)


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in ``log_dir``'s event files: tag → [(step, value), ...], read by TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def distillation_fit(log_dir=None):
    """A soft-target student on cached teacher logits; returns its weights and History."""
    train, val = blobs(), blobs(seed=1)
    torch.manual_seed(1)
    teacher = model()
    fit(teacher, train, config=FAST)
    train = {**train, **cache_teacher_outputs(teacher, train)}
    torch.manual_seed(0)
    student = model()
    hist = fit(student, train, val, Objective("soft", T=2.0, alpha=0.5), replace(FAST, log_dir=log_dir))
    return {k: v.clone() for k, v in student.state_dict().items()}, hist


def test_fit_logs_every_term_of_the_objective_and_the_validation_curves(tmp_path):
    weights, hist = distillation_fit(tmp_path / "student")
    assert list((tmp_path / "student").glob("events.out.tfevents.*"))
    logged = scalars(tmp_path / "student")
    assert set(logged) == {"train/ce", "train/distill", "train/total", "val/loss", "val/acc", "lr"}
    for tag, points in logged.items():
        key = tag.replace("/", "_")  # the History key: train/ce ← train_ce, val/acc ← val_acc, lr ← lr
        assert [step for step, _ in points] == [e["epoch"] for e in hist.epochs] == [0, 1, 2, 3]
        # TensorBoard stores float32: each point is the History's number rounded to float32, nothing else
        assert [value for _, value in points] == [float(torch.tensor(v, dtype=torch.float32)) for v in hist.column(key)]
    # the convex objective with alpha = 0.5 (every row labelled): total = 0.5·ce + 0.5·distill, in the logs too
    ce, distill, total = (torch.tensor([v for _, v in logged[t]]) for t in ("train/ce", "train/distill", "train/total"))
    assert torch.allclose(total, 0.5 * ce + 0.5 * distill, rtol=1e-5)


def test_logging_does_not_change_training(tmp_path):
    with_logs, hist_logged = distillation_fit(tmp_path / "logs")
    without, hist_plain = distillation_fit(None)
    assert all(torch.equal(with_logs[k], without[k]) for k in without)
    assert hist_logged.epochs == hist_plain.epochs


def test_a_feature_term_is_logged_too(tmp_path):
    from mmkd_utils.losses import FitNetHint

    train = blobs()
    train["teacher_feat"] = torch.randn(len(train["label"]), 5, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    objective = Objective("ce", feature_weight=1.0, feature_loss=FitNetHint(16, 5))
    hist = fit(model(), train, None, objective, replace(FAST, epochs=2, log_dir=str(tmp_path)))
    logged = scalars(tmp_path)
    assert "train/feature" in logged and "val/acc" not in logged  # no validation split, no validation curve
    assert [v for _, v in logged["train/feature"]] == [float(torch.tensor(v)) for v in hist.column("train_feature")]


def test_a_resumed_run_logs_each_epoch_once(tmp_path, monkeypatch):
    import mmkd_utils.train as train_module

    real_epoch = train_module.train_epoch

    def killed_in_epoch_2(*args, **kwargs):
        if args[5] == 2:  # the process dies during epoch 2: epochs 0 and 1 are checkpointed and logged
            raise KeyboardInterrupt("killed")
        return real_epoch(*args, **kwargs)

    config = replace(FAST, log_dir=str(tmp_path / "logs"))
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(train_module, "train_epoch", killed_in_epoch_2)
        fit(model(), blobs(), blobs(seed=1), config=config, checkpoint_dir=tmp_path / "ckpt")
    assert [step for step, _ in scalars(tmp_path / "logs")["val/acc"]] == [0, 1]
    hist = fit(model(), blobs(), blobs(seed=1), config=config, checkpoint_dir=tmp_path / "ckpt", resume=True)
    logged = scalars(tmp_path / "logs")["val/acc"]
    assert [step for step, _ in logged] == [0, 1, 2, 3]
    assert [value for _, value in logged] == [float(torch.tensor(v)) for v in hist.column("val_acc")]


def test_a_missing_tensorboard_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails, as if not installed
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)  # so torch's module imports it anew
    with pytest.raises(ImportError, match="pip install tensorboard"):
        fit(model(), blobs(), config=replace(FAST, epochs=1, log_dir=str(tmp_path)))


def test_cli_log_dir_gives_each_fit_its_own_folder(tmp_path):
    """``run --log_dir DIR``: DIR/seed0/teacher-<kind> and DIR/seed0/<student>-student-<method>, one per fit."""
    logs = tmp_path / "logs"
    proc = subprocess.run([sys.executable, "-m", "mmkd_utils", "run", "--config", "tiny", "--students", "image",
                           "--methods", "labels,soft", "--out_dir", str(tmp_path), "--log_dir", str(logs), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = {p.relative_to(logs).as_posix() for p in logs.glob("*/*") if p.is_dir()}
    assert folders == {"seed0/teacher-fusion", "seed0/teacher-text", "seed0/teacher-image",
                       "seed0/image-student-labels", "seed0/image-student-soft"}
    from mmkd_utils.config import get_config

    student_epochs, teacher_epochs = get_config("tiny").student_train.epochs, get_config("tiny").teacher_train.epochs
    soft, labels = scalars(logs / "seed0" / "image-student-soft"), scalars(logs / "seed0" / "image-student-labels")
    assert {"train/distill", "val/acc"} <= set(soft) and "train/distill" not in labels
    assert len(soft["val/acc"]) == student_epochs
    assert len(scalars(logs / "seed0" / "teacher-fusion")["val/acc"]) <= teacher_epochs  # early stopping may end it sooner


def test_cli_refuses_log_dir_when_tuning(tmp_path):
    from mmkd_utils.__main__ import main

    with pytest.raises(SystemExit, match="drop --log_dir"):  # every candidate would log into the same folders
        main(["run", "--config", "tiny", "--tune_T", "2,4", "--log_dir", str(tmp_path)])


def test_published_command_names_the_log_dir_only_when_given():
    from dataclasses import asdict

    from mmkd_utils.__main__ import build_parser, config_from_args
    from mmkd_utils.config import get_config
    from mmkd_utils.report import command_for, jsonable

    assert "--log_dir" not in command_for(jsonable(asdict(get_config("cpu", label_fraction=0.1))))
    config = get_config("cpu", log_dir="runs/limited")
    command = command_for(jsonable(asdict(config)))
    assert "--log_dir runs/limited" in command
    assert config_from_args(build_parser().parse_args(command.split()[3:])) == config
