"""``qdm quantize``: quantization methods compared side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..options import CALIBRATION_SIZE
from .common import METHODS, MethodsHelp, data_dir


def _cmd_quantize(args: argparse.Namespace) -> int:
    from ..quant import parse_methods
    from ..quant.compare import compare, parse_options

    rows = compare(args.model, parse_methods(args.methods), args.out,
                   data_dir=data_dir(args.data) if args.data else None, calib=args.calib, seed=args.seed,
                   options=parse_options(args.set), threads=args.threads, runs=args.runs,
                   device=args.device)
    print((Path(args.out) / "comparison.md").read_text(), end="")
    print(f"wrote {len(rows)} rows to {Path(args.out) / 'comparison.json'}, comparison.md and two plots")
    return 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "quantize",
        help="compare quantization methods side by side (INT8, 4-bit, mixed, pruned)",
        formatter_class=MethodsHelp,
        description="Apply each method to the model with the same calibration drawings (class-balanced, from its "
        "training split), write its deployable artifact (ExecuTorch .pte, XNNPACK) and measure it in its "
        "runtime on the same test split: top-1, top-5, change against fp32, size on disk, single-drawing "
        "latency p50, peak memory. Methods: " + METHODS + ". Writes comparison.json, comparison.md, "
        "accuracy_vs_size.png, "
        "accuracy_vs_latency.png and artifacts/.",
    )
    p.add_argument("--model", required=True, help="run folder or a bundled model (default, default345)")
    p.add_argument("--methods", default="all", help="'all' (default) or a comma-separated list of methods")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", default=None, help="the store the model was trained on: calibration and fine-tuning "
                   "use its training split, scores its test split (required for the methods that fine-tune; for "
                   "'default' without it, the bundled real samples are used)")
    p.add_argument("--calib", type=int, default=CALIBRATION_SIZE,
                   help=f"calibration drawings (default {CALIBRATION_SIZE})")
    p.add_argument("--seed", type=int, default=0, help="picks the calibration drawings and seeds fine-tuning")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                   help="a method option, e.g. int8-qat.steps=500 or int4-gptq.act_order=true (repeatable)")
    p.add_argument("--device", default="cpu",
                   help="where the QAT and pruning fine-tunes run: cpu (default), auto, cuda, cuda:N, mps; "
                   "calibration, the artifacts and their measurements stay on the CPU they are made for")
    p.add_argument("--threads", type=int, default=1, help="threads for the latency measurement (default 1)")
    p.add_argument("--runs", type=int, default=100, help="timed single-drawing runs per artifact (default 100)")
    p.set_defaults(func=_cmd_quantize)
