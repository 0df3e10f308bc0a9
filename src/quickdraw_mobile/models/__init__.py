"""Model architectures. Each family is one module that registers its constructors on import.

``create_model("cnn", num_classes=52)`` maps (B, 1, 28, 28) input in [-1, 1] (ink positive) to (B, 52) logits.
"""

from . import cnn, mobilenetv3, mobilevit, sketchcnn, vit  # noqa: F401  (registers the models)
from .profile import count_macs, count_params, count_train_macs, describe
from .registry import create_model, list_models, model_options, register_model

__all__ = [
    "count_macs",
    "count_params",
    "count_train_macs",
    "create_model",
    "describe",
    "list_models",
    "model_options",
    "register_model",
]
