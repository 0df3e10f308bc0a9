"""``int8-smoothquant``: SmoothQuant (Xiao et al., 2023), then the same PT2E INT8 path as int8-ptq.

Per-tensor INT8 activations fail when a few input channels are much larger than the rest (the outliers of
transformer activations). SmoothQuant divides input channel ``j`` of every Linear (and 1x1 convolution) by

    s_j = max|x_j| ^ alpha / max|W_:,j| ^ (1 - alpha)

and multiplies the weight column by ``s_j``: the function is unchanged (``scaling.scale_inputs`` folds ``1/s``
into the preceding LayerNorm or BatchNorm, or applies it explicitly), but part of the activation's range moved
into the weights, which per-channel INT8 handles well. The strength ``alpha`` is searched on the calibration
set: each candidate is smoothed, quantized and calibrated on ``search_drawings`` of it (spread over the
classes), and the one whose INT8 logits are closest (mean squared error) to the FP32 logits wins; the final model
is calibrated on the whole set.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import QDMError
from .pt2e import PT2EConfig, int8_result, quantize_graph
from .registry import EVAL_BATCH, QuantizedModel, register_method
from .scaling import scale_inputs
from .stats import InputStats, collect_input_stats, is_pointwise_conv, spread, weight_matrix

PROBE = 16  # drawings that check each fold of 1/s is exact


@dataclass(frozen=True)
class SmoothQuantConfig(PT2EConfig):
    alphas: tuple[float, ...] = (0.2, 0.35, 0.5, 0.65, 0.8)  # migration strengths tried
    search_drawings: int = 512  # calibration drawings used to rank the alphas

    def __post_init__(self) -> None:
        if not self.alphas or any(not 0 <= a <= 1 for a in self.alphas):
            raise QDMError(f"alphas: expected strengths in [0, 1], got {self.alphas}")
        if self.search_drawings < 1:
            raise QDMError(f"search_drawings: expected a positive count, got {self.search_drawings}")


def smoothable_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) or is_pointwise_conv(m)}


def smoothing_scales(layers: dict[str, nn.Module], stats: dict[str, InputStats], alpha: float) -> dict:
    """``s`` per layer; channels that never see input keep ``s = 1``."""
    scales = {}
    for name, layer in layers.items():
        x_max = stats[name].abs_max.double()
        w_max = weight_matrix(layer).abs().amax(0).double()
        s = x_max.clamp_min(1e-5) ** alpha / w_max.clamp_min(1e-5) ** (1 - alpha)
        scales[name] = torch.where((x_max > 0) & (w_max > 0), s, torch.ones_like(s))
    return scales


def smooth(model: nn.Module, stats: dict[str, InputStats], alpha: float, probe: torch.Tensor) -> dict[str, str]:
    """Smooth ``model`` in place with strength ``alpha`` (an equivalent transform); where each 1/s went."""
    return scale_inputs(model, smoothing_scales(smoothable_layers(model), stats, alpha), probe)


def _logits(graph: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([graph(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])


@register_method("int8-smoothquant", SmoothQuantConfig)
def apply(model: nn.Module, config: SmoothQuantConfig, calib: torch.Tensor, **_) -> QuantizedModel:
    layers = smoothable_layers(model)
    if not layers:
        raise QDMError("int8-smoothquant: the model has no Linear or 1x1 convolution to smooth")
    stats = collect_input_stats(model, layers, calib, gram=False, desc="int8-smoothquant: activation ranges")
    search = calib[spread(config.search_drawings, len(calib))]
    probe = calib[spread(PROBE, len(calib))]
    reference = _logits(model, search)
    errors = {}
    for alpha in config.alphas:
        candidate = copy.deepcopy(model)
        smooth(candidate, stats, alpha, probe)
        graph = quantize_graph(candidate, config, search, desc=f"int8-smoothquant: alpha {alpha}")
        errors[alpha] = float(((_logits(graph, search) - reference) ** 2).mean())
    best = min(errors, key=errors.get)
    placement = smooth(model, stats, best, probe)
    graph = quantize_graph(model, config, calib, desc=f"int8-smoothquant: calibration (alpha {best})")
    folded = sum(where.startswith("folded") for where in placement.values())
    return int8_result("int8-smoothquant", graph, config, model, {
        "alpha": best, "logit_mse_by_alpha": errors, "smoothed_layers": len(placement),
        "scales_folded_into_norms": folded, "explicit_scales": len(placement) - folded,
        "calibration_drawings": len(calib)})
