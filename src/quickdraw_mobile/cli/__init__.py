"""The ``qdm`` command line: thin argument parsing over the stage functions, one module per verb.

A verb is a module of this package with ``add_parser(verbs)`` (which sets ``func`` on its parser) and one line in
``VERBS``. Stage modules are imported inside each handler so that ``qdm --help`` stays fast (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import QDMError

# the verbs in the order `qdm --help` lists them: each is cli/<name>.py
VERBS = ["data", "train", "evaluate", "predict", "models", "export", "bench", "quantize", "extend", "run", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qdm",
        description="QuickDraw Mobile: Quick, Draw! doodles to a phone-ready classifier. "
        "Each verb is one stage of the pipeline; 'qdm VERB --help' explains it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in VERBS:
        importlib.import_module(f"{__name__}.{name}").add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except QDMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qdm data info DIR | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0
    except OSError as exc:  # a file or folder the stage could not read or write (read-only, full, not a folder)
        from ..fileio import describe_os_error

        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
