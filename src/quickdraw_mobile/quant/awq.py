"""``int4-awq``: activation-aware 4-bit weights (Lin et al., 2024): protect the channels that carry large inputs.

For each Linear, input channel ``j`` gets a scale ``s_j = mean|x_j| ^ alpha`` (normalized so that
``sqrt(max s * min s) = 1``); the weight ``W diag(s)`` is rounded to 4 bits and the input divided by ``s``, so
channels with large activations get finer steps. ``alpha`` is searched per layer on a grid over [0, 1] for the
smallest output error on the calibration inputs, ``trace(E X^T X E^T)`` with ``E`` the weight error; alpha = 0
is plain round-to-nearest, so the search never does worse than RTN on the calibration set.

torchao's ``AWQConfig`` searches the same way but stores ``1/s`` inside weight formats that XNNPACK does not
run; here ``1/s`` is folded into the preceding LayerNorm where it can be and applied by an explicit multiply
otherwise (``scaling.scale_inputs``), and the weights use the format of every 4-bit method (``int4``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import QDMError
from .int4 import (
    PACKED,
    Int4Options,
    dequantize_groups,
    int4_layers,
    int4_result,
    int4_summary,
    layer_error,
)
from .registry import QuantizedModel, register_method
from .rtn import rtn_quantize
from .scaling import scale_inputs
from .stats import collect_input_stats, spread, weight_matrix

PROBE = 16  # drawings that check the folds of 1/s are exact


@dataclass(frozen=True)
class AWQConfig(Int4Options):
    grid: int = 20  # alpha in {0, 1/grid, ..., 1}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grid < 1:
            raise QDMError(f"grid: expected a positive number of steps, got {self.grid}")


def awq_scales(abs_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    s = abs_mean.double().clamp_min(1e-4) ** alpha
    return s / torch.sqrt(s.max() * s.min())


def awq_search(weight: torch.Tensor, gram: torch.Tensor, rows: int, abs_mean: torch.Tensor, group_size: int,
               grid: int = 20) -> tuple[torch.Tensor, float, float]:
    """(s float64 (in,), alpha, layer MSE) with the smallest calibration output error."""
    best = None
    for step in range(grid + 1):
        alpha = step / grid
        s = awq_scales(abs_mean, alpha)
        q, scale = rtn_quantize((weight.double() * s).float(), group_size)
        error = layer_error(weight, dequantize_groups(q, scale, group_size).double() / s, gram, rows)
        if best is None or error < best[2]:
            best = (s, alpha, error)
    return best


@register_method("int4-awq", AWQConfig, order=70, bits=4, summary=int4_summary, weight_file=PACKED,
                 description="4-bit grouped Linear weights with activation-aware channel scaling (AWQ); "
                 "8-bit dynamic activations in XNNPACK")
def apply(model: nn.Module, config: AWQConfig, calib: torch.Tensor, **_) -> QuantizedModel:
    layers, left = int4_layers(model, config)
    stats = collect_input_stats(model, layers, calib, desc="int4-awq: activation statistics")
    searched = {name: awq_search(weight_matrix(layer), stats[name].gram, stats[name].rows, stats[name].abs_mean,
                                 config.group_size, config.grid) for name, layer in layers.items()}
    scaled = {name: s for name, (s, alpha, _) in searched.items() if alpha > 0}
    placement = scale_inputs(model, scaled, calib[spread(PROBE, len(calib))]) if scaled else {}
    quantized = {}
    for name, layer in layers.items():  # the layer objects survive a ScaledInput wrapper: their weights are W s
        quantized[name] = rtn_quantize(weight_matrix(layer), config.group_size)
    modules = {module: name for name, module in model.named_modules()}
    renamed = {modules[layer]: quantized[name] for name, layer in layers.items()}
    return int4_result("int4-awq", model, config, renamed, left, {
        "alpha": {name: alpha for name, (_, alpha, _) in searched.items()},
        "layer_mse": {name: error for name, (_, _, error) in searched.items()},
        "input_scale": placement})
