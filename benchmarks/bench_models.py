"""Size, MACs and eager CPU forward latency of every registered model at its default configuration.

    python benchmarks/bench_models.py [--models cnn,vit_tiny] [--repeats 20] [--threads N]

Latency is the fastest of ``--repeats`` timed forward passes (after warm-up; the fastest is the run least disturbed
by other processes) in eval mode under ``torch.inference_mode``, for batch 1 and batch 256 of 1x28x28 inputs.
Numbers hold for this machine and run only.
"""

from __future__ import annotations

import argparse
import time

import torch

from quickdraw_mobile.models import create_model, describe, list_models


def best_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(max(2, repeats // 5)):  # warm-up: allocator, oneDNN kernel selection
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(list_models()), help="comma-separated model names")
    parser.add_argument("--num-classes", type=int, default=52)
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed runs for batch 1 (batch 256: a quarter)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, {args.threads} threads, {args.num_classes} classes, input 1x28x28")
    header = (
        f"{'model':<14}{'params':>11}{'MACs':>10}{'fp32 MB':>9}{'b1 ms':>9}{'b256 ms':>10}{'b256 img/s':>12}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        model = create_model(name.strip(), args.num_classes).eval()
        info = describe(model)
        b1 = best_ms(model, torch.randn(1, 1, 28, 28), args.repeats)
        b256 = best_ms(model, torch.randn(256, 1, 28, 28), max(3, args.repeats // 4))
        print(
            f"{name:<14}{info['params'] / 1e6:>10.3f}M{info['macs'] / 1e6:>9.1f}M{info['size_mb']:>9.2f}"
            f"{b1:>9.2f}{b256:>10.1f}{256e3 / b256:>12.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
