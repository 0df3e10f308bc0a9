"""``qdm export``: ExecuTorch .pte or ONNX, FP32 or INT8, verified in its own runtime."""

from __future__ import annotations

import argparse

from ..artifact_names import RUNTIMES, either
from ..options import CALIBRATION_SIZE
from .common import METHODS, MethodsHelp, data_dir


def _cmd_export(args: argparse.Namespace) -> int:
    from ..export.pipeline import export_model

    data = data_dir(args.data) if args.data else None
    meta = export_model(args.model, args.format, args.quant, args.out, data_dir=data, calib=args.calib,
                        seed=args.seed)
    art, check = meta["artifact"], meta["verification"]
    print(f"wrote {meta['path']} ({art['bytes'] / 1e3:,.1f} KB, {art['runtime']}, quant {art['quant']}) "
          f"+ {art['file']}.metadata.json + {art['file']}.labels.txt")
    for line in meta["lowering"]:
        print(line)
    print(f"verified in {art['runtime']} on {check['source']}: top-1 agreement with eager "
          f"{100 * check['top1_agreement']:.2f}% ({check['disagreements']} of {check['drawings']} differ), "
          f"largest logit difference {check['max_abs_logit_diff']:.3g}; top-1 eager {100 * check['eager_top1']:.2f}%"
          f", exported {100 * check['exported_top1']:.2f}%")
    return 0


def _quant_help() -> str:
    """What --quant takes for each runtime: the quantization registry's methods, or the runtime's own values."""
    by_registry = either([r.suffix for r in RUNTIMES if r.quants is None])
    own = "; ".join(f"--format {r.format} takes {either(list(r.quants))} ({r.display}'s own quantization)"
                    for r in RUNTIMES if r.quants is not None)
    return (f"none (FP32, default), int8 (= int8-ptq for a {by_registry}) or, for a {by_registry}, a method of "
            f"'qdm quantize': {METHODS}" + (f"; {own}" if own else ""))


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "export",
        help="export to ExecuTorch .pte (XNNPACK) or ONNX, FP32 or quantized, verified in its own runtime",
        formatter_class=MethodsHelp,
        description="Export a model for phones: --format pte (ExecuTorch, XNNPACK delegate) or onnx; --quant none "
        "(FP32), int8 (static quantization calibrated on class-balanced training drawings; for a .pte it is "
        "int8-ptq) or, for a .pte, any method of 'qdm quantize', whose artifact in that study this file then is "
        "(same calibration drawings, same seed). The file is "
        "loaded in its own runtime and compared with the eager model on real test drawings before it is written "
        "(an FP32 export that changes more than 0.5% of top-1 answers is an error). Beside it: "
        "FILE.metadata.json (the exact input contract, classes, how it was made and verified) and "
        "FILE.labels.txt.",
    )
    p.add_argument("--model", required=True, help="run folder or a bundled model (default, default345)")
    p.add_argument("--format", required=True, help=either([f"{r.format} ({r.display})" for r in RUNTIMES]))
    p.add_argument("--quant", default="none", help=_quant_help())
    p.add_argument("--out", required=True, help=f"output file ({either([r.suffix for r in RUNTIMES])})")
    p.add_argument("--data", default=None, help="the store the model was trained on (required for run folders: "
                   "calibration and verification use the run's own training and test splits); for 'default', "
                   "its bundled real samples are used when omitted")
    p.add_argument("--calib", type=int, default=CALIBRATION_SIZE,
                   help=f"calibration drawings (default {CALIBRATION_SIZE})")
    p.add_argument("--seed", type=int, default=0, help="which calibration drawings are picked (default 0)")
    p.set_defaults(func=_cmd_export)
