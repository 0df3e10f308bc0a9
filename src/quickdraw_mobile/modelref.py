"""One resolver for "which model": a run folder, or ``default`` (the model bundled with the package).

Exported files (.pte, .onnx) are not run folders: ``is_artifact`` tells them apart, and
``quickdraw_mobile.export.load_artifact`` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .artifact_names import is_artifact
from .errors import QDMError
from .models import create_model
from .models.profile import describe
from .train import checkpoint as ckpt
from .train.config import TrainConfig, load_config

DEFAULT = "default"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    labels: list[str]
    config: TrainConfig
    source: Path


def default_model_dir() -> Path:
    return Path(str(resources.files("quickdraw_mobile").joinpath("pretrained", "default")))


def resolve_run_dir(ref: str | Path) -> Path:
    if str(ref) == DEFAULT:
        path = default_model_dir()
        if not (path / ckpt.WEIGHTS).exists():
            raise QDMError(f"{path}: the bundled default model is missing from this install")
        return path
    path = Path(ref)
    if is_artifact(path):
        raise QDMError(f"{path}: an exported artifact; this command needs a run folder or 'default'")
    if not path.is_dir():
        raise QDMError(f"{path}: no such run folder (expected a folder made by 'qdm train', or 'default')")
    for name in (ckpt.CONFIG, ckpt.LABELS, ckpt.WEIGHTS):
        if not (path / name).exists():
            raise QDMError(f"{path / name}: missing; {path} is not a complete run folder")
    return path


def load_model(ref: str | Path) -> LoadedModel:
    """Build the model of a run folder (or ``default``) and load its best weights, in eval mode."""
    run = resolve_run_dir(ref)
    config = load_config(run / ckpt.CONFIG)
    labels = ckpt.read_labels(run / ckpt.LABELS)
    model = create_model(config.model, num_classes=len(labels), **config.model_kwargs)
    state = ckpt.load_weights(run / ckpt.WEIGHTS)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise QDMError(f"{run / ckpt.WEIGHTS}: does not match model {config.model!r} with {len(labels)} "
                       f"classes ({first})") from exc
    return LoadedModel(model.eval(), labels, config, run)


def describe_model(loaded: LoadedModel) -> dict:
    """What artifact metadata, reports and ``GET /model`` say about a loaded model: its architecture and options,
    where it came from (``default`` or the run folder's absolute path), parameters and MACs of one drawing."""
    source = DEFAULT if loaded.source == default_model_dir() else str(loaded.source.resolve())
    counted = describe(loaded.model)
    return {"name": loaded.config.model, "options": loaded.config.model_kwargs, "source": source,
            "params": counted["params"], "macs": counted["macs"]}
