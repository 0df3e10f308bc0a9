"""The training loop: plain PyTorch, single process or DDP, resumable bit-exactly.

Everything random is a function of the config's seed: the model init (torch's global RNG, seeded before the
model is built), the batch order and augmentation (the loader derives them from seed, epoch and batch index),
and dropout (torch's global RNG, saved in every checkpoint); the weight average, when on, is saved too. So a
run interrupted at any step and resumed from ``checkpoints/last.pt`` ends with the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from ..data.loader import BatchLoader
from ..data.store import Store
from ..errors import QDMError
from ..fileio import save_npy_atomic, write_json_atomic, write_text_atomic
from ..inference import logits_for_split
from ..models import create_model
from ..models.profile import count_macs, count_params
from . import checkpoint as ckpt
from . import distill
from .config import TrainConfig, load_config
from .distributed import DistContext, all_reduce_sum, broadcast_flag, setup, teardown
from .mixing import mix_batch, mixed_loss, step_rng


def lr_at(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up from lr/100, then cosine down to lr * min_lr_ratio. A pure function of the step."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return cfg.lr * (0.01 + 0.99 * step / warmup)
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


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


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters (the usual recipe; decaying BN scales hurts small nets).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    from timm.optim import Lamb

    return Lamb(groups, lr=cfg.lr)


def class_weight_tensor(counts: list[int]) -> torch.Tensor:
    counts_t = torch.tensor(counts, dtype=torch.float32).clamp_min(1)
    weights = counts_t.sum() / (len(counts) * counts_t)
    return weights / weights.mean()


def _configure_threads(cfg: TrainConfig, ctx: DistContext) -> None:
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // ctx.world_size)
    torch.set_num_threads(threads)


@contextlib.contextmanager
def _interrupt_at_step_boundary():
    """Turn Ctrl-C / SIGTERM into a flag checked between steps, so a checkpoint never holds half a step."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: flag.set())
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _prepare_run_dir(out: Path, resume: bool) -> None:
    if resume:
        if not (out / ckpt.CHECKPOINTS / ckpt.LAST).exists():
            raise QDMError(f"{out}: nothing to resume (no {ckpt.CHECKPOINTS}/{ckpt.LAST})")
        return
    if (out / ckpt.CHECKPOINTS).exists() or (out / ckpt.WEIGHTS).exists():
        raise QDMError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")


def train(
    cfg: TrainConfig,
    data_dir: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> dict:
    """Train ``cfg.model`` on the store at ``data_dir`` into the run folder ``out``; returns the run summary.

    ``stop_after_steps`` ends this invocation cleanly after that many optimizer steps, leaving a checkpoint
    that ``resume=True`` continues from (the same happens on Ctrl-C).
    """
    out = Path(out)
    ctx = setup()
    try:
        with _interrupt_at_step_boundary() as stop_requested:
            return _train(cfg, Path(data_dir), out, ctx, resume, progress, stop_after_steps, stop_requested)
    finally:
        teardown(ctx)


def _train(cfg, data_dir, out, ctx, resume, progress, stop_after_steps, stop_requested) -> dict:
    _prepare_run_dir(out, resume)
    state = None
    if resume:
        cfg = load_config(out / ckpt.CONFIG)  # the run's own config, so the schedule is unchanged
        state = ckpt.load_checkpoint(out / ckpt.CHECKPOINTS / ckpt.LAST)
    _configure_threads(cfg, ctx)

    store = Store.open(data_dir)
    spec = cfg.split_spec()
    splits = store.splits(spec, cfg.classes)
    classes = splits["train"].classes
    if resume:
        saved = ckpt.read_labels(out / ckpt.LABELS)
        if saved != classes:
            raise QDMError(f"{out / ckpt.LABELS}: the run's {len(saved)} classes differ from the data's "
                           f"{len(classes)} classes in {data_dir}")
    if min(splits["train"].counts) == 0:
        empty = classes[splits["train"].counts.index(0)]
        raise QDMError(f"{data_dir}: class {empty!r} has no training rows after the split")

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=len(classes), **cfg.model_kwargs)
    params, macs = count_params(model), count_macs(model)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = build_optimizer(cfg, model)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
    net = torch.nn.parallel.DistributedDataParallel(model) if ctx.enabled else model
    # With EMA on, the averaged copy is what gets validated, picked as best and saved as the run's weights.
    ema = (AveragedModel(model, multi_avg_fn=ema_update(cfg.ema_decay, cfg.ema_warmup), use_buffers=True)
           if cfg.ema_decay > 0 else None)
    if ema is not None and state is not None:
        ema.load_state_dict(state["ema"])
    eval_model = ema.module if ema is not None else model

    augment = cfg.augmentation()
    loader = BatchLoader(splits["train"], cfg.batch_size, shuffle=True, augment=augment, balanced=cfg.balanced,
                         seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, drop_last=True,
                         channels_last=cfg.channels_last)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise QDMError(f"{data_dir}: fewer training rows ({len(splits['train'])}) than one batch "
                       f"({cfg.batch_size} x {ctx.world_size} ranks); lower batch_size")
    total_steps = steps_per_epoch * cfg.epochs
    weight = class_weight_tensor(splits["train"].counts) if cfg.class_weights else None
    mixing = cfg.mixing()

    teaching = cfg.distillation()
    soft_table = (distill.soft_targets(teaching, splits["train"], classes, out, ctx, resume=resume,
                                       batch_size=cfg.eval_batch_size, bf16=cfg.bf16,
                                       progress=progress and ctx.is_main, stop=stop_requested)
                  if teaching.enabled else None)

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None) -> torch.Tensor:
        hard = F.cross_entropy(logits, labels, weight=weight, label_smoothing=cfg.label_smoothing)
        if soft is None:
            return hard
        return ((1.0 - teaching.weight) * hard
                + teaching.weight * distill.soft_cross_entropy(logits, soft, teaching.temperature))

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / ckpt.CHECKPOINTS).mkdir(exist_ok=True)
        if not resume:
            write_text_atomic(out / ckpt.CONFIG, cfg.to_yaml())
            ckpt.write_labels(out / ckpt.LABELS, classes)
            if soft_table is not None:
                save_npy_atomic(out / distill.TEACHER_PROBS, soft_table)
    writer = _tensorboard(out) if ctx.is_main else None

    history = ckpt.read_metrics_csv(out / ckpt.METRICS) if resume else []
    epoch, batch_in_epoch = (state["epoch"], state["batch_in_epoch"]) if state else (0, 0)
    best_top1, bad_epochs = (state["best_top1"], state["bad_epochs"]) if state else (-1.0, 0)
    running = list(state["running"]) if state else [0.0, 0.0, 0.0]  # loss sum, correct, seen (this epoch)
    steps_this_call, stopped_early, interrupted = 0, False, False
    started, cpu_started = time.perf_counter(), time.process_time()

    def snapshot() -> dict:
        snap = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                "epoch": epoch, "batch_in_epoch": batch_in_epoch, "best_top1": best_top1,
                "bad_epochs": bad_epochs, "running": list(running)}
        if ema is not None:
            snap["ema"] = ema.state_dict()
        return snap

    try:
        while epoch < cfg.epochs and not stopped_early:
            net.train()
            loader.set_epoch(epoch)
            bar = tqdm(loader.batches(start=batch_in_epoch), total=steps_per_epoch, initial=batch_in_epoch,
                       desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not (progress and ctx.is_main),
                       dynamic_ncols=True)
            epoch_start = time.perf_counter()
            samples_this_epoch = 0
            for x, y in bar:
                step = epoch * steps_per_epoch + batch_in_epoch
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cfg, step, total_steps, steps_per_epoch)
                mixed = mix_batch(x, mixing, step_rng(cfg.seed, ctx.rank, step))
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                    logits = net(mixed.x.contiguous(memory_format=memory_format))
                targets = (y,) if soft_table is None else (
                    y, torch.from_numpy(soft_table[loader.batch_indices(batch_in_epoch)].astype(np.float32)))
                loss = mixed_loss(loss_fn, logits.float(), targets, mixed)
                if not torch.isfinite(loss):
                    raise QDMError(f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, batch {batch_in_epoch}; "
                                   f"stopped, last good checkpoint kept in {out / ckpt.CHECKPOINTS} "
                                   "(lower lr or enable grad_clip)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                if ema is not None:
                    ema.update_parameters(model)
                running[0] += loss.item() * len(y)
                running[1] += (logits.argmax(1) == y).sum().item()  # on a mixed batch: against the own label
                running[2] += len(y)
                batch_in_epoch += 1
                samples_this_epoch += len(y)
                elapsed = time.perf_counter() - epoch_start
                bar.set_postfix(loss=f"{running[0] / running[2]:.3f}", acc=f"{running[1] / running[2]:.3f}",
                                sps=f"{samples_this_epoch * ctx.world_size / max(elapsed, 1e-9):.0f}")
                steps_this_call += 1
                asked_to_stop = stop_requested.is_set() or (
                    stop_after_steps is not None and steps_this_call >= stop_after_steps)
                if broadcast_flag(ctx, asked_to_stop):
                    raise KeyboardInterrupt
            bar.close()

            loss_sum, correct, seen = all_reduce_sum(ctx, running)
            val_logits, val_labels = logits_for_split(eval_model, splits["val"], cfg.eval_batch_size)
            val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(val_labels)))
            val_top1 = float((val_logits.argmax(1) == val_labels).mean()) if len(val_labels) else float("nan")
            row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "val_loss": val_loss, "val_acc": val_top1,
                   "lr": optimizer.param_groups[0]["lr"],
                   "samples_per_s": samples_this_epoch * ctx.world_size / (time.perf_counter() - epoch_start)}
            history.append(row)
            improved = val_top1 > best_top1
            if improved:
                best_top1, bad_epochs = val_top1, 0
            else:
                bad_epochs += 1
            epoch, batch_in_epoch, running = epoch + 1, 0, [0.0, 0.0, 0.0]
            stopped_early = broadcast_flag(ctx, cfg.patience > 0 and bad_epochs >= cfg.patience)
            if ctx.is_main:
                _log_epoch(writer, row)
                ckpt.write_metrics_csv(out / ckpt.METRICS, history)
                if improved:
                    ckpt.save_checkpoint(out / ckpt.CHECKPOINTS / ckpt.BEST, snapshot())
                    ckpt.save_weights(out / ckpt.WEIGHTS, eval_model.state_dict())
                ckpt.save_checkpoint(out / ckpt.CHECKPOINTS / ckpt.LAST, snapshot())
                if progress:
                    tqdm.write(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
                               f" | val loss {val_loss:.4f} top-1 {val_top1:.4f}"
                               f"{' (best)' if improved else ''} | {row['samples_per_s']:.0f} samples/s")
    except KeyboardInterrupt:
        interrupted = True
        if ctx.is_main:
            ckpt.save_checkpoint(out / ckpt.CHECKPOINTS / ckpt.LAST, snapshot())
            if progress:
                tqdm.write(f"stopped at epoch {epoch + 1}, batch {batch_in_epoch}; "
                           f"continue with: qdm train --resume {out}")
    finally:
        if writer is not None:
            writer.close()

    summary = {
        "model": cfg.model, "params": params, "macs": macs, "classes": len(classes),
        "train_samples": len(splits["train"]), "val_samples": len(splits["val"]),
        "test_samples": len(splits["test"]), "epochs_done": epoch, "complete": not interrupted,
        "early_stopped": stopped_early, "best_val_top1": best_top1,
        "best_epoch": (max(history, key=lambda r: r["val_acc"])["epoch"] if history else None),
        "train_seconds_this_call": time.perf_counter() - started,
        "cpu_seconds_this_call": time.process_time() - cpu_started,  # all threads of this process
        "threads": torch.get_num_threads(), "world_size": ctx.world_size,
    }
    if ctx.is_main and not interrupted:
        write_json_atomic(out / "train_summary.json", summary)
    return summary


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; a stripped install still trains
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _log_epoch(writer, row: dict) -> None:
    if writer is None:
        return
    for key, value in row.items():
        if key != "epoch" and isinstance(value, float) and np.isfinite(value):
            writer.add_scalar(key, value, row["epoch"])
    writer.flush()
