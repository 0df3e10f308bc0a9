"""``qdm predict``: top-k classes for every drawing of an .npy of bitmaps or an .ndjson of strokes.

The model is a run folder, ``default``, or an exported .pte / .onnx (run in ExecuTorch / ONNX Runtime).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .data.store import check_bitmap_array
from .errors import QDMError
from .export.selfcheck import check_finite
from .fileio import write_text_atomic
from .inference import logits_for_pixels
from .modelref import is_artifact, load_model


def load_input_bitmaps(path: Path) -> np.ndarray:
    """(N, 784) uint8 from an official-style .npy bitmap file or an .ndjson of drawings (rendered)."""
    if not path.exists():
        raise QDMError(f"{path}: no such input file")
    if path.suffix == ".ndjson":
        from .data.render import render_ndjson

        pixels, _ = render_ndjson(path)
        return pixels
    if path.suffix != ".npy":
        raise QDMError(f"{path}: expected an .npy of uint8 bitmaps or an .ndjson of drawings")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise QDMError(f"{path}: not a readable .npy file ({exc})") from exc
    return check_bitmap_array(array, str(path))


def top_k(probs: np.ndarray, labels: list[str], k: int) -> list[dict]:
    """``{"top": [{"class", "prob"}, ...]}`` per row; ties broken by class index (stable sort)."""
    k = min(k, len(labels))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [{"top": [{"class": labels[j], "prob": round(float(p[j]), 6)} for j in row]}
            for p, row in zip(probs, order, strict=True)]


def predict_file(model_ref: str, input_path: str | Path, out: str | Path, k: int = 5, device: str = "cpu") -> int:
    """Top-``k`` of every drawing of ``input_path`` into the JSON lines file ``out``; an eager model runs on
    ``device`` (an exported artifact in its own runtime, on the CPU)."""
    if k < 1:
        raise QDMError(f"--top-k: expected a positive number, got {k}")
    pixels = load_input_bitmaps(Path(input_path))
    if is_artifact(model_ref):  # an exported .pte / .onnx runs in its own runtime
        from .export import load_artifact

        artifact = load_artifact(model_ref)
        logits, labels = artifact.run_pixels(pixels), artifact.labels
    else:
        loaded = load_model(model_ref, device)
        logits, labels = logits_for_pixels(loaded.model, pixels), loaded.labels
    check_finite(logits, f"{model_ref}: the model", f"drawings of {input_path}")  # NaN probabilities: not JSON
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    rows = top_k(probs, labels, k)
    write_text_atomic(out, "".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)
