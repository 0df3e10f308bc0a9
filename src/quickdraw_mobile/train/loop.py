"""The training loop: plain PyTorch, single process or DDP, resumable bit-exactly.

Everything random is a function of the config's seed: the model init (torch's global RNG, seeded before the
model is built), the batch order and augmentation (the loader derives them from seed, epoch and batch index),
and dropout (torch's global RNG, saved in every checkpoint); the weight average, when on, is saved too. So a
run interrupted at any step and resumed from ``checkpoints/last.pt`` ends with the same weights as an
uninterrupted run.

A fresh run writes ``last.pt`` before its first step, so a run folder that holds anything is resumable. At each
epoch's end the files are written best.pt and weights, then last.pt, then metrics.csv; the checkpoints carry the
metrics rows too, and a resume rewrites metrics.csv from them, so whatever a kill or a failed write interrupts,
the next resume continues from the last good checkpoint with exactly one metrics row per finished epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .. import runfolder as ckpt
from ..data.loader import BatchLoader
from ..data.store import Store
from ..errors import QDMError
from ..fileio import (
    blocking_file,
    ensure_dir,
    remove_stale_temporaries,
    save_npy_atomic,
    write_json_atomic,
    write_text_atomic,
)
from ..inference import logits_for_split
from ..models import create_model
from ..models.profile import count_macs, count_params
from . import distill, teachers
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


def _data_arg(data_dir: Path) -> str:
    """``--data`` for the store ``data_dir``, shell-quoted: ``embedded`` for the unpacked embedded subset."""
    from ..data.embedded import cache_dir

    data_dir = Path(data_dir)
    embedded = data_dir.parent == cache_dir() and data_dir.name.startswith("embedded-")
    return "embedded" if embedded else shlex.quote(str(data_dir))


def resume_command(out: Path, data_dir: Path) -> str:
    """The command line that continues the run in ``out`` on the store ``data_dir``."""
    return f"qdm train --resume {shlex.quote(str(out))} --data {_data_arg(data_dir)}"


def _holds_run(out: Path) -> bool:
    """Whether ``out`` holds something a fresh run would overwrite: a checkpoint or trained weights."""
    return any(path.exists() for path in (out / ckpt.CHECKPOINTS / ckpt.LAST, out / ckpt.CHECKPOINTS / ckpt.BEST,
                                          out / ckpt.WEIGHTS))


def _prepare_run_dir(out: Path, resume: bool, data_dir: Path, is_main: bool) -> Path | None:
    """Check ``out`` for a fresh run or a resume, tidy what a killed process left in it, and return the checkpoint
    to resume from (None for a fresh run).

    A folder without checkpoint or weights (a run killed, or out of disk space, before its first checkpoint) is
    reused by a fresh run. Resuming falls back to best.pt when last.pt is missing (a folder written before
    last.pt was saved first): best.pt holds the whole state at its epoch's end, and the epochs after it are
    trained again, to the same numbers."""
    checkpoints = out / ckpt.CHECKPOINTS
    if resume:
        source = next((p for p in (checkpoints / ckpt.LAST, checkpoints / ckpt.BEST) if p.exists()), None)
        if source is None:
            if (out / ckpt.CONFIG).is_file():
                raise QDMError(f"{out}: nothing to resume (stopped before its first checkpoint); start it again "
                               f"with: qdm train --config {shlex.quote(str(out / ckpt.CONFIG))} "
                               f"--data {_data_arg(data_dir)} --out {shlex.quote(str(out))}")
            raise QDMError(f"{out}: nothing to resume (no {ckpt.CHECKPOINTS}/{ckpt.LAST})")
    else:
        source = None
        blocker = blocking_file(out)
        if blocker is not None:
            raise QDMError(f"{out}: cannot create the run folder ({blocker} is a file, not a folder)")
        if _holds_run(out):
            raise QDMError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    if is_main:
        for folder in (out, checkpoints):
            remove_stale_temporaries(folder)
        if not resume:
            (out / ckpt.METRICS).unlink(missing_ok=True)  # rows of an earlier start that never checkpointed
    return source


@contextlib.contextmanager
def _explain_write_failure(out: Path, data_dir: Path):
    """A failed write (disk full, read-only, ...) says what is kept and how to go on."""
    try:
        yield
    except QDMError as exc:
        last = out / ckpt.CHECKPOINTS / ckpt.LAST
        if not out.is_dir():  # the folder itself could not be made: the message says why, nothing to add
            raise
        if last.exists():
            then = f"{last} keeps the last good state; once it can be written, continue with: " \
                   f"{resume_command(out, data_dir)}"
        else:
            then = ("nothing was checkpointed; once it can be written, run the same command again (it reuses the "
                    "folder)")
        raise QDMError(f"{exc}; {then}") from exc


def train(
    cfg: TrainConfig,
    data_dir: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    epochs: int | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> dict:
    """Train ``cfg.model`` on the store at ``data_dir`` into the run folder ``out``; returns the run summary.

    ``resume=True`` continues the run in ``out`` with its own config.yaml (``cfg`` is ignored); ``epochs`` then
    changes its length (at least the epochs already done; config.yaml is updated, and the cosine learning-rate
    schedule is recomputed over the new length from the current step on, so the result is not that of a run
    started with that many epochs). ``stop_after_steps`` ends this invocation cleanly after that many optimizer
    steps, leaving a checkpoint that ``resume=True`` continues from (the same happens on Ctrl-C).
    """
    if epochs is not None and not resume:
        raise QDMError("epochs: only for a resume; a new run takes its epochs from its config")
    out = Path(out)
    ctx = setup()
    try:
        with _interrupt_at_step_boundary() as stop_requested:
            return _train(cfg, Path(data_dir), out, ctx, resume, epochs, progress, stop_after_steps,
                          stop_requested)
    finally:
        teardown(ctx)


def _train(cfg, data_dir, out, ctx, resume, epochs, progress, stop_after_steps, stop_requested) -> dict:
    source = _prepare_run_dir(out, resume, data_dir, ctx.is_main)
    state, new_length = None, None
    if resume:
        cfg = load_config(out / ckpt.CONFIG)  # the run's own config, so the schedule is unchanged
        state = ckpt.load_checkpoint(source)
        if epochs is not None and epochs != cfg.epochs:
            if epochs < state["epoch"]:
                raise QDMError(f"--epochs: the run in {out} has done {state['epoch']} epochs already; "
                               f"expected at least {state['epoch']}")
            new_length = (cfg.epochs, epochs)
            cfg = cfg.updated(epochs=epochs)
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
    soft_table = (teachers.soft_targets(teaching, splits["train"], classes, out, ctx, resume=resume,
                                        batch_size=cfg.eval_batch_size, bf16=cfg.bf16,
                                        progress=progress and ctx.is_main, stop=stop_requested)
                  if teaching.enabled else None)

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None) -> torch.Tensor:
        hard = F.cross_entropy(logits, labels, weight=weight, label_smoothing=cfg.label_smoothing)
        if soft is None:
            return hard
        return ((1.0 - teaching.weight) * hard
                + teaching.weight * distill.soft_cross_entropy(logits, soft, teaching.temperature))

    if state is None:
        history = []
    elif "history" in state:
        history = [dict(row) for row in state["history"]]
    else:  # a checkpoint written before the rows were kept in it: the file's rows up to its epoch, once each
        history = ckpt.history_until(ckpt.read_metrics_csv(out / ckpt.METRICS), state["epoch"])
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
        snap["history"] = [dict(row) for row in history]  # the metrics rows of the finished epochs
        return snap

    if ctx.is_main:
        with _explain_write_failure(out, data_dir):
            ensure_dir(out / ckpt.CHECKPOINTS)
            if not resume:
                write_text_atomic(out / ckpt.CONFIG, cfg.to_yaml())
                ckpt.write_labels(out / ckpt.LABELS, classes)
                if soft_table is not None:
                    save_npy_atomic(out / distill.TEACHER_PROBS, soft_table)
                ckpt.save_checkpoint(out / ckpt.CHECKPOINTS / ckpt.LAST, snapshot())  # resumable from step 0 on
            else:
                if new_length is not None:
                    write_text_atomic(out / ckpt.CONFIG, cfg.to_yaml())
                if history:  # the checkpoint's rows: a kill may have left the file a row ahead or behind
                    ckpt.write_metrics_csv(out / ckpt.METRICS, history)
                else:
                    (out / ckpt.METRICS).unlink(missing_ok=True)
        if progress and resume:
            length = (f"; epochs {new_length[0]} -> {new_length[1]} (config.yaml updated, the learning-rate "
                      f"schedule now spans {new_length[1]} epochs)" if new_length else "")
            tqdm.write(f"resuming {out} from {source.name} at epoch {epoch + 1}, batch {batch_in_epoch}{length}")
    writer = _tensorboard(out) if ctx.is_main else None

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
                with _explain_write_failure(out, data_dir):
                    if improved:
                        ckpt.save_checkpoint(out / ckpt.CHECKPOINTS / ckpt.BEST, snapshot())
                        ckpt.save_weights(out / ckpt.WEIGHTS, eval_model.state_dict())
                    ckpt.save_checkpoint(out / ckpt.CHECKPOINTS / ckpt.LAST, snapshot())
                    ckpt.write_metrics_csv(out / ckpt.METRICS, history)  # after last.pt, which holds the rows too
                if progress:
                    tqdm.write(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
                               f" | val loss {val_loss:.4f} top-1 {val_top1:.4f}"
                               f"{' (best)' if improved else ''} | {row['samples_per_s']:.0f} samples/s")
    except KeyboardInterrupt:
        interrupted = True
        if ctx.is_main:
            with _explain_write_failure(out, data_dir):
                ckpt.save_checkpoint(out / ckpt.CHECKPOINTS / ckpt.LAST, snapshot())
            if progress:
                tqdm.write(f"stopped at epoch {epoch + 1}, batch {batch_in_epoch}; "
                           f"continue with: {resume_command(out, data_dir)}")
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
        with _explain_write_failure(out, data_dir):
            write_json_atomic(out / ckpt.SUMMARY, summary)
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
