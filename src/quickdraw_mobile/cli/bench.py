"""``qdm bench``: size, latency, throughput and memory across runtimes."""

from __future__ import annotations

import argparse

from ..errors import QDMError
from ..options import CALIBRATION_SIZE
from .common import add_device_option, data_dir


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.report import markdown_table, write_report
    from ..bench.runner import run_bench

    try:
        threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    except ValueError as exc:
        raise QDMError(f"--threads: expected comma-separated thread counts, e.g. 1,2 ({exc})") from exc
    if threads is not None and min(threads) < 1:
        raise QDMError(f"--threads: expected positive thread counts, got {args.threads}")
    result = run_bench(args.model, args.out, data_dir=data_dir(args.data) if args.data else None, runs=args.runs,
                       warmup=args.warmup, batch=args.batch, threads=threads, memory=not args.no_memory,
                       native=not args.no_native,
                       export=not args.no_export, calib=args.calib, device=args.device)
    paths = write_report(result, args.out)
    print(markdown_table(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "bench",
        help="size, latency, throughput and memory across runtimes",
        description="Benchmark models in their runtimes: a run folder or 'default' in eager PyTorch (and, unless "
        "--no-export, exported and verified to FP32/INT8 .pte and .onnx under OUT/artifacts), a .pte in "
        "ExecuTorch (and, with qdm-native built, in ExecuTorch's C++ runtime), an .onnx in ONNX Runtime. Measures size on disk, single-drawing latency p50/p95 on 1 thread "
        "and all threads, batch throughput, achieved GMAC/s against the machine's measured fp32 peak, and the "
        "peak memory of a fresh process that loads and runs the model. Writes bench.json, bench.md, bench.png.",
    )
    p.add_argument("--model", required=True, nargs="+", help="run folders, 'default', .pte or .onnx files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", default=None, help="the model's store: exports calibrate on its training split and "
                   "top-1 is measured on its test split (default: the bundled samples of 'default')")
    p.add_argument("--runs", type=int, default=200, help="timed single-drawing runs (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed warm-up runs (default 20)")
    p.add_argument("--batch", type=int, default=32, help="batch size for throughput (default 32)")
    p.add_argument("--threads", default=None, help="thread counts, comma-separated (default: 1 and all cores)")
    p.add_argument("--calib", type=int, default=CALIBRATION_SIZE,
                   help="calibration drawings for the int8 exports")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--no-native", action="store_true", help="skip the ExecuTorch C++ rows (qdm-native, built by "
                   "scripts/setup.sh from native/)")
    p.add_argument("--no-export", action="store_true", help="bench run folders in eager PyTorch only")
    add_device_option(p, "the eager rows (run folders, 'default'; artifacts run on the CPU)", default="cpu")
    p.set_defaults(func=_cmd_bench)
