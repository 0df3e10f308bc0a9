"""``int8-smoothquant``: SmoothQuant (Xiao et al., 2023), then the same PT2E INT8 path as int8-ptq.

Per-tensor INT8 activations fail when a few input channels are much larger than the rest (the outliers of
transformer activations). SmoothQuant divides input channel ``j`` of every Linear (and 1x1 convolution) by

    s_j = max|x_j| ^ alpha / max|W_:,j| ^ (1 - alpha)

and multiplies the weight column by ``s_j``: the function is unchanged (``scaling.scale_inputs`` folds ``1/s``
into the preceding LayerNorm or BatchNorm, or applies it explicitly), but part of the activation's range moved
into the weights, which per-channel INT8 handles well. Two choices are searched on the calibration set, the
strength ``alpha`` and the scope: every Linear / 1x1 convolution, or only those fed by a norm (``after-norm``:
the inputs of a ViT's qkv and fc1, where the reference implementation smooths; there 1/s folds into the norm
for free, while elsewhere it costs an explicit float multiply). Each candidate is smoothed, quantized and
calibrated on ``search_drawings`` of the set (spread over the classes), and the one whose INT8 logits are
closest (mean squared error) to the FP32 logits wins; the final model is calibrated on the whole set.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import QDMError
from .pt2e import PT2EConfig, int8_result, quantize_graph
from .registry import EVAL_BATCH, QuantizedModel, register_method
from .scaling import norm_producers, scale_inputs
from .stats import InputStats, collect_input_stats, is_pointwise_conv, spread, weight_matrix

PROBE = 16  # drawings that check each fold of 1/s is exact
SCOPES = ("all", "after-norm")


@dataclass(frozen=True)
class SmoothQuantConfig(PT2EConfig):
    alphas: tuple[float, ...] = (0.2, 0.35, 0.5, 0.65, 0.8)  # migration strengths tried
    scopes: tuple[str, ...] = SCOPES  # layer sets tried: every smoothable layer, or those fed by a norm
    search_drawings: int = 512  # calibration drawings used to rank the candidates

    def __post_init__(self) -> None:
        if not self.scopes or set(self.scopes) - set(SCOPES):
            raise QDMError(f"scopes: expected a non-empty subset of {list(SCOPES)}, got {list(self.scopes)}")
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


def scope_layers(model: nn.Module, scope: str, probe: torch.Tensor) -> list[str]:
    """The names of the smoothable layers in ``scope`` ("all" or "after-norm")."""
    layers = smoothable_layers(model)
    return list(layers) if scope == "all" else [n for n in layers if n in norm_producers(model, layers, probe)]


def smooth(model: nn.Module, stats: dict[str, InputStats], alpha: float, probe: torch.Tensor,
           names: list[str] | None = None) -> dict[str, str]:
    """Smooth ``model`` in place with strength ``alpha`` (an equivalent transform), every smoothable layer or
    those in ``names``; returns where each 1/s went."""
    layers = smoothable_layers(model)
    chosen = {n: layers[n] for n in (layers if names is None else names)}
    return scale_inputs(model, smoothing_scales(chosen, stats, alpha), probe)


def _logits(graph: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([graph(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])


def summary(notes: dict) -> str:
    return f"alpha {notes['alpha']}, {notes['scope']} layers"


@register_method("int8-smoothquant", SmoothQuantConfig, order=20, bits=8, summary=summary,
                 description="activation outliers migrated into the weights of each Linear and 1x1 convolution, "
                 "or of those fed by a norm (strength and scope searched on calibration), then int8-ptq")
def apply(model: nn.Module, config: SmoothQuantConfig, calib: torch.Tensor, **_) -> QuantizedModel:
    layers = smoothable_layers(model)
    if not layers:
        raise QDMError("int8-smoothquant: the model has no Linear or 1x1 convolution to smooth")
    stats = collect_input_stats(model, layers, calib, gram=False, desc="int8-smoothquant: activation ranges")
    search = calib[spread(config.search_drawings, len(calib))]
    probe = calib[spread(PROBE, len(calib))]
    reference = _logits(model, search)
    scopes = {scope: scope_layers(model, scope, probe) for scope in config.scopes}
    errors: dict[str, dict[float, float]] = {}
    for scope, names in scopes.items():
        if not names or (scope != "all" and names == scopes.get("all")):
            continue  # nothing to smooth, or the same layers as a scope already tried
        for alpha in config.alphas:
            candidate = copy.deepcopy(model)
            smooth(candidate, stats, alpha, probe, names)
            graph = quantize_graph(candidate, config, search, desc=f"int8-smoothquant: {scope}, alpha {alpha}")
            errors.setdefault(scope, {})[alpha] = float(((_logits(graph, search) - reference) ** 2).mean())
    if not errors:
        raise QDMError(f"int8-smoothquant: no layer of the model is in the scopes {list(config.scopes)}")
    best_scope, best = min(((scope, alpha) for scope in errors for alpha in errors[scope]),
                           key=lambda candidate: errors[candidate[0]][candidate[1]])
    placement = smooth(model, stats, best, probe, scopes[best_scope])
    graph = quantize_graph(model, config, calib, desc=f"int8-smoothquant: calibration ({best_scope}, alpha {best})")
    folded = sum(where.startswith("folded") for where in placement.values())
    return int8_result("int8-smoothquant", graph, config, model, {
        "alpha": best, "scope": best_scope, "logit_mse": errors, "smoothed_layers": len(placement),
        "scales_folded_into_norms": folded, "explicit_scales": len(placement) - folded,
        "calibration_drawings": len(calib)})
