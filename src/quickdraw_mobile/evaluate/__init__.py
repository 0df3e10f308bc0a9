"""Evaluation: metrics from logits (``metrics``), their plots (``plots``) and ``qdm evaluate`` (``runner``).

Only the numpy metrics are imported here, so code that needs top-k or MAP@3 (training, benchmarks) does not
pay for importing matplotlib; plots come from ``quickdraw_mobile.evaluate.plots``.
"""

from .metrics import (
    compute_metrics,
    confusion_matrix,
    map_at_k,
    per_class_metrics,
    softmax,
    topk_accuracy,
    true_class_rank,
)

__all__ = [
    "compute_metrics",
    "confusion_matrix",
    "map_at_k",
    "per_class_metrics",
    "softmax",
    "topk_accuracy",
    "true_class_rank",
]
