"""The export goals, measured in one run: the default model in eager PyTorch, ExecuTorch and ONNX Runtime.

    python benchmarks/bench_export.py [--model default] [--data STORE] [--runs 200] [--out DIR]

Exports FP32 and INT8 .pte and .onnx (each verified against eager) into OUT/artifacts, benches the five runtimes
(``qdm bench``: size, latency p50/p95 on 1 thread and all threads, batch-32 throughput, achieved GMAC/s against
the measured fp32 peak, peak memory of a fresh process), writes bench.json / bench.md / bench.png to OUT, and
prints the goal ratios:

- INT8 .pte size <= 0.27 x FP32 .pte size
- INT8 .pte single-image latency (p50) <= 0.6 x FP32 .pte, and no slower than ONNX Runtime INT8
- INT8 top-1 within 0.5 points of FP32 (the bundled test sample; with --data also the whole test split)

Numbers hold for this machine and this run only; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from quickdraw_mobile.bench.report import markdown_table, write_report
from quickdraw_mobile.bench.runner import run_bench
from quickdraw_mobile.export import load_artifact
from quickdraw_mobile.export.calibration import verification_set


def top1(path: str, drawings) -> float:
    return float((load_artifact(path).run_pixels(drawings.pixels).argmax(1) == drawings.labels).mean())


def goal(text: str, value: float, limit: float, at_most: bool = True) -> str:
    met = value <= limit if at_most else value >= limit
    return f"{text:<58}{value:>9.3f}   goal {'<=' if at_most else '>='} {limit:<6} {'met' if met else 'MISSED'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="run folder or 'default' (default)")
    parser.add_argument("--data", default=None, help="the model's store: calibration from its training split and "
                        "top-1 on its whole test split (default: the bundled samples)")
    parser.add_argument("--runs", type=int, default=200, help="timed single-image runs per setting")
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="qdm-bench-export-"))

    result = run_bench([args.model], out, data_dir=args.data, runs=args.runs)
    write_report(result, out)
    print(markdown_table(result))
    rows = {(r["runtime"], r["quant"]): r for r in result["results"]}
    pte32, pte8, ort8 = rows["executorch", "none"], rows["executorch", "int8"], rows["onnxruntime", "int8"]
    lines = [goal("INT8 .pte size / FP32 .pte size", pte8["size_bytes"] / pte32["size_bytes"], 0.27)]
    for t in pte8["latency"]:
        int8, fp32, ort = (row["latency"][t]["p50_ms"] for row in (pte8, pte32, ort8))
        lines.append(goal(f"INT8 .pte / FP32 .pte latency p50, {t} thread(s)", int8 / fp32, 0.6))
        lines.append(goal(f"INT8 .pte / ORT INT8 latency p50, {t} thread(s)", int8 / ort, 1.0))
    samples = [verification_set(args.model)]
    if args.data:
        samples.append(verification_set(args.model, args.data))
    for drawings in samples:
        fp32, int8 = top1(pte32["path"], drawings), top1(pte8["path"], drawings)
        print(f"top-1 on {drawings.source}: FP32 .pte {100 * fp32:.2f}%, INT8 .pte {100 * int8:.2f}%")
        lines.append(goal("FP32 - INT8 .pte top-1, points", 100 * (fp32 - int8), 0.5))
    print("\n".join(lines))
    print(f"wrote {out}/bench.json, bench.md, bench.png; artifacts in {out}/artifacts")


if __name__ == "__main__":
    main()
