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

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.store import Split
from ..errors import QDMError
from ..inference import softmax_for_pixels
from ..options import option
from . import checkpoint as ckpt
from .distributed import DistContext, all_reduce_array

TEACHER_PROBS = "teacher_probs.npy"
MAX_TABLE_BYTES = 4 << 30  # float16 (drawings x classes); beyond this the table no longer belongs in RAM


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


def teacher_probs(cfg: DistillConfig, split: Split, classes: list[str], batch_size: int = 1024, *,
                  bf16: bool = False, progress: bool = True, stop: threading.Event | None = None,
                  rank: int = 0, world_size: int = 1) -> np.ndarray:
    """(len(split), classes) float32: the teachers' mean tempered softmax for every drawing of ``split``.

    With ``world_size`` > 1 only every ``world_size``-th batch from ``rank`` is filled and the other rows stay
    zero, so the ranks' tables sum to the whole one (each batch is the same as in one process, so the sum is
    bit-exact). With ``bf16`` the teachers run under bfloat16 autocast: about 3x faster on a CPU with bf16
    support, and the soft targets are stored in float16 anyway.
    """
    # modelref builds on train.config, which imports this module: a top-level import would be circular
    from ..modelref import load_model

    table_bytes = len(split) * len(classes) * 2
    if table_bytes > MAX_TABLE_BYTES:
        raise QDMError(f"teachers: a soft-target table of {len(split):,} drawings x {len(classes)} classes "
                       f"({table_bytes / 2**30:.1f} GiB) is too big; use max_per_class")
    total = np.zeros((len(split), len(classes)), dtype=np.float32)
    for number, ref in enumerate(cfg.teachers, 1):
        teacher = load_model(ref)
        teacher.model.to(memory_format=torch.channels_last)
        if teacher.labels != classes:
            raise QDMError(f"{teacher.source / ckpt.LABELS}: the teacher's {len(teacher.labels)} classes differ "
                           f"from the data's {len(classes)} classes")
        starts = range(rank * batch_size, len(split), world_size * batch_size)
        for start in tqdm(starts, desc=f"teacher {number}/{len(cfg.teachers)}", unit="batch",
                          disable=not progress, dynamic_ncols=True):
            if stop is not None and stop.is_set():
                raise QDMError("interrupted while the teachers labelled the training drawings; nothing was written")
            end = min(start + batch_size, len(split))
            total[start:end] += softmax_for_pixels(teacher.model, split.gather(np.arange(start, end))[0],
                                                   batch_size, temperature=cfg.temperature,
                                                   mirror_average=cfg.hflip, bf16=bf16)
    return total / len(cfg.teachers)


def soft_targets(cfg: DistillConfig, split: Split, classes: list[str], run_dir: Path, ctx: DistContext, *,
                 resume: bool, batch_size: int, bf16: bool, progress: bool, stop: threading.Event) -> np.ndarray:
    """The run's float16 soft-target table: read from the run folder on resume, else computed from the teachers
    (under DDP each rank labels its share of the batches, and an all-reduce gives every rank the whole table)."""
    if not resume:
        shard = teacher_probs(cfg, split, classes, batch_size, bf16=bf16, progress=progress, stop=stop,
                              rank=ctx.rank, world_size=ctx.world_size)
        return all_reduce_array(ctx, shard).astype(np.float16)
    path = run_dir / TEACHER_PROBS
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise QDMError(f"{path}: missing or unreadable soft targets of this distilled run ({exc})") from exc
    if table.shape != (len(split), len(classes)):
        raise QDMError(f"{path}: expected soft targets of shape {(len(split), len(classes))}, got {table.shape}")
    return table
