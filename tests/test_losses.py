"""Tests for mmkd_utils.losses: hand-derived values, autograd, identities, properties and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmkd_utils import losses
from mmkd_utils.losses import (ContrastiveHint, FitNetHint, check_alpha, check_temperature, dist_loss,
                               distillation_objective, hard_distillation_loss, logit_matching_loss, pkt_loss,
                               rkd_angle_loss, rkd_distance_loss, soft_cross_entropy, soft_distillation_loss,
                               softmax_t)

LN3 = math.log(3.0)
FAST = settings(max_examples=30, deadline=None)


def random_logits(batch=6, classes=5, scale=3.0, seed=0):
    """A student/teacher pair of float64 logits from a fixed generator."""
    generator = torch.Generator().manual_seed(seed)
    teacher = scale * torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    student = teacher + torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    return student, teacher


def logit_pairs(min_classes=2):
    """Hypothesis strategy: (student, teacher) float64 tensors of the same shape, values in [-5, 5]."""
    shapes = st.tuples(st.integers(1, 5), st.integers(min_classes, 6))
    values = st.floats(-5, 5, allow_nan=False, allow_infinity=False)
    return shapes.flatmap(lambda shape: st.tuples(hnp.arrays(np.float64, shape, elements=values),
                                                  hnp.arrays(np.float64, shape, elements=values))
                          ).map(lambda pair: (torch.from_numpy(pair[0]), torch.from_numpy(pair[1])))


# ----------------------------------------------------------------------------------------------------
# Hand-computed values: two classes, teacher p = (3/4, 1/4), uniform student q = (1/2, 1/2)


def test_softmax_t_two_classes_by_hand():
    torch.testing.assert_close(softmax_t(torch.tensor([LN3, 0.0]), T=1.0), torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(softmax_t(torch.tensor([2 * LN3, 0.0]), T=2.0), torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(softmax_t(torch.tensor([5.0, -5.0, 0.0]), T=1e9), torch.full((3,), 1 / 3))


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_soft_distillation_two_classes_by_hand(T):
    teacher = torch.tensor([[T * LN3, 0.0]])  # softmax(teacher / T) = (3/4, 1/4) at every T
    student = torch.zeros(1, 2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert soft_distillation_loss(student, teacher, T=T).item() == pytest.approx(T * T * kl, rel=1e-6)


def test_soft_cross_entropy_two_classes_by_hand():
    teacher, student = torch.tensor([[LN3, 0.0]]), torch.zeros(1, 2)
    assert soft_cross_entropy(student, teacher).item() == pytest.approx(math.log(2.0), rel=1e-6)
    # H(p, p) is the teacher's entropy
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert soft_cross_entropy(teacher, teacher).item() == pytest.approx(entropy, rel=1e-6)


def test_soft_cross_entropy_equals_torch_cross_entropy_with_probability_targets():
    student, teacher = random_logits()
    for T in [1.0, 3.0]:
        expected = F.cross_entropy(student / T, torch.softmax(teacher / T, dim=1))
        torch.testing.assert_close(soft_cross_entropy(student, teacher, T=T), expected)


def test_hard_distillation_by_hand():
    teacher = torch.tensor([[LN3, 0.0], [0.0, 2.0]])  # argmax: class 0, class 1
    student = torch.tensor([[LN3, 0.0], [0.0, 0.0]])  # q(class 0) = 3/4 ; q(class 1) = 1/2
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert hard_distillation_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_logit_matching_by_hand():
    student, teacher = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)
    assert logit_matching_loss(student, teacher, center=False).item() == pytest.approx(0.5 * (1 + 4))
    # centred: (-0.5, 0.5) against (0, 0)
    assert logit_matching_loss(student, teacher, center=True).item() == pytest.approx(0.5 * (0.25 + 0.25))


def test_logit_matching_averages_over_batch_and_sums_over_classes():
    student = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    assert logit_matching_loss(student, torch.zeros(2, 3), center=False).item() == pytest.approx((0.5 + 4.5) / 2)


def test_distillation_objective_both_forms():
    task, distill = torch.tensor(2.0), torch.tensor(4.0)
    assert distillation_objective(task, distill, alpha=0.25).item() == pytest.approx(0.75 * 2 + 0.25 * 4)
    assert distillation_objective(task, distill, alpha=0.25, form="additive").item() == pytest.approx(2 + 0.25 * 4)
    assert distillation_objective(task, distill, alpha=0.0).item() == pytest.approx(2.0)
    assert distillation_objective(task, distill, alpha=1.0).item() == pytest.approx(4.0)
    assert distillation_objective(task, distill, alpha=3.0, form="additive").item() == pytest.approx(14.0)


# ----------------------------------------------------------------------------------------------------
# Identities and gradients


@pytest.mark.parametrize("T", [1.0, 2.5, 8.0])
def test_kl_equals_cross_entropy_minus_teacher_entropy(T):
    student, teacher = random_logits()
    p = torch.softmax(teacher / T, dim=1)
    teacher_entropy = -(p * p.log()).sum(dim=1).mean()
    expected = T * T * (soft_cross_entropy(student, teacher, T=T) - teacher_entropy)
    torch.testing.assert_close(soft_distillation_loss(student, teacher, T=T), expected)


@pytest.mark.parametrize("T", [1.0, 2.0, 5.0])
def test_soft_gradient_is_q_minus_p_over_T(T):
    student, teacher = random_logits()
    student.requires_grad_(True)
    batch = student.shape[0]
    per_example_sum = soft_distillation_loss(student, teacher, T=T) * batch / (T * T)  # undo T² and batch mean
    (grad,) = torch.autograd.grad(per_example_sum, student)
    q, p = torch.softmax(student.detach() / T, dim=1), torch.softmax(teacher / T, dim=1)
    torch.testing.assert_close(grad, (q - p) / T)


def test_soft_cross_entropy_has_the_same_gradient_as_the_kl():
    student, teacher = random_logits()
    student.requires_grad_(True)
    (grad_kl,) = torch.autograd.grad(soft_distillation_loss(student, teacher, T=3.0) / 9.0, student)
    (grad_ce,) = torch.autograd.grad(soft_cross_entropy(student, teacher, T=3.0), student)
    torch.testing.assert_close(grad_kl, grad_ce)
    q, p = torch.softmax(student.detach() / 3.0, dim=1), torch.softmax(teacher / 3.0, dim=1)
    torch.testing.assert_close(grad_ce, (q - p) / (3.0 * student.shape[0]))  # no T²: (q − p) / (T · batch)


def test_hard_and_logit_matching_gradients():
    student, teacher = random_logits(batch=4, classes=3)
    student.requires_grad_(True)
    (grad,) = torch.autograd.grad(hard_distillation_loss(student, teacher), student)
    one_hot = F.one_hot(teacher.argmax(dim=1), 3).double()
    torch.testing.assert_close(grad, (torch.softmax(student.detach(), dim=1) - one_hot) / 4)
    (grad,) = torch.autograd.grad(logit_matching_loss(student, teacher, center=False), student)
    torch.testing.assert_close(grad, (student.detach() - teacher) / 4)


def test_high_temperature_limit_is_centred_logit_matching_over_classes():
    # Hinton et al. 2015: for zero-mean logits, T²·KL -> (1/(2N)) Σ (z - v)² as T -> ∞
    student, teacher = random_logits(batch=8, classes=10)
    teacher = teacher + 7.0  # a per-row shift: the soft loss ignores it, centring removes it
    classes = student.shape[1]
    limit = logit_matching_loss(student, teacher, center=True) / classes
    errors = [abs(soft_distillation_loss(student, teacher, T=T) / limit - 1).item() for T in [10.0, 100.0, 1000.0]]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3
    uncentred = logit_matching_loss(student, teacher, center=False) / classes
    assert abs(soft_distillation_loss(student, teacher, T=1000.0) / uncentred - 1).item() > 0.5


# ----------------------------------------------------------------------------------------------------
# The three common mistakes each give a different number


def test_mistake_missing_t_squared():
    student, teacher, T = *random_logits(), 4.0
    wrong = F.kl_div(F.log_softmax(student / T, 1), F.log_softmax(teacher / T, 1), log_target=True, reduction="batchmean")
    right = soft_distillation_loss(student, teacher, T=T)
    assert not torch.isclose(wrong, right)
    torch.testing.assert_close(right / wrong, torch.tensor(T * T, dtype=torch.float64))


def test_mistake_reduction_mean_instead_of_batchmean():
    student, teacher, T = *random_logits(), 4.0
    with pytest.warns(UserWarning, match="batchmean"):  # PyTorch itself warns about this one
        wrong = F.kl_div(F.log_softmax(student / T, 1), F.log_softmax(teacher / T, 1), log_target=True,
                         reduction="mean") * T * T
    right = soft_distillation_loss(student, teacher, T=T)
    assert not torch.isclose(wrong, right)
    torch.testing.assert_close(right / wrong, torch.tensor(float(student.shape[1]), dtype=torch.float64))


def test_mistake_log_softmax_on_the_wrong_side():
    student, teacher, T = *random_logits(), 1.0  # at high T the two directions agree to leading order
    log_q, log_p = F.log_softmax(student / T, 1), F.log_softmax(teacher / T, 1)
    wrong = F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * T * T  # KL(q ‖ p)
    right = soft_distillation_loss(student, teacher, T=T)
    reverse_kl = T * T * (log_q.exp() * (log_q - log_p)).sum(dim=1).mean()
    torch.testing.assert_close(wrong, reverse_kl)
    assert abs(wrong / right - 1).item() > 0.05


# ----------------------------------------------------------------------------------------------------
# Properties (hypothesis)


@FAST
@given(pair=logit_pairs(), T=st.floats(0.5, 10.0))
def test_soft_loss_non_negative_and_shift_invariant(pair, T):
    student, teacher = pair
    loss = soft_distillation_loss(student, teacher, T=T)
    assert loss.item() >= -1e-12
    shift_student = torch.linspace(-3, 3, student.shape[0], dtype=torch.float64)[:, None]
    shifted = soft_distillation_loss(student + shift_student, teacher - 2.0, T=T)
    torch.testing.assert_close(shifted, loss, atol=1e-10, rtol=1e-7)


@FAST
@given(pair=logit_pairs(), T=st.floats(1.0, 8.0))
def test_soft_loss_zero_iff_logits_equal_up_to_a_row_constant(pair, T):
    student, teacher = pair
    same_up_to_shift = teacher + student[:, :1]  # teacher plus a per-row constant
    assert soft_distillation_loss(same_up_to_shift, teacher, T=T).item() == pytest.approx(0.0, abs=1e-12)
    difference = student - teacher
    centred_difference = difference - difference.mean(dim=1, keepdim=True)
    if centred_difference.norm() > 0.1:
        assert soft_distillation_loss(student, teacher, T=T).item() > 0.0


@FAST
@given(pair=logit_pairs())
def test_other_logit_losses_non_negative_and_zero_at_the_teacher(pair):
    student, teacher = pair
    assert soft_cross_entropy(student, teacher).item() >= 0.0
    assert hard_distillation_loss(student, teacher).item() >= 0.0
    assert logit_matching_loss(student, teacher, center=False).item() >= 0.0
    assert logit_matching_loss(teacher, teacher, center=False).item() == 0.0
    assert logit_matching_loss(teacher + 5.0, teacher, center=True).item() == pytest.approx(0.0, abs=1e-10)
    if (student - teacher).abs().max() > 1e-6:  # (smaller differences underflow when squared)
        assert logit_matching_loss(student, teacher, center=False).item() > 0.0


def feature_pairs():
    """Hypothesis strategy: student (B, Ds) and teacher (B, Dt) features, B >= 3, values in [-3, 3]."""
    values = st.floats(-3, 3, allow_nan=False, allow_infinity=False)
    shapes = st.tuples(st.integers(3, 6), st.integers(2, 5), st.integers(2, 5))
    return shapes.flatmap(lambda s: st.tuples(hnp.arrays(np.float64, (s[0], s[1]), elements=values),
                                              hnp.arrays(np.float64, (s[0], s[2]), elements=values))
                          ).map(lambda pair: (torch.from_numpy(pair[0]), torch.from_numpy(pair[1])))


def well_spread(x: torch.Tensor) -> bool:
    """No two rows (nearly) coincide and no row is (nearly) zero: relations are well defined."""
    return bool(torch.pdist(x).min() > 0.1 and x.norm(dim=1).min() > 0.1)


@FAST
@given(pair=feature_pairs(), scale=st.floats(0.1, 10.0))
def test_relational_losses_zero_for_identical_features_and_scale_invariant(pair, scale):
    student, teacher = pair
    if not (well_spread(student) and well_spread(teacher)):
        return
    for loss_fn in [rkd_distance_loss, rkd_angle_loss, pkt_loss]:
        assert loss_fn(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
        loss = loss_fn(student, teacher)
        assert loss.item() >= -1e-9
        torch.testing.assert_close(loss_fn(scale * student, teacher), loss, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(loss_fn(student, scale * teacher), loss, atol=1e-6, rtol=1e-5)


@FAST
@given(pair=logit_pairs())
def test_dist_loss_non_negative_and_zero_at_the_teacher(pair):
    student, teacher = pair
    p = torch.softmax(teacher, dim=1)
    if student.shape[0] < 2 or p.std(dim=1).min() < 0.05 or p.std(dim=0).min() < 0.05:
        return  # Pearson correlation is undefined for a constant row or column
    assert dist_loss(student, teacher).item() >= -1e-9
    assert dist_loss(teacher + 1.0, teacher).item() == pytest.approx(0.0, abs=1e-5)


# ----------------------------------------------------------------------------------------------------
# Feature losses: hand-computed values and behaviour


def test_rkd_distance_by_hand():
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # distances 1, 1, 2; mean 4/3
    triangle = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])  # distances 1, 1, 1
    # normalised: (3/4, 3/4, 3/2) vs (1, 1, 1); Huber 0.5·d² for |d| < 1: (1/32 + 1/32 + 1/8) / 3
    assert rkd_distance_loss(line, triangle).item() == pytest.approx(0.0625, rel=1e-5)


def test_rkd_distance_relation_to_the_authors_full_matrix_mean():
    student, teacher = random_logits(batch=5, classes=4)
    full_student, full_teacher = torch.cdist(student, student), torch.cdist(teacher, teacher)
    authors = F.smooth_l1_loss(full_student / full_student[full_student > 0].mean(),
                               full_teacher / full_teacher[full_teacher > 0].mean())
    torch.testing.assert_close(rkd_distance_loss(student, teacher) * (5 - 1) / 5, authors)


def test_rkd_angle_by_hand():
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # cos = -1 at the middle, +1 at the ends
    triangle = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])  # cos 60° = 0.5 everywhere
    # 6 ordered triplets: 2 with |d| = 1.5 (Huber 1.0 each), 4 with |d| = 0.5 (Huber 0.125 each)
    assert rkd_angle_loss(line, triangle).item() == pytest.approx((2 * 1.0 + 4 * 0.125) / 6, rel=1e-5)


def test_pkt_by_hand():
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # cosines [[1, 0], [0, 1]]
    teacher = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)  # cosines all 1
    # rows: student (2/3, 1/3), teacher (1/2, 1/2); KL = ½ ln(3/4) + ½ ln(3/2) per row
    assert pkt_loss(student, teacher).item() == pytest.approx(0.5 * math.log(1.125), rel=1e-5)


def test_pkt_scale_invariance_regression():
    # found by Hypothesis: with x / (‖x‖ + eps) the loss moved by 3.6e-5 (relative) when the student was halved
    student = torch.tensor([[-2.0, 2.5], [2.5, -3.0], [2.5, 2.5]], dtype=torch.float64)
    teacher = torch.tensor([[0.5, 1.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    loss = pkt_loss(student, teacher)
    for scaled in [(0.5 * student, teacher), (student, 0.5 * teacher), (3.7 * student, teacher)]:
        assert pkt_loss(*scaled).item() == pytest.approx(loss.item(), rel=1e-12, abs=0)
    with_zero_row = torch.cat([student, torch.zeros(1, 2, dtype=torch.float64)]).requires_grad_(True)
    (grad,) = torch.autograd.grad(pkt_loss(with_zero_row, torch.cat([teacher, teacher[:1]])), with_zero_row)
    assert torch.isfinite(grad).all()


def test_dist_loss_against_numpy_pearson():
    student, teacher = random_logits(batch=4, classes=5)
    q, p = torch.softmax(student, 1).numpy(), torch.softmax(teacher, 1).numpy()
    inter = np.mean([1 - np.corrcoef(q[i], p[i])[0, 1] for i in range(4)])
    intra = np.mean([1 - np.corrcoef(q[:, c], p[:, c])[0, 1] for c in range(5)])
    expected = inter + 2 * intra  # (the loss adds eps = 1e-8 to each denominator, hence rel=1e-5)
    assert dist_loss(student, teacher, beta=1.0, gamma=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_relational_gradients_finite_with_duplicate_examples():
    student = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0], [3.0, 0.0]], requires_grad=True)
    teacher = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    for loss_fn in [rkd_distance_loss, rkd_angle_loss, pkt_loss]:
        (grad,) = torch.autograd.grad(loss_fn(student, teacher), student)
        assert torch.isfinite(grad).all(), loss_fn.__name__


def test_fitnet_hint_identity_adapter_is_plain_mse_and_zero_at_the_teacher():
    hint = FitNetHint(3, 3)
    with torch.no_grad():
        hint.adapter.weight.copy_(torch.eye(3))
        hint.adapter.bias.zero_()
    student, teacher = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 0.0, 3.0]])
    assert hint(student, teacher).item() == pytest.approx(4.0 / 3)
    assert hint(teacher, teacher).item() == 0.0
    cosine = FitNetHint(3, 3, kind="cosine")
    cosine.load_state_dict(hint.state_dict())
    assert cosine(student, 2.0 * student).item() == pytest.approx(0.0, abs=1e-6)


def test_fitnet_hint_mse_is_the_element_mean_and_a_learned_adapter_absorbs_a_rotation():
    # notebook 06 writes the hint as ‖A s + b − t‖² / (B · D_t) and lets exercise 2 rotate the teacher's axes
    generator = torch.Generator().manual_seed(0)
    hint = FitNetHint(3, 5).double()
    with torch.no_grad():  # a fixed adapter, drawn from the test's own generator
        hint.adapter.weight.copy_(torch.randn(5, 3, generator=generator, dtype=torch.float64))
        hint.adapter.bias.copy_(torch.randn(5, generator=generator, dtype=torch.float64))
    student = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    teacher = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    weight, bias = hint.adapter.weight.detach(), hint.adapter.bias.detach()  # (5, 3), (5,)
    by_hand = (student @ weight.T + bias - teacher).pow(2).sum() / (4 * 5)
    torch.testing.assert_close(hint(student, teacher).detach(), by_hand)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=generator, dtype=torch.float64))  # orthogonal
    assert abs(hint(student, teacher @ Q).item() - by_hand.item()) > 1e-3  # a fixed adapter sees the rotation
    rotated = FitNetHint(3, 5).double()
    with torch.no_grad():
        rotated.adapter.weight.copy_(Q.T @ weight)
        rotated.adapter.bias.copy_(bias @ Q)
    torch.testing.assert_close(rotated(student, teacher @ Q).detach(), by_hand)  # a learned one can undo it


def test_contrastive_hint_identity_heads_by_hand():
    hint = ContrastiveHint(2, 2, proj_dim=2, temperature=0.5)
    with torch.no_grad():
        for head in [hint.student_head, hint.teacher_head]:
            head.weight.copy_(torch.eye(2))
            head.bias.zero_()
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # unit: e1, e2, (e1 + e2)/√2
    teacher = torch.tensor([[4.0, 0.0], [0.0, 1.0], [0.0, 5.0]])  # unit: e1, e2, e2
    # cosines / 0.5: row 0 (2, 0, 0), row 1 (0, 2, 2), row 2 all √2; positive on the diagonal
    e2 = math.exp(-2.0)
    expected = (math.log(1 + 2 * e2) + math.log(2 + e2) + math.log(3.0)) / 3
    assert hint(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_hint_learns_a_linear_relation_but_not_random_pairs():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(8, 8, generator=generator)  # invertible (almost surely): teacher = student @ mixing
    final = {}
    for paired in [True, False]:
        torch.manual_seed(0)
        hint = ContrastiveHint(8, 8, proj_dim=16)
        optimiser = torch.optim.Adam(hint.parameters(), lr=1e-2)
        for _ in range(30):  # a fresh batch every step: random pairs cannot be memorised
            student = torch.randn(32, 8, generator=generator)
            teacher = student @ mixing if paired else torch.randn(32, 8, generator=generator)
            loss = hint(student, teacher)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        student = torch.randn(32, 8, generator=generator)
        teacher = student @ mixing if paired else torch.randn(32, 8, generator=generator)
        final[paired] = hint(student, teacher).item()
    assert final[True] < 0.5 * math.log(32) < final[False]


def test_fitnet_hint_feature_maps_are_a_1x1_conv_after_pooling():
    generator = torch.Generator().manual_seed(0)
    hint = FitNetHint(4, 6)
    student = torch.randn(2, 4, 8, 8, generator=generator)  # (B, C_s, H, W)
    teacher = torch.randn(2, 6, 4, 4, generator=generator)  # (B, C_t, H/2, W/2)
    pooled = F.avg_pool2d(student, 2)  # 8x8 -> 4x4
    adapted = F.conv2d(pooled, hint.adapter.weight[:, :, None, None], hint.adapter.bias)
    torch.testing.assert_close(hint(student, teacher), F.mse_loss(adapted, teacher))
    loss = hint(student, teacher)
    loss.backward()
    assert hint.adapter.weight.grad is not None


# ----------------------------------------------------------------------------------------------------
# Bad input: errors that name the problem and the fix


@pytest.mark.parametrize("T", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(T):
    student, teacher = random_logits()
    for fn in [soft_distillation_loss, soft_cross_entropy, dist_loss]:
        with pytest.raises(ValueError, match="temperature T must be finite and > 0"):
            fn(student, teacher, T=T)
    with pytest.raises(ValueError, match="temperature T must be finite and > 0"):
        softmax_t(student, T)


@pytest.mark.parametrize("T", [True, "4", torch.tensor(4.0)])
def test_temperature_of_the_wrong_type(T):
    with pytest.raises(TypeError, match="temperature T must be a real number"):
        soft_distillation_loss(*random_logits(), T=T)


@pytest.mark.parametrize("alpha", [-0.1, 1.1, float("nan")])
def test_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\] for form='convex'.*form='additive'"):
        distillation_objective(torch.tensor(1.0), torch.tensor(1.0), alpha=alpha)


def test_additive_alpha_and_form_checks():
    one = torch.tensor(1.0)
    with pytest.raises(ValueError, match="alpha must be finite and >= 0 for form='additive'"):
        distillation_objective(one, one, alpha=-1.0, form="additive")
    with pytest.raises(ValueError, match="form must be 'convex' or 'additive'"):
        distillation_objective(one, one, alpha=0.5, form="sum")
    with pytest.raises(TypeError, match="alpha must be a real number"):
        distillation_objective(one, one, alpha=True)


LOGIT_LOSSES = [soft_distillation_loss, soft_cross_entropy, hard_distillation_loss, logit_matching_loss, dist_loss]


@pytest.mark.parametrize("loss_fn", LOGIT_LOSSES)
def test_different_class_counts(loss_fn):
    with pytest.raises(ValueError, match=r"different class counts \(10 vs 12\).*12 outputs"):
        loss_fn(torch.randn(4, 10), torch.randn(4, 12))


@pytest.mark.parametrize("loss_fn", LOGIT_LOSSES)
def test_different_batch_sizes(loss_fn):
    with pytest.raises(ValueError, match="different batch sizes.*same batch"):
        loss_fn(torch.randn(4, 10), torch.randn(5, 10))


@pytest.mark.parametrize("shape", [(10,), (2, 3, 10)])
@pytest.mark.parametrize("loss_fn", LOGIT_LOSSES)
def test_logits_not_2d(loss_fn, shape):
    with pytest.raises(ValueError, match=r"must be 2-D \(batch, classes\).*unsqueeze\(0\)"):
        loss_fn(torch.randn(*shape), torch.randn(*shape))


def test_integer_logits_are_not_coerced():
    with pytest.raises(TypeError, match=r"floating-point.*\.float\(\)"):
        soft_distillation_loss(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3))


def test_feature_loss_input_checks():
    with pytest.raises(ValueError, match="at least 3"):
        rkd_angle_loss(torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="at least 2"):
        rkd_distance_loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="different batch sizes"):
        pkt_loss(torch.randn(4, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"must be 2-D \(batch, dim\).*flatten"):
        rkd_distance_loss(torch.randn(4, 2, 3), torch.randn(4, 6))
    with pytest.raises(ValueError, match="at least 2"):
        dist_loss(torch.randn(1, 4), torch.randn(1, 4))


def test_fitnet_hint_input_checks():
    hint = FitNetHint(8, 16)
    with pytest.raises(ValueError, match=r"student_feat has 7 features.*FitNetHint\(student_dim, teacher_dim\)"):
        hint(torch.randn(2, 7), torch.randn(2, 16))
    with pytest.raises(ValueError, match="teacher_feat has 15 features"):
        hint(torch.randn(2, 8), torch.randn(2, 15))
    with pytest.raises(ValueError, match=r"both be \(B, D\) or both be \(B, C, H, W\)"):
        hint(torch.randn(2, 8, 3, 3), torch.randn(2, 16))
    with pytest.raises(ValueError, match="kind must be 'mse' or 'cosine'"):
        FitNetHint(8, 16, kind="l1")


def test_contrastive_hint_input_checks():
    hint = ContrastiveHint(8, 16)
    with pytest.raises(ValueError, match=r"student_feat has 7 features.*ContrastiveHint\(student_dim, teacher_dim"):
        hint(torch.randn(4, 7), torch.randn(4, 16))
    with pytest.raises(ValueError, match="teacher_feat has 15 features"):
        hint(torch.randn(4, 8), torch.randn(4, 15))
    with pytest.raises(ValueError, match="at least 2"):
        hint(torch.randn(1, 8), torch.randn(1, 16))
    with pytest.raises(ValueError, match="different batch sizes"):
        hint(torch.randn(4, 8), torch.randn(5, 16))
    with pytest.raises(ValueError, match=r"must be 2-D \(batch, dim\)"):
        hint(torch.randn(4, 8, 1), torch.randn(4, 16))
    for temperature in [0.0, -0.1, float("nan"), True]:
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            ContrastiveHint(8, 16, temperature=temperature)


def test_public_validators():
    assert check_temperature(4) == 4.0 and isinstance(check_temperature(4), float)
    assert check_alpha(np.float32(0.25)) == 0.25 and check_alpha(1) == 1.0
    assert check_alpha(3.0, form="additive") == 3.0
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\] for form='convex'"):
        check_alpha(3.0)
    with pytest.raises(ValueError, match="alpha must be finite and >= 0 for form='additive'"):
        check_alpha(float("inf"), form="additive")
    with pytest.raises(ValueError, match="form must be 'convex' or 'additive', got 'sum'"):
        check_alpha(0.5, form="sum")
    with pytest.raises(TypeError, match="alpha must be a real number"):
        check_alpha(torch.tensor(0.5))
    with pytest.raises(ValueError, match="temperature T must be finite and > 0"):
        check_temperature(0)


def test_public_api_is_complete():
    for name in losses.__all__:
        obj = getattr(losses, name)
        assert obj.__doc__ and "notebook 0" in obj.__doc__, name


# ----------------------------------------------------------------------------------------------------
# Adaptive distillation: confidence-weighted T²·KL (notebook 06)


def test_adaptive_equals_soft_when_the_teacher_is_equally_confident_on_every_row():
    student, teacher = random_logits(batch=5, classes=5)
    teacher = torch.stack([teacher[0].roll(i) for i in range(5)])  # permuted rows: same max probability
    for T in [1.0, 4.0]:
        torch.testing.assert_close(losses.confidence_weighted_distillation_loss(student, teacher, T),
                                   soft_distillation_loss(student, teacher, T))


def test_adaptive_weights_are_the_teachers_confidence_over_its_batch_mean():
    student, teacher = random_logits(batch=6, classes=5)
    T = 2.0
    per_row = torch.stack([soft_distillation_loss(student[i:i + 1], teacher[i:i + 1], T) for i in range(6)])
    confidence = torch.softmax(teacher, dim=1).max(dim=1).values
    expected = (confidence / confidence.mean() * per_row).mean()
    torch.testing.assert_close(losses.confidence_weighted_distillation_loss(student, teacher, T), expected)


def test_adaptive_a_confident_row_weighs_more():
    teacher = torch.tensor([[6.0, 0.0, 0.0], [0.3, 0.0, 0.0]])  # row 0 confident, row 1 unsure
    wrong = torch.tensor([[0.0, 3.0, 0.0]])
    err_on_confident = torch.cat([wrong, teacher[1:]])  # the student errs only where the teacher is sure
    err_on_unsure = torch.cat([teacher[:1], wrong])
    adaptive, soft = losses.confidence_weighted_distillation_loss, soft_distillation_loss
    assert adaptive(err_on_confident, teacher, 4.0) > 1.2 * soft(err_on_confident, teacher, 4.0)
    assert adaptive(err_on_unsure, teacher, 4.0) < 0.8 * soft(err_on_unsure, teacher, 4.0)
    student = err_on_confident.clone().requires_grad_()
    (grad,) = torch.autograd.grad(adaptive(student, teacher, 4.0), student)
    (grad_soft,) = torch.autograd.grad(soft(student, teacher, 4.0), student)
    assert grad[0].norm() > 1.2 * grad_soft[0].norm()  # the confident row's gradient is scaled up


def test_adaptive_reuses_the_input_checks_and_is_registered():
    from mmkd_utils.config import get_config
    from mmkd_utils.objective import DISTILLATION_LOSSES, Objective
    from mmkd_utils.recipes import METHODS
    adaptive = losses.confidence_weighted_distillation_loss
    with pytest.raises(ValueError, match="temperature T must be finite and > 0"):
        adaptive(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="different class counts"):
        adaptive(torch.zeros(2, 3), torch.zeros(2, 4), 4.0)
    with pytest.raises(TypeError, match="floating-point"):
        adaptive(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), 4.0)
    assert DISTILLATION_LOSSES["adaptive"] is adaptive
    objective = METHODS["adaptive"](get_config("tiny"), 8, 8)
    assert isinstance(objective, Objective) and objective.kind == "adaptive"
    student, teacher = random_logits(batch=4, classes=3)
    terms = objective.terms(student.float(), {"label": torch.tensor([0, 1, 2, 0]), "teacher_logits": teacher.float()})
    torch.testing.assert_close(terms["distill"], adaptive(student.float(), teacher.float(), objective.T))
