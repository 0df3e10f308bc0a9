"""torchrun support: the same ``qdm train`` runs single-process or under DistributedDataParallel: over NCCL
with one process per GPU (``LOCAL_RANK`` picks it), over gloo on the CPU (``device.ddp_backend``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from ..device import ddp_backend


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives' tensors live

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device | None = None) -> DistContext:
    """Join the process group when launched by torchrun, with the backend of the device this process trains on
    (NCCL only reduces CUDA tensors, gloo CPU ones: the backend follows the device, not what the machine has)."""
    device = device if device is not None else torch.device("cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the group, so NCCL binds this process to its own GPU
    if not dist.is_initialized():
        dist.init_process_group(backend=ddp_backend(device))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_reduce_array(ctx: DistContext, array: np.ndarray) -> np.ndarray:
    """The element-wise sum of every rank's ``array`` (same shape and dtype on all ranks)."""
    if not ctx.enabled:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def broadcast_flag(ctx: DistContext, flag: bool) -> bool:
    """Rank 0's decision, on every rank (e.g. early stopping)."""
    if not ctx.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=ctx.device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
