"""``qdm evaluate``: metrics and plots on the held-out test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device_option, data_dir


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate.runner import evaluate

    metrics = evaluate(args.model, data_dir(args.data), args.out, split=args.split, plots=not args.no_plots,
                       device=args.device)
    print(f"{args.split}: top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  MAP@3 {metrics['map3']:.4f}"
          f"  ({metrics['n']} drawings) -> {Path(args.out) / 'metrics.json'}")
    return 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("evaluate", help="metrics and plots on the held-out test split",
                         description="Evaluate a model on a store's test split (never used for model selection): "
                         "top-1, top-5, MAP@3, per-class precision/recall/F1, confusion; metrics.json and plots.")
    p.add_argument("--model", required=True, help="run folder or a bundled model (default, default345)")
    p.add_argument("--data", required=True, help="store folder, or 'embedded'")
    p.add_argument("--split", default="test", help="test (default), val or train")
    p.add_argument("--out", required=True, help="output folder for metrics.json and plots")
    p.add_argument("--no-plots", action="store_true", help="metrics only")
    add_device_option(p)
    p.set_defaults(func=_cmd_evaluate)
