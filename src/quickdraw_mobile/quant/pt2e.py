"""``int8-ptq`` and ``int8-qat``: PT2E static INT8 for XNNPACK, calibrated or quantization-aware fine-tuned.

Both use the XNNPACK quantizer (INT8 weights symmetric per output channel, INT8 activations affine per tensor)
on the ``torch.export`` graph of the model, and end in ``convert_pt2e``: a graph with quantize/dequantize pairs
that ExecuTorch lowers to XNNPACK's integer kernels. ``quantize_graph`` is the one path every INT8 method
takes (SmoothQuant and mixed precision call it too), so the rows of the comparison differ only in the method.

What stays float:
- residual adds of transformers (``float_residual_adds``; by default in every model with a LayerNorm): the
  residual stream of a ViT carries a few huge channels that one per-tensor INT8 scale cannot hold, and an
  all-INT8 ViT falls to near-chance accuracy; a CNN's residual adds quantize fine and stay INT8;
- layers named in ``keep_float`` (int8-mixed picks them), and the ``ScaledInput`` multiplies of smoothing.

QAT follows PyTorch's recipe: start from the FP32 weights with fake quantization and observers on, freeze the
batch-norm statistics late (``freeze_bn_at``, a fraction of the steps), then the observers (``freeze_observers_at``),
so the last steps train against fixed quantization grids.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx import GraphModule, Node
from tqdm.auto import tqdm

from ..errors import QDMError
from ..export.executorch import export_dynamic, failure_message, quiet_executorch_import
from .finetune import TrainingData, fine_tune
from .registry import GRAPH_MAX_BATCH, QuantizedModel, register_method
from .scaling import ScaledInput, set_module

CALIB_BATCH = 64
ADD_OPS = {torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor}
WEIGHT_OPS = {torch.ops.aten.linear.default, torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}


@dataclass(frozen=True)
class PT2EConfig:
    per_channel: bool = True  # INT8 weight scales per output channel (else one per tensor)
    float_residual_adds: bool | None = None  # None: float in models with a LayerNorm (transformers)
    keep_float: tuple[str, ...] = ()  # names of layers (modules) left in float


def _module_path(node: Node) -> list[str]:
    """The module names a node was traced in, outermost first ("blocks.0.attn.qkv", ...)."""
    paths = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
    return [p[len("L['self']."):] if p.startswith("L['self'].") else p for p in paths]


def _module_types(node: Node) -> list[str]:
    return [t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}"
            for _, t in node.meta.get("nn_module_stack", {}).values()]


def float_residual_adds(model: nn.Module, config: PT2EConfig) -> bool:
    if config.float_residual_adds is not None:
        return config.float_residual_adds
    return any(isinstance(m, nn.LayerNorm) for m in model.modules())


def node_filter(model: nn.Module, config: PT2EConfig, only: str | None = None):
    """Which graph nodes the quantizer may annotate: everything but what ``config`` keeps in float.

    ``only``: quantize nothing but the layer of that name (mixed precision measures one layer at a time).
    """
    float_adds = float_residual_adds(model, config)
    keep = set(config.keep_float)
    scaled = f"{ScaledInput.__module__}.{ScaledInput.__qualname__}"

    def allow(node: Node) -> bool:
        path = _module_path(node)
        if only is not None:
            return only in path
        if float_adds and node.target in ADD_OPS:
            return False
        if scaled in _module_types(node) and node.target not in WEIGHT_OPS:
            return False  # the multiply by 1/s stays float; the layer inside the wrapper is quantized
        return not keep.intersection(path)

    return allow


def make_quantizer(model: nn.Module, config: PT2EConfig, is_qat: bool = False, only: str | None = None):
    """The project's one XNNPACK quantizer configuration: every INT8 artifact (``qdm quantize``'s INT8 rows and
    ``qdm export --quant int8``, which is int8-ptq) is annotated by it, with ``node_filter``'s float layers."""
    quiet_executorch_import()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=config.per_channel, is_qat=is_qat))
    return quantizer.set_filter_function(node_filter(model, config, only))


@torch.no_grad()
def calibrate(prepared: GraphModule, calib: torch.Tensor, desc: str = "calibration") -> None:
    for start in tqdm(range(0, len(calib), CALIB_BATCH), desc=desc, unit="batch", dynamic_ncols=True):
        prepared(calib[start : start + CALIB_BATCH])


def export_graph(model: nn.Module) -> GraphModule:
    """The ``torch.export`` graph of ``model`` in eval mode, batch free up to GRAPH_MAX_BATCH."""
    return export_dynamic(model.eval(), GRAPH_MAX_BATCH).module()


def quantize_graph(model: nn.Module, config: PT2EConfig, calib: torch.Tensor, only: str | None = None,
                   desc: str = "int8 calibration", graph: GraphModule | None = None) -> GraphModule:
    """Export, prepare with the XNNPACK quantizer, calibrate on ``calib``, convert: the INT8 graph.

    ``graph``: the model's ``export_graph``, when the caller quantizes one model many ways (it is not changed).
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = copy.deepcopy(graph) if graph is not None else export_graph(model)
    try:
        prepared = prepare_pt2e(graph, make_quantizer(model, config, only=only))
    except Exception as exc:  # the quantizer raises many types on unsupported patterns
        raise QDMError(failure_message("INT8 quantization (prepare_pt2e)", exc)) from exc
    calibrate(prepared, calib, desc)
    return convert_pt2e(prepared)


def weight_layers(graph: GraphModule) -> tuple[list[str], list[str]]:
    """(INT8 layers, float layers): the module of each linear/convolution, by whether its weight is dequantized."""
    int8, floating = [], []
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target not in WEIGHT_OPS:
            continue
        name = (_module_path(node) or ["?"])[-1]
        weight = node.args[1]
        quantized = isinstance(weight, Node) and "dequantize" in str(weight.target)
        (int8 if quantized else floating).append(name)
    return int8, floating


def int8_result(method: str, graph: GraphModule, config: PT2EConfig, model: nn.Module,
                extra: dict | None = None) -> QuantizedModel:
    int8, floating = weight_layers(graph)
    adds = "float" if float_residual_adds(model, config) else "int8"
    notes = {"int8_layers": len(int8), "float_layers": floating, "residual_adds": adds,
             **(extra or {})}
    weights = "per output channel" if config.per_channel else "per tensor"
    scheme = (f"int8 weights symmetric {weights}, int8 activations affine per tensor (static); XNNPACKQuantizer; "
              "XNNPACK")
    return QuantizedModel(method, graph, 8, scheme, notes)


@register_method("int8-ptq", PT2EConfig, order=10, bits=8,
                 description="PT2E static INT8 (XNNPACK quantizer), calibrated; a transformer's residual adds "
                 "stay float")
def apply_ptq(model: nn.Module, config: PT2EConfig, calib: torch.Tensor, **_) -> QuantizedModel:
    return int8_result("int8-ptq", quantize_graph(model, config, calib, desc="int8-ptq: calibration"), config, model,
                       {"calibration_drawings": len(calib)})


@dataclass(frozen=True)
class QATConfig(PT2EConfig):
    steps: int = 300  # optimizer steps of fine-tuning
    lr: float = 1e-4  # peak learning rate (warm-up, then the recipe's cosine)
    batch_size: int = 128
    freeze_bn_at: float = 0.6  # fraction of the steps after which batch-norm statistics are frozen
    freeze_observers_at: float = 0.8  # ... after which the quantization ranges are frozen
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.batch_size < 2:
            raise QDMError(f"int8-qat: expected steps >= 1, lr > 0, batch_size >= 2; got {self.steps}, {self.lr}, "
                           f"{self.batch_size}")
        if not 0 <= self.freeze_bn_at <= 1 or not 0 <= self.freeze_observers_at <= 1:
            raise QDMError("int8-qat: freeze_bn_at and freeze_observers_at are fractions of the steps in [0, 1]")


def _without_random_layers(model: nn.Module) -> None:
    """Switch off dropout and stochastic depth (timm's ``DropPath``) for QAT; a short, low learning-rate
    fine-tune does not need them, and in an exported graph neither survives intact:
    - torchao's ``move_exported_model_to_train`` rewrites every dropout of the graph into ``dropout(p=0.5)``
      (its pattern matches any p, and the replacement carries its own literal 0.5), so a ViT's p=0 dropouts
      would drop half of every activation (on a 4-epoch vit_tiny the training loss jumped from
      0.81 to 3.22, top-1 77% to 16%, before the first QAT step);
    - traced in train mode, ``DropPath`` becomes a ``bernoulli`` op that ``move_exported_model_to_eval`` cannot
      remove and that no ExecuTorch backend runs.
    """
    for name, module in list(model.named_modules()):
        if hasattr(module, "drop_prob") and module.__class__.__name__ == "DropPath":
            module.drop_prob = 0.0
        elif isinstance(module, nn.Dropout):
            set_module(model, name, nn.Identity())


def qat_graph(model: nn.Module, config: PT2EConfig, calib: torch.Tensor, max_batch: int = GRAPH_MAX_BATCH
              ) -> GraphModule:
    """The QAT graph of ``model`` (batch free up to ``max_batch``), observers set on ``calib``, in training mode."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    quiet_executorch_import()
    _without_random_layers(model)
    graph = export_dynamic(model.train(), max(GRAPH_MAX_BATCH, max_batch)).module()
    try:
        prepared = prepare_qat_pt2e(graph, make_quantizer(model, config, is_qat=True))
    except Exception as exc:
        raise QDMError(failure_message("INT8 quantization-aware training (prepare_qat_pt2e)", exc)) from exc
    # Observers start from the calibration set as PTQ's would (BN on its running statistics), so the first
    # steps train against sensible ranges.
    move_exported_model_to_eval(prepared)
    calibrate(prepared, calib, "int8-qat: initial ranges")
    return move_exported_model_to_train(prepared)


@register_method("int8-qat", QATConfig, order=30, bits=8, needs_training_data=True,
                 summary=lambda notes: f"{notes['steps']} QAT steps",
                 description="PT2E quantization-aware fine-tuning from the FP32 weights, observers and batch-norm "
                 "statistics frozen late")
def apply_qat(model: nn.Module, config: QATConfig, calib: torch.Tensor, *, train: TrainingData,
              **_) -> QuantizedModel:
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    torch.manual_seed(config.seed)
    prepared = qat_graph(model, config, calib, config.batch_size)
    freeze_bn, freeze_obs = round(config.freeze_bn_at * config.steps), round(config.freeze_observers_at * config.steps)

    def schedule(step: int) -> None:
        if step == freeze_bn:
            move_exported_model_to_eval(prepared)  # BN normalizes with running statistics
        if step == freeze_obs:
            prepared.apply(disable_observer)

    losses = fine_tune(prepared, train, config.steps, config.lr, batch_size=config.batch_size, seed=config.seed,
                       on_step=schedule, desc="int8-qat: fine-tune")
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    return int8_result("int8-qat", converted, config, model, {
        "steps": config.steps, "lr": config.lr, "freeze_bn_step": freeze_bn, "freeze_observers_step": freeze_obs,
        "loss_first": sum(losses[:20]) / len(losses[:20]), "loss_last": sum(losses[-20:]) / len(losses[-20:])})
