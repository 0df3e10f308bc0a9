"""A device self-check carried in every metadata.json: does this phone compute what the export computed?

At export time a few verification drawings are stored with this very artifact's answers (``build_selfcheck``).
An app runs them once on the device (``run_selfcheck`` here, ``qdm_selfcheck`` in the C++ runtime): it passes
when every top-1 class is the stored one and no logit is further than ``tolerance`` from the stored one. A CPU
whose kernels are broken (e.g. faulty INT8 kernels under an emulator) is far off and fails.

The drawings are ones the artifact gets right (when labels exist) by a margin of more than twice the tolerance,
so a device within tolerance cannot flip a top-1: the best-margin drawing of each class (classes in index order),
then the best margins of the rest, 16 at most. Format (``version`` 1; the C++ side reads exactly these fields):
``source``, ``drawings`` (N), ``bitmaps`` (N strings of 1568 lowercase hex digits: the 784 uint8 pixels,
row-major), ``expected_top1`` (N class indices), ``expected_logits`` (N rows of num_classes float32 values),
``tolerance`` and ``min_margin`` (the smallest top-1 minus top-2 logit among the drawings; > 2 * tolerance).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from ..data.render import PIXELS
from ..errors import QDMError


class Runnable(Protocol):
    """What the self-check needs of a loaded artifact (``export.runtime.Artifact``; not imported: it reads the
    metadata, whose checks live here)."""

    path: Path
    metadata: dict

    def run_pixels(self, pixels: np.ndarray) -> np.ndarray: ...


SELFCHECK_VERSION = 1
MAX_DRAWINGS = 16
# Tolerance relative to the largest |logit| on the verification set: FP32 kernels differ by rounding only;
# CPUs round INT8 requantization slightly differently, a broken kernel is far off.
REL_TOLERANCE = {"none": 1e-3, "int8": 5e-2, "int4": 5e-2}  # int4: 8-bit dynamic activations too
HEX_BITMAP = re.compile(f"[0-9a-f]{{{2 * PIXELS}}}")


def check_finite(logits: np.ndarray, what: str, drawings: str = "verification drawings") -> None:
    """A one-line error naming ``what`` when any row of ``logits`` holds NaN or infinity (say, NaN weights).

    The one check every verb that runs a model makes on what it computed, before writing anything: ``qdm export``
    (eager and exported logits), ``qdm predict``, ``qdm quantize`` (the model, then each method) and ``qdm bench``
    (each subject). Non-finite logits give NaN probabilities, and NaN is not JSON."""
    bad = ~np.isfinite(np.asarray(logits)).all(axis=1)
    if bad.any():
        raise QDMError(f"{what} produces non-finite logits (NaN or infinity) on {int(bad.sum())} of {len(bad)} "
                       f"{drawings}; nothing was written")


def margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit of each row, in float64 (exact for float32 logits)."""
    if logits.shape[1] < 2:
        raise QDMError(f"selfcheck: needs at least 2 classes to measure a margin, the model has {logits.shape[1]}")
    top2 = np.partition(logits.astype(np.float64), -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def choose_drawings(labels: np.ndarray | None, logits: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the chosen drawings: per class the best margin (classes in order), then the best of the rest."""
    top1, margin = logits.argmax(1), margins(logits)
    usable = margin > 2 * tolerance
    if labels is not None:
        usable &= top1 == labels
    rows = np.flatnonzero(usable)
    rows = rows[np.lexsort((rows, -margin[rows]))]  # best margin first, ties by position: deterministic
    _, first = np.unique(top1[rows], return_index=True)  # per class (in index order): its best-margin row
    per_class = rows[first][:MAX_DRAWINGS]
    rest = rows[~np.isin(rows, per_class)][: MAX_DRAWINGS - len(per_class)]
    return np.concatenate([per_class, rest])


def build_selfcheck(pixels: np.ndarray, labels: np.ndarray | None, logits: np.ndarray, quant: str,
                    source: str = "") -> dict | None:
    """The ``selfcheck`` of an artifact whose logits on the verification drawings ``pixels`` are ``logits``; None
    when no drawing is answered rightly by a clear enough margin (a model barely trained: the export goes on,
    and an app's self-check reports that it has no drawings)."""
    logits = np.asarray(logits, dtype=np.float32)
    check_finite(logits, "the model")
    tolerance = REL_TOLERANCE[quant] * float(np.abs(logits).max(initial=0.0))
    chosen = choose_drawings(labels, logits, tolerance)
    if len(chosen) == 0:
        return None
    picked = logits[chosen]
    return {
        "version": SELFCHECK_VERSION,
        "source": source,
        "drawings": len(chosen),
        "bitmaps": [np.ascontiguousarray(pixels[i], dtype=np.uint8).reshape(-1).tobytes().hex() for i in chosen],
        "expected_top1": [int(c) for c in picked.argmax(1)],
        "expected_logits": [[float(v) for v in row] for row in picked],
        "tolerance": tolerance,
        "min_margin": float(margins(picked).min()),
    }


def decode_bitmaps(selfcheck: dict) -> np.ndarray:
    """(N, 784) uint8 from the hex strings."""
    return np.stack([np.frombuffer(bytes.fromhex(b), dtype=np.uint8) for b in selfcheck["bitmaps"]])


def run_selfcheck(artifact: Runnable) -> dict:
    """Run the stored drawings through ``artifact`` (in this process's runtime) and compare with the stored answers."""
    selfcheck = artifact.metadata.get("selfcheck")
    if selfcheck is None:
        raise QDMError(f"{artifact.path}: its metadata has no self-check drawings (exported by an older version, "
                       "or the model answered none of the verification drawings by a clear margin)")
    logits = artifact.run_pixels(decode_bitmaps(selfcheck)).astype(np.float64)
    expected = np.asarray(selfcheck["expected_logits"], dtype=np.float64)
    agree = logits.argmax(1) == np.asarray(selfcheck["expected_top1"])
    diff = np.abs(logits - expected).max()
    tolerance = selfcheck["tolerance"]
    return {"passed": bool(agree.all() and diff <= tolerance), "drawings": len(expected),
            "top1_agreement": float(agree.mean()), "disagreements": int((~agree).sum()),
            "max_abs_logit_diff": float(diff), "tolerance": tolerance}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem_counts(sc: dict) -> tuple[str, str] | None:
    if sc.get("version") != SELFCHECK_VERSION:
        return "version", f"unsupported {sc.get('version')!r}, expected {SELFCHECK_VERSION}"
    if not isinstance(sc.get("source"), str):
        return "source", "expected a string"
    n = sc.get("drawings")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_DRAWINGS:
        return "drawings", f"expected a count in 1..{MAX_DRAWINGS}, got {n!r}"
    return None


def _problem_rows(sc: dict, num_classes: int) -> tuple[str, str] | None:
    n, bitmaps, top1, rows = sc["drawings"], sc.get("bitmaps"), sc.get("expected_top1"), sc.get("expected_logits")
    if not isinstance(bitmaps, list) or len(bitmaps) != n or \
            not all(isinstance(b, str) and HEX_BITMAP.fullmatch(b) for b in bitmaps):
        return "bitmaps", f"expected {n} strings of {2 * PIXELS} lowercase hex digits"
    if not isinstance(top1, list) or len(top1) != n or \
            not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < num_classes for c in top1):
        return "expected_top1", f"expected {n} class indices in 0..{num_classes - 1}"
    if not isinstance(rows, list) or len(rows) != n or not all(
            isinstance(r, list) and len(r) == num_classes and all(map(_number, r)) for r in rows):
        return "expected_logits", f"expected {n} rows of {num_classes} finite numbers"
    if [int(np.argmax(r)) for r in rows] != top1:
        return "expected_top1", "differs from the argmax of expected_logits"
    return None


def _problem_bounds(sc: dict) -> tuple[str, str] | None:
    tolerance, min_margin = sc.get("tolerance"), sc.get("min_margin")
    if not _number(tolerance) or tolerance < 0:
        return "tolerance", f"expected a finite number >= 0, got {tolerance!r}"
    if not _number(min_margin) or min_margin <= 2 * tolerance:
        return "min_margin", f"expected a finite number above 2 x tolerance ({2 * tolerance:.3g}), got {min_margin!r}"
    return None


def check_selfcheck(sc, num_classes: int, where: str) -> None:
    """One-line QDMError naming ``where`` (the metadata file) and the field when ``sc`` is malformed."""
    if not isinstance(sc, dict):
        raise QDMError(f"{where}: field 'selfcheck' must be an object, got {type(sc).__name__}")
    problem = _problem_counts(sc) or _problem_rows(sc, num_classes) or _problem_bounds(sc)
    if problem:
        raise QDMError(f"{where}: field 'selfcheck.{problem[0]}': {problem[1]}")
