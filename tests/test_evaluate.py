"""Evaluation metrics, checked against values worked out by hand."""
import math

import numpy as np
import pytest
import torch

from mmkd_utils import evaluate as ev
from mmkd_utils.models import FusionClassifier, ImageCNN


def test_accuracy_and_macro_f1_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])  # predictions 0, 1, 0, 0
    m = ev.classification_metrics(logits, labels, ["a", "b"])
    assert m["accuracy"] == 0.75
    # class a: precision 2/3, recall 1 → F1 0.8; class b: precision 1, recall 1/2 → F1 2/3
    assert math.isclose(m["macro_f1"], (0.8 + 2 / 3) / 2, rel_tol=1e-9)
    assert m["confusion"].tolist() == [[2, 0], [1, 1]]
    with pytest.raises(ValueError, match="class names"):
        ev.classification_metrics(logits, labels, ["a"])


def test_agreement_and_kl_with_teacher():
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    out = ev.agreement_with_teacher(student, teacher)
    assert out["agreement"] == 0.5
    p, q = teacher.softmax(1), student.softmax(1)
    assert math.isclose(out["kl_to_teacher"], (p * (p / q).log()).sum(1).mean().item(), rel_tol=1e-5)
    assert ev.agreement_with_teacher(teacher, teacher)["kl_to_teacher"] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="same classes"):
        ev.agreement_with_teacher(student, torch.zeros(2, 3))


def test_expected_calibration_error_by_hand():
    # two examples at confidence 0.9 (one right, one wrong) and two at ~0.6 (both right)
    p_hi, p_lo = math.log(9.0), math.log(1.5)
    logits = torch.tensor([[p_hi, 0.0], [p_hi, 0.0], [p_lo, 0.0], [p_lo, 0.0]])
    labels = torch.tensor([0, 1, 0, 0])
    out = ev.calibration(logits, labels, n_bins=10)
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert out["ece"] == pytest.approx(expected, abs=1e-6)
    assert sum(b["count"] for b in out["bins"]) == 4


def test_latency_size_and_missing_modality():
    model = ImageCNN(3, width=4)
    data = {"image": torch.randn(64, 3, 16, 16), "label": torch.zeros(64, dtype=torch.long)}
    lat = ev.latency(model, ev.first_rows(data, ["image"]), repeats=3)
    assert lat["latency_ms_b1"] > 0 and lat["latency_ms_b64"] > 0
    assert lat["throughput_b64"] == pytest.approx(64 / (lat["latency_ms_b64"] / 1000))
    params = ev.count_parameters(model)
    assert params * 4 <= ev.size_on_disk(model) <= params * 4 + 20_000  # float32 weights + a small header
    fusion = FusionClassifier({"a": 4, "b": 4}, 3, hidden=8).eval()
    both = {"a": torch.randn(10, 4), "b": torch.randn(10, 4), "label": torch.zeros(10, dtype=torch.long)}
    assert set(ev.missing_modality_accuracy(fusion, both)) == {"acc_without_a", "acc_without_b"}
    assert ev.missing_modality_accuracy(model, data) == {}


def test_paired_difference_and_summary():
    out = ev.paired_difference([0.8, 0.9, 0.7], [0.7, 0.8, 0.7])
    assert out["mean"] == pytest.approx(0.2 / 3)
    assert out["std"] == pytest.approx(torch.tensor([0.1, 0.1, 0.0]).std().item(), rel=1e-5)
    assert ev.summarize([1.0]) == (1.0, 0.0)
    with pytest.raises(ValueError, match="same seeds"):
        ev.paired_difference([1.0], [1.0, 2.0])


def test_the_verdict_rule_is_the_paired_t_interval():
    from scipy import stats

    a, b = [0.80, 0.83, 0.79, 0.84, 0.81], [0.78, 0.80, 0.79, 0.80, 0.80]
    d = ev.paired_difference(a, b)
    # the interval is the one a paired t-test inverts: its ends give p = 0.05 exactly
    for end in (d["low"], d["high"]):
        assert stats.ttest_1samp(np.subtract(a, b) - end, 0.0).pvalue == pytest.approx(0.05, abs=1e-9)
    assert (d["low"], d["high"]) == pytest.approx(ev.t_interval(np.subtract(a, b)))
    assert ev.verdict(d) == "win" and ev.verdict(ev.paired_difference(b, a)) == "loss"
    # mean > 2 std yet the interval (n = 2, t = 12.7) contains 0: the rule is the interval, not "2 std"
    two = ev.paired_difference([0.80, 0.86], [0.70, 0.70])
    assert two["mean"] > 2 * two["std"] and ev.verdict(two) == "no clear change"
    one = ev.paired_difference([0.9], [0.1])
    assert one["low"] is None and ev.verdict(one) == "no clear change"  # one seed: no interval, no verdict
    # stored results keep only mean, std and n: the rule reads them the same way
    assert ev.verdict({k: d[k] for k in ("mean", "std", "n")}) == "win"


def test_the_publisher_and_the_tables_use_the_one_rule():
    from mmkd_utils import publish, report

    assert publish.verdict is ev.verdict
    d = ev.paired_difference([0.70, 0.72, 0.69, 0.71], [0.73, 0.74, 0.74, 0.72])
    assert report.delta_cell(d).endswith(" loss") and publish.interval_cell(d).startswith("[-")


def test_plots_have_titles_and_axis_labels():
    import matplotlib

    matplotlib.use("Agg")
    from mmkd_utils import plots

    logits, labels = torch.randn(50, 3), torch.randint(0, 3, (50,))
    ax = plots.reliability_diagram(ev.calibration(logits, labels))
    assert "ECE" in ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    ax = plots.confusion_matrix(ev.classification_metrics(logits, labels)["confusion"], ["a", "b", "c"])
    assert ax.get_xlabel() == "predicted class"
    table = [{"model": "teacher (x)", "method": "labels", "accuracy_mean": 0.8, "accuracy_std": 0.01},
             {"model": "s", "method": "soft", "accuracy_mean": 0.7, "accuracy_std": 0.02}]
    ax = plots.results_bars(table)
    assert len(ax.patches) == 2 and ax.get_xlabel() == "test accuracy (%)"


def test_fit_temperature_recovers_the_scale_of_overconfident_logits():
    generator = torch.Generator().manual_seed(0)
    calibrated = torch.randn(20_000, 5, generator=generator) * 2  # labels drawn from softmax(calibrated)
    labels = torch.multinomial(calibrated.softmax(1), 1, generator=generator).squeeze(1)
    T = ev.fit_temperature(3 * calibrated, labels)  # three times too confident
    assert T == pytest.approx(3.0, rel=0.05)
    nll = lambda t: torch.nn.functional.cross_entropy(3 * calibrated / t, labels).item()
    assert nll(T) <= min(nll(T * 0.9), nll(T * 1.1), nll(1.0))
    with pytest.raises(ValueError, match="same examples"):
        ev.fit_temperature(calibrated, labels[:10])


def test_t_interval_by_hand():
    diffs = [0.01, 0.03, 0.02, 0.05, 0.04]  # mean 0.03, std sqrt(0.00025)
    half = 2.7764451 * math.sqrt(0.00025) / math.sqrt(5)  # t_{0.975, 4} from a table
    assert ev.t_interval(diffs) == pytest.approx((0.03 - half, 0.03 + half), abs=1e-7)
    with pytest.raises(ValueError, match="two values"):
        ev.t_interval([0.1])


def test_bootstrap_interval_resamples_whole_groups():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(400, generator=generator).double().numpy()
    low, high = ev.bootstrap_interval(values, n_resamples=4000)
    se = values.std(ddof=1) / math.sqrt(len(values))  # normal approximation: mean ± 1.96 se
    assert low == pytest.approx(values.mean() - 1.96 * se, abs=0.02) and high == pytest.approx(values.mean() + 1.96 * se, abs=0.02)
    # 80 values each copied into a group of 5 rows: resampling groups is resampling the 80 values,
    # draw for draw; resampling the 400 rows as if independent gives a too-narrow interval
    unique = values[:80]
    rows, groups = unique.repeat(5), torch.arange(80).repeat_interleave(5).numpy()
    assert ev.bootstrap_interval(rows, groups) == pytest.approx(ev.bootstrap_interval(unique), abs=1e-12)
    naive = ev.bootstrap_interval(rows)
    assert naive[1] - naive[0] < 0.6 * (ev.bootstrap_interval(unique)[1] - ev.bootstrap_interval(unique)[0])
    # two unequal groups: a resample's mean is 1 (a, a), 0.8 (a, b) or 0 (b, b)
    assert ev.bootstrap_interval([1, 1, 1, 1, 0], list("aaaab")) == (0.0, 1.0)
    with pytest.raises(ValueError, match="one group per value"):
        ev.bootstrap_interval([1.0, 2.0], ["a"])


def test_nll_and_brier_score_by_hand():
    # row 0: logits (0, 0) → p = (1/2, 1/2), true class 0; row 1: logits (ln 3, 0) → p = (3/4, 1/4), true class 1
    logits, labels = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]), torch.tensor([0, 1])
    assert ev.nll(logits, labels) == pytest.approx((math.log(2) + math.log(4)) / 2)  # −log 1/2, −log 1/4
    # row 0: (1/2 − 1)² + (1/2)² = 1/2; row 1: (3/4)² + (1/4 − 1)² = 9/8
    assert ev.brier_score(logits, labels) == pytest.approx((1 / 2 + 9 / 8) / 2)
    certain = torch.tensor([[50.0, 0.0, 0.0]])
    assert ev.brier_score(certain, torch.tensor([0])) == pytest.approx(0.0)
    assert ev.brier_score(certain, torch.tensor([1])) == pytest.approx(2.0)  # certain and wrong: the maximum
    # temperature scaling lowers the validation NLL it was fitted on, never raises it
    torch.manual_seed(0)
    val_logits, val_labels = 4 * torch.randn(200, 5), torch.randint(0, 5, (200,))
    assert ev.nll(val_logits / ev.fit_temperature(val_logits, val_labels), val_labels) <= ev.nll(val_logits, val_labels)
    with pytest.raises(ValueError, match="same examples"):
        ev.brier_score(logits, torch.tensor([0]))
