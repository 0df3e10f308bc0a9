"""Knowledge distillation: learn trained teachers' soft answers as well as the labels.

The teachers' answers are computed once, before the first step: every training drawing's averaged softmax over
the teachers (at temperature T, optionally over the drawing and its mirror), on the un-augmented bitmap. A step
then costs what it costs without teachers, and the run folder keeps the table (``teacher_probs.npy``), so a
resumed run does not need the teachers again. The student sees the augmented drawing with the un-augmented
drawing's soft target: the light affine warps and mirroring keep the class, so the target still fits.

Loss: ``(1 - w) * CE(labels) + w * T^2 * CE(teacher probs, softmax(student logits / T))``; the T^2 keeps the soft
term's gradients on the hard term's scale (Hinton et al., 2015). Under mixup both terms mix the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import QDMError
from ..options import option

TEACHER_PROBS = "teacher_probs.npy"  # the run's soft-target table (see train.teachers)


@dataclass(frozen=True)
class DistillConfig:
    teachers: tuple[str, ...] = option((), "distill from this trained run folder (or 'default'); repeat to average "
                                       "several", flag="teacher", append=True)
    weight: float = option(0.5, "distillation: share of the loss on the teachers' soft targets",
                           flat="distill_weight")
    temperature: float = option(1.0, "distillation: softmax temperature of teachers and student",
                                flat="distill_temperature")
    hflip: bool = option(False, "distillation: average each teacher over the drawing and its mirror",
                         flat="teacher_hflip")

    def __post_init__(self) -> None:
        if not isinstance(self.teachers, tuple) or not all(isinstance(t, str) for t in self.teachers):
            raise QDMError("teachers: expected a list of run folders (or 'default')")
        if not 0.0 <= self.weight <= 1.0:
            raise QDMError(f"distill_weight: expected a share in [0, 1], got {self.weight}")
        if not self.temperature > 0:
            raise QDMError(f"distill_temperature: expected a positive value, got {self.temperature}")

    @property
    def enabled(self) -> bool:
        return bool(self.teachers) and self.weight > 0


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of T^2 * CE(soft, softmax(logits / T)); KL(soft || student) plus soft's own entropy."""
    log_probs = F.log_softmax(logits / temperature, dim=1)
    return -(soft * log_probs).sum(1).mean() * temperature**2
