"""A short fine-tune of any module (an eager model, a pruned one, a PT2E QAT graph) with the project's recipe.

It runs the training loop's own step (``train.step.TrainStep`` through ``train_one_epoch``) on the run's
training split, without the run-folder machinery (checkpoints, validation, DDP): quantization-aware training and
pruning only need a few hundred steps of the optimization the model was trained with. What a fine-tune does
differently from the run's recipe is said in the recipe's own terms (``FINE_TUNE_CHANGES``), not left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..data.loader import BatchLoader
from ..data.store import Split
from ..device import Precision, resolve_device
from ..errors import QDMError
from ..train.config import TrainConfig
from ..train.step import NonFiniteLoss, StepResult, TrainStep, cosine_lr, train_one_epoch

# The recipe's options a fine-tune changes (flat TrainConfig names), and why:
FINE_TUNE_CHANGES = {
    "mixup_alpha": 0.0, "cutmix_alpha": 0.0,  # a few hundred steps adapt to quantization; mixing regularizes
    "ema_decay": 0.0,  # an average at the recipe's decay (0.999) would still be ~90% the weights before the fine-tune
    "teachers": [],  # the soft targets live in the run folder of the training, not here
    "class_weights": False,  # the fine-tune starts from a trained model: it keeps its plain loss
    "bf16": False,  # fake quantization and pruned layers are tuned in the precision they are measured in
    "channels_last": False,  # the module is tuned in the memory format it comes in (an exported graph)
    "device": "cpu",  # not the recipe's: where the fine-tune runs is ``TrainingData.device``
}


@dataclass
class TrainingData:
    """The run's training split and its training recipe (optimizer, weight decay, augmentation, smoothing)."""

    split: Split
    config: TrainConfig
    device: str = "cpu"  # where the fine-tunes run (auto, cpu, cuda, cuda:N, mps); the model comes back to the CPU


def fine_tune_config(recipe: TrainConfig, lr: float, batch_size: int, seed: int, **changes) -> TrainConfig:
    """The fine-tune's training config: the run's recipe with ``FINE_TUNE_CHANGES``, then ``changes`` (flat
    TrainConfig names, e.g. ``mixup_alpha=0.2`` to mix after all)."""
    return recipe.updated(**{**FINE_TUNE_CHANGES, "lr": lr, "batch_size": batch_size, "seed": seed, **changes})


def fine_tune(model: torch.nn.Module, data: TrainingData, steps: int, lr: float, *, batch_size: int = 128,
              warmup_fraction: float = 0.1, seed: int = 0, on_step: Callable[[int], None] | None = None,
              desc: str = "fine-tune", **changes) -> list[float]:
    """``steps`` optimizer steps of ``train.step.TrainStep`` on the training split; returns every step's loss.

    The learning rate warms up over the first ``warmup_fraction`` of the steps (a share of this fine-tune's steps,
    not the recipe's ``warmup_epochs``), then follows the recipe's cosine down to ``lr * min_lr_ratio``.
    ``on_step(step)`` runs before each step (QAT uses it to freeze observers and batch-norm statistics late).
    ``changes`` adjust the recipe further (see ``fine_tune_config``). The caller puts ``model`` in training mode
    first: an exported graph switches with ``move_exported_model_to_train``, not ``.train()``.
    """
    if steps < 1 or lr <= 0:
        raise QDMError(f"fine-tune: expected steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    cfg = fine_tune_config(data.config, lr, batch_size, seed, **{"device": data.device, **changes})
    device = resolve_device(cfg.device)
    loader = BatchLoader(data.split, min(batch_size, len(data.split)), shuffle=True, augment=cfg.augmentation(),
                         balanced=cfg.balanced, seed=cfg.seed, drop_last=True, channels_last=cfg.channels_last)
    warmup_steps = int(round(warmup_fraction * steps))
    # float32 on every device (no autocast, as FINE_TUNE_CHANGES' bf16): tuned in the precision it is measured in
    trainer = TrainStep(cfg, model, lambda step: cosine_lr(cfg.lr, cfg.min_lr_ratio, step, warmup_steps, steps),
                        class_counts=data.split.counts, device=device, precision=Precision(device.type, None))
    losses: list[float] = []
    bar = tqdm(total=steps, desc=desc, unit="step", dynamic_ncols=True)

    def after_step(index: int, result: StepResult) -> bool:
        losses.append(result.loss)
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        return len(losses) == steps

    epoch = 0
    try:
        while len(losses) < steps:
            loader.set_epoch(epoch)
            train_one_epoch(trainer, loader, len(losses), before_step=on_step, after_step=after_step)
            epoch += 1
    except NonFiniteLoss as exc:
        raise QDMError(f"fine-tune: {exc} at step {len(losses)} (lower the learning rate)") from exc
    finally:
        bar.close()
        model.to("cpu")  # what a method does next (convert, lower, measure) runs on the CPU
    return losses
