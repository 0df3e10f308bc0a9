"""What a method is given, gathered one way for ``qdm quantize`` and ``qdm export --quant METHOD``.

The study's row of a method and the exported artifact of that method are the same artifact because both come
from ``MethodInputs.apply``: the same class-balanced calibration drawings of the run's training split (picked
with ``seed``; ``export.calibration.calibration_set``), their labels, the same training data for methods that
fine-tune, and the same seed (``registry.quantize``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.loader import normalize
from ..errors import QDMError
from ..export.calibration import Drawings, calibration_set, run_splits
from ..modelref import LoadedModel
from .finetune import TrainingData
from .registry import QuantizedModel, get_method, quantize


@dataclass
class MethodInputs:
    calibration: Drawings | None  # None when no method asked for calibrates
    train: TrainingData | None  # the run's training split, when a method fine-tunes
    seed: int

    def __post_init__(self) -> None:
        self.x = normalize(self.calibration.pixels) if self.calibration is not None else None
        self.y = torch.from_numpy(self.calibration.labels) if self.calibration is not None else None

    def apply(self, model: torch.nn.Module, method: str, options: dict | None = None) -> QuantizedModel:
        """``method`` applied to a copy of ``model`` with these inputs and ``options``."""
        return quantize(model, method, self.x if get_method(method).calibrates else None, labels=self.y,
                        train=self.train, seed=self.seed, **(options or {}))


def check_training_data(methods: list[str], data_dir: str | Path | None) -> None:
    """Methods that fine-tune need the store (``--data``): a one-line error before any work."""
    needs_data = [m for m in methods if get_method(m).needs_training_data]
    if needs_data and data_dir is None:
        raise QDMError(f"--data: required for {', '.join(needs_data)} (they fine-tune on the run's training split)")


def method_inputs(model_ref: str | Path, loaded: LoadedModel, methods: list[str], data_dir: str | Path | None,
                  calib: int, seed: int, always_calibration: bool = False, device: str = "cpu") -> MethodInputs:
    """The inputs of ``methods`` for the model ``model_ref`` (``loaded``): only what some of them use is read
    (the calibration drawings also when ``always_calibration``). The fine-tunes run on ``device``."""
    check_training_data(methods, data_dir)
    specs = [get_method(m) for m in methods]
    calibrated = always_calibration or any(s.calibrates for s in specs)
    calibration = calibration_set(model_ref, data_dir, calib, seed) if calibrated else None
    train = (TrainingData(run_splits(loaded.run, data_dir)["train"], loaded.config, device)
             if any(s.needs_training_data for s in specs) else None)
    return MethodInputs(calibration, train, seed)
