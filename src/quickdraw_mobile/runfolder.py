"""The run folder ``qdm train`` writes and every other command reads: its file names, readers and writers.

    config.yaml             the resolved training config (parsed by ``train.config.load_config``)
    model.safetensors       the weights of the best epoch on validation
    labels.txt              the class names, one a line, in logit order
    metrics.csv             one row per finished epoch
    train_summary.json      what the run did (model size, epochs, best validation top-1, time)
    checkpoints/last.pt     the whole training state at its last save: what a resume continues from
    checkpoints/best.pt     the same at the end of the best epoch

Writes are atomic (``fileio``); checkpoints load with ``weights_only=True``. This module knows files, not
training or models, so it sits below ``train`` and ``modelref``: training writes a run folder through it, and
``modelref`` turns one into a model.
"""

from __future__ import annotations

import csv
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .errors import QDMError
from .fileio import atomic_path, write_bytes_atomic, write_text_atomic

CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"
LABELS = "labels.txt"
METRICS = "metrics.csv"
SUMMARY = "train_summary.json"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


@dataclass(frozen=True)
class RunFolder:
    """A run folder's paths, and readers of the files a trained model is loaded from."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG

    @property
    def weights_path(self) -> Path:
        return self.root / WEIGHTS

    @property
    def labels_path(self) -> Path:
        return self.root / LABELS

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS

    @property
    def summary_path(self) -> Path:
        return self.root / SUMMARY

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / LAST

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints_dir / BEST

    def exists(self) -> bool:
        return self.root.is_dir()

    def check(self) -> RunFolder:
        """This folder, if it holds what a model is loaded from (config, labels, weights); else a one-line error
        naming what is missing."""
        if not self.exists():
            raise QDMError(f"{self.root}: no such run folder (expected a folder made by 'qdm train')")
        for path in (self.config_path, self.labels_path, self.weights_path):
            if not path.exists():
                raise QDMError(f"{path}: missing; {self.root} is not a complete run folder")
        return self

    def read_labels(self) -> list[str]:
        return read_labels(self.labels_path)

    def load_weights(self) -> dict[str, torch.Tensor]:
        return load_weights(self.weights_path)


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
