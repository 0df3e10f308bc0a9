"""Config dataclasses that describe themselves: each field's help text and command-line name in its metadata.

A config section is a dataclass whose fields are made with ``option``; ``leaves`` walks a config (and the sections
nested in it) into one flat list of options, which the command line turns into flags and the YAML loader uses to
read the old flat spelling of a nested option (``mixup_alpha`` for ``mix.mixup_alpha``).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

CALIBRATION_SIZE = 2048  # class-balanced calibration drawings for the INT8 and 4-bit methods


def option(default: Any = dataclasses.MISSING, help: str = "", *, flat: str | None = None,  # noqa: A002
           flag: str | None = None, factory: Any = dataclasses.MISSING, append: bool = False) -> Any:
    """A dataclass field with its help text. ``flat``: its name outside its section (the old flat config key and
    the command-line name; default: the field's name); ``flag``: a command-line spelling other than ``flat``;
    ``append``: a list given by repeating the flag."""
    metadata = {"help": help, "flat": flat, "flag": flag, "append": append}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Leaf:
    """One settable option of a (nested) config: where it lives and how it is spelled outside it."""

    path: tuple[str, ...]  # attribute names from the top config down, e.g. ("mix", "prob")
    flat: str  # the flat name: old flat YAML key and argparse dest, e.g. "mix_prob"
    flag: str  # the command-line flag without dashes, e.g. "mix-prob"
    kind: Any  # the field's resolved type
    default: Any
    help: str
    append: bool


def is_section(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    """Every option of the config class ``cls``, sections expanded, in field order."""
    found: list[Leaf] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if is_section(kind):
            found.extend(leaves(kind, (*prefix, f.name)))
            continue
        flat = f.metadata.get("flat") or f.name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        found.append(Leaf((*prefix, f.name), flat, (f.metadata.get("flag") or flat).replace("_", "-"), kind,
                          default, f.metadata.get("help", ""), bool(f.metadata.get("append"))))
    return found


def plain(value: Any) -> Any:
    """``value`` with dataclasses as dicts and tuples as lists: what YAML and JSON can hold."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
