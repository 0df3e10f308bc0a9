"""Run-folder files: atomic checkpoints (loaded with ``weights_only=True``), weights, labels, metrics."""

from __future__ import annotations

import csv
import io
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ..errors import QDMError
from ..fileio import atomic_path, write_bytes_atomic, write_text_atomic

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
WEIGHTS = "model.safetensors"
LABELS = "labels.txt"
CONFIG = "config.yaml"
METRICS = "metrics.csv"


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically: on any failure the previous file is untouched and no temporary
    is left; an ``OSError`` or torch's own write error becomes a ``QDMError`` naming ``path``."""
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except RuntimeError as exc:  # torch's zip writer reports a full disk as "unexpected pos ..." (no errno)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QDMError(f"{path}: could not write ({first}; is the disk full?)") from exc


def load_checkpoint(path: Path) -> dict:
    if not path.exists():
        raise QDMError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QDMError(f"{path}: corrupt or unreadable checkpoint ({first})") from exc


def save_weights(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    # Serialized in memory, then written by fileio: a full disk is an OSError with its reason, and the file gets
    # the run folder's usual mode (safetensors' save_file makes 0600 files of its own).
    write_bytes_atomic(path, safetensors_bytes(tensors))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise QDMError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled headers
        raise QDMError(f"{path}: corrupt or unreadable safetensors file ({exc})") from exc


def write_labels(path: Path, classes: list[str]) -> None:
    write_text_atomic(path, "".join(f"{c}\n" for c in classes))


def read_labels(path: Path) -> list[str]:
    if not path.exists():
        raise QDMError(f"{path}: labels file not found")
    labels = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise QDMError(f"{path}: no class names")
    return labels


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def read_metrics_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: float(v) if k != "epoch" else int(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def history_until(rows: list[dict], epochs: int) -> list[dict]:
    """One row per epoch 1..``epochs`` (the last row of each wins): what a run's metrics.csv must hold when its
    checkpoint has ``epochs`` epochs done, whatever an earlier kill left in the file."""
    by_epoch = {row["epoch"]: row for row in rows if 1 <= row["epoch"] <= epochs}
    return [by_epoch[e] for e in sorted(by_epoch)]
