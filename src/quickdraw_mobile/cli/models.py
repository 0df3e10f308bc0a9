"""``qdm models``: the registered models with parameters and MACs."""

from __future__ import annotations

import argparse


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models import create_model, list_models
    from ..models.profile import count_macs, count_params

    print(f"{'model':<16}{'params':>12}{'MACs':>14}")
    for name in list_models():
        model = create_model(name, num_classes=args.num_classes)
        print(f"{name:<16}{count_params(model):>12,}{count_macs(model):>14,}")
    return 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("models", help="list the registered models with parameters and MACs",
                         description="List registered models with parameter count and MACs for one 1x28x28 input.")
    p.add_argument("--num-classes", type=int, default=52, help="head size used for the count (default 52)")
    p.set_defaults(func=_cmd_models)
