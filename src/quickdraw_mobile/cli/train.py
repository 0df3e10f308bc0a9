"""``qdm train``: every option of ``TrainConfig`` is a flag, generated from its fields and their help."""

from __future__ import annotations

import argparse
import types
import typing

from ..errors import QDMError
from .common import data_dir

# what --resume may change: its length, and where it computes (checkpoints load onto any device); everything
# else comes from the run's config.yaml
RESUME_OPTIONS = {"epochs", "device"}


def _config_leaves():
    from ..options import leaves
    from ..train.config import TrainConfig

    return leaves(TrainConfig)


def _value_kind(kind):
    """``int | None`` -> int; other types as they are."""
    if typing.get_origin(kind) not in (typing.Union, types.UnionType):
        return kind
    return next(a for a in typing.get_args(kind) if a is not type(None))


def _comma_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",")]


def _add_option(parser: argparse.ArgumentParser, leaf) -> None:
    kind = _value_kind(leaf.kind)
    origin = typing.get_origin(kind) or kind
    shown = f" (default: {leaf.default})" if leaf.default not in (None, (), {}, []) else ""
    flag, common = f"--{leaf.flag}", {"dest": leaf.flat, "default": None}
    if kind is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=leaf.help + shown, **common)
    elif leaf.append:
        parser.add_argument(flag, action="append", metavar="MODEL", help=leaf.help, **common)
    elif origin is tuple:
        low_high = typing.get_args(kind)
        parser.add_argument(flag, nargs=len(low_high), type=low_high[0], metavar=("LOW", "HIGH"),
                            help=leaf.help + shown, **common)
    elif origin is list:
        parser.add_argument(flag, type=_comma_list, help=leaf.help, **common)
    elif origin is dict:
        parser.add_argument(flag, help=leaf.help, **common)  # JSON, read in the handler (one-line errors)
    else:
        parser.add_argument(flag, type=kind, help=leaf.help + shown, **common)


class _TrainParser(argparse.ArgumentParser):
    """Adds the training options when it is first used: they come from TrainConfig, whose modules import torch,
    and ``qdm --help`` or another verb should not wait for that."""

    _options_added = False

    def _add_config_options(self) -> None:
        if not self._options_added:
            self._options_added = True
            group = self.add_argument_group("training options (override the --config file's values)")
            for leaf in _config_leaves():
                _add_option(group, leaf)

    def parse_known_args(self, args=None, namespace=None):
        self._add_config_options()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_config_options()
        return super().format_help()


def _overrides(args: argparse.Namespace) -> dict:
    """The training options given on the command line (flat names), parsed."""
    import json

    given = {}
    for leaf in _config_leaves():
        value = getattr(args, leaf.flat)
        if value is not None and leaf.kind is dict:
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise QDMError(f"--{leaf.flag}: expected a JSON object ({exc})") from exc
        if value is not None:
            given[leaf.flat] = value
    return given


def _cmd_train(args: argparse.Namespace) -> int:
    from ..fileio import json_text
    from ..train import load_config
    from ..train.loop import train

    overrides = _overrides(args)
    if args.resume:
        flags = {leaf.flat: leaf.flag for leaf in _config_leaves()}
        refused = [f"--{flags.get(name, name)}" for name in [*overrides, "config", "out"]
                   if name not in RESUME_OPTIONS and getattr(args, name, None) is not None]
        if refused:
            raise QDMError(f"{', '.join(refused)}: not allowed with --resume (a run continues with its own "
                           "config.yaml; only --epochs may change its length, --device where it runs); start a new run "
                               "with --out instead")
        summary = train(None, data_dir(args.data), args.resume, resume=True, epochs=args.epochs,
                        device=overrides.get("device"))
    else:
        if not args.out:
            raise QDMError("--out: required (the run folder to create), or use --resume RUN_DIR")
        cfg = load_config(args.config, **overrides)
        summary = train(cfg, data_dir(args.data), args.out)
    print(json_text(summary, "the training summary"))
    return 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "train",
        help="train a model on a store into a run folder",
        description="Train a registered model (see 'qdm models'). The run folder gets the resolved config.yaml, "
        "model.safetensors (best on validation), labels.txt, metrics.csv, TensorBoard events and checkpoints/ "
        "(best.pt, last.pt). Ctrl-C stops cleanly and prints the command that continues the run: --resume RUN_DIR "
        "--data STORE continues bit-exactly with the run's own config.yaml. With --resume, only --epochs and --device may be "
        "given (a run trained on a GPU continues on a CPU and the reverse); --epochs changes the run's length (config.yaml is updated and the cosine schedule recomputed over the new "
        "length, so the result differs from a run started with that many epochs). Under "
        "'torchrun --nproc_per_node N' it trains with DistributedDataParallel.",
    )
    p.__class__ = _TrainParser  # argparse has no per-verb parser class; the subclass only adds lazily
    p.add_argument("--data", required=True, help="store folder, or 'embedded'")
    p.add_argument("--config", default=None, help="YAML file of training options (see configs/)")
    p.add_argument("--out", default=None, help="run folder to create")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run with its own config (only --epochs, to change its length, and "
                   "--device may be given)")
    p.set_defaults(func=_cmd_train)

