"""The training config: one dataclass with nested sections (augmentation, mixing, weight averaging,
distillation), loadable from YAML, saved resolved into every run folder.

Each field carries its help text (``options.option``): the ``qdm train`` flags are generated from them. Config files
written before the sections were nested (every option at the top level, as in old run folders' config.yaml) still
load: a flat key is the option's ``flat`` name (``mixup_alpha``, ``ema_decay``, ``scale_min``...).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..data.loader import AugmentConfig
from ..data.store import SplitSpec
from ..errors import QDMError
from ..options import is_section, leaves, option, plain
from .distill import DistillConfig
from .ema import EMAConfig
from .mixing import MixConfig

OPTIMIZERS = ("adamw", "lamb", "sgd")


@dataclass
class TrainConfig:
    # model
    model: str = option("cnn", "model name (see 'qdm models')")
    model_kwargs: dict = option(help='model options as JSON, e.g. \'{"width": 32}\'', factory=dict)
    # data: which classes and rows, and how they are split (see data.store.SplitSpec)
    classes: list[str] | None = option(None, "train on these classes only (comma-separated)")
    max_per_class: int | None = option(None, "use at most N drawings per class")
    val_fraction: float = option(0.1, "share of each class for validation (picks the best epoch)")
    test_fraction: float = option(0.1, "share of each class held out for testing (drawn first)")
    split_seed: int = option(0, "seed of the train/val/test split")
    # optimisation
    epochs: int = option(20, "training epochs")
    batch_size: int = option(256, "batch size (per process)")
    optimizer: str = option("adamw", f"optimizer: {', '.join(OPTIMIZERS)}")
    lr: float = option(3e-3, "peak learning rate")
    min_lr_ratio: float = option(0.01, "the cosine ends at lr * min_lr_ratio")
    weight_decay: float = option(0.05, "weight decay (not applied to biases and norms)")
    momentum: float = option(0.9, "momentum (sgd only)")
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs, then cosine")
    label_smoothing: float = option(0.1, "label smoothing")
    grad_clip: float = option(2.0, "max global gradient norm (0 = off)")
    patience: int = option(0, "early stopping patience in epochs on validation top-1 (0 = off)")
    class_weights: bool = option(False, "weight the loss by inverse class frequency (imbalanced data)")
    balanced: bool = option(False, "class-balanced sampling instead of a plain shuffle")
    augment: AugmentConfig = option(help="batch-level affine augmentation", factory=AugmentConfig)
    mix: MixConfig = option(help="mixup and/or CutMix (see train.mixing)", factory=MixConfig)
    # with the average on, it is what gets validated, picked as best and saved as the run's weights
    ema: EMAConfig = option(help="weight averaging (see train.ema)", factory=EMAConfig)
    distill: DistillConfig = option(help="distillation from trained runs (see train.distill)", factory=DistillConfig)
    # execution
    seed: int = option(0, "seed for init, batch order, augmentation and dropout")
    device: str = option("auto", "where to train: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    bf16: bool = option(False, "bfloat16 autocast for the forward pass on the CPU (on CUDA autocast is always on)")
    compile: bool = option(False, "torch.compile the model (unmeasured here; off unless it pays)")
    channels_last: bool = option(True, "channels-last memory format")
    threads: int = option(0, "torch intra-op threads (0 = all cores, divided among DDP ranks)")
    eval_batch_size: int = option(1024, "batch size of validation and of the teachers' labelling")

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise QDMError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "eval_batch_size": self.eval_batch_size}
        for name, value in positive.items():
            if not value > 0:
                raise QDMError(f"{name}: expected a positive value, got {value}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise QDMError(f"label_smoothing: expected [0, 1), got {self.label_smoothing}")
        if not isinstance(self.model_kwargs, dict):
            raise QDMError("model_kwargs: expected a mapping of option: value")

    def augmentation(self) -> AugmentConfig | None:
        """The training batches' augmentation (None with it off)."""
        return self.augment if self.augment.enabled else None

    def split_spec(self) -> SplitSpec:
        """How this run splits a store; everything that needs the run's own splits goes through it."""
        return SplitSpec(self.val_fraction, self.test_fraction, self.split_seed, self.max_per_class)

    def to_dict(self) -> dict:
        return plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def updated(self, **changes) -> TrainConfig:
        """A copy with ``changes`` (flat names) applied (``None`` values are ignored: unset CLI options)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return _build(_merged(self.to_dict(), given, "options"), "options")


SECTIONS = {name: kind for name, kind in typing.get_type_hints(TrainConfig).items() if is_section(kind)}
FLAT = {leaf.flat: leaf for leaf in leaves(TrainConfig) if len(leaf.path) == 2}  # old flat key -> nested option
OLD_SCALE = {"scale_min": 0, "scale_max": 1}  # the flat spelling of augment.scale's two ends


def _nested(values: dict, where: str) -> dict[str, Any]:
    """``values`` (nested sections, old flat keys, or both; flat keys win) with every section a dict of the
    options given in it."""
    top = {f.name for f in dataclasses.fields(TrainConfig)} - set(SECTIONS)
    unknown = sorted(set(values) - top - set(SECTIONS) - set(FLAT) - set(OLD_SCALE))
    if unknown:
        hints = [m for u in unknown for m in difflib.get_close_matches(u, [*top, *SECTIONS, *FLAT], n=1)]
        hint = f"; did you mean {', '.join(hints)}?" if hints else ""
        raise QDMError(f"{where}: unknown option(s) {', '.join(unknown)}{hint}")
    nested: dict[str, Any] = {k: v for k, v in values.items() if k in top}
    sections: dict[str, dict] = {name: {} for name in SECTIONS}
    for name in SECTIONS:
        given = values.get(name)
        if isinstance(given, dict):
            sections[name].update(given)
        elif given is not None and name not in FLAT:
            raise QDMError(f"{where}: {name}: expected a mapping of option: value, got {given!r}")
    for key, value in values.items():
        if key in FLAT and not (key in SECTIONS and isinstance(value, dict)):
            section, name = FLAT[key].path
            sections[section][name] = value
    if set(OLD_SCALE) & set(values):
        scale = list(sections["augment"].get("scale", AugmentConfig().scale))
        for key, end in OLD_SCALE.items():
            scale[end] = values.get(key, scale[end])
        sections["augment"]["scale"] = scale
    return {**nested, **sections}


def _merged(base: dict, changes: dict, where: str) -> dict[str, Any]:
    """``changes`` (either spelling) applied over ``base`` (either spelling), option by option."""
    merged, given = _nested(base, where), _nested(changes, "options")
    for key, value in given.items():
        merged[key] = {**merged[key], **value} if key in SECTIONS else value
    return merged


def _section(name: str, given: dict, where: str):
    cls = SECTIONS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise QDMError(f"{where}: unknown option(s) {', '.join(f'{name}.{u}' for u in unknown)}; "
                       f"{name} holds {', '.join(sorted(known))}")
    # YAML lists become tuples: the sections are frozen dataclasses with tuple fields
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise QDMError(f"{where}: {name}: {exc}") from exc


def _build(nested: dict[str, Any], where: str) -> TrainConfig:
    sections = {name: _section(name, nested[name], where) for name in SECTIONS}
    try:
        return TrainConfig(**{**nested, **sections})
    except TypeError as exc:
        raise QDMError(f"{where}: {exc}") from exc


def from_dict(values: dict, where: str = "options") -> TrainConfig:
    """A TrainConfig from a mapping of options, nested (``mix: {mixup_alpha: 0.2}``) or flat (``mixup_alpha``)."""
    return _build(_nested(values, where), where)


def load_config(path: str | Path | None, **overrides) -> TrainConfig:
    """Defaults <- YAML file <- explicit overrides (flat names; ``None`` means not given)."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise QDMError(f"{path}: config file not found") from exc
        except yaml.YAMLError as exc:
            raise QDMError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise QDMError(f"{path}: expected a mapping of option: value at the top level")
        values = loaded.get("train", loaded) if isinstance(loaded.get("train"), dict) else loaded
    where = str(path) if path else "options"
    return _build(_merged(values, {k: v for k, v in overrides.items() if v is not None}, where), where)
