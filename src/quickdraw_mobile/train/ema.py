"""Weight averaging: an exponential moving average of the weights (and BN statistics), updated after every step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..errors import QDMError
from ..options import option


@dataclass(frozen=True)
class EMAConfig:
    decay: float = option(0.0, "validate and save an EMA of the weights with this per-step decay (0 = off)",
                          flat="ema_decay")
    warmup: bool = option(False, "EMA: decay min(ema_decay, (1 + n) / (10 + n)) at update n, so it soon forgets "
                          "the initial weights", flat="ema_warmup")

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise QDMError(f"ema_decay: expected [0, 1) (0 turns it off), got {self.decay}")

    @property
    def enabled(self) -> bool:
        return self.decay > 0


def ema_decay_at(decay: float, warmup: bool, n_averaged: int) -> float:
    """The decay of the EMA update that follows ``n_averaged`` earlier ones. With warm-up it is
    min(decay, (1 + n) / (10 + n)) (TensorFlow's num_updates rule): without it, the first weights, close to the
    random init, keep a share decay**steps of the average (0.999**1448 = 23% after 4 epochs of the default model)."""
    return min(decay, (1 + n_averaged) / (10 + n_averaged)) if warmup else decay


def ema_update(decay: float, warmup: bool):
    """torch's EMA step for floating-point tensors; integer buffers (BN's num_batches_tracked) are copied:
    averaging a counter would truncate it."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        if averaged[0].is_floating_point():  # AveragedModel groups the tensors by dtype
            get_ema_multi_avg_fn(ema_decay_at(decay, warmup, int(n_averaged)))(averaged, current, n_averaged)
        else:
            for counter, value in zip(averaged, current, strict=True):
                counter.copy_(value)

    return update


def averaged_model(cfg: EMAConfig, model: torch.nn.Module) -> AveragedModel | None:
    """The EMA copy of ``model`` (None with the average off)."""
    if not cfg.enabled:
        return None
    return AveragedModel(model, multi_avg_fn=ema_update(cfg.decay, cfg.warmup), use_buffers=True)
