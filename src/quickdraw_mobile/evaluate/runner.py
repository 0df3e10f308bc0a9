"""``qdm evaluate``: a model on a held-out split of a store -> metrics.json + plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.store import Store
from ..errors import QDMError
from ..fileio import write_json_atomic
from ..inference import logits_for_split
from ..modelref import load_model
from .metrics import compute_metrics
from .plots import write_all_plots


def evaluate(model_ref: str | Path, data_dir: str | Path, out: str | Path, split: str = "test",
             batch_size: int = 1024, plots: bool = True, device: str = "cpu") -> dict:
    """Evaluate on ``split`` (default: test, which training never sees) with the run's own split settings, the
    model on ``device`` (auto, cpu, cuda, cuda:N, mps)."""
    if split not in ("test", "val", "train"):
        raise QDMError(f"--split: expected test, val or train, got {split!r}")
    loaded = load_model(model_ref, device)
    cfg = loaded.config
    spec = cfg.split_spec()
    splits = Store.open(data_dir).model_splits(spec, loaded.labels, "evaluate on data with the same classes")
    data = splits[split].nonempty(data_dir)
    logits, labels = logits_for_split(loaded.model, data, batch_size)
    metrics = compute_metrics(logits, labels, loaded.labels)
    metrics.update({"split": split, "model": str(model_ref), "data": str(data_dir), "split_spec": vars(spec)})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", metrics)
    if plots:
        images, _ = data.materialize()
        history = loaded.run.metrics_path
        write_all_plots(metrics, np.asarray(images), out, training_rows=history if history.exists() else None)
    return metrics
