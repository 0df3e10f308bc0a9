"""The 345 official Quick, Draw! class names, and resolving user-given names against them."""

from __future__ import annotations

import difflib
import random
from functools import cache
from importlib import resources

from ..errors import QDMError

NUM_CLASSES = 345


@cache
def all_classes() -> tuple[str, ...]:
    """All official class names, in the official (alphabetical) order. Names keep their spaces."""
    text = resources.files(__package__).joinpath("categories.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:
        raise QDMError(f"categories.txt: expected {NUM_CLASSES} unique class names, found {len(set(names))}")
    return names


def suggest(name: str, candidates: tuple[str, ...] | list[str] | None = None, n: int = 3) -> list[str]:
    """The closest class names to ``name`` (case-insensitive)."""
    pool = list(candidates if candidates is not None else all_classes())
    lowered = {c.lower(): c for c in pool}
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)]


def resolve_class(name: str, candidates: tuple[str, ...] | list[str] | None = None) -> str:
    """Return the official spelling of ``name`` (case and surrounding space are forgiven) or raise."""
    pool = candidates if candidates is not None else all_classes()
    wanted = name.strip().lower().replace("_", " ")
    for official in pool:
        if official.lower() == wanted:
            return official
    hint = suggest(name, pool)
    did_you_mean = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
    raise QDMError(f"unknown class {name!r}{did_you_mean}")


def parse_class_list(text: str, candidates: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Parse ``"cat,The Eiffel Tower"`` into official names, keeping the user's order, without duplicates."""
    names = [part for part in (p.strip() for p in text.split(",")) if part]
    if not names:
        raise QDMError("--classes: expected a comma-separated list of class names, got nothing")
    resolved = [resolve_class(n, candidates) for n in names]
    return list(dict.fromkeys(resolved))


def sample_classes(n: int, seed: int = 0, candidates: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """``n`` distinct class names drawn at random with ``seed``, returned in official order."""
    pool = list(candidates if candidates is not None else all_classes())
    if not 1 <= n <= len(pool):
        raise QDMError(f"--num-classes: expected 1..{len(pool)}, got {n}")
    chosen = set(random.Random(seed).sample(pool, n))
    return [c for c in pool if c in chosen]
