"""Every quantization method by its exact name, one dispatcher, and what each method returns.

A method is ``apply(model, config, calib, *, labels=None, train=None) -> QuantizedModel``: ``config`` is the
method's small frozen dataclass, ``calib`` the normalized calibration drawings (N, 1, 28, 28), ``labels`` their
classes (used where a method measures accuracy) and ``train`` the training data of methods that fine-tune.
``quantize(model, "int4-gptq", calib, group_size=64)`` builds the config from keyword options and never
changes ``model`` (each method works on a copy).

A method is one file of this package: ``@register_method(name, Config, order=..., bits=..., ...)`` on its
``apply`` declares everything the rest of the project needs to know (its place in the comparison table, its
weight bits, whether it fine-tunes on the training split, its one-line summary, how it saves a result that has no
ExecuTorch program). The registry finds the files itself: it imports every module of the package once, on the
first question asked of it (``list_methods``, ``get_method``), so nothing else lists the methods by hand.
``qdm quantize`` (``compare``), ``qdm export --quant METHOD`` (``export.pipeline``), the CLI help and the README
table all read them from here.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import QDMError
from ..export import executorch
from .finetune import TrainingData

EVAL_BATCH = 256  # batches for eager evaluation; exported graphs take up to GRAPH_MAX_BATCH
GRAPH_MAX_BATCH = 1024
# ``qdm export --quant`` keeps its two historical words: none is the reference, int8 is int8-ptq.
ALIASES = {"none": "fp32", "int8": "int8-ptq"}


def precision(bits: int) -> str:
    """The artifact's coarse precision, as metadata.json states it: none (float), int8, int4."""
    return "none" if bits >= 32 else f"int{bits}"


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

    @property
    def precision(self) -> str:
        return precision(self.bits)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
        """Logits (N, C) for normalized drawings (N, 1, 28, 28), in batches an exported graph accepts."""
        return torch.cat([self.model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    def to_pte(self, max_batch: int | None = None) -> tuple[bytes, executorch.LoweringReport]:
        """(bytes of the .pte, LoweringReport): the deployable artifact of this model (ExecuTorch + XNNPACK)."""
        if self.no_pte:
            raise QDMError(f"{self.method}: no ExecuTorch program: {self.no_pte}")
        return executorch.to_pte(self.model, max_batch=max_batch or executorch.PTE_MAX_BATCH)


ApplyFn = Callable[..., QuantizedModel]


@dataclass(frozen=True)
class WeightFile:
    """How a method writes a result that has no ExecuTorch program (``QuantizedModel.no_pte``): its own file."""

    suffix: str  # e.g. ".safetensors"
    write: Callable[[nn.Module, Path], int]  # (model, path) -> bytes written


def _no_summary(notes: dict) -> str:
    return ""


@dataclass(frozen=True)
class Method:
    """A registered method and what it declares about itself."""

    name: str
    config: type
    apply: ApplyFn
    order: int  # position in the comparison table (ties: by name)
    bits: int  # weight bits of its quantized layers (32: a float method)
    description: str  # what it does, a few words (the README table, the CLI help)
    summary: Callable[[dict], str] = _no_summary  # its notes -> the key choice it made, for the table's notes column
    needs_training_data: bool = False  # fine-tunes on the run's training split
    calibrates: bool = True  # uses the calibration drawings (fp32 does not: export loads none for it)
    weight_file: WeightFile | None = None  # how a result without a .pte is saved (int4 weight-only: packed)

    @property
    def seeded(self) -> bool:
        """Whether its config takes a ``seed`` (methods that fine-tune), which the caller's seed then fills."""
        return "seed" in {f.name for f in dataclasses.fields(self.config)}


_METHODS: dict[str, Method] = {}
_discovered = False


def register_method(name: str, config: type, *, order: int, bits: int, description: str,
                    summary: Callable[[dict], str] = _no_summary, needs_training_data: bool = False,
                    calibrates: bool = True, weight_file: WeightFile | None = None) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator of a method's ``apply``: registers it under ``name`` with what it declares (see ``Method``)."""
    def register(fn: ApplyFn) -> ApplyFn:
        if name in _METHODS or name in ALIASES:
            raise ValueError(f"quantization method {name!r} is registered twice")
        _METHODS[name] = Method(name, config, fn, order, bits, description, summary, needs_training_data,
                                calibrates, weight_file)
        return fn

    return register


def unregister_method(name: str) -> None:
    """Remove method ``name`` (a test's or a plugin's own method); unknown names are an error."""
    if _METHODS.pop(name, None) is None:
        raise ValueError(f"quantization method {name!r} is not registered")


def _discover() -> None:
    """Import every module of this package once (sorted: deterministic): method modules register on import."""
    global _discovered
    if _discovered:
        return
    for module in sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])):
        if not module.startswith("_"):
            importlib.import_module(f"{__package__}.{module}")
    _discovered = True


def list_methods() -> list[str]:
    """Names of every method in the order of the comparison table (fp32 first)."""
    _discover()
    return sorted(_METHODS, key=lambda n: (_METHODS[n].order, n))


def get_method(name: str) -> Method:
    _discover()
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


def _check_calibration(method: str, calib: torch.Tensor | None, labels: torch.Tensor | None,
                       spec: Method) -> None:
    if calib is None:
        if spec.calibrates:
            raise QDMError(f"method {method!r} needs calibration drawings")
        return
    if not isinstance(calib, torch.Tensor) or calib.ndim != 4 or tuple(calib.shape[1:]) != (1, 28, 28):
        raise QDMError(f"calibration drawings: expected a tensor (N, 1, 28, 28), got "
                       f"{getattr(calib, 'shape', type(calib).__name__)}")
    if len(calib) == 0:
        raise QDMError("calibration drawings: the set is empty")
    if labels is not None and labels.shape != (len(calib),):
        raise QDMError(f"calibration labels: expected shape ({len(calib)},), got {tuple(labels.shape)}")


def quantize(model: nn.Module, method: str, calib: torch.Tensor | None, *, labels: torch.Tensor | None = None,
             train: TrainingData | None = None, config=None, seed: int | None = None,
             **options) -> QuantizedModel:
    """Apply ``method`` to a copy of ``model`` (FP32, eval mode) with ``calib`` (N, 1, 28, 28) normalized drawings
    (None for a method that does not calibrate).

    ``seed``: torch's global RNG is reset to it first, and a method whose config has a ``seed`` gets it unless
    ``options`` set one: ``qdm quantize`` and ``qdm export`` call this the same way and get the same model.
    """
    spec = get_method(method)
    if seed is not None and spec.seeded and config is None:
        options = {"seed": seed, **options}
    config = config if config is not None else make_config(method, **options)
    if not isinstance(config, spec.config):
        raise QDMError(f"method {method!r}: expected a {spec.config.__name__}, got {type(config).__name__}")
    _check_calibration(method, calib, labels, spec)
    if spec.needs_training_data and train is None:
        raise QDMError(f"method {method!r} fine-tunes the model: it needs the training split (--data)")
    if seed is not None:
        torch.manual_seed(seed)
    work = copy.deepcopy(model).eval()
    result = spec.apply(work, config, None if calib is None else calib.float(), labels=labels, train=train)
    if (result.method, result.bits) != (method, spec.bits):
        raise QDMError(f"method {method!r} returned a {result.bits}-bit {result.method!r} result; it declares "
                       f"{spec.bits} bits")
    return result


def methods_markdown() -> str:
    """The README's table of methods, from their declarations (a test keeps the README equal to it)."""
    lines = ["| method | weight bits | fine-tunes (needs `--data`) | what it does |", "|---|---:|---|---|"]
    for name in list_methods():
        spec = _METHODS[name]
        lines.append(f"| `{name}` | {spec.bits} | {'yes' if spec.needs_training_data else 'no'} | "
                     f"{spec.description} |")
    return "\n".join(lines) + "\n"


def method_names_help() -> str:
    """``fp32, int8-ptq, ...`` (table order) and which of them need the training split: for the CLI help."""
    names = list_methods()
    training = [n for n in names if _METHODS[n].needs_training_data]
    return f"{', '.join(names)} (fine-tuning on the training split: {', '.join(training) or 'none'})"


@dataclass(frozen=True)
class FP32Config:
    """The reference: the model as trained."""


@register_method("fp32", FP32Config, order=0, bits=32, calibrates=False,
                 description="the reference: the model as trained, float32")
def apply_fp32(model: nn.Module, config: FP32Config, calib: torch.Tensor | None, **_) -> QuantizedModel:
    return QuantizedModel("fp32", model, 32, "float32 weights and activations, XNNPACK")
