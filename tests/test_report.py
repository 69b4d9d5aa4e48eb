"""Reporting: tables, the compression verdict, rerun commands."""
import pytest

from mmkd_utils.config import get_config
from mmkd_utils.report import markdown_table, summary_table


def test_summary_table_pairs_runs_by_seed():
    rows = [{"model": "s", "method": m, "seed": seed, "accuracy": acc, "macro_f1": acc, "ece": 0.1, "params": 10}
            for m, accs in (("labels", (0.70, 0.72, 0.71)), ("soft", (0.73, 0.74, 0.74))) for seed, acc in enumerate(accs)]
    table = {e["method"]: e for e in summary_table(rows)}
    assert table["labels"]["accuracy_mean"] == pytest.approx(0.71)
    assert table["soft"]["vs_labels"]["mean"] == pytest.approx((0.03 + 0.02 + 0.03) / 3)
    assert "vs_labels" not in table["labels"]
    md = markdown_table(summary_table(rows))
    assert "| s | soft | — | 73.7 ± 0.6 |" in md and "+2.7 ± 0.6 [+1.2, +4.1] win" in md


def test_command_for_reproduces_the_configuration():
    from dataclasses import asdict, replace

    from mmkd_utils.__main__ import build_parser, config_from_args
    from mmkd_utils.report import command_for, jsonable

    config = get_config("cpu", name="limited", label_fraction=0.1, students=("image", "text"), augment=False,
                        teacher_views=4)
    config.student_train = replace(config.student_train, epochs=90, lr=1e-3)
    command = command_for(jsonable(asdict(config)), jobs=2)
    assert command.startswith("python -m mmkd_utils run --config cpu ") and "--jobs 2" in command
    argv = command.split()[3:]
    args = build_parser().parse_args(argv)
    assert config_from_args(args) == config  # the command rebuilds exactly this configuration


def test_compression_summary_picks_the_distilled_method_on_validation_and_checks_the_target():
    from mmkd_utils.report import compression_markdown, compression_summary

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


def test_one_seed_shows_the_value_without_a_spread():
    rows = [{"model": "s", "method": m, "seed": 0, "accuracy": acc, "macro_f1": acc, "params": 10}
            for m, acc in (("labels", 0.70), ("soft", 0.73))]
    md = markdown_table(summary_table(rows))
    assert "± 0.0" not in md
    assert "| s | soft | — | 73.0 (n = 1) | 73.0 (n = 1) | +3.0 (n = 1) |" in md
