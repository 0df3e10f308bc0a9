"""Per-input-channel rescaling that leaves the model's function unchanged (SmoothQuant's and AWQ's transform).

A layer ``y = W x`` equals ``y = (W diag(s)) (x / s)``. Multiplying column ``j`` of the weight by ``s_j`` changes
how hard each column is to quantize; the division of the input must then happen somewhere:

- folded into the LayerNorm (before a Linear) or BatchNorm (before a 1x1 convolution) that produces the input,
  by dividing its affine weight and bias: free at run time;
- otherwise in an explicit ``ScaledInput`` wrapper that multiplies the input by ``1 / s`` (one elementwise op).

A fold is only right when the norm's output feeds nothing but this layer; hooks cannot see functional uses (a
residual add), so every fold is checked on a probe batch and replaced by a wrapper when the outputs moved.
"""

from __future__ import annotations

import torch
from torch import nn

from .stats import is_pointwise_conv

FOLD_TOLERANCE = 1e-4  # relative change of the probe logits that marks a fold as not equivalent


class ScaledInput(nn.Module):
    """``layer(x * inv_scale)``, the scale over the layer's input channels (last dim, or dim 1 of a conv)."""

    def __init__(self, layer: nn.Module, inv_scale: torch.Tensor):
        super().__init__()
        self.layer = layer
        shape = (-1, 1, 1) if isinstance(layer, nn.Conv2d) else (-1,)
        self.register_buffer("inv_scale", inv_scale.detach().float().reshape(shape).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x * self.inv_scale)


def norm_producers(model: nn.Module, layers: dict[str, nn.Module], probe: torch.Tensor) -> dict[str, str]:
    """For each layer, the name of the norm module whose output object is exactly the layer's input."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    inputs: dict[str, torch.Tensor] = {}
    by_module = {module: name for name, module in layers.items()}
    norms = (nn.LayerNorm, nn.BatchNorm2d)

    def record(name: str):
        def hook(module, args, output):
            if isinstance(module, norms) and isinstance(output, torch.Tensor):
                produced[id(output)] = (name, output)  # the tensor is kept so that its id stays unique
            if module in by_module:
                inputs[by_module[module]] = args[0]
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    found = {}
    modules = dict(model.named_modules())
    for name, x in inputs.items():
        source = produced.get(id(x))
        if source is None:
            continue
        norm, layer = modules[source[0]], layers[name]
        fits = ((isinstance(norm, nn.LayerNorm) and isinstance(layer, nn.Linear) and norm.elementwise_affine
                 and tuple(norm.normalized_shape) == (layer.in_features,))
                or (isinstance(norm, nn.BatchNorm2d) and is_pointwise_conv(layer) and norm.affine))
        if fits:
            found[name] = source[0]
    return found


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@torch.no_grad()
def scale_inputs(model: nn.Module, scales: dict[str, torch.Tensor], probe: torch.Tensor) -> dict[str, str]:
    """Apply ``W <- W diag(s)``, ``x <- x / s`` to each named layer; returns where each ``1/s`` went.

    The returned map is layer name -> ``folded into <norm>`` or ``ScaledInput`` (the layer then lives at
    ``<name>.layer``). The model's outputs on ``probe`` are unchanged up to float rounding.
    """
    model.eval()  # the equivalence check compares deterministic outputs
    layers = {name: model.get_submodule(name) for name in scales}
    producers = norm_producers(model, layers, probe)
    reference = model(probe)
    tolerance = FOLD_TOLERANCE * max(1.0, float(reference.abs().max()))
    placed = {}
    for name, s in scales.items():
        s = s.double()
        layer = layers[name]
        shape = (1, -1, 1, 1) if isinstance(layer, nn.Conv2d) else (1, -1)
        layer.weight.copy_((layer.weight.double() * s.reshape(shape)).to(layer.weight.dtype))
        norm_name = producers.get(name)
        if norm_name is not None:
            norm = model.get_submodule(norm_name)
            saved = (norm.weight.clone(), norm.bias.clone())
            norm.weight.copy_((norm.weight.double() / s).float())
            norm.bias.copy_((norm.bias.double() / s).float())
            if float((model(probe) - reference).abs().max()) <= tolerance:
                placed[name] = f"folded into {norm_name}"
                continue
            norm.weight.copy_(saved[0])  # the norm's output has other uses: undo, and scale explicitly
            norm.bias.copy_(saved[1])
        set_module(model, name, ScaledInput(layer, (1.0 / s).float()))
        placed[name] = "ScaledInput"
    return placed
