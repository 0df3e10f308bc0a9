"""``int8-mixed``: INT8 everywhere except the layers that cost the most accuracy, which stay float.

1. Quantize the whole model as int8-ptq does; if top-1 drops by at most ``max_drop`` points, that is the result.
2. Sensitivity of each Linear / convolution: the drop when only that layer is quantized (calibrated and scored
   on ``sensitivity_drawings`` of the calibration set; ties broken by the logits' mean squared error).
3. Keep the most sensitive layers in float, one more at a time, until the whole-model drop is at most
   ``max_drop``; the notes name the layers that stayed float and every sensitivity.

Accuracy is measured on the calibration drawings against their labels when the caller gives them, otherwise
against the FP32 model's own predictions (then "drop" is the share of drawings whose top-1 changed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import QDMError
from .pt2e import PT2EConfig, export_graph, int8_result, quantize_graph
from .registry import EVAL_BATCH, QuantizedModel, register_method
from .stats import spread


@dataclass(frozen=True)
class MixedConfig(PT2EConfig):
    max_drop: float = 0.3  # top-1 points the INT8 model may lose against FP32
    sensitivity_drawings: int = 512  # calibration drawings per single-layer measurement

    def __post_init__(self) -> None:
        if self.max_drop < 0 or self.sensitivity_drawings < 1:
            raise QDMError(f"int8-mixed: expected max_drop >= 0 and sensitivity_drawings >= 1, got "
                           f"{self.max_drop}, {self.sensitivity_drawings}")


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])


def _top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def weight_layer_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def summary(notes: dict) -> str:
    return f"float: {', '.join(notes['kept_float']) or 'none'}"


@register_method("int8-mixed", MixedConfig, order=40, bits=8, summary=summary,
                 description="int8-ptq with the most sensitive layers (measured one by one) kept float until the "
                 f"top-1 drop is at most {MixedConfig.max_drop} points (max_drop)")
def apply(model: nn.Module, config: MixedConfig, calib: torch.Tensor, *, labels: torch.Tensor | None = None,
          **_) -> QuantizedModel:
    fp32_logits = _logits(model, calib)
    labels = labels if labels is not None else fp32_logits.argmax(1)
    fp32_top1 = _top1(fp32_logits, labels)
    exported = export_graph(model)

    def drop_of(keep_float: tuple[str, ...]) -> tuple[nn.Module, float]:
        cfg = dataclasses.replace(config, keep_float=config.keep_float + keep_float)
        graph = quantize_graph(model, cfg, calib, graph=exported, desc=f"int8-mixed: {len(keep_float)} float")
        return graph, fp32_top1 - _top1(_logits(graph, calib), labels)

    graph, drop = drop_of(())
    notes = {"max_drop": config.max_drop, "fp32_top1_calib": fp32_top1, "all_int8_drop": drop, "kept_float": []}
    if drop > config.max_drop:
        pick = spread(config.sensitivity_drawings, len(calib))
        sub, sub_labels, sub_ref = calib[pick], labels[pick], fp32_logits[pick]
        sub_top1 = _top1(sub_ref, sub_labels)
        sensitivity = {}
        for name in tqdm(weight_layer_names(model), desc="int8-mixed: layer sensitivity", unit="layer"):
            single = quantize_graph(model, config, sub, only=name, graph=exported, desc=f"int8-mixed: {name}")
            logits = _logits(single, sub)
            sensitivity[name] = (sub_top1 - _top1(logits, sub_labels), float(((logits - sub_ref) ** 2).mean()))
        ranked = sorted(sensitivity, key=sensitivity.get, reverse=True)
        notes["sensitivity"] = {name: {"drop": d, "logit_mse": e} for name, (d, e) in sensitivity.items()}
        for k in range(1, len(ranked) + 1):
            graph, drop = drop_of(tuple(ranked[:k]))
            notes["kept_float"] = ranked[:k]
            if drop <= config.max_drop:
                break
    notes["drop"] = drop
    return int8_result("int8-mixed", graph, config, model, notes)
