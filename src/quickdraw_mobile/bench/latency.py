"""Timing one model call: single-image latency percentiles, batch throughput, and the machine's peaks.

Every measurement warms up first (allocators, kernel selection, weight packing), then times each call on its own
with ``perf_counter``. Percentiles rather than means: on a shared machine the tail is noise from other processes,
the median is the model. A peak is what the same thread count gets from a large matrix multiply (fp32, or bf16 as under
autocast), in multiply-accumulates per second, so a model's achieved GMAC/s can be read against it; the dense 3x3
convolution peak, which training reads its steps against, is ``device.conv_peak_gmacs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

RunFn = Callable[[np.ndarray], object]


def time_calls(run: RunFn, x: np.ndarray, runs: int, warmup: int) -> np.ndarray:
    """Seconds taken by each of ``runs`` calls ``run(x)``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run(x)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        run(x)
        times[i] = time.perf_counter() - start
    return times


def latency(run: RunFn, x: np.ndarray, runs: int = 200, warmup: int = 20) -> dict:
    """p50 / p95 / mean in milliseconds of ``run(x)``."""
    times = time_calls(run, x, runs, warmup) * 1e3
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
            "mean_ms": float(times.mean()), "runs": runs}


def throughput(run: RunFn, batch: np.ndarray, runs: int = 20, warmup: int = 3) -> dict:
    """Images per second of ``run`` on a whole batch, from the median call."""
    seconds = float(np.median(time_calls(run, batch, runs, warmup)))
    return {"batch": len(batch), "images_per_s": len(batch) / seconds, "ms_per_batch": seconds * 1e3,
            "runs": runs}


def peak_gmacs(threads: int, size: int = 1024, repeats: int = 10, dtype: str = "float32") -> float:
    """GMAC/s of the best of ``repeats`` ``size`` x ``size`` matmuls of ``dtype`` (a torch dtype name: float32,
    bfloat16) on ``threads`` torch threads."""
    import torch

    from ..device import best_seconds

    a, b = (torch.randn(size, size, dtype=getattr(torch, dtype)) for _ in range(2))
    return size**3 / best_seconds(threads, lambda: torch.mm(a, b), repeats) / 1e9  # size^3 MACs (2 size^3 FLOPs)
