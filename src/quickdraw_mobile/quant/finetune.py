"""A short fine-tune of any module (an eager model, a pruned one, a PT2E QAT graph) with the project's recipe.

It reuses the training loop's pieces (``lr_at``, ``build_optimizer``, ``BatchLoader`` with the run's
augmentation) without the run-folder machinery (checkpoints, evaluation, DDP): quantization-aware training and
pruning only need a few hundred steps of the same optimization the model was trained with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.loader import BatchLoader
from ..data.store import Split
from ..errors import QDMError
from ..train.config import TrainConfig
from ..train.loop import build_optimizer, lr_at


@dataclass
class TrainingData:
    """The run's training split and its training recipe (optimizer, weight decay, augmentation, smoothing)."""

    split: Split
    config: TrainConfig


def fine_tune(model: torch.nn.Module, data: TrainingData, steps: int, lr: float, *, batch_size: int = 128,
              warmup: float = 0.1, seed: int = 0, on_step: Callable[[int], None] | None = None,
              desc: str = "fine-tune") -> list[float]:
    """``steps`` optimizer steps on the training split; returns the loss of every step.

    The learning rate warms up over the first ``warmup`` fraction of the steps, then follows the recipe's cosine
    down to ``lr * min_lr_ratio``. ``on_step(step)`` runs before each step (QAT uses it to freeze observers and
    batch-norm statistics late). The caller puts ``model`` in training mode first: an exported graph switches
    with ``move_exported_model_to_train``, not ``.train()``.
    """
    if steps < 1 or lr <= 0:
        raise QDMError(f"fine-tune: expected steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    recipe = data.config
    cfg = recipe.updated(lr=lr, warmup_epochs=warmup, batch_size=batch_size)
    augment = cfg.augmentation()
    loader = BatchLoader(data.split, min(batch_size, len(data.split)), shuffle=True, augment=augment,
                         balanced=cfg.balanced, seed=seed, drop_last=True)
    optimizer = build_optimizer(cfg, model)
    losses: list[float] = []
    bar = tqdm(total=steps, desc=desc, unit="step", dynamic_ncols=True)
    epoch = 0
    while len(losses) < steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            step = len(losses)
            if step == steps:
                break
            if on_step is not None:
                on_step(step)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, step, steps, steps)
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise QDMError(f"fine-tune: non-finite loss at step {step} (lower the learning rate)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        epoch += 1
    bar.close()
    return losses
