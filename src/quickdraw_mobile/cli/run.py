"""``qdm run``: the whole pipeline on one config."""

from __future__ import annotations

import argparse


def _cmd_run(args: argparse.Namespace) -> int:
    from ..pipeline import run

    state = run(args.config, args.out)
    print(f"report: {state['report']['result']['markdown']}")
    return 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "run",
        help="the whole pipeline on one config, with a report",
        description="Run the whole pipeline into one run folder: data -> train -> evaluate (test split) -> "
        "quantize (every method) -> export (FP32 and INT8 .pte and .onnx, each verified in its runtime) -> bench "
        "-> report (report.md, report.json). Stages are cached: a re-run redoes only the stages whose config "
        "section or inputs changed, and an interrupted training stage resumes. Default config: the embedded real "
        "subset, within 15 minutes on 2 CPU cores (configs/default.yaml; configs/shared52.yaml and "
        "configs/seed344.yaml are larger recipes).",
    )
    p.add_argument("--config", default=None, help="pipeline YAML (default: the packaged configs/default.yaml)")
    p.add_argument("--out", default="runs/default", help="run folder (default runs/default)")
    p.set_defaults(func=_cmd_run)
