"""4-bit group-wise weights: the format shared by int4-rtn, int4-gptq and int4-awq, and how it deploys.

Format (what ExecuTorch's XNNPACK backend runs as ``qd8-f32-qb4w``): each Linear weight row is cut into groups
of ``group_size`` input channels; a group has one float scale ``s`` and integers ``q`` in [-8, 7] with
``w ~ q * s`` (symmetric, no zero point). ``s = max|w| / 7.5`` over the group is torchao's symmetric choice, so
round-to-nearest here equals torchao's own quantization bit for bit. The three methods differ only in which
``q`` and ``s`` they pick; they all end in ``install_int4``, which gives the Linear a torchao
``IntxUnpackedToInt8Tensor`` weight built from exactly those integers.

Activations: XNNPACK has 4-bit weights only with 8-bit dynamic activations (per token, asymmetric): with float
activations its delegate computes wrong results here (executorch 1.5.1), so ``dynamic_activations=True`` is the
default and the eager model computes what the .pte computes. XNNPACK also needs groups of a multiple of 32
input channels. Only Linear layers: XNNPACK has no 4-bit
convolution, so convolutions stay float (as do Linears whose input width the group size does not divide).

Storage: ``pack_int4`` puts two 4-bit values in a byte; ``packed_nbytes`` is the real byte count of the packed
integers and their float16 scales, and ``save_packed`` writes a whole model that way (the deployable form of a
weight-only model, which XNNPACK cannot run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import QDMError
from ..fileio import atomic_path
from .registry import QuantizedModel, WeightFile
from .stats import collect_input_stats, weight_matrix

QMIN, QMAX = -8, 7
EPS = torch.finfo(torch.float32).smallest_normal


@dataclass(frozen=True)
class Int4Options:
    """Options every 4-bit method has."""

    group_size: int = 32  # input channels per scale, a multiple of 32 (XNNPACK); layers it does not divide stay float
    dynamic_activations: bool = True  # 8-bit dynamic activations, as XNNPACK runs 4-bit weights
    skip: tuple[str, ...] = ()  # names of Linear layers to leave in float

    def __post_init__(self) -> None:
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 32 \
                or self.group_size % 32:
            raise QDMError(f"group_size: expected a multiple of 32 (XNNPACK's 4-bit kernels), got {self.group_size!r}")


def int4_layers(model: nn.Module, options: Int4Options) -> tuple[dict[str, nn.Linear], dict[str, str]]:
    """The Linear layers to quantize, and the layers left in float with the reason."""
    targets, left = {}, {}
    names = {name for name, _ in model.named_modules()}
    unknown = [s for s in options.skip if s not in names]
    if unknown:
        raise QDMError(f"skip: no layer named {unknown[0]!r} in the model")
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if name in options.skip:
                left[name] = "skipped by option"
            elif module.in_features % options.group_size:
                left[name] = f"input width {module.in_features} not a multiple of group size {options.group_size}"
            else:
                targets[name] = module
        elif isinstance(module, nn.Conv2d):
            left[name] = "convolution (XNNPACK has no 4-bit convolution)"
    if not targets:
        raise QDMError(f"no Linear layer with an input width divisible by group size {options.group_size}")
    return targets, left


def rtn_scales(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """(out, in / group) float32 scales: max |w| of each group / 7.5 (torchao's symmetric choice)."""
    out_f, in_f = weight.shape
    amax = weight.detach().float().reshape(out_f, in_f // group_size, group_size).abs().amax(-1)
    return (amax / ((QMAX - QMIN) / 2)).clamp_min(EPS)


def quantize_groups(weight: torch.Tensor, scale: torch.Tensor, group_size: int) -> torch.Tensor:
    """int8 values in [-8, 7]: ``round(w / s)`` clamped, with ``s`` broadcast over each group."""
    inv = (1.0 / scale).repeat_interleave(group_size, dim=1)
    return torch.clamp(torch.round(weight * inv), QMIN, QMAX).to(torch.int8)


def dequantize_groups(q: torch.Tensor, scale: torch.Tensor, group_size: int) -> torch.Tensor:
    return q.to(scale.dtype) * scale.repeat_interleave(group_size, dim=1)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(out, in) int8 in [-8, 7] -> (out, in / 2) uint8, two's-complement nibbles, even column in the low half."""
    if q.shape[-1] % 2:
        raise QDMError(f"pack_int4: expected an even number of columns, got {q.shape[-1]}")
    nibbles = (q.to(torch.int16) & 0xF).to(torch.uint8)
    return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of ``pack_int4``."""
    low = (packed & 0xF).to(torch.int8)
    high = (packed >> 4).to(torch.int8)
    both = torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)
    return torch.where(both > 7, both - 16, both)


def packed_nbytes(q: torch.Tensor, scale: torch.Tensor) -> int:
    """Bytes of the packed integers plus float16 scales of one layer."""
    return pack_int4(q).numel() + scale.to(torch.float16).numel() * 2


def install_int4(linear: nn.Linear, q: torch.Tensor, scale: torch.Tensor, options: Int4Options) -> None:
    """Give ``linear`` a torchao 4-bit weight made of exactly ``q`` and ``scale`` (lowers to XNNPACK qb4w)."""
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor,
        IntxUnpackedToInt8TensorActivationQuantization,
    )

    act = IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN if options.dynamic_activations \
        else None
    weight = IntxUnpackedToInt8Tensor(
        qdata=q.to(torch.int8).contiguous(), scale=scale.float().contiguous(),
        zero_point=torch.zeros_like(scale, dtype=torch.int8), target_dtype=torch.int4,
        block_size=(1, options.group_size), dtype=torch.float32, activation_quantization=act)
    linear.weight = nn.Parameter(weight, requires_grad=False)


def layer_error(weight: torch.Tensor, dequantized: torch.Tensor, gram: torch.Tensor, rows: int) -> float:
    """Mean squared error of the layer's outputs over the calibration rows: trace(E G E^T) / (rows * out)."""
    err = (weight.double() - dequantized.double())
    return float(torch.einsum("oi,ij,oj->", err, gram, err) / (max(rows, 1) * weight.shape[0]))


def quantize_linears(method: str, model: nn.Module, options: Int4Options, calib: torch.Tensor, quantize_weight,
                     extra: dict | None = None) -> QuantizedModel:
    """The weight-only loop of int4-rtn and int4-gptq: each Linear's weight goes through
    ``quantize_weight(weight, stats) -> (q, scale)`` (``stats``: its calibration inputs' Gram matrix and row
    count), its output error on those inputs is recorded, and the integers are installed."""
    layers, left = int4_layers(model, options)
    stats = collect_input_stats(model, layers, calib, desc=f"{method}: layer inputs")
    quantized, errors = {}, {}
    for name, layer in layers.items():
        weight, s = weight_matrix(layer), stats[name]
        q, scale = quantize_weight(weight, s)
        quantized[name] = (q, scale)
        errors[name] = layer_error(weight, dequantize_groups(q, scale, options.group_size), s.gram, s.rows)
    return int4_result(method, model, options, quantized, left, {"layer_mse": errors, **(extra or {})})


def int4_result(method: str, model: nn.Module, options: Int4Options, quantized: dict[str, tuple],
                left: dict[str, str], extra: dict | None = None) -> QuantizedModel:
    """Install every layer's (q, scale) and describe the result."""
    modules = dict(model.named_modules())
    for name, (q, scale) in quantized.items():
        install_int4(modules[name], q, scale, options)
    acts = "int8 dynamic per token" if options.dynamic_activations else "float"
    no_pte = None if options.dynamic_activations else (
        "XNNPACK runs 4-bit weights only with 8-bit dynamic activations; the deployable form of this "
        "weight-only model is save_packed's file")
    notes = {"group_size": options.group_size, "int4_layers": sorted(quantized), "float_layers": left,
             "packed_int4_bytes": sum(packed_nbytes(q, s) for q, s in quantized.values()), **(extra or {})}
    scheme = (f"int4 weights, symmetric, groups of {options.group_size} (Linear layers); activations {acts}; "
              "XNNPACK qd8-f32-qb4w")
    return QuantizedModel(method, model, 4, scheme, notes, no_pte=no_pte)


def save_packed(model: nn.Module, path: str | Path) -> int:
    """Write the weights in their 4-bit storage form (safetensors; returns its size in bytes).

    Each 4-bit Linear weight becomes ``<name>.qweight`` (uint8, two values a byte, ``pack_int4``) and
    ``<name>.scales`` (float16, one per group); every other parameter and buffer stays as it is.
    """
    from safetensors.torch import save_file

    tensors = {}
    for name, value in model.state_dict().items():
        if hasattr(value, "qdata") and getattr(value, "target_dtype", None) == torch.int4:
            stem = name.removesuffix(".weight")
            tensors[f"{stem}.qweight"] = pack_int4(value.qdata)
            tensors[f"{stem}.scales"] = value.scale.to(torch.float16)
        else:
            tensors[name] = value.detach().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return Path(path).stat().st_size


# The deployable file of a weight-only int4 result (no .pte): what int4 methods declare at registration.
PACKED = WeightFile(".safetensors", save_packed)


def int4_summary(notes: dict) -> str:
    return f"{len(notes['int4_layers'])} Linear in int4, {len(notes['float_layers'])} layers float"
