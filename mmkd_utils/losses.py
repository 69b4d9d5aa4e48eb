"""Distillation losses: logit losses (notebook 02) and feature / relational losses (notebook 06).

Conventions, the same in every function:

* ``student_logits`` and ``teacher_logits`` are ``(batch, classes)`` floating-point tensors of the same
  shape; ``student_feat`` and ``teacher_feat`` are ``(batch, dim)`` (their dims may differ where the
  loss compares relations between examples rather than the features themselves).
* ``p`` is the teacher's distribution and ``q`` the student's, both at temperature ``T``
  (Hinton et al. 2015 use the same letters).
* Nothing is detached here: compute the teacher's outputs under ``torch.no_grad()`` (or call
  ``.detach()``) so that no gradient reaches the teacher.
* Bad input raises an error that names the problem and the fix; nothing is silently coerced.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "softmax_t", "soft_distillation_loss", "soft_cross_entropy", "hard_distillation_loss",
    "logit_matching_loss", "confidence_weighted_distillation_loss", "distillation_objective", "FitNetHint",
    "rkd_distance_loss", "rkd_angle_loss", "pkt_loss", "dist_loss", "ContrastiveHint", "check_temperature",
    "check_alpha",
]


# ----------------------------------------------------------------------------------------------------
# Input checks


def check_temperature(T: float) -> float:
    """The package's one check of a temperature ``T`` (notebook 02): real, finite, > 0; returns a float."""
    if isinstance(T, bool) or not isinstance(T, Real):
        raise TypeError(f"temperature T must be a real number such as 4.0, got {type(T).__name__} {T!r}; "
                        "for a tensor, pass T.item().")
    if not math.isfinite(T) or T <= 0:
        raise ValueError(f"temperature T must be finite and > 0, got {T!r}; typical values are 1 to 10 "
                         "(T=1 is the ordinary softmax, larger T gives softer targets).")
    return float(T)


def check_alpha(alpha: float, form: str = "convex") -> float:
    """The package's one check of the weight ``α`` of ``distillation_objective`` (notebook 02): real, in
    ``[0, 1]`` for ``form="convex"``, finite and ``≥ 0`` (may exceed 1) for ``"additive"``; returns a float."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise TypeError(f"alpha must be a real number such as 0.5, got {type(alpha).__name__} {alpha!r}.")
    if form not in ("convex", "additive"):
        raise ValueError(f"form must be 'convex' or 'additive', got {form!r}.")
    if form == "convex" and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] for form='convex', got {alpha!r}; alpha is the weight of the "
                         "distillation term (0: labels only, 1: teacher only). For a weight above 1 use "
                         "form='additive'.")
    if form == "additive" and not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0 for form='additive', got {alpha!r}.")
    return float(alpha)


def _check_tensor(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; wrap it with torch.as_tensor(...).")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; call .float() on it first.")


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    for name, x in [("student_logits", student_logits), ("teacher_logits", teacher_logits)]:
        _check_tensor(x, name)
        if x.dim() != 2:
            raise ValueError(f"{name} must be 2-D (batch, classes), got shape {tuple(x.shape)}; for one example "
                             "add a batch dimension with .unsqueeze(0), for (batch, length, classes) reshape "
                             "to (batch * length, classes).")
    s, t = tuple(student_logits.shape), tuple(teacher_logits.shape)
    if s[1] != t[1]:
        raise ValueError(f"student_logits {s} and teacher_logits {t} have different class counts "
                         f"({s[1]} vs {t[1]}); give the student's classifier head {t[1]} outputs, in the "
                         "teacher's class order.")
    if s[0] != t[0]:
        raise ValueError(f"student_logits {s} and teacher_logits {t} have different batch sizes "
                         f"({s[0]} vs {t[0]}); run the teacher and the student on the same batch.")


def _check_features(student_feat: Tensor, teacher_feat: Tensor, min_batch: int = 1) -> None:
    for name, x in [("student_feat", student_feat), ("teacher_feat", teacher_feat)]:
        _check_tensor(x, name)
        if x.dim() != 2:
            raise ValueError(f"{name} must be 2-D (batch, dim), got shape {tuple(x.shape)}; flatten feature "
                             "maps first, e.g. x.flatten(1) or x.mean(dim=(2, 3)).")
    if student_feat.shape[0] != teacher_feat.shape[0]:
        raise ValueError(f"student_feat {tuple(student_feat.shape)} and teacher_feat {tuple(teacher_feat.shape)} "
                         "have different batch sizes; run the teacher and the student on the same batch.")
    if student_feat.shape[0] < min_batch:
        raise ValueError(f"this loss compares examples with each other and needs a batch of at least {min_batch}, "
                         f"got {student_feat.shape[0]}; use a larger batch (drop_last=True avoids a tiny last batch).")


def _check_widths(owner: str, student_feat: Tensor, teacher_feat: Tensor, dims: tuple[int, int]) -> None:
    for name, x, want in zip(("student_feat", "teacher_feat"), (student_feat, teacher_feat), dims):
        if x.shape[1] != want:
            raise ValueError(f"{name} has {x.shape[1]} features/channels (dim 1) but this {owner} was built for "
                             f"{want}; build it as {owner}(student_dim, teacher_dim) with the right sizes.")


# ----------------------------------------------------------------------------------------------------
# Logit losses (notebook 02)


def softmax_t(logits: Tensor, T: float) -> Tensor:
    """Softmax at temperature ``T`` over the last dimension: ``softmax(logits / T)``.

    Introduced in notebook 02 (the losses of knowledge distillation). ``T > 1`` softens the distribution,
    ``T = 1`` is the ordinary softmax. Any shape ``(..., classes)``.
    """
    T = check_temperature(T)
    _check_tensor(logits, "logits")
    return torch.softmax(logits / T, dim=-1)


def soft_distillation_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0) -> Tensor:
    """The soft-target loss as code writes it, ``T² · KL(p ‖ q)``, summed over classes, batch mean.

    Hinton et al. (2015) used the cross-entropy to the soft targets and scaled its gradients by ``T²``; the
    ``T²·KL`` form differs from that by the constant ``T²·H(p)`` and has the same gradient.

    Introduced in notebook 02. ``p = softmax(teacher_logits / T)``, ``q = softmax(student_logits / T)``.
    Both sides go through ``log_softmax`` (numerically stable), the teacher is the *target* of ``kl_div``,
    and ``reduction="batchmean"`` sums over classes before averaging over the batch.

    Identity: ``KL(p ‖ q) = H(p, q) − H(p)``, so this is ``T² · (soft_cross_entropy(s, t, T) − entropy(p))``.
    Per example ``∂KL(p ‖ q)/∂z = (q − p) / T``, so this loss's gradient w.r.t. ``student_logits`` is
    ``T · (q − p) / batch``, while ``soft_cross_entropy`` (no ``T²``; it differs from the KL by ``H(p)``,
    constant in the student) has ``(q − p) / (T · batch)``. The ``T²`` keeps the gradient's size
    comparable across ``T``, not independent of it.
    Unlike the cross-entropy, this loss is 0 exactly when the student matches the teacher. It is
    invariant to adding a constant to a row of either logits.
    """
    T = check_temperature(T)
    _check_logits(student_logits, teacher_logits)
    log_q = F.log_softmax(student_logits / T, dim=-1)
    log_p = F.log_softmax(teacher_logits / T, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * T * T


def confidence_weighted_distillation_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0) -> Tensor:
    """Adaptive distillation (notebook 06): per-example ``T² · KL(p ‖ q)`` weighted by the teacher's confidence,
    its max softmax probability at ``T = 1``. The weights are divided by their batch mean (mean 1), so the loss
    keeps the scale of ``soft_distillation_loss`` and equals it when every row is equally confident; rows the
    teacher is unsure of teach less. The weights depend on the teacher only."""
    T = check_temperature(T)
    _check_logits(student_logits, teacher_logits)
    log_q, log_p = F.log_softmax(student_logits / T, dim=-1), F.log_softmax(teacher_logits / T, dim=-1)
    per_example = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(dim=-1) * T * T  # (B,)
    confidence = torch.softmax(teacher_logits, dim=-1).amax(dim=-1)  # (B,), in [1/classes, 1]
    return (confidence / confidence.mean() * per_example).mean()


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    """Cross-entropy to the teacher's soft targets, ``H(p, q) = −Σ_c p_c log q_c``, averaged over the batch.

    Introduced in notebook 02. ``p`` (teacher) and ``q`` (student) at temperature ``T``. No ``T²`` factor:
    this is the plain cross-entropy with probability targets (``F.cross_entropy`` with soft labels gives
    the same number), so ``T = 1`` with one-hot teachers is ordinary cross-entropy. For a distillation
    term, use ``soft_distillation_loss`` (which has the ``T²``) or multiply by ``T²`` yourself.
    Argument order matters: the teacher's ``p`` weights the student's ``log q``. The reverse,
    ``H(q, p) = KL(q ‖ p) + H(q)``, also rewards a low-entropy student: its infimum is approached by a
    one-hot student on the teacher's top class and never reached (notebook 02 shows it).
    """
    T = check_temperature(T)
    _check_logits(student_logits, teacher_logits)
    p = torch.softmax(teacher_logits / T, dim=-1)
    log_q = F.log_softmax(student_logits / T, dim=-1)
    return -(p * log_q).sum(dim=-1).mean()


def hard_distillation_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Cross-entropy of the student to the teacher's top-1 class (argmax pseudo-labels), batch mean.

    Introduced in notebook 02. Keeps only which class the teacher prefers, none of its "dark knowledge"
    about the other classes; no gradient flows to the teacher through ``argmax``.
    """
    _check_logits(student_logits, teacher_logits)
    return F.cross_entropy(student_logits, teacher_logits.argmax(dim=-1))


def logit_matching_loss(student_logits: Tensor, teacher_logits: Tensor, center: bool = True) -> Tensor:
    """``½ ‖z − v‖²`` between student logits ``z`` and teacher logits ``v``: sum over classes, batch mean.

    Introduced in notebook 02; it is the source article's "hard distillation" ``½‖S(x) − T(x)‖²``
    (Ba & Caruana 2014's logit regression). With ``center=True`` each row's mean logit is subtracted
    first (Hinton et al.'s zero-mean assumption), which is what makes
    ``soft_distillation_loss → logit_matching_loss / classes`` as ``T → ∞``. With ``center=False`` the raw
    logits are compared (Ba & Caruana's loss); both have the same minimiser, ``z = v``.
    """
    _check_logits(student_logits, teacher_logits)
    if center:
        student_logits = student_logits - student_logits.mean(dim=-1, keepdim=True)
        teacher_logits = teacher_logits - teacher_logits.mean(dim=-1, keepdim=True)
    return 0.5 * (student_logits - teacher_logits).pow(2).sum(dim=-1).mean()


def distillation_objective(task_loss: Tensor, distill_loss: Tensor, alpha: float, form: str = "convex") -> Tensor:
    """Combine the task loss (e.g. cross-entropy to the labels) with a distillation loss.

    Introduced in notebook 02.

    * ``form="convex"``: ``(1 − α)·L_task + α·L_dis`` with ``α ∈ [0, 1]``, a weighted average as in Hinton
      et al. 2015: ``α = 0`` is plain training, ``α = 1`` pure distillation. ``α`` weights the distillation
      term, like the PyTorch KD tutorial's ``soft_target_loss_weight`` (its ``ce_loss_weight`` is ``1 − α``;
      0.25 / 0.75 there). The Keras example weights ``α·student_loss + (1 − α)·distillation_loss``: its
      ``α`` (0.1 there) is this ``1 − α``.
    * ``form="additive"``: ``L_task + α·L_dis``, the source article's ``L = L_adv + α·L_dis``; the task
      term keeps weight 1. Here ``α`` must be finite and ``≥ 0`` but may exceed 1.
    """
    alpha = check_alpha(alpha, form)
    if form == "convex":
        return (1.0 - alpha) * task_loss + alpha * distill_loss
    return task_loss + alpha * distill_loss


# ----------------------------------------------------------------------------------------------------
# Feature and relational losses (notebook 06)


class FitNetHint(nn.Module):
    """FitNets hint loss (Romero et al. 2015): a learned linear adapter maps student features to the
    teacher's width, then MSE (``kind="mse"``: ``‖A s + b − t‖²`` averaged over every element, i.e. divided by
    batch × teacher width) or cosine distance (``kind="cosine"``) to the teacher.

    The paper regresses a *middle* layer of the student onto a middle layer of the teacher and trains in two
    stages (hint first, then the whole student with distillation); used on penultimate features and trained
    jointly with the label loss, as the course does, it is a variant of FitNets.

    Introduced in notebook 06 (feature distillation). Accepts ``(B, D)`` vectors or ``(B, C, H, W)``
    feature maps; for maps the adapter is a 1×1 convolution (the same weights applied at every position)
    and the student map is average-pooled to the teacher's spatial size first. Train the adapter's
    parameters together with the student's (pass ``hint.parameters()`` to the optimiser).
    """

    def __init__(self, student_dim: int, teacher_dim: int, kind: str = "mse") -> None:
        super().__init__()
        if kind not in ("mse", "cosine"):
            raise ValueError(f"kind must be 'mse' or 'cosine', got {kind!r}.")
        self.kind = kind
        self.adapter = nn.Linear(student_dim, teacher_dim)

    def _adapt(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        if student_feat.dim() == 2:  # (B, D_s) -> (B, D_t)
            return self.adapter(student_feat)
        student_feat = F.adaptive_avg_pool2d(student_feat, teacher_feat.shape[-2:])  # (B, C_s, H_t, W_t)
        return self.adapter(student_feat.movedim(1, -1)).movedim(-1, 1)  # 1x1 conv: (B, C_t, H_t, W_t)

    def _check(self, student_feat: Tensor, teacher_feat: Tensor) -> None:
        _check_tensor(student_feat, "student_feat")
        _check_tensor(teacher_feat, "teacher_feat")
        if student_feat.dim() not in (2, 4) or student_feat.dim() != teacher_feat.dim():
            raise ValueError(f"student_feat {tuple(student_feat.shape)} and teacher_feat {tuple(teacher_feat.shape)} "
                             "must both be (B, D) or both be (B, C, H, W).")
        if student_feat.shape[0] != teacher_feat.shape[0]:
            raise ValueError("student_feat and teacher_feat have different batch sizes "
                             f"({student_feat.shape[0]} vs {teacher_feat.shape[0]}); use the same batch.")
        _check_widths("FitNetHint", student_feat, teacher_feat, (self.adapter.in_features, self.adapter.out_features))

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        self._check(student_feat, teacher_feat)
        adapted = self._adapt(student_feat, teacher_feat)
        if self.kind == "mse":
            return F.mse_loss(adapted, teacher_feat)  # mean over every element
        return (1.0 - F.cosine_similarity(adapted, teacher_feat, dim=1)).mean()  # over batch (and positions)


class ContrastiveHint(nn.Module):
    """Contrastive feature loss: CRD (Tian, Krishnan & Isola 2020) simplified to InfoNCE with in-batch negatives.

    Introduced in notebook 06 (feature distillation). Learned linear heads project ``(B, D)`` features to
    ``proj_dim`` and L2-normalise; student row ``i`` must pick teacher row ``i`` among the batch's teacher rows
    (the rest are negatives): cross-entropy of cosine / temperature, batch mean, ≈ ``ln B`` at chance. CRD uses
    an NCE loss over a memory bank, both ways. Batch ≥ 2; pass ``hint.parameters()`` to the optimiser.
    """

    def __init__(self, student_dim: int, teacher_dim: int, proj_dim: int = 64, temperature: float = 0.1) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, Real) or not 0 < temperature < math.inf:
            raise ValueError(f"temperature must be a finite number > 0 such as 0.1, got {temperature!r}.")
        self.temperature, self.dims = float(temperature), (student_dim, teacher_dim)
        self.student_head, self.teacher_head = nn.Linear(student_dim, proj_dim), nn.Linear(teacher_dim, proj_dim)

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        _check_features(student_feat, teacher_feat, min_batch=2)
        _check_widths("ContrastiveHint", student_feat, teacher_feat, self.dims)
        student = F.normalize(self.student_head(student_feat), dim=1)
        teacher = F.normalize(self.teacher_head(teacher_feat), dim=1)
        logits = student @ teacher.T / self.temperature  # (B, B): row i's positive is column i
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def _pairwise_distances(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances between rows, (B, D) -> (B, B); clamped so the gradient stays finite."""
    squared_norms = x.pow(2).sum(dim=1)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * x @ x.T
    return squared.clamp_min(eps).sqrt()


def rkd_distance_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """RKD distance loss (Park et al. 2019): match the pairwise distances within a batch, each set
    divided by its mean pairwise distance; Huber (smooth-L1, δ = 1) per pair, mean over distinct pairs.

    Introduced in notebook 06 (feature distillation). Feature dims may differ; the loss is invariant to
    scaling, rotating or translating either feature set. The authors' code averages over all ``B²``
    entries (the diagonal adds zeros), which is this times ``(B − 1)/B``. Needs a batch of at least 2.
    """
    _check_features(student_feat, teacher_feat, min_batch=2)
    off_diagonal = ~torch.eye(student_feat.shape[0], dtype=torch.bool, device=student_feat.device)
    student_dist = _pairwise_distances(student_feat)[off_diagonal]  # (B*(B-1),)
    teacher_dist = _pairwise_distances(teacher_feat)[off_diagonal]
    student_dist = student_dist / student_dist.mean()
    teacher_dist = teacher_dist / teacher_dist.mean()
    return F.smooth_l1_loss(student_dist, teacher_dist, beta=1.0)


def _angles(x: Tensor) -> Tensor:
    """cos of the angle at x_j between x_i and x_k, (B, D) -> (B_j, B_i, B_k)."""
    directions = F.normalize(x[None, :, :] - x[:, None, :], p=2, dim=2)  # [j, i] = unit(x_i - x_j)
    return directions @ directions.transpose(1, 2)


def rkd_angle_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """RKD angle loss (Park et al. 2019): match the cosines of the angles formed by every triplet of
    examples in a batch; Huber (smooth-L1, δ = 1), mean over triplets of three distinct examples.

    Introduced in notebook 06 (feature distillation). Feature dims may differ; invariant to scale,
    rotation and translation. The authors' code averages over all ``B³`` triplets, where the degenerate
    ones add zeros: that is this times ``(B − 1)(B − 2)/B²``. Needs a batch of at least 3; memory grows as
    ``B² · D + B³``.
    """
    _check_features(student_feat, teacher_feat, min_batch=3)
    B = student_feat.shape[0]
    eye = torch.eye(B, dtype=torch.bool, device=student_feat.device)
    distinct = ~(eye[:, :, None] | eye[:, None, :] | eye[None, :, :])  # (B, B, B): j != i, j != k, i != k
    return F.smooth_l1_loss(_angles(student_feat)[distinct], _angles(teacher_feat)[distinct], beta=1.0)


def _cosine_kernel_probabilities(x: Tensor, eps: float) -> Tensor:
    """Row-stochastic (B, B) matrix from cosine similarities mapped to [0, 1]."""
    x = F.normalize(x, dim=1, eps=eps)  # x / max(‖x‖, eps), not x / (‖x‖ + eps): exactly scale-invariant
    similarity = (x @ x.T + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


def pkt_loss(student_feat: Tensor, teacher_feat: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas 2018) with the cosine-similarity kernel.

    In notebook 06. Each example's similarities to the batch, mapped to ``[0, 1]`` and normalised, form a
    distribution; the loss is ``KL(teacher ‖ student)`` per example, summed over the batch and averaged over
    examples (the authors' code averages over all ``B²`` entries: this divided by ``B``); like their code, the
    sums include each example's similarity to itself (the paper's formula does not). Dims may differ."""
    _check_features(student_feat, teacher_feat, min_batch=2)
    q = _cosine_kernel_probabilities(student_feat, eps)
    p = _cosine_kernel_probabilities(teacher_feat, eps)
    return (p * torch.log((p + eps) / (q + eps))).sum(dim=1).mean()


def _pearson_distance(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """1 − Pearson correlation between matching rows of a and b, averaged over rows."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    correlation = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
    return (1.0 - correlation).mean()


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, beta: float = 1.0, gamma: float = 1.0,
              T: float = 1.0) -> Tensor:
    """DIST (Huang et al. 2022): match the teacher's predictions by correlation, not exact values.

    Introduced in notebook 06 (feature distillation, relational losses). With ``p``, ``q`` at temperature
    ``T``: ``T² · [β · (1 − ρ(q_b, p_b)) averaged over examples  +  γ · (1 − ρ(q_c, p_c)) averaged over
    classes]``, where ``ρ`` is the Pearson correlation (inter-class relation per example, intra-class
    relation per class across the batch). Needs a batch of at least 2. A row or column whose
    probabilities are all equal has no defined correlation and counts as distance 1.
    """
    T = check_temperature(T)
    _check_logits(student_logits, teacher_logits)
    if student_logits.shape[0] < 2:
        raise ValueError("dist_loss correlates each class across the batch and needs a batch of at least 2, "
                         f"got {student_logits.shape[0]}; use a larger batch (drop_last=True avoids a tiny last batch).")
    q = torch.softmax(student_logits / T, dim=1)
    p = torch.softmax(teacher_logits / T, dim=1)
    return T * T * (beta * _pearson_distance(q, p) + gamma * _pearson_distance(q.T, p.T))
