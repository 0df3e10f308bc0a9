"""``int4-rtn``: round-to-nearest 4-bit group-wise weights, the baseline GPTQ and AWQ must beat.

Each weight goes to the nearest multiple of its group's scale (``max |w| / 7.5``), so ``|w - q s| <= s / 2``;
no calibration data is used (``calib`` only measures the layer errors reported in the notes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .int4 import (
    PACKED,
    Int4Options,
    int4_summary,
    quantize_groups,
    quantize_linears,
    rtn_scales,
)
from .registry import QuantizedModel, register_method


@dataclass(frozen=True)
class RTNConfig(Int4Options):
    """Round-to-nearest: only the shared 4-bit options."""


def rtn_quantize(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in) in [-8, 7], scale float32 (out, in / group)) for a weight (out, in)."""
    scale = rtn_scales(weight, group_size)
    return quantize_groups(weight.float(), scale, group_size), scale


@register_method("int4-rtn", RTNConfig, order=50, bits=4, summary=int4_summary, weight_file=PACKED,
                 description="4-bit grouped Linear weights, round to nearest; "
                 "8-bit dynamic activations in XNNPACK")
def apply(model: nn.Module, config: RTNConfig, calib: torch.Tensor, **_) -> QuantizedModel:
    return quantize_linears("int4-rtn", model, config, calib, lambda weight, _: rtn_quantize(weight, config.group_size))
