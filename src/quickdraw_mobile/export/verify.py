"""Does the exported model compute what the eager model computes? Measured on real drawings, in its own runtime."""

from __future__ import annotations

import numpy as np
from torch import nn

from ..errors import QDMError
from ..inference import logits_for_pixels
from .calibration import Drawings
from .runtime import Artifact
from .selfcheck import check_finite

FP32_MAX_DISAGREEMENT = 0.005  # an FP32 export may change the top-1 class of at most 0.5% of drawings


def compare_logits(eager: np.ndarray, exported: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """Top-1 agreement, largest absolute logit difference, and both accuracies when labels are given."""
    if eager.shape != exported.shape:
        raise QDMError(f"exported model gives logits of shape {exported.shape}, eager {eager.shape}")
    same = eager.argmax(1) == exported.argmax(1)
    report = {
        "drawings": len(eager),
        "top1_agreement": float(same.mean()),
        "disagreements": int((~same).sum()),
        "max_abs_logit_diff": float(np.abs(eager - exported).max()),
    }
    if labels is not None:
        report["eager_top1"] = float((eager.argmax(1) == labels).mean())
        report["exported_top1"] = float((exported.argmax(1) == labels).mean())
    return report


def eager_logits(model: nn.Module, drawings: Drawings, where: str = "export") -> np.ndarray:
    """The eager model's logits on ``drawings``; non-finite ones are an error naming ``where``, raised before any
    conversion (INT8 calibration fails obscurely on NaN)."""
    eager = logits_for_pixels(model, drawings.pixels)
    check_finite(eager, f"{where}: the eager model")
    return eager


def verify_artifact(artifact: Artifact, eager: np.ndarray, drawings: Drawings,
                    where: str = "export") -> tuple[dict, np.ndarray]:
    """Run ``drawings`` through ``artifact`` and compare with the eager model's logits on them (``eager_logits``):
    the comparison, with its source, and the artifact's logits (for the self-check). Non-finite logits are an
    error naming ``where``."""
    exported = artifact.run_pixels(drawings.pixels)
    check_finite(exported, f"{where}: the exported model")
    return {"source": drawings.source, **compare_logits(eager, exported, drawings.labels)}, exported


def check_agreement(report: dict, quant: str, where: str) -> None:
    """Fail loudly when an FP32 export changes the top-1 class of more than 0.5% of the drawings."""
    if quant == "none" and 1.0 - report["top1_agreement"] > FP32_MAX_DISAGREEMENT:
        raise QDMError(f"{where}: the FP32 export disagrees with the eager model on {report['disagreements']} of "
                       f"{report['drawings']} drawings ({100 * (1 - report['top1_agreement']):.2f}% > "
                       f"{100 * FP32_MAX_DISAGREEMENT}%; largest logit difference "
                       f"{report['max_abs_logit_diff']:.3g}); nothing was written")
