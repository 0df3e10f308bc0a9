"""Every quantization method by its exact name, one dispatcher, and what each method returns.

A method is ``apply(model, config, calib, *, labels=None, train=None) -> QuantizedModel``: ``config`` is the
method's small frozen dataclass, ``calib`` the normalized calibration drawings (N, 1, 28, 28), ``labels`` their
classes (used where a method measures accuracy) and ``train`` the training data of methods that fine-tune.
``quantize(model, "int4-gptq", calib, group_size=64)`` builds the config from keyword options and never
changes ``model`` (each method works on a copy).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import QDMError
from .finetune import TrainingData

EVAL_BATCH = 256  # batches for eager evaluation; exported graphs take up to GRAPH_MAX_BATCH
GRAPH_MAX_BATCH = 1024


@dataclass
class QuantizedModel:
    """A quantized (or pruned, or reference) model and what a report needs to say about it.

    ``model`` runs eagerly, (B, 1, 28, 28) -> logits: a plain module, a module with torchao quantized weights, or
    a converted PT2E ``GraphModule``; ``to_pte`` lowers exactly that to an ExecuTorch program for XNNPACK.
    """

    method: str
    model: nn.Module
    bits: int  # weight bits of the quantized layers (32 for float methods)
    scheme: str  # one line: weights, activations, granularity, runtime
    notes: dict = field(default_factory=dict)  # method facts: layers left in float, alpha, sparsity, ...
    no_pte: str | None = None  # why this model has no .pte (its deployable form is then another file)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
        """Logits (N, C) for normalized drawings (N, 1, 28, 28), in batches an exported graph accepts."""
        return torch.cat([self.model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    def to_pte(self, max_batch: int | None = None):
        """(bytes of the .pte, LoweringReport): the deployable artifact of this model (ExecuTorch + XNNPACK)."""
        from ..export.executorch import PTE_MAX_BATCH, to_pte

        if self.no_pte:
            raise QDMError(f"{self.method}: no ExecuTorch program: {self.no_pte}")
        return to_pte(self.model, "none", max_batch=max_batch or PTE_MAX_BATCH)


ApplyFn = Callable[..., QuantizedModel]


@dataclass(frozen=True)
class Method:
    name: str
    config: type
    apply: ApplyFn
    needs_training_data: bool = False


_METHODS: dict[str, Method] = {}
# The order of the comparison table: the reference, INT8 (static, then with help), 4-bit weights, pruning.
TABLE_ORDER = ("fp32", "int8-ptq", "int8-smoothquant", "int8-qat", "int8-mixed", "int4-rtn", "int4-gptq",
               "int4-awq", "pruned")


def register_method(name: str, config: type, needs_training_data: bool = False) -> Callable[[ApplyFn], ApplyFn]:
    def register(fn: ApplyFn) -> ApplyFn:
        if name in _METHODS:
            raise ValueError(f"quantization method {name!r} is registered twice")
        _METHODS[name] = Method(name, config, fn, needs_training_data)
        return fn

    return register


def list_methods() -> list[str]:
    """Names of every method in the order of the comparison table (fp32 first)."""
    _load_methods()
    return sorted(_METHODS, key=lambda n: (TABLE_ORDER.index(n) if n in TABLE_ORDER else len(TABLE_ORDER), n))


def get_method(name: str) -> Method:
    _load_methods()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise QDMError(f"unknown quantization method {name!r}{hint}; available: {', '.join(list_methods())}")
    return _METHODS[name]


def parse_methods(text: str) -> list[str]:
    """``all`` or a comma-separated list of method names -> the names, checked, in table order."""
    names = list_methods() if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise QDMError("--methods: expected 'all' or a comma-separated list of methods")
    for name in names:
        get_method(name)
    return names


def make_config(name: str, **options):
    """The config of method ``name`` with ``options`` applied; unknown options are an error, not ignored."""
    method = get_method(name)
    known = [f.name for f in dataclasses.fields(method.config)]
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise QDMError(f"method {name!r} has no option {key!r}{hint}; options: {', '.join(known) or 'none'}")
    return method.config(**options)


def quantize(model: nn.Module, method: str, calib: torch.Tensor, *, labels: torch.Tensor | None = None,
             train: TrainingData | None = None, config=None, **options) -> QuantizedModel:
    """Apply ``method`` to a copy of ``model`` (FP32, eval mode) with ``calib`` (N, 1, 28, 28) normalized drawings."""
    spec = get_method(method)
    config = config if config is not None else make_config(method, **options)
    if not isinstance(config, spec.config):
        raise QDMError(f"method {method!r}: expected a {spec.config.__name__}, got {type(config).__name__}")
    if not isinstance(calib, torch.Tensor) or calib.ndim != 4 or tuple(calib.shape[1:]) != (1, 28, 28):
        raise QDMError(f"calibration drawings: expected a tensor (N, 1, 28, 28), got "
                       f"{getattr(calib, 'shape', type(calib).__name__)}")
    if len(calib) == 0:
        raise QDMError("calibration drawings: the set is empty")
    if labels is not None and labels.shape != (len(calib),):
        raise QDMError(f"calibration labels: expected shape ({len(calib)},), got {tuple(labels.shape)}")
    if spec.needs_training_data and train is None:
        raise QDMError(f"method {method!r} fine-tunes the model: it needs the training split (--data)")
    work = copy.deepcopy(model).eval()
    return spec.apply(work, config, calib.float(), labels=labels, train=train)


@dataclass(frozen=True)
class FP32Config:
    """The reference: the model as trained."""


@register_method("fp32", FP32Config)
def apply_fp32(model: nn.Module, config: FP32Config, calib: torch.Tensor, **_) -> QuantizedModel:
    return QuantizedModel("fp32", model, 32, "float32 weights and activations, XNNPACK")


def _load_methods() -> None:
    # The method modules register themselves on import; importing them here keeps the registry the one entry.
    from . import awq, gptq, mixed, prune, pt2e, rtn, smoothquant  # noqa: F401
