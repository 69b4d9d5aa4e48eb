"""What a training step minimises: labels, a teacher's outputs, and optionally a feature term.

Introduced in notebook 05 (soft and hard distillation). ``Objective`` is the glue between a batch and
the losses of notebook 02: it picks the distillation loss by name, and combines it with the label term
through ``losses.distillation_objective`` — the very function notebook 02 has learners write. T and α are
checked by ``losses.check_temperature`` and ``losses.check_alpha``, the package's one rule for each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from . import losses

# The distillation term of each objective kind, as (student_logits, teacher_logits, T) -> loss.
DISTILLATION_LOSSES: dict[str, Callable] = {
    "soft": losses.soft_distillation_loss,
    "hard": lambda s, t, T: losses.hard_distillation_loss(s, t),
    "logit": lambda s, t, T: losses.logit_matching_loss(s, t),
    "adaptive": losses.confidence_weighted_distillation_loss,
}
FeatureLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Objective:
    """The loss of one batch, from the student's logits and the batch's columns.

    - ``kind``: "ce" (labels only), "soft" (T²·KL at temperature T), "hard" (CE to the teacher's argmax),
      "logit" (½‖z_s − z_t‖², centred) or "adaptive" (T²·KL weighted by the teacher's confidence) — see
      ``DISTILLATION_LOSSES``.
    - The label and distillation terms are combined by ``losses.distillation_objective(label term,
      distillation term, alpha, form)``: ``form="convex"`` gives (1 − α)·CE + α·KD with α ∈ [0, 1];
      ``form="additive"`` gives CE + α·KD with any α ≥ 0 (the source article's form).
    - Rows whose label is -1 (unlabelled) contribute only the distillation term: the label term is
      scaled by the labelled share of the batch.
    - ``feature_weight`` > 0 adds β·``feature_loss(student features, batch["teacher_feat"])``. Any callable
      works: ``losses.FitNetHint`` or ``losses.ContrastiveHint`` (modules whose parameters ``fit`` trains
      with the student), or a plain function such as ``losses.rkd_distance_loss`` or ``losses.pkt_loss``.
    """

    kind: str = "ce"
    T: float = 4.0
    alpha: float = 0.5
    form: str = "convex"
    label_smoothing: float = 0.0
    feature_weight: float = 0.0
    feature_loss: FeatureLoss | None = None

    def __post_init__(self):
        if self.kind != "ce" and self.kind not in DISTILLATION_LOSSES:
            raise ValueError(f"Objective.kind must be 'ce' or one of {sorted(DISTILLATION_LOSSES)}, got {self.kind!r}")
        self.T = losses.check_temperature(self.T)
        self.alpha = losses.check_alpha(self.alpha, self.form)
        if self.feature_weight < 0:
            raise ValueError(f"feature_weight must be >= 0, got {self.feature_weight!r}")
        if self.feature_weight > 0 and self.feature_loss is None:
            raise ValueError("feature_weight > 0 needs feature_loss, e.g. losses.FitNetHint(student_dim, teacher_dim) "
                             "or losses.rkd_distance_loss")
        if self.feature_loss is not None and not callable(self.feature_loss):
            raise TypeError(f"feature_loss must be callable as feature_loss(student_feat, teacher_feat), "
                            f"got {type(self.feature_loss).__name__}")

    @property
    def uses_teacher(self) -> bool:
        """Whether the batch must carry the teacher's outputs (``teacher_logits`` / ``teacher_feat``)."""
        return self.kind != "ce" or self.feature_weight > 0

    def trainable_modules(self) -> list[torch.nn.Module]:
        """Modules of the objective trained with the student (a feature loss's adapter)."""
        return [self.feature_loss] if isinstance(self.feature_loss, torch.nn.Module) else []

    def terms(self, student_logits: torch.Tensor, batch: Mapping,
              feature_term: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The loss terms of one batch (``ce``, ``distill``, ``feature``) and their weighted ``total``.
        ``feature_term`` is ``feature_loss(student features, teacher features)``, computed by the caller."""
        labels = batch["label"]
        labelled = labels >= 0
        terms: dict[str, torch.Tensor] = {}
        if labelled.any():
            terms["ce"] = F.cross_entropy(student_logits[labelled].float(), labels[labelled],
                                          label_smoothing=self.label_smoothing)
        else:
            terms["ce"] = student_logits.new_zeros(())
        if not self.uses_teacher:
            if not labelled.any():
                raise ValueError("a batch has no labelled rows and the objective is labels only: "
                                 "use a distillation objective for unlabelled data, or drop those rows")
            terms["total"] = terms["ce"]
            return terms
        total = terms["ce"]
        if self.kind != "ce":
            if "teacher_logits" not in batch:
                raise KeyError("a distillation objective needs batch['teacher_logits']: cache the teacher's "
                               "logits as a data column (signals.cache_teacher_outputs) or pass teacher= to fit")
            terms["distill"] = DISTILLATION_LOSSES[self.kind](student_logits.float(), batch["teacher_logits"].float(), self.T)
            frac = labelled.float().mean()  # the label term covers only the labelled share of the batch
            total = losses.distillation_objective(frac * terms["ce"], terms["distill"], self.alpha, self.form)
        if self.feature_weight > 0:
            if feature_term is None:
                raise ValueError("feature distillation needs the feature term: compute feature_loss(student "
                                 "features, batch['teacher_feat']) and pass it as feature_term")
            terms["feature"] = feature_term
            total = total + self.feature_weight * terms["feature"]
        terms["total"] = total
        return terms
