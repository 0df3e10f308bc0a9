"""Real drawings for export: a class-balanced calibration set (training split) and a verification set (test split).

Both come from the run's own split settings (its config's classes, fractions, seed and cap), so calibration never
sees a test drawing and verification never sees a training one. With ``--data`` they are drawn from that store;
without it, from the small real samples a run folder may carry (the bundled default model does):
``calibration.npz`` (class-balanced training rows) and ``sample.npz`` (a fixed sample of its test split), each
with ``pixels`` (N, 784) uint8 and ``labels`` (N,) int.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.store import Split, Store, balanced_subset, check_bitmap_array
from ..errors import QDMError
from ..fileio import write_bytes_atomic
from ..modelref import resolve_run
from ..options import CALIBRATION_SIZE
from ..runfolder import RunFolder
from ..train.config import load_config

CALIBRATION_FILE = "calibration.npz"
SAMPLE_FILE = "sample.npz"
VERIFY_MAX = 20_000  # a larger test split (the full dataset's has millions) is sampled, class-balanced


@dataclass
class Drawings:
    pixels: np.ndarray  # (N, 784) uint8
    labels: np.ndarray  # (N,) int64, indices into the model's labels
    source: str  # where they come from, for metadata and reports


def run_splits(run: RunFolder | str | Path, data_dir: str | Path) -> dict[str, Split]:
    """The train / val / test splits of ``data_dir`` exactly as the run folder ``run`` made them."""
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    cfg = load_config(run.config_path)
    return Store.open(data_dir).model_splits(cfg.split_spec(), run.read_labels(),
                                             "use the data the model was trained on")


def load_drawings(path: Path, num_classes: int) -> Drawings:
    """A ``pixels`` + ``labels`` .npz, checked."""
    try:
        with np.load(path, allow_pickle=False) as data:
            pixels, labels = data["pixels"], data["labels"]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise QDMError(f"{path}: expected an .npz with 'pixels' and 'labels' ({exc})") from exc
    pixels = check_bitmap_array(pixels, str(path))
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (len(pixels),) or labels.min() < 0 or labels.max() >= num_classes:
        raise QDMError(f"{path}: 'labels' must be {len(pixels)} class indices in 0..{num_classes - 1}")
    return Drawings(pixels, labels, str(path))


def save_drawings(path: str | Path, pixels: np.ndarray, labels: np.ndarray, compressed: bool = False) -> None:
    """A ``pixels`` + ``labels`` (int64) .npz as ``load_drawings`` reads it, written atomically; ``compressed``
    for the files bundled with the package."""
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, pixels=pixels, labels=np.asarray(labels, np.int64))
    write_bytes_atomic(path, buffer.getvalue())


def _bundled(run: RunFolder, name: str, data_flag_use: str) -> Path:
    path = run.root / name
    if not path.is_file():
        raise QDMError(f"--data: required for {run.root} ({data_flag_use} uses the run's own splits; "
                       f"the run folder has no {name})")
    return path


def calibration_set(model_ref: str | Path, data_dir: str | Path | None = None, n: int = CALIBRATION_SIZE,
                    seed: int = 0) -> Drawings:
    """``n`` class-balanced drawings of the run's training split (or its bundled calibration.npz)."""
    if n < 1:
        raise QDMError(f"--calib: expected a positive number of drawings, got {n}")
    run = resolve_run(model_ref)
    if data_dir is not None:
        train = run_splits(run, data_dir)["train"]
        pixels, labels = train.gather(train.balanced_indices(n, seed=seed))
        return Drawings(pixels, labels, f"{data_dir} (training split, {len(pixels)} class-balanced drawings)")
    drawings = load_drawings(_bundled(run, CALIBRATION_FILE, "calibration"), len(run.read_labels()))
    keep = balanced_subset(drawings.labels, n, seed)
    return Drawings(drawings.pixels[keep], drawings.labels[keep],
                    f"{CALIBRATION_FILE} of {run.root.name} (training split, {len(keep)} class-balanced drawings)")


def verification_set(model_ref: str | Path, data_dir: str | Path | None = None,
                     max_drawings: int = VERIFY_MAX) -> Drawings:
    """The run's test split of ``data_dir`` (all of it up to ``max_drawings``, else a class-balanced sample of
    that many), or without data its bundled sample.npz."""
    run = resolve_run(model_ref)
    if data_dir is not None:
        test = run_splits(run, data_dir)["test"].nonempty(data_dir)
        if len(test) <= max_drawings:
            pixels, labels = test.materialize()
            return Drawings(pixels, labels, f"{data_dir} (test split, {len(pixels)} drawings)")
        pixels, labels = test.gather(test.balanced_indices(max_drawings, seed=0))
        return Drawings(pixels, labels, f"{data_dir} (test split, {len(pixels)} class-balanced of {len(test)} "
                                        "drawings)")
    drawings = load_drawings(_bundled(run, SAMPLE_FILE, "verification"), len(run.read_labels()))
    drawings.source = f"{SAMPLE_FILE} of {run.root.name} (test split sample, {len(drawings.pixels)} drawings)"
    return drawings
