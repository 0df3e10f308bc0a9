"""The training config: one flat dataclass, loadable from YAML, saved resolved into every run folder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.loader import AugmentConfig
from ..data.store import SplitSpec
from ..errors import QDMError
from .distill import DistillConfig
from .mixing import MixConfig

OPTIMIZERS = ("adamw", "lamb", "sgd")


@dataclass
class TrainConfig:
    # model
    model: str = "cnn"
    model_kwargs: dict = field(default_factory=dict)
    # data: which classes and rows, and how they are split (see data.store.SplitSpec)
    classes: list[str] | None = None
    max_per_class: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    # optimisation
    epochs: int = 20
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 3e-3
    min_lr_ratio: float = 0.01  # cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float = 2.0  # max global grad norm; 0 disables
    patience: int = 0  # early stopping: epochs without a better val top-1; 0 disables
    class_weights: bool = False  # weight the loss by inverse class frequency (imbalanced data)
    balanced: bool = False  # class-balanced sampling instead of a plain shuffle
    # augmentation (batch-level affine; see data.loader.AugmentConfig)
    augment: bool = True
    rotation_deg: float = 10.0
    translate: float = 0.1
    scale_min: float = 0.9
    scale_max: float = 1.1
    hflip: bool = False
    stretch: float = 0.0  # aspect-ratio change, up to this fraction either way
    reframe: bool = False  # refit each warped drawing to the official bitmaps' framing
    # batch mixing (see train.mixing): mixup and/or CutMix on a share mix_prob of the batches
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    # weight averaging: validate and save an exponential moving average of the weights (and BN statistics),
    # updated after every step with this decay; 0 = off (the raw weights are validated and saved)
    ema_decay: float = 0.0
    ema_warmup: bool = False  # start the decay low and raise it to ema_decay (see train.loop.ema_decay_at)
    # distillation (see train.distill): also learn the soft answers of these trained runs ('default' or folders)
    teachers: list[str] = field(default_factory=list)
    distill_weight: float = 0.5  # share of the loss on the teachers' soft targets
    distill_temperature: float = 1.0
    teacher_hflip: bool = False  # average each teacher over the drawing and its mirror
    # execution
    seed: int = 0
    bf16: bool = False  # bfloat16 autocast for the forward pass
    channels_last: bool = True
    threads: int = 0  # torch intra-op threads; 0 = all cores (divided among DDP ranks)
    eval_batch_size: int = 1024

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
        if self.scale_min > self.scale_max:
            raise QDMError(f"scale_min ({self.scale_min}) must not exceed scale_max ({self.scale_max})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise QDMError(f"ema_decay: expected [0, 1) (0 turns it off), got {self.ema_decay}")
        self.augmentation()  # validates the augmentation options
        self.mixing()  # validates the mixing options
        if not isinstance(self.teachers, list) or not all(isinstance(t, str) for t in self.teachers):
            raise QDMError("teachers: expected a list of run folders (or 'default')")
        self.distillation()  # validates the distillation options
        if not isinstance(self.model_kwargs, dict):
            raise QDMError("model_kwargs: expected a mapping of option: value")

    def augmentation(self) -> AugmentConfig | None:
        """The training batches' augmentation (None with ``augment`` off)."""
        if not self.augment:
            return None
        return AugmentConfig(self.rotation_deg, self.translate, (self.scale_min, self.scale_max), self.hflip,
                             self.stretch, self.reframe)

    def mixing(self) -> MixConfig:
        return MixConfig(self.mixup_alpha, self.cutmix_alpha, self.mix_prob)

    def distillation(self) -> DistillConfig:
        return DistillConfig(tuple(self.teachers), self.distill_weight, self.distill_temperature, self.teacher_hflip)

    def split_spec(self) -> SplitSpec:
        """How this run splits a store; everything that needs the run's own splits goes through it."""
        return SplitSpec(self.val_fraction, self.test_fraction, self.split_seed, self.max_per_class)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def updated(self, **changes) -> TrainConfig:
        """A copy with ``changes`` applied (``None`` values are ignored: unset CLI options)."""
        return from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}}, "options")


def from_dict(values: dict, where: str) -> TrainConfig:
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        import difflib

        hints = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
        hint = f"; did you mean {', '.join(hints)}?" if hints else ""
        raise QDMError(f"{where}: unknown option(s) {', '.join(unknown)}{hint}")
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise QDMError(f"{where}: {exc}") from exc


def load_config(path: str | Path | None, **overrides) -> TrainConfig:
    """Defaults <- YAML file <- explicit overrides (``None`` means not given)."""
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
    values = {**values, **{k: v for k, v in overrides.items() if v is not None}}
    return from_dict(values, str(path) if path else "options")
