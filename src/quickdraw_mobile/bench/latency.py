"""Timing one model call: single-image latency percentiles, batch throughput, and the machine's fp32 peak.

Every measurement warms up first (allocators, kernel selection, weight packing), then times each call on its own
with ``perf_counter``. Percentiles rather than means: on a shared machine the tail is noise from other processes,
the median is the model. The peak is what the same thread count gets from a large fp32 matrix multiply (the best
case for a CPU), in multiply-accumulates per second, so a model's achieved GMAC/s can be read against it.
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


def peak_gmacs(threads: int, size: int = 1024, repeats: int = 10) -> float:
    """GMAC/s of the best of ``repeats`` fp32 ``size`` x ``size`` matmuls on ``threads`` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        best = time_calls(lambda _: torch.mm(a, b), a.numpy(), repeats, warmup=2).min()
    finally:
        torch.set_num_threads(before)
    return size**3 / best / 1e9  # size^3 multiply-accumulates (2 * size^3 FLOPs)
