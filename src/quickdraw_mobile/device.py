"""Where a model computes and in which precision: one module decides, the verbs only pass ``--device`` on.

``resolve_device`` turns ``auto | cpu | cuda | cuda:N | mps`` into a ``torch.device`` (``auto``: CUDA, then MPS,
then the CPU); the policy functions below take the device (and, where it matters, what it supports) as
arguments, so every decision is a pure function that the tests check on a CPU:

- ``precision``: autocast dtype and loss scaling. CUDA: bfloat16 where supported, else float16 with a
  ``GradScaler``; CPU and MPS: bfloat16 only when the config asks for it (``bf16``), else float32.
- ``optimizer_options``: fused AdamW on CUDA, the multi-tensor (foreach) one elsewhere.
- ``to_device``: host batches pinned and copied with ``non_blocking`` on CUDA; untouched on the CPU.
- ``backend_settings``: TF32 for float32 matmuls and convolutions on CUDA.
- ``ddp_backend``: NCCL on CUDA, gloo on the CPU; ``LOCAL_RANK`` picks ``cuda:LOCAL_RANK``.

``peak_gmacs_of`` gives the machine's peak for the training log's model FLOPs utilization (as nanoGPT's MFU):
a table of the tensor-core bfloat16 peaks of known GPUs, or a short measurement of a dense convolution on the
CPU (``conv_peak_gmacs``, also what ``benchmarks/bench_train.py`` reads a CNN against).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import QDMError

DEVICE_NAMES = "auto, cpu, cuda, cuda:N, mps"


@dataclass(frozen=True)
class Available:
    """What this machine has: CUDA devices and whether MPS (Apple GPUs) is there."""

    cuda_count: int
    mps: bool

    @classmethod
    def here(cls) -> Available:
        mps = getattr(torch.backends, "mps", None)
        return cls(torch.cuda.device_count() if torch.cuda.is_available() else 0,
                   bool(mps is not None and mps.is_available()))

    def names(self) -> list[str]:
        return ["cpu", *(f"cuda:{i}" for i in range(self.cuda_count)), *(["mps"] if self.mps else [])]


def resolve_device(name: str = "auto", *, available: Available | None = None,
                   local_rank: int | None = None) -> torch.device:
    """The device ``name`` stands for. ``auto`` takes CUDA, then MPS, then the CPU; ``cuda`` (or ``auto`` on a
    CUDA machine) is ``cuda:LOCAL_RANK`` under torchrun (``local_rank``; default: the environment's), else
    ``cuda:0``. A device that is not there is a one-line error naming the ones that are."""
    have = available or Available.here()
    if local_rank is None and os.environ.get("LOCAL_RANK", "").isdigit():
        local_rank = int(os.environ["LOCAL_RANK"])
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if have.cuda_count else "mps" if have.mps else "cpu"
    kind, _, index = text.partition(":")
    there = ", ".join(have.names())
    if kind == "cpu" and not index:
        return torch.device("cpu")
    if kind == "mps" and not index:
        if not have.mps:
            raise QDMError(f"--device mps: no MPS device on this machine (available: {there})")
        return torch.device("mps")
    if kind != "cuda" or (index and not index.isdigit()):
        raise QDMError(f"--device {name}: expected one of {DEVICE_NAMES}")
    number = int(index) if index else (local_rank or 0)
    if have.cuda_count == 0:
        raise QDMError(f"--device {name}: no CUDA device on this machine (available: {there})")
    if number >= have.cuda_count:
        raise QDMError(f"--device {name}: no cuda:{number} on this machine (available: {there})")
    return torch.device("cuda", number)


@dataclass(frozen=True)
class Precision:
    """The forward pass's autocast (``dtype`` None: float32, no autocast) and whether the loss is scaled."""

    device_type: str
    dtype: torch.dtype | None
    scaled: bool = False  # float16 needs a GradScaler against gradients underflowing

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.scaled else None


def precision(device: torch.device, bf16: bool, *, bf16_supported: bool | None = None) -> Precision:
    """The training precision on ``device``: mixed on CUDA always (bfloat16, or float16 with loss scaling where
    bfloat16 is not supported: pre-Ampere GPUs); elsewhere bfloat16 autocast only with ``bf16``."""
    if device.type == "cuda":
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported()
        return Precision("cuda", torch.bfloat16) if bf16_supported else Precision("cuda", torch.float16, True)
    return Precision(device.type, torch.bfloat16 if bf16 else None)


def optimizer_options(device: torch.device) -> dict:
    """AdamW's implementation: fused (one kernel for all parameters) on CUDA, multi-tensor elsewhere."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def pinned(device: torch.device) -> bool:
    """Whether host batches are pinned and copied asynchronously (``non_blocking``): on CUDA."""
    return device.type == "cuda"


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``; a host tensor bound for CUDA is pinned first so the copy can overlap compute."""
    if x.device == device:
        return x
    if pinned(device) and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def backend_settings(device: torch.device) -> dict[str, object]:
    """The backend switches a run on ``device`` sets: TF32 for float32 matmuls and convolutions on CUDA."""
    if device.type != "cuda":
        return {}
    return {"float32_matmul_precision": "high", "cuda.matmul.allow_tf32": True, "cudnn.allow_tf32": True}


def apply_backend_settings(device: torch.device) -> None:
    settings = backend_settings(device)
    if settings:
        torch.set_float32_matmul_precision(settings["float32_matmul_precision"])
        torch.backends.cuda.matmul.allow_tf32 = settings["cuda.matmul.allow_tf32"]
        torch.backends.cudnn.allow_tf32 = settings["cudnn.allow_tf32"]


def ddp_backend(device: torch.device) -> str:
    """The process group's backend: NCCL reduces CUDA tensors, gloo CPU ones."""
    return "nccl" if device.type == "cuda" else "gloo"


def device_name(device: torch.device) -> str:
    """What the device is, in words: the GPU's name, or the CPU's architecture."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    import platform

    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


# Dense (no sparsity) bfloat16 tensor-core peaks in TFLOP/s from the vendors' data sheets; for the GeForce cards
# the rate with float32 accumulation, which is what autocast uses. First match of the name wins, so the more
# specific names come first. T4 and V100 have no bfloat16: their float16 peak (they train in float16 here).
GPU_BF16_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("A100", 312.0),
    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("T4", 65.0),
    ("V100", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0),
)


def gpu_peak_gmacs(name: str) -> float | None:
    """The GPU ``name``'s bfloat16 tensor peak in GMAC/s (a MAC is two FLOPs), None for a GPU not in the table."""
    for key, tflops in GPU_BF16_TFLOPS:
        if key.lower() in name.lower():
            return tflops * 1e3 / 2
    return None


def conv_peak_gmacs(threads: int, channels: int = 256, size: int = 7, batch: int = 64, repeats: int = 10,
                    dtype: str = "float32") -> float:
    """GMAC/s of the best of ``repeats`` dense 3x3 convolutions (``channels`` in and out, ``size`` x ``size``,
    channels_last, inference) of ``dtype`` on ``threads`` CPU threads. On some CPUs the convolution library
    (oneDNN) gets more out of the cores than the matmul one, so a CNN is better read against this. Uses its own
    random generator: measuring inside a training run leaves torch's global one (the run's) as it was."""
    kind = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(channels, channels, 3, 3, generator=generator).to(kind)
    x = torch.randn(batch, channels, size, size, generator=generator).to(kind)
    weight, x = (t.contiguous(memory_format=torch.channels_last) for t in (weight, x))
    with torch.no_grad():
        seconds = best_seconds(threads, lambda: torch.nn.functional.conv2d(x, weight, padding=1), repeats)
    return batch * channels * channels * 9 * size * size / seconds / 1e9


def best_seconds(threads: int, call: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """The fastest of ``repeats`` timed ``call()`` on ``threads`` torch threads (after ``warmup`` untimed ones)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            call()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        return best
    finally:
        torch.set_num_threads(before)


def peak_gmacs_of(device: torch.device, autocast: Precision, *, threads: int = 1,
                  measure: bool = True) -> tuple[float | None, str]:
    """(peak GMAC/s of one process on ``device``, where the number comes from). A GPU: the table (its bfloat16
    peak whatever the autocast). The CPU: a brief convolution measurement in the run's precision (bfloat16
    with bf16 autocast, else float32), skipped (None) unless ``measure``."""
    if device.type == "cuda":
        name = device_name(device)
        peak = gpu_peak_gmacs(name)
        return peak, f"bf16 tensor peak of {name} (data sheet)" if peak else f"{name}: not in the peak table"
    if device.type == "cpu" and measure:
        dtype = "bfloat16" if autocast.dtype == torch.bfloat16 else "float32"
        return conv_peak_gmacs(threads, repeats=3, dtype=dtype), f"measured {dtype} 3x3 conv, {threads} threads"
    return None, "not measured"
