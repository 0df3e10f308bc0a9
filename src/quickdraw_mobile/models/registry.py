"""Model registry: every architecture is a named constructor ``fn(num_classes, **options) -> nn.Module``.

Adding a model is one file with a ``@register_model`` function plus one import line in ``models/__init__.py``.
All models take ``(B, 1, 28, 28)`` float input (normalized to [-1, 1], ink positive) and return logits
``(B, num_classes)``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from torch import nn

from ..errors import QDMError

ModelFn = Callable[..., nn.Module]

_MODELS: dict[str, ModelFn] = {}


def register_model(fn: ModelFn) -> ModelFn:
    """Register ``fn`` under its own name. Its options must be explicit keyword parameters (no ``**kwargs``),
    so that ``create_model`` can reject misspelled options instead of silently ignoring them."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].name != "num_classes":
        raise ValueError(f"model {name!r}: the first parameter must be num_classes")
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
        raise ValueError(f"model {name!r}: options must be explicit keyword parameters, not *args/**kwargs")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def model_options(name: str) -> dict[str, object]:
    """The options of model ``name`` with their default values."""
    params = list(inspect.signature(_lookup(name)).parameters.values())[1:]
    return {p.name: p.default for p in params}


def create_model(name: str, num_classes: int, **options: object) -> nn.Module:
    """Build model ``name`` with freshly initialized weights (never downloaded)."""
    fn = _lookup(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise QDMError(f"num_classes: expected a positive integer, got {num_classes!r}")
    known = model_options(name)
    for key in options:
        if key not in known:
            listed = ", ".join(known) or "none"
            raise QDMError(
                f"model {name!r} has no option {key!r}{_did_you_mean(key, list(known))}; options: {listed}"
            )
    return fn(num_classes, **options)


def _lookup(name: str) -> ModelFn:
    if name not in _MODELS:
        raise QDMError(
            f"unknown model {name!r}{_did_you_mean(name, list(_MODELS))}; available: {', '.join(list_models())}"
        )
    return _MODELS[name]


def _did_you_mean(word: str, pool: list[str]) -> str:
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_positive(name: str, value: object) -> None:
    """Raise QDMError unless ``value`` is a positive integer (for integer model options)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise QDMError(f"model option {name}: expected a positive integer, got {value!r}")


def check_fraction(name: str, value: object) -> None:
    """Raise QDMError unless ``value`` is a number in [0, 1) (for dropout-like model options)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise QDMError(f"model option {name}: expected a number in [0, 1), got {value!r}")
