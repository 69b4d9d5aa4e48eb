"""The experiment pipeline and its command line, end to end on a tiny subset."""
import json
import subprocess
import sys
import time
from dataclasses import fields

import pytest
import torch

from mmkd_utils.config import ExperimentConfig, get_config
from mmkd_utils.experiment import corrupt_labels, markdown_table, summary_table


def test_cli_runs_a_whole_experiment_end_to_end(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mmkd_utils", "run", "--config", "tiny", "--out_dir", str(tmp_path),
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.perf_counter() - start < 120  # under a minute alone on 2 cores; headroom for a loaded machine
    result = json.loads((tmp_path / "tiny" / "results.json").read_text())
    cfg = get_config("tiny")
    models = {(r["model"], r["method"]) for r in result["rows"]}
    expected = {(f"teacher ({k})", "labels") for k in ("fusion", "text", "image")}
    expected |= {(f"{s} student", m) for s in cfg.students for m in cfg.methods}
    assert models == expected
    for r in result["rows"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["params"] > 0
    assert result["versions"]["torch"] == torch.__version__.split("+")[0] or result["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert result["config"]["seeds"] == [0]
    assert (tmp_path / "tiny" / "results.png").stat().st_size > 10_000
    md = (tmp_path / "tiny" / "results.md").read_text()
    assert "| image student | soft |" in md and "teacher (fusion)" in md
    # the teacher is measured with its encoders: millions of parameters, not just the head
    teacher = next(r for r in result["rows"] if r["model"] == "teacher (fusion)")
    assert teacher["params"] > 20_000_000
    # latency measured afterwards, in this process alone, on one thread; accuracies untouched
    from mmkd_utils.experiment import remeasure

    again = remeasure(tmp_path / "tiny")
    assert again["latency_threads"] == 1 and again["rows"] == result["rows"]
    teacher_cost, student_cost = again["costs"]["teacher (fusion)"], again["costs"]["image student"]
    assert teacher_cost["latency_ms_b1"] > student_cost["latency_ms_b1"] > 0
    assert all("latency_ms_b1" in e for e in again["table"])


def test_cli_help_lists_every_option():
    proc = subprocess.run([sys.executable, "-m", "mmkd_utils", "run", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for f in fields(ExperimentConfig):
        if f.name not in ("teacher_train", "student_train"):
            assert f"--{f.name}" in proc.stdout, f.name


def test_cli_rejects_bad_values_with_a_clear_message():
    proc = subprocess.run([sys.executable, "-m", "mmkd_utils", "run", "--config", "tiny", "--students", "audio"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "unknown student" in proc.stderr


@pytest.mark.parametrize("overrides, message", [
    ({"label": "emoji"}, "label must be"), ({"label_fraction": 0.0}, "label_fraction"),
    ({"alpha": 2.0}, "alpha"), ({"T": 0.0}, "temperature"), ({"seeds": ()}, "seeds"),
    ({"methods": ("soft", "magic")}, "unknown method"), ({"distill_from": "oracle"}, "distill_from"),
])
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_config("cpu", **overrides)
    with pytest.raises(TypeError, match="no field"):
        get_config("cpu", temperature=2.0)
    with pytest.raises(KeyError, match="unknown configuration"):
        get_config("tpu")


def test_gpu_config_is_the_same_code_path_with_other_values():
    cpu, gpu = get_config("cpu"), get_config("gpu")
    assert type(cpu) is type(gpu)
    assert (gpu.text_encoder, gpu.image_encoder) == ("bert-base-uncased", "resnet18")


def test_corrupt_labels_flips_and_hides_the_stated_shares():
    labels = torch.arange(1000) % 9
    noisy = corrupt_labels(labels, 9, noise=0.2, seed=0)
    assert (noisy != labels).sum() == 200 and noisy.min() >= 0 and noisy.max() < 9
    limited = corrupt_labels(labels, 9, label_fraction=0.1, seed=0)
    assert (limited >= 0).sum() == 100 and torch.equal(limited[limited >= 0], labels[limited >= 0])
    assert torch.equal(corrupt_labels(labels, 9, 0.1, 0.2, seed=3), corrupt_labels(labels, 9, 0.1, 0.2, seed=3))


def test_summary_table_pairs_runs_by_seed():
    rows = [{"model": "s", "method": m, "seed": seed, "accuracy": acc, "macro_f1": acc, "ece": 0.1, "params": 10}
            for m, accs in (("labels", (0.70, 0.72, 0.71)), ("soft", (0.73, 0.74, 0.74))) for seed, acc in enumerate(accs)]
    table = {e["method"]: e for e in summary_table(rows)}
    assert table["labels"]["accuracy_mean"] == pytest.approx(0.71)
    assert table["soft"]["vs_labels"]["mean"] == pytest.approx((0.03 + 0.02 + 0.03) / 3)
    assert "vs_labels" not in table["labels"]
    md = markdown_table(summary_table(rows))
    assert "| s | soft | — | 73.7 ± 0.6 |" in md and "+2.7 ± 0.6 **" in md


def test_command_for_reproduces_the_configuration():
    from dataclasses import asdict, replace

    from mmkd_utils.__main__ import build_parser, config_from_args
    from mmkd_utils.experiment import _jsonable, command_for

    config = get_config("cpu", name="limited", label_fraction=0.1, students=("image", "text"), augment=False,
                        teacher_views=4)
    config.student_train = replace(config.student_train, epochs=90, lr=1e-3)
    command = command_for(_jsonable(asdict(config)), jobs=2)
    assert command.startswith("python -m mmkd_utils run --config cpu ") and "--jobs 2" in command
    argv = command.split()[3:]
    args = build_parser().parse_args(argv)
    assert config_from_args(args) == config  # the command rebuilds exactly this configuration


def test_tuning_reads_validation_only_and_picks_the_best_pair(tmp_path):
    from mmkd_utils.experiment import tune

    config = get_config("tiny", out_dir=str(tmp_path), students=("text",), methods=("soft",))
    result = tune(config, temperatures=(1.0, 4.0), alphas=(0.5,), jobs=1)
    assert {(e["T"], e["alpha"]) for e in result["grid"]} == {(1.0, 0.5), (4.0, 0.5)}
    best = result["best"]["text student · soft"]
    assert best["val_accuracy_mean"] == max(e["val_accuracy_mean"] for e in result["grid"])
    assert all("accuracy" not in e for e in result["grid"])  # no test accuracy anywhere
    assert "← best" in (tmp_path / "tiny" / "tune.md").read_text()


def test_run_seed_without_test_never_touches_the_test_split():
    from mmkd_utils.experiment import prepare_data, run_seed

    config = get_config("tiny", students=("image",), methods=("labels", "soft"))
    data = prepare_data(config)
    data["test"] = None  # any read of the test split would fail
    rows = run_seed(config, data, seed=0, read_test=False)
    assert [r["method"] for r in rows if r["role"] == "student"] == ["labels", "soft"]
    assert all("accuracy" not in r and 0 <= r["val_accuracy"] <= 1 for r in rows)


def test_compression_summary_picks_the_distilled_method_on_validation_and_checks_the_target():
    from mmkd_utils.experiment import compression_markdown, compression_summary

    table = [
        {"model": "teacher (image)", "method": "labels", "accuracy_mean": 0.80, "val_accuracy_mean": 0.8,
         "params": 2_000_000, "latency_ms_b1": 10.0},
        {"model": "image student", "method": "labels", "accuracy_mean": 0.78, "val_accuracy_mean": 0.90,
         "params": 20_000, "latency_ms_b1": 0.5},
        {"model": "image student", "method": "soft", "accuracy_mean": 0.70, "val_accuracy_mean": 0.85,
         "params": 20_000, "latency_ms_b1": 0.5},  # best on validation, worse on test: still the one chosen
        {"model": "image student", "method": "hard", "accuracy_mean": 0.79, "val_accuracy_mean": 0.80,
         "params": 20_000, "latency_ms_b1": 0.5},
    ]
    [entry] = compression_summary(table, "image")
    assert entry["method"] == "soft" and entry["keeps"] == pytest.approx(0.875)
    assert entry["fewer_params"] == pytest.approx(100) and entry["faster"] == pytest.approx(20)
    assert entry["keeps_labels_only"] == pytest.approx(0.975)
    assert not entry["meets_target"] and "misses" in compression_markdown(table, "image")
    assert "(labels only: 97.5 %)" in compression_markdown(table, "image")
    table[2]["accuracy_mean"] = 0.77  # 96 % of the teacher
    assert compression_summary(table, "image")[0]["meets_target"]
    table[2]["latency_ms_b1"] = 4.0  # only 2.5× faster
    assert not compression_summary(table, "image")[0]["meets_target"]
    assert compression_summary(table, "fusion") == []  # no such teacher in the table: nothing claimed


def test_folds_keep_each_group_together_and_are_balanced():
    from mmkd_utils.experiment import folds_by_group

    groups = [f"base{i // 3}" for i in range(60)]  # 20 groups of 3 near-duplicates
    folds = folds_by_group(groups, 4, seed=0)
    for g in set(groups):
        assert len({int(folds[i]) for i, h in enumerate(groups) if h == g}) == 1
    assert sorted(torch.bincount(folds).tolist()) == [15, 15, 15, 15]
    assert torch.equal(folds, folds_by_group(groups, 4, seed=0))
    assert not torch.equal(folds, folds_by_group(groups, 4, seed=1))


def test_crossfit_logits_come_from_teachers_that_never_saw_the_row(monkeypatch):
    import mmkd_utils.experiment as exp

    config = get_config("tiny", crossfit=3, students=("text",), methods=("soft",), distill_from="text")
    data = exp.prepare_data(config)
    seen = []
    real_fit = exp.fit

    def recording_fit(model, train, *args, **kwargs):
        seen.append(set(train["index"].tolist()))
        return real_fit(model, train, *args, **kwargs)

    monkeypatch.setattr(exp, "fit", recording_fit)
    logits = exp.crossfit_logits("text", config, data, seed=0)
    folds = data["train_folds"]
    assert len(seen) == 3 and logits.shape == (folds.shape[0], len(data["class_names"]))
    for k, trained_on in enumerate(seen):
        held_out = set(data["train"]["index"][folds == k].tolist())
        assert held_out and not (trained_on & held_out)  # never trained on the rows it labels
        assert trained_on | held_out == set(data["train"]["index"].tolist())  # and trained on all the others
    seen.clear()
    rows = exp.run_seed(config, data, seed=0, read_test=False)  # the experiment uses them: 1 teacher + 3 folds + 1 student
    assert len(seen) == 5 and [r["method"] for r in rows] == ["soft"]
    with pytest.raises(ValueError, match="crossfit"):
        get_config("tiny", crossfit=1)


def test_transfer_set_is_generic_vocabulary_labelled_by_the_teacher(text_encoder, monkeypatch):
    import mmkd_utils.experiment as exp

    words = exp.transfer_vocabulary(text_encoder.tokenizer, 200, seed=0)
    assert len(set(words)) == 200 and words == exp.transfer_vocabulary(text_encoder.tokenizer, 200, seed=0)
    assert all(w.isalpha() and w.islower() and len(w) >= 3 for w in words)
    assert words != exp.transfer_vocabulary(text_encoder.tokenizer, 200, seed=1)
    with pytest.raises(ValueError, match="transfer_words"):
        exp.transfer_vocabulary(text_encoder.tokenizer, 10**6)

    config = get_config("tiny", transfer_words=64, students=("text",), methods=("labels", "soft"))
    data = exp.prepare_data(config)
    teacher = exp.build_teacher("fusion", config, data).eval()
    extra = exp.transfer_columns(teacher, data)
    assert extra["teacher_logits"].shape == (64, len(data["class_names"])) and (extra["label"] == -1).all()
    with torch.no_grad():  # the fusion teacher reads the word alone, its image dropped
        expected = teacher({"text_feat": data["transfer"]["text_feat"]}, drop={"image_feat"})
    assert torch.allclose(extra["teacher_logits"], expected, atol=1e-5)
    sizes = []
    real_fit = exp.fit
    monkeypatch.setattr(exp, "fit", lambda model, train, *a, **k: sizes.append(train["label"].shape[0]) or real_fit(model, train, *a, **k))
    exp.run_seed(config, data, seed=0, read_test=False)
    n_labelled = int((data["train"]["label"] >= 0).sum())
    assert sizes[1:] == [n_labelled, data["train"]["label"].shape[0] + 64]  # labels only: no transfer rows


def test_fusion_selection_reads_validation_only(tmp_path, monkeypatch):
    import mmkd_utils.experiment as exp

    config = get_config("tiny", out_dir=str(tmp_path))
    real_prepare = exp.prepare_data
    monkeypatch.setattr(exp, "prepare_data", lambda c: {**real_prepare(c), "test": None})  # a test read would fail
    result = exp.select_fusion(config, ("concat", "gated"))
    assert [e["fusion"] for e in result["grid"]] == ["concat", "gated"]
    assert result["best"] == max(result["grid"], key=lambda e: e["val_accuracy_mean"])["fusion"]
    assert "← best" in (tmp_path / "tiny" / "fusion.md").read_text()
    with pytest.raises(ValueError, match="fusion"):
        exp.select_fusion(config, ("concat", "bilinear"))
