"""The official stroke files of a folder laid out as ``simplified/<class>.ndjson`` and ``raw/<class>.ndjson`` (the
shared data's layout): each class's distinct drawings, and a fixed per-class hold-out of them.

The two formats hold mostly the same drawings, so a drawing is taken once by its ``key_id``: from ``simplified/``
when it is there, else from ``raw/`` (rendered by ``data.render`` either way). The order is fixed (simplified
first, each file's own order), so row numbers and the hold-out derived from them are the same on every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import QDMError
from .render import render_many

STROKE_FORMATS = ("simplified", "raw")  # the preferred one first


@dataclass
class ClassStrokes:
    """One class's distinct drawings: drawing i is ``key_ids[i]``, with ``strokes[i]`` in format ``formats[i]``."""

    key_ids: list[str]
    formats: list[str]
    strokes: list

    def render(self) -> np.ndarray:
        """(N, 784) uint8, row i the drawing ``key_ids[i]``."""
        rows = [render_many([s for s, f in zip(self.strokes, self.formats, strict=True) if f == fmt], fmt)
                for fmt in STROKE_FORMATS if fmt in self.formats]
        return np.concatenate(rows)  # the formats come in STROKE_FORMATS order (see distinct_strokes)


def distinct_strokes(root: str | Path, name: str) -> ClassStrokes:
    """The distinct drawings of class ``name`` under ``root`` (simplified first, then raw-only key_ids)."""
    root = Path(root)
    seen: set[str] = set()
    found = ClassStrokes([], [], [])
    for fmt in STROKE_FORMATS:
        path = root / fmt / f"{name}.ndjson"
        if not path.exists():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key_id, strokes = str(row["key_id"]), row["drawing"]
            except (ValueError, KeyError, TypeError) as exc:
                raise QDMError(f"{path}:{number}: expected a JSON object with key_id and drawing ({exc})") from exc
            if key_id not in seen:
                seen.add(key_id)
                found.key_ids.append(key_id)
                found.formats.append(fmt)
                found.strokes.append(strokes)
    if not found.key_ids:
        raise QDMError(f"{root}: no drawings of {name!r} in {' or '.join(f'{f}/' for f in STROKE_FORMATS)}")
    return found


def hold_out(count: int, class_index: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(held, rest)`` of a class of ``count`` drawings: ``n`` held out (sorted), chosen by
    ``(seed, class_index)``, and the others in the permutation's order."""
    if count <= n:
        raise QDMError(f"hold-out: class {class_index} has {count} drawings, fewer than {n} + 1")
    order = np.random.default_rng([seed, class_index]).permutation(count)
    return np.sort(order[:n]), order[n:]
