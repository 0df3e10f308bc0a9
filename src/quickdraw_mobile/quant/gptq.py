"""``int4-gptq``: 4-bit group-wise weights chosen with GPTQ (Frantar et al., 2023), written for the CPU.

GPTQ quantizes a layer's weight one input column at a time and, after each column, moves the rounding error onto
the columns not yet quantized, weighted by the inverse Hessian of the layer's reconstruction error
``H = 2 X^T X / n`` (X: calibration inputs of the layer). Per the paper:

- damping: ``H + damp * mean(diag H) * I`` keeps the inverse well conditioned;
- the rows of ``H^-1`` that the updates need are those of its upper Cholesky factor, computed once;
- columns go in blocks of ``block_size``: inside a block the update touches only the block, and the block's
  accumulated error reaches the later columns in one matrix product ("lazy batch" updates);
- a group's scale is chosen when its first column comes up, from the error-updated weights; with ``act_order``
  columns go in order of decreasing Hessian diagonal and the scales are fixed beforehand from the original
  weights, so the groups stay contiguous in the original order (the layout XNNPACK runs).

Every layer's inputs come from the FP32 model in one calibration pass (not layer after layer through the
already-quantized model): one forward pass instead of one per layer, at a small cost in accuracy.
torchao's GPTQ needs CUDA, hence this implementation; ``tests/test_quant.py`` checks it against a
straightforward column-by-column version that inverts the remaining Hessian explicitly at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import QDMError
from .int4 import (
    PACKED,
    QMAX,
    QMIN,
    Int4Options,
    int4_summary,
    quantize_linears,
    rtn_scales,
)
from .registry import QuantizedModel, register_method


@dataclass(frozen=True)
class GPTQConfig(Int4Options):
    block_size: int = 128  # columns per lazy-batch block (a multiple of group_size)
    damp: float = 0.01  # damping, a fraction of the mean Hessian diagonal
    act_order: bool = False  # quantize columns with the largest Hessian diagonal first

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_size < 1 or self.block_size % self.group_size:
            raise QDMError(f"block_size: expected a multiple of group_size {self.group_size}, got {self.block_size}")
        if not 0 < self.damp < 1:
            raise QDMError(f"damp: expected a fraction in (0, 1), got {self.damp}")


def _scale_of(group: torch.Tensor) -> torch.Tensor:
    """The float32 scale of each row of ``group`` (out, group_size), as float64 for the error arithmetic."""
    return rtn_scales(group, group.shape[1]).reshape(-1).double()


def gptq_quantize(weight: torch.Tensor, gram: torch.Tensor, rows: int, group_size: int, *, block_size: int = 128,
                  damp: float = 0.01, act_order: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in) in [-8, 7], scale float32 (out, in / group)) for ``weight`` given the inputs' ``gram``."""
    W = weight.detach().double().clone()
    out_f, n = W.shape
    H = 2.0 * gram.double() / max(rows, 1)
    dead = torch.diag(H) == 0  # input channels that are always zero: any weight is exact
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    scale = torch.zeros(out_f, n // group_size, dtype=torch.float64)
    perm = torch.arange(n)
    if act_order:
        scale = rtn_scales(W, group_size).double()
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n, dtype=torch.float64)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    Q = torch.zeros(out_f, n, dtype=torch.int8)
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            group = int(perm[col]) // group_size
            if not act_order and col % group_size == 0:  # blocks hold whole groups (block_size % group_size == 0)
                scale[:, group] = _scale_of(W1[:, i : i + group_size])
            s = scale[:, group]
            q = torch.clamp(torch.round(W1[:, i] / s), QMIN, QMAX)
            Q[:, col] = q.to(torch.int8)
            err = (W1[:, i] - q * s) / U[col, col]
            W1[:, i:] -= err[:, None] * U[col, col:i2][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return Q[:, torch.argsort(perm)], scale.float()


@register_method("int4-gptq", GPTQConfig, order=60, bits=4, summary=int4_summary, weight_file=PACKED,
                 description="4-bit grouped Linear weights with Hessian-based error compensation (GPTQ); "
                 "8-bit dynamic activations in XNNPACK")
def apply(model: nn.Module, config: GPTQConfig, calib: torch.Tensor, **_) -> QuantizedModel:
    def quantize_weight(weight: torch.Tensor, stats) -> tuple[torch.Tensor, torch.Tensor]:
        return gptq_quantize(weight, stats.gram, stats.rows, config.group_size, block_size=config.block_size,
                             damp=config.damp, act_order=config.act_order)

    return quantize_linears("int4-gptq", model, config, calib, quantize_weight,
                            {"damp": config.damp, "block_size": config.block_size, "act_order": config.act_order})
