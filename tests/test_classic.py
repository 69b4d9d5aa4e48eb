"""Tests for mmkd_utils.classic (notebook 09): the data generators' stated relations, the learners, the tables."""
from __future__ import annotations

import math

import pytest
import torch

from mmkd_utils import classic
from mmkd_utils.classic import (DigitsMLP, choose_bias_shift, digits_splits, draw_problem, errors, fit_logistic,
                                jitter, mean_std, privileged_data, run_lopez_paz)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread avoids OpenMP's busy-waiting on a shared CPU (as OMP_WAIT_POLICY=PASSIVE,
    which `make test` sets, would)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ digits (Hinton)
def test_digits_splits_sizes_range_and_determinism():
    splits = digits_splits(0)
    sizes = {name: len(split["label"]) for name, split in splits.items()}
    assert sizes == {"train": 1078, "validation": 359, "test": 360}  # 60 / 20 / 20 % of 1,797
    assert all(split["pixels"].shape == (n, 64) for split, n in zip(splits.values(), sizes.values()))
    assert 0 <= splits["train"]["pixels"].min() and splits["train"]["pixels"].max() <= 1
    assert sorted(torch.cat([s["label"] for s in splits.values()]).bincount().tolist()) == sorted(
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])  # every digit, each row once
    again, other = digits_splits(0), digits_splits(1)
    assert torch.equal(again["test"]["pixels"], splits["test"]["pixels"])
    assert not torch.equal(other["test"]["pixels"], splits["test"]["pixels"])


def test_jitter_moves_a_pixel_without_losing_it():
    pixels = torch.zeros(200, 64)
    pixels[:, 3 * 8 + 4] = 1.0  # one lit pixel at row 3, column 4, far from the border
    shifted = jitter({"pixels": pixels, "label": torch.zeros(200)}, generator(), max_shift=0.5)["pixels"]
    assert torch.allclose(shifted.sum(1), torch.ones(200), atol=1e-5)  # a translation keeps the mass
    grid = torch.arange(8.0)
    images = shifted.view(200, 8, 8)
    row_centre, col_centre = (images.sum(2) * grid).sum(1), (images.sum(1) * grid).sum(1)
    assert (row_centre - 3).abs().max() <= 0.5 + 1e-5 and (col_centre - 4).abs().max() <= 0.5 + 1e-5
    assert (col_centre - 4).abs().max() > 0.3  # it does move
    unmoved = jitter({"pixels": pixels}, generator(), max_shift=0.0)["pixels"]
    assert torch.allclose(unmoved, pixels, atol=1e-6)


def test_errors_and_bias_shift_chosen_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0, -1.1], [0.0, 0.0, 0.0, -1.2], [2.0, 0.0, 0.0, 0.0]])  # (3, 4)
    labels = torch.tensor([3, 3, 0])
    assert errors(logits, labels) == 2
    # class 3 needs a shift above 1.2 to win rows 0 and 1, and below 2.0 not to take row 2: the smallest is 1.25
    assert choose_bias_shift(logits, labels, cls=3) == 1.25
    assert choose_bias_shift(logits, torch.tensor([0, 1, 0]), cls=3) == 0.0


def test_digits_mlp_reads_pixels():
    model = DigitsMLP(hidden=(16, 8), dropout=0.5)
    assert model({"pixels": torch.rand(5, 64), "label": torch.zeros(5)}).shape == (5, 10)
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 2


# ------------------------------------------------------------------- synthetic PI (Lopez-Paz)
ALPHA = torch.randn(50, generator=generator(1))


def test_clean_labels_experiment_relations():
    x, x_star, y = privileged_data(1, 20_000, ALPHA, generator())
    assert x.shape == (20_000, 50) and x_star.shape == (20_000, 1) and y.shape == (20_000,)
    assert torch.allclose(x_star[:, 0], x @ ALPHA, atol=1e-4)
    flipped = (y != (x_star[:, 0] > 0).long()).float().mean().item()
    expected = math.atan(1 / ALPHA.norm().item()) / math.pi  # P(sign(s + ε) ≠ sign(s)), s ~ N(0, ‖α‖²), ε ~ N(0, 1)
    assert abs(flipped - expected) < 0.01 and flipped > 0


def test_clean_features_experiment_relations():
    x, x_star, y = privileged_data(2, 20_000, ALPHA, generator())
    assert x.shape == x_star.shape == (20_000, 50)
    assert torch.equal(y, (x_star @ ALPHA > 0).long())
    noise = x - x_star
    assert abs(noise.std().item() - 1) < 0.02 and abs(x_star.std().item() - 1) < 0.02
    assert abs(torch.corrcoef(torch.stack([noise[:, 0], x_star[:, 0]]))[0, 1].item()) < 0.03  # independent


def test_relevant_features_share_one_set():
    relevant = torch.tensor([7, 1, 30])
    x, x_star, y = privileged_data(3, 500, ALPHA, generator(), relevant=relevant)
    assert torch.equal(x_star, x[:, relevant])
    assert torch.equal(y, (x_star @ ALPHA[relevant] > 0).long())
    with pytest.raises(ValueError, match="relevant"):
        privileged_data(3, 10, ALPHA, generator())


def test_sample_dependent_sets_differ_by_row_and_define_the_label():
    x, x_star, y = privileged_data(4, 300, ALPHA, generator())
    assert x_star.shape == (300, 3)
    sets = []
    for row in range(300):  # recover J_i: the columns of x_i holding x*_i's values
        J = torch.stack([(x[row] == value).nonzero()[0, 0] for value in x_star[row]])
        sets.append(tuple(sorted(J.tolist())))
        assert y[row] == int((x_star[row] * ALPHA[J]).sum() > 0)
    assert len(set(sets)) > 250  # a new set for (nearly) every row


def test_released_code_variant_draws_one_set_per_data_set():
    x, x_star, y = privileged_data(4, 400, ALPHA, generator(), variant="released")
    columns = [(x == x_star[:, [k]]).all(0).nonzero()[0, 0].item() for k in range(3)]  # one column per x* entry
    assert y.float().mean().item() == 0.5  # thresholded at the median
    assert torch.equal(y, (x_star @ ALPHA[:3] > (x_star @ ALPHA[:3]).median()).long())
    _, x_star_2, _ = privileged_data(4, 400, ALPHA, generator(5), variant="released")
    assert len(columns) == 3 and x_star_2.shape == (400, 3)
    with pytest.raises(ValueError, match="experiment must be"):
        privileged_data(5, 10, ALPHA, generator())


def test_draw_problem_is_determined_by_its_arguments():
    (a, b) = draw_problem("3", 2, n_test=100), draw_problem("3", 2, n_test=100)
    assert all(torch.equal(u, v) for u, v in zip(a[0] + a[1], b[0] + b[1]))
    other = draw_problem("3", 3, n_test=100)
    assert not torch.equal(other[0][0], a[0][0])
    assert torch.equal(draw_problem("3", 2, test=False)[0], a[0][0])  # the training set does not depend on the test set


def test_distilled_student_with_zero_imitation_is_the_plain_student():
    x = torch.randn(3, 60, 50, generator=generator())
    labels = (x[:, :, 0] > 0).long()
    plain = fit_logistic(x, labels, epochs=20)
    imitating_nobody = fit_logistic(x, labels, torch.randn(3, 60, 2), T=2.0, imitation=0.0, epochs=20)
    assert all(torch.equal(u, v) for u, v in zip(plain, imitating_nobody))
    imitating = fit_logistic(x, labels, torch.randn(3, 60, 2), T=2.0, imitation=1.0, epochs=20)
    assert not torch.equal(imitating[0], plain[0])


def test_zero_padded_columns_stay_inert():
    x = torch.randn(2, 60, 3, generator=generator())
    labels = (x[:, :, 0] > 0).long()
    padded = torch.nn.functional.pad(x, (0, 7))
    weight, bias = fit_logistic(padded, labels, epochs=10, fan_in=torch.tensor([3, 3]))
    initial = fit_logistic(padded, labels, epochs=0, fan_in=torch.tensor([3, 3]))[0]
    assert torch.equal(weight[:, 3:], initial[:, 3:])
    assert initial[:, :3].abs().max() <= math.sqrt(6 / 5)  # Glorot bound for 3 inputs, not 10


def test_teacher_on_clean_features_beats_student_and_distillation_fixes_noisy_labels():
    result = run_lopez_paz(4, settings=("1", "2"), n_test=2000, epochs=150)
    mean = {s: {k: sum(v) / len(v) for k, v in learners.items()} for s, learners in result.items()}
    assert mean["2"]["teacher"] > mean["2"]["student"] + 0.1  # clean vs noisy features
    assert mean["1"]["distilled"] > mean["1"]["student"] + 0.03  # the teacher's soft labels undo the label noise
    assert all(len(v) == 4 for learners in result.values() for v in learners.values())


# ------------------------------------------------------------------------------------ tables
def test_summarise_and_markdown_by_hand():
    rows = [{"seed": s, "test_size": 200, "omitted_in_test": 20, "bias_shift": 1.0 + s, "teacher": 2 + 2 * s,
             "small": 4, "distilled T=20": 3, "omit_before": 10, "omit_before_on_omitted": 8 - 2 * s,
             "omit_after": 5, "omit_after_on_omitted": 2} for s in (0, 1)]
    lopez_paz = {"1": {"teacher": [0.9, 1.0], "student": [0.8, 0.8], "distilled": [0.85, 0.95]}}
    table = classic.summarise(rows, lopez_paz)
    assert table["hinton"]["teacher"] == {"mean": 3.0, "std": 1.0, "n": 2}
    assert table["hinton"]["teacher %"]["mean"] == pytest.approx(1.5)  # 3 of 200
    assert table["hinton"]["omitted accuracy before %"]["mean"] == pytest.approx(65.0)  # (12 + 14) / 2 of 20
    assert table["lopez_paz"]["1"]["teacher"]["mean"] == pytest.approx(95.0)
    assert table["lopez_paz"]["1"]["teacher"]["std"] == pytest.approx(5.0)
    text = classic.markdown(table, rows)
    assert "| teacher | 3.0 ± 1.0 | 1.50 ± 0.50 | 67 |" in text
    assert "96 ± 0 / 88 ± 1 / 95 ± 1" in text
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 2}
