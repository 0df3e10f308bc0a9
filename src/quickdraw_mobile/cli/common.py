"""What several verbs share."""

from __future__ import annotations

import argparse
from pathlib import Path

OFFICIAL_HINT = "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/"


def data_dir(text: str) -> Path:
    """A store folder, or ``embedded`` for the real subset shipped inside the package."""
    if text == "embedded":
        from ..data.embedded import embedded_store

        return embedded_store()
    return Path(text)


def add_device_option(parser: argparse.ArgumentParser, what: str = "the eager model", default: str = "auto") -> None:
    """``--device``: where ``what`` runs (resolved by ``device.resolve_device``)."""
    parser.add_argument("--device", default=default,
                        help=f"where {what} runs: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps "
                        f"(default: {default})")


METHODS = "{methods}"  # replaced in help texts by the quantization methods, read from their registry


class MethodsHelp(argparse.HelpFormatter):
    """Help that names the quantization methods: read from the registry only when help is shown (it loads torch)."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(_with_methods(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return _with_methods(super()._expand_help(action))


def _with_methods(text: str) -> str:
    if METHODS not in text:
        return text
    from ..quant.registry import method_names_help

    return text.replace(METHODS, method_names_help())
