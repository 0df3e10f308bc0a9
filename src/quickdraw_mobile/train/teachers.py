"""The teachers' soft targets for a distilled run (see ``train.distill``): trained models labelling the
training drawings once, before the first step, into a table the run folder keeps (``teacher_probs.npy``).

Apart from ``train.distill`` because it loads models through ``modelref``, which builds on ``train.config``:
the config (which imports ``train.distill``) stays below ``modelref``, these loaders above it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.store import Split
from ..errors import QDMError
from ..inference import softmax_for_pixels
from ..modelref import load_model
from .distill import TEACHER_PROBS, DistillConfig
from .distributed import DistContext, all_reduce_array

MAX_TABLE_BYTES = 4 << 30  # float16 (drawings x classes); beyond this the table no longer belongs in RAM


def teacher_probs(cfg: DistillConfig, split: Split, classes: list[str], batch_size: int = 1024, *,
                  bf16: bool = False, progress: bool = True, stop: threading.Event | None = None,
                  rank: int = 0, world_size: int = 1, device: torch.device | None = None) -> np.ndarray:
    """(len(split), classes) float32: the teachers' mean tempered softmax for every drawing of ``split``.

    With ``world_size`` > 1 only every ``world_size``-th batch from ``rank`` is filled and the other rows stay
    zero, so the ranks' tables sum to the whole one (each batch is the same as in one process, so the sum is
    bit-exact). With ``bf16`` the teachers run under bfloat16 autocast: about 3x faster on a CPU with bf16
    support, and the soft targets are stored in float16 anyway. The teachers run on ``device`` (default: the
    CPU), the table stays on the host.
    """
    table_bytes = len(split) * len(classes) * 2
    if table_bytes > MAX_TABLE_BYTES:
        raise QDMError(f"teachers: a soft-target table of {len(split):,} drawings x {len(classes)} classes "
                       f"({table_bytes / 2**30:.1f} GiB) is too big; use max_per_class")
    total = np.zeros((len(split), len(classes)), dtype=np.float32)
    for number, ref in enumerate(cfg.teachers, 1):
        teacher = load_model(ref)
        teacher.model.to(device or torch.device("cpu"), memory_format=torch.channels_last)
        if teacher.labels != classes:
            raise QDMError(f"{teacher.run.labels_path}: the teacher's {len(teacher.labels)} classes differ "
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
                              rank=ctx.rank, world_size=ctx.world_size, device=ctx.device)
        return all_reduce_array(ctx, shard).astype(np.float16)
    path = run_dir / TEACHER_PROBS
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise QDMError(f"{path}: missing or unreadable soft targets of this distilled run ({exc})") from exc
    if table.shape != (len(split), len(classes)):
        raise QDMError(f"{path}: expected soft targets of shape {(len(split), len(classes))}, got {table.shape}")
    return table
