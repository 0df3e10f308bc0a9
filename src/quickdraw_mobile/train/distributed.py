"""torchrun support: the same ``qdm train`` runs single-process or under DistributedDataParallel."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup() -> DistContext:
    """Join the process group when launched by torchrun. The loop trains on the CPU, so the backend is gloo
    (nccl only reduces CUDA tensors: choosing it because a GPU is present would fail on the first all-reduce)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_reduce_array(ctx: DistContext, array: np.ndarray) -> np.ndarray:
    """The element-wise sum of every rank's ``array`` (same shape and dtype on all ranks)."""
    if not ctx.enabled:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.numpy()


def broadcast_flag(ctx: DistContext, flag: bool) -> bool:
    """Rank 0's decision, on every rank (e.g. early stopping)."""
    if not ctx.enabled:
        return flag
    tensor = torch.tensor([int(flag)])
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
