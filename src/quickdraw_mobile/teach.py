"""Teaching a model new classes from a few drawings, without writing a new model: prototype classes, the kind
``qdm extend --method prototype`` makes (``extend.py``), kept beside the model instead of inside it.

A drawing's logit for taught class c is ``scale * cos(unit(f - feature_mean), prototype_c) + offset``, where f is
the model's pooled features (``model.features(x)``) and ``prototype_c`` is the unit mean of the class's centred,
unit drawings (``unit(f_i - feature_mean)``, the drawings as given, no augmented copies: the drawing page computes
the same prototypes in the browser, where there is no augmentation). The taught logits come after the model's
own; the softmax runs over all of them.

The teach parameters (``feature_mean``, ``scale``, ``offset``) come from the model: a model with cosine classes
(``cosine_classes`` > 0, an extended run) has them in its cosine head; any other model gets them fitted once, the
way ``qdm extend`` fits them, on its run folder's ``calibration.npz``, with a quarter of the model's own classes
standing in for new ones (their columns taken out of the logits), taught from ``STAND_IN_SHOTS`` drawings each.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.loader import normalize
from .errors import QDMError
from .export.calibration import CALIBRATION_FILE, Drawings, load_drawings
from .extend import FitData, augmentation, features_and_logits, fit_prototype, unit, views_of
from .modelref import LoadedModel, bundled_model_dir, bundled_name
from .runfolder import RunFolder

MIN_TEACH_DRAWINGS = 3
MAX_TEACH_DRAWINGS = 20
MAX_TAUGHT_CLASSES = 50
MAX_NAME_LENGTH = 40
NAME_PATTERN = re.compile(r"[\w '-]+")  # letters, digits, space, - _ '
STAND_IN_EVERY = 4  # one class in four stands in for a taught class when the scale and offset are fitted
STAND_IN_SHOTS = 5  # drawings each stand-in class is taught from (within MIN..MAX_TEACH_DRAWINGS)
STAND_IN_VIEWS = 2  # augmented copies of each stand-in drawing the scale is fitted on (fresh, as extend does)
TEACH_SEED = 0


# The fit is deterministic for a model's weights, which a served model never changes: several apps around one
# loaded model (tests, a restart in-process) fit it once.
_FITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class TeachConflict(QDMError):
    """The request clashes with the classes there are: a name already known, or no room for another class."""


class NotTaught(QDMError):
    """No taught class has that name."""


@dataclass(frozen=True)
class TeachParameters:
    feature_mean: torch.Tensor  # (D,)
    scale: float
    offset: float
    source: str  # where they come from, in words

    def to_json(self) -> dict:
        return {"feature_mean": [float(v) for v in self.feature_mean], "scale": self.scale, "offset": self.offset}


def check_teachable(loaded: LoadedModel) -> None:
    if not hasattr(loaded.model, "logits_and_features"):
        raise QDMError(f"teaching: model {loaded.config.model!r} has no features(x) (the cnn family has)")


def teach_parameters(loaded: LoadedModel) -> TeachParameters:
    """The model's cosine head's scale, offset and feature mean, or (a model without one) fitted on its run
    folder's calibration.npz. The same numbers every time for the same model."""
    check_teachable(loaded)
    model = loaded.model
    if getattr(model, "cosine_head", None) is not None:
        row = model.cosine_head.weight.detach()[0]
        return TeachParameters(model.feature_mean.detach().clone(), float(row.norm()),
                               float(model.cosine_head.bias.detach()[0]), "the model's cosine head")
    if model in _FITTED:
        return _FITTED[model]
    path = loaded.run.root / CALIBRATION_FILE
    if not path.is_file():
        raise QDMError(f"teaching: {loaded.run.root} has no {CALIBRATION_FILE} (its drawings fit the taught classes' "
                       "scale; 'qdm train' writes one)")
    _FITTED[model] = fit_with_stand_ins(loaded, load_drawings(path, len(loaded.labels)))
    return _FITTED[model]


def _stand_in_classes(labels: np.ndarray, classes: int) -> np.ndarray:
    """A quarter of the classes with at least two drawings (chosen with ``TEACH_SEED``), at least one."""
    counts = np.bincount(labels, minlength=classes)
    eligible = np.flatnonzero(counts >= 2)
    if len(eligible) < 2:
        raise QDMError(f"teaching: {CALIBRATION_FILE} needs drawings of at least two classes, two each")
    chosen = np.random.default_rng(TEACH_SEED).choice(eligible, max(1, len(eligible) // STAND_IN_EVERY), replace=False)
    return np.sort(chosen)


def fit_with_stand_ins(loaded: LoadedModel, calibration: Drawings) -> TeachParameters:
    """``qdm extend``'s prototype fit with some of the model's own classes as the new ones: their first
    ``STAND_IN_SHOTS`` calibration drawings are the shots, the other classes' drawings the replay, and the
    stand-ins' columns are dropped from every logit. ``feature_mean``: the mean feature of all the drawings."""
    classes = len(loaded.labels)
    stand_ins = _stand_in_classes(calibration.labels, classes)
    kept = np.setdiff1d(np.arange(classes), stand_ins)
    renumbered = np.full(classes, -1)
    renumbered[kept] = np.arange(len(kept))
    feats, logits = features_and_logits(loaded.model, normalize(calibration.pixels))
    replay = np.isin(calibration.labels, kept)
    shots = [np.flatnonzero(calibration.labels == c)[:STAND_IN_SHOTS] for c in stand_ins]
    shot_pixels = calibration.pixels[np.concatenate(shots)]
    shot_labels = torch.from_numpy(np.repeat(np.arange(len(shots)), [len(s) for s in shots]))

    def fit_data(views: int, seed: int) -> FitData:
        x = views_of(shot_pixels, views, augmentation(loaded), seed)
        view_feats, view_logits = features_and_logits(loaded.model, x)
        return FitData(view_feats, view_logits[:, kept], shot_labels.repeat(views + 1),
                       torch.arange(len(shot_pixels)).repeat(views + 1), feats[replay], logits[replay][:, kept],
                       torch.from_numpy(renumbered[calibration.labels[replay]]))

    fitted = fit_prototype(fit_data(0, TEACH_SEED), fit_data(STAND_IN_VIEWS, TEACH_SEED + 1), len(shots),
                           feats.mean(0))
    return TeachParameters(fitted["feature_mean"], fitted["scale"], fitted["offset"],
                           f"fitted on {CALIBRATION_FILE} with {len(shots)} of {classes} classes standing in")


def prototype_of(features: torch.Tensor, params: TeachParameters) -> torch.Tensor:
    """A taught class's prototype (D,): the unit mean of its drawings' centred unit features (N, D)."""
    return unit(unit(features - params.feature_mean).mean(0, keepdim=True))[0]


def taught_logits(features: torch.Tensor, prototypes: torch.Tensor, params: TeachParameters) -> torch.Tensor:
    """(B, T) logits of the taught classes (prototypes (T, D)) for features (B, D)."""
    return params.scale * unit(features - params.feature_mean) @ prototypes.T + params.offset


def clean_class_name(name: str) -> str:
    """``name`` stripped, checked: 1..MAX_NAME_LENGTH letters, digits, spaces, - _ '."""
    stripped = name.strip()
    if not stripped or len(stripped) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(stripped):
        raise QDMError(f"name: expected 1..{MAX_NAME_LENGTH} letters, digits, spaces, - _ or ', got {name[:60]!r}")
    return stripped


def model_class_origins(loaded: LoadedModel) -> list[dict]:
    """The model's classes in output order with their origin: "extended" for those ``qdm extend`` added (its
    ``train_summary.json`` section "extended", followed back through the runs it extended), with the shots they
    were made from; "trained" for the rest."""
    shots: dict[str, int] = {}
    summary_path = loaded.run.summary_path
    for _ in range(len(loaded.labels)):  # each extension adds a class at least: the chain is no longer
        extended = _read_summary(summary_path).get("extended")
        if not isinstance(extended, dict):
            break
        per_class = extended.get("shots_per_class") or {}  # a build with a different count per class
        for name in extended.get("new_classes", []):
            shots.setdefault(name, per_class.get(name, extended.get("shots")))
        source = str(extended.get("from"))
        name = bundled_name(source)  # "from" is a bundled model's name, or a run folder's path
        summary_path = RunFolder(bundled_model_dir(name) if name else Path(source)).summary_path
        if not summary_path.is_file():
            break
    return [{"name": name, "origin": "extended", "drawings": shots[name]} if name in shots else
            {"name": name, "origin": "trained", "drawings": None} for name in loaded.labels]


def _read_summary(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QDMError(f"{path}: not a readable train summary ({exc})") from exc
    return summary if isinstance(summary, dict) else {}
