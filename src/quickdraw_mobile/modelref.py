"""One resolver for "which model": a run folder, or the name of a model bundled with the package (``BUNDLED``:
``default``, the 52-class model, and ``default345``, it extended to all 345 classes).

Exported files (.pte, .onnx) are not run folders: ``is_artifact`` tells them apart, and
``quickdraw_mobile.export.load_artifact`` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .artifact_names import is_artifact
from .device import resolve_device
from .errors import QDMError
from .models import create_model
from .models.profile import describe
from .runfolder import RunFolder
from .train.config import TrainConfig, load_config

DEFAULT = "default"
BUNDLED = (DEFAULT, "default345")  # the models shipped in pretrained/<name>/, loaded by name


@dataclass
class LoadedModel:
    model: torch.nn.Module
    labels: list[str]
    config: TrainConfig
    run: RunFolder


def bundled_name(ref: str | Path) -> str | None:
    """The bundled model ``ref`` names, or None for a path."""
    return str(ref) if str(ref) in BUNDLED else None


def bundled_model_dir(name: str = DEFAULT) -> Path:
    return Path(str(resources.files("quickdraw_mobile").joinpath("pretrained", name)))


def default_model_dir() -> Path:
    return bundled_model_dir(DEFAULT)


def resolve_run(ref: str | Path) -> RunFolder:
    """The run folder ``ref`` names (a bundled name: the bundled model's), checked to hold a complete run."""
    name = bundled_name(ref)
    if name is not None:
        run = RunFolder(bundled_model_dir(name))
        if not run.weights_path.exists():
            raise QDMError(f"{run.root}: the bundled model {name!r} is missing from this install")
        return run
    path = Path(ref)
    if is_artifact(path):
        raise QDMError(f"{path}: an exported artifact; this command needs a run folder or a bundled model "
                       f"({', '.join(BUNDLED)})")
    if not path.is_dir():
        raise QDMError(f"{path}: no such run folder (expected a folder made by 'qdm train', or a bundled model: "
                       f"{', '.join(BUNDLED)})")
    return RunFolder(path).check()


def load_model(ref: str | Path, device: str = "cpu") -> LoadedModel:
    """Build the model of a run folder (or a bundled model) and load its best weights (read onto the CPU, wherever
    they were trained), in eval mode, on ``device`` (``device.resolve_device``: auto, cpu, cuda, cuda:N, mps)."""
    run = resolve_run(ref)
    config = load_config(run.config_path)
    labels = run.read_labels()
    model = create_model(config.model, num_classes=len(labels), **config.model_kwargs)
    state = run.load_weights()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise QDMError(f"{run.weights_path}: does not match model {config.model!r} with {len(labels)} "
                       f"classes ({first})") from exc
    return LoadedModel(model.eval().to(resolve_device(device)), labels, config, run)


def describe_model(loaded: LoadedModel) -> dict:
    """What artifact metadata, reports and ``GET /model`` say about a loaded model: its architecture and options,
    where it came from (a bundled model's name or the run folder's absolute path), parameters and MACs of one
    drawing."""
    bundled = [name for name in BUNDLED if loaded.run.root == bundled_model_dir(name)]
    source = bundled[0] if bundled else str(loaded.run.root.resolve())
    counted = describe(loaded.model)
    return {"name": loaded.config.model, "options": loaded.config.model_kwargs, "source": source,
            "params": counted["params"], "macs": counted["macs"]}
