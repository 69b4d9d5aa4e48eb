"""The experiment pipeline and its command line, end to end on a tiny subset."""
import json
import subprocess
import sys
import time
from dataclasses import fields

import pytest
import torch

from mmkd_utils.config import ExperimentConfig, get_config


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
    proc = subprocess.run([sys.executable, "-m", "mmkd_utils", "run", "--config", "tiny", "--students", "speech"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "unknown student" in proc.stderr


@pytest.mark.parametrize("overrides, message", [
    ({"label": ""}, "label must"), ({"label_fraction": 0.0}, "label_fraction"),
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
    from mmkd_utils.experiment import run_seed
    from mmkd_utils.prepare import prepare_data

    config = get_config("tiny", students=("image",), methods=("labels", "soft"))
    data = prepare_data(config)
    data.test = None  # any read of the test split would fail
    rows = run_seed(config, data, seed=0, read_test=False)
    assert [r["method"] for r in rows if r["role"] == "student"] == ["labels", "soft"]
    assert all("accuracy" not in r and 0 <= r["val_accuracy"] <= 1 for r in rows)


def test_fusion_selection_reads_validation_only(tmp_path, monkeypatch):
    import mmkd_utils.experiment as exp

    config = get_config("tiny", out_dir=str(tmp_path))
    real_prepare = exp.prepare_data

    def without_test(c):
        data = real_prepare(c)
        data.test = None  # a test read would fail
        return data

    monkeypatch.setattr(exp, "prepare_data", without_test)
    result = exp.select_fusion(config, ("concat", "gated"))
    assert [e["fusion"] for e in result["grid"]] == ["concat", "gated"]
    assert result["best"] == max(result["grid"], key=lambda e: e["val_accuracy_mean"])["fusion"]
    assert "← best" in (tmp_path / "tiny" / "fusion.md").read_text()
    with pytest.raises(ValueError, match="fusion"):
        exp.select_fusion(config, ("concat", "bilinear"))


def test_compare_runs_counts_exact_rows_and_the_largest_changes():
    from mmkd_utils.experiment import compare_runs

    def result(accs, jobs=1):
        rows = [{"model": m, "method": "labels", "seed": s, "accuracy": a} for (m, s), a in accs.items()]
        table = [{"model": m, "method": "labels", "accuracy_mean": sum(a for (mm, _), a in accs.items() if mm == m) / 2}
                 for m in ("teacher", "student")]
        return {"rows": rows, "table": table, "jobs": jobs, "torch_threads": 2, "versions": {"torch": "x"}}

    published = result({("teacher", 0): 0.9, ("teacher", 1): 0.8, ("student", 0): 0.7, ("student", 1): 0.6})
    rerun = result({("teacher", 0): 0.9, ("teacher", 1): 0.8, ("student", 0): 0.72, ("student", 1): 0.6}, jobs=2)
    c = compare_runs(published, rerun)
    assert (c["rows"], c["exact"], c["jobs"]) == (4, 3, 2)
    assert c["models"]["teacher"]["exact"] == 2 and c["models"]["teacher"]["max_seed_change"] == 0
    assert c["models"]["student"]["max_seed_change"] == pytest.approx(0.02)
    assert c["models"]["student"]["max_mean_change"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="other rows"):
        compare_runs(published, result({("teacher", 0): 0.9}))


def test_compare_runs_on_the_rows_two_different_runs_share():
    from mmkd_utils.experiment import compare_runs

    published = {"rows": [{"model": "t", "method": "labels", "seed": 0, "accuracy": 0.9},
                          {"model": "s", "method": "hard", "seed": 0, "accuracy": 0.5}],
                 "table": [{"model": "t", "method": "labels", "accuracy_mean": 0.9}]}
    other = {"rows": [{"model": "t", "method": "labels", "seed": 0, "accuracy": 0.9}],
             "table": [{"model": "t", "method": "labels", "accuracy_mean": 0.9}], "torch_threads": 2,
             "versions": {}, "config": {"name": "later"}}
    c = compare_runs(published, other, shared_only=True)
    assert (c["rows"], c["exact"], c["shared_with"]) == (1, 1, "later")


def test_merged_runs_equal_one_run_over_all_seeds(tmp_path):
    """`python -m mmkd_utils merge`: seeds run at different times join into the result one command gives."""
    from mmkd_utils.experiment import merge_runs, run

    base = dict(students=("text",), methods=("labels", "soft"), out_dir=str(tmp_path))
    whole = run(get_config("tiny", name="whole", seeds=(0, 1), **base), progress=False)
    for seed in (0, 1):
        run(get_config("tiny", name=f"s{seed}", seeds=(seed,), **base), progress=False)
    merged = merge_runs([tmp_path / "s0", tmp_path / "s1"], "joined", tmp_path)
    key = lambda r: (r["model"], r["method"], r["seed"])
    metrics = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in sorted(rows, key=key)]
    assert metrics(merged["rows"]) == metrics(whole["rows"])  # every metric of every row, bit for bit
    assert merged["table"] == whole["table"] and merged["config"]["seeds"] == [0, 1]
    assert (tmp_path / "joined" / "results.md").exists()
    with pytest.raises(ValueError, match="share seeds"):
        merge_runs([tmp_path / "s0", tmp_path / "whole"], "bad", tmp_path)
    run(get_config("tiny", name="other", seeds=(2,), **{**base, "T": 2.0}), progress=False)
    with pytest.raises(ValueError, match="differ in more than their seeds"):
        merge_runs([tmp_path / "s0", tmp_path / "other"], "bad", tmp_path)


def test_every_run_keeps_each_test_rows_right_or_wrong():
    """Not only --ood_test runs: any two runs can be compared row by row and bootstrapped over emoji (notebook 07)."""
    import numpy as np

    from mmkd_utils.experiment import run_seed
    from mmkd_utils.prepare import prepare_data

    config = get_config("tiny", students=("text",), methods=("labels", "soft"))
    assert config.ood_test is None
    data = prepare_data(config)
    rows = run_seed(config, data, seed=0)
    assert {r["model"] for r in rows} == {"teacher (fusion)", "teacher (text)", "teacher (image)", "text student"}
    for r in rows:
        assert len(r["test_correct"]) == len(data.test["label"]) and set(r["test_correct"]) <= {0, 1}
        assert r["accuracy"] == pytest.approx(np.mean(r["test_correct"]))  # the rows of the test metrics
        assert r["nll"] > 0 and 0 <= r["brier"] <= 2
