"""One training step of the project's recipe, and one epoch of them: the seam ``qdm train`` and the QAT and
pruning fine-tunes share (as torchvision's references share ``train_one_epoch``).

A ``TrainStep`` holds what a step needs: the model (and its DDP wrapper), the optimizer, the loss (label
smoothing, class weights, the teachers' soft targets), the forward pass's autocast (bf16; on CUDA bf16, or fp16
with loss scaling), batch mixing (mixup/CutMix), the weight average (EMA), gradient clipping and the
learning-rate schedule. Where and in which precision the step computes is decided in one place: the device
policy (``quickdraw_mobile.device``) applied by ``TrainStep.autocast`` and ``TrainStep.prepare``; the step
moves the model to its device and each batch too, so its callers pass host batches as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import device as devices
from ..errors import QDMError
from . import distill
from .config import TrainConfig
from .ema import averaged_model
from .mixing import mix_batch, mixed_loss, step_rng


class NonFiniteLoss(QDMError):
    """The loss of a step was NaN or infinite; nothing of that step was applied."""


def cosine_lr(lr: float, min_lr_ratio: float, step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from lr/100 over ``warmup_steps``, then cosine down to lr * min_lr_ratio at ``total_steps``."""
    if step < warmup_steps:
        return lr * (0.01 + 0.99 * step / warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    floor = lr * min_lr_ratio
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def lr_at(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The run's learning rate at ``step``: warm-up over ``cfg.warmup_epochs``, then cosine. A pure function."""
    return cosine_lr(cfg.lr, cfg.min_lr_ratio, step, int(round(cfg.warmup_epochs * steps_per_epoch)), total_steps)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module,
                    device: torch.device | None = None) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters (the usual recipe; decaying BN scales hurts small nets).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **devices.optimizer_options(device or torch.device("cpu")))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    from timm.optim import Lamb

    return Lamb(groups, lr=cfg.lr)


def class_weight_tensor(counts: list[int]) -> torch.Tensor:
    counts_t = torch.tensor(counts, dtype=torch.float32).clamp_min(1)
    weights = counts_t.sum() / (len(counts) * counts_t)
    return weights / weights.mean()


@dataclass
class StepResult:
    loss: float  # the step's (mixed) loss
    correct: int  # rows whose top-1 is their own label (on a mixed batch too)
    count: int  # rows


class TrainStep:
    """The optimizer step of ``cfg`` on ``model``. ``schedule(step)`` gives the learning rate of a global step;
    ``class_counts`` weight the loss when ``cfg.class_weights`` is on; ``state`` (a checkpoint, its tensors on
    any device) restores the weights, optimizer, torch RNG and weight average; ``distributed`` wraps the model
    in DDP. ``device`` (default: ``cfg.device`` resolved) is where the model is moved and the step computes;
    ``precision`` (default: ``device.precision`` of it and ``cfg.bf16``) its autocast."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, schedule: Callable[[int], float], *,
                 class_counts: list[int] | None = None, state: dict | None = None, rank: int = 0,
                 distributed: bool = False, device: torch.device | None = None,
                 precision: devices.Precision | None = None):
        self.cfg, self.model, self.schedule, self.rank = cfg, model, schedule, rank
        self.device = device if device is not None else devices.resolve_device(cfg.device)
        self.precision = precision or devices.precision(self.device, cfg.bf16)
        model.to(self.device)  # before the optimizer, whose state then lives (and loads) where the weights are
        if cfg.channels_last:  # otherwise the model's tensors are left as they are (a fine-tune's input model)
            model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(cfg, model, self.device)
        self.scaler = self.precision.grad_scaler()
        if state is not None:
            self._restore(state)
        self.net = self._wrapped(distributed)
        self.ema = averaged_model(cfg.ema, model)
        if self.ema is not None and state is not None:
            self.ema.load_state_dict(state["ema"])
        self.weight = class_weight_tensor(class_counts) if cfg.class_weights and class_counts else None
        if self.weight is not None:
            self.weight = self.weight.to(self.device)
        self.teaching = cfg.distill

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])  # copies into the model's tensors, on its device
        self.optimizer.load_state_dict(state["optimizer"])  # torch moves the state to each parameter's device
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:  # dropout on a GPU draws from the GPU's RNG
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    def _wrapped(self, distributed: bool) -> torch.nn.Module:
        """What the step calls: the model, under DDP when ``distributed`` (one device per process on CUDA), and
        compiled with ``cfg.compile``."""
        net = self.model
        if distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        return torch.compile(net) if self.cfg.compile else net

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is validated and saved: the weight average when it is on, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def autocast(self):
        """The forward pass's precision (``device.precision``): on the CPU bfloat16 autocast with ``bf16``, else
        float32; on CUDA bfloat16, or float16 with loss scaling."""
        return self.precision.autocast()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as the model takes it: on its device (pinned, non-blocking copies to a GPU), in its memory
        format."""
        x = devices.to_device(x, self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None) -> torch.Tensor:
        hard = F.cross_entropy(logits, labels, weight=self.weight, label_smoothing=self.cfg.label_smoothing)
        if soft is None:
            return hard
        return ((1.0 - self.teaching.weight) * hard
                + self.teaching.weight * distill.soft_cross_entropy(logits, soft, self.teaching.temperature))

    def step(self, x: torch.Tensor, y: torch.Tensor, index: int, soft: torch.Tensor | None = None) -> StepResult:
        """One optimizer step on the batch (x, y) as global step ``index`` (its learning rate and mixing)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule(index)
        x, y = devices.to_device(x, self.device), devices.to_device(y, self.device)
        soft = None if soft is None else devices.to_device(soft, self.device)
        mixed = mix_batch(x, self.cfg.mix, step_rng(self.cfg.seed, self.rank, index))  # where the batch is
        with self.autocast():
            logits = self.net(self.prepare(mixed.x))
        targets = (y,) if soft is None else (y, soft)
        loss = mixed_loss(self.loss, logits.float(), targets, mixed)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"non-finite loss ({loss.item()})")
        self.optimizer.zero_grad(set_to_none=True)
        self._backward_and_step(loss)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return StepResult(loss.item(), (logits.argmax(1) == y).sum().item(), len(y))

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        """Gradients, clipping and the optimizer step; with float16 through the loss scaler (unscaled before
        clipping, as torch.amp's documentation does it)."""
        if self.scaler is None:
            loss.backward()
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        """The step's part of a checkpoint (tensors where they are; loading maps them to the CPU first)."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state


def soft_batch(soft_table: np.ndarray | None, rows: np.ndarray) -> torch.Tensor | None:
    """The teachers' float32 soft targets of the training rows ``rows`` (None without distillation)."""
    return None if soft_table is None else torch.from_numpy(soft_table[rows].astype(np.float32))


def train_one_epoch(trainer: TrainStep, batches: Iterable, first_step: int, *,
                    soft_table: np.ndarray | None = None, soft_rows: Callable[[int], np.ndarray] | None = None,
                    before_step: Callable[[int], None] | None = None,
                    after_step: Callable[[int, StepResult], bool] | None = None) -> int:
    """Steps over ``batches``; the i-th batch is global step ``first_step + i``. The caller puts the model in
    training mode. With ``soft_table`` (distillation), ``soft_rows(index)`` gives the training rows of step
    ``index``'s batch. ``before_step(index)`` runs before each step; ``after_step(index, result)`` after it, and
    returns True to stop. Returns the number of steps made."""
    made = 0
    for x, y in batches:
        index = first_step + made
        if before_step is not None:
            before_step(index)
        soft = soft_batch(soft_table, soft_rows(index)) if soft_table is not None else None
        result = trainer.step(x, y, index, soft)
        made += 1
        if after_step is not None and after_step(index, result):
            break
    return made
