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

Where it trains is ``cfg.device`` (or ``train(device=...)``, which a resume may change: checkpoints load onto the
CPU first, so a run trained on a GPU continues on a CPU and the reverse). The log and ``train_summary.json`` say
where it ran (device, its name, autocast dtype, world size) and the achieved share of the machine's peak (MFU:
training MACs per drawing x drawings/s / peak; see ``device.peak_gmacs_of``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import device as devices
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
from ..models.profile import count_macs, count_params, count_train_macs
from . import distill, teachers
from .config import TrainConfig, load_config
from .distributed import DistContext, all_reduce_sum, broadcast_flag, setup, teardown
from .ema import ema_decay_at, ema_update
from .step import (
    NonFiniteLoss,
    StepResult,
    TrainStep,
    build_optimizer,
    class_weight_tensor,
    lr_at,
    train_one_epoch,
)

# the step's pieces, importable from here as before the step had its own module
__all__ = ["build_optimizer", "class_weight_tensor", "ema_decay_at", "ema_update", "lr_at", "resume_command", "train"]


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
    device: str | None = None,
) -> dict:
    """Train ``cfg.model`` on the store at ``data_dir`` into the run folder ``out``; returns the run summary.

    ``resume=True`` continues the run in ``out`` with its own config.yaml (``cfg`` is ignored); ``epochs`` then
    changes its length (at least the epochs already done; config.yaml is updated, and the cosine learning-rate
    schedule is recomputed over the new length from the current step on, so the result is not that of a run
    started with that many epochs). ``stop_after_steps`` ends this invocation cleanly after that many optimizer
    steps, leaving a checkpoint that ``resume=True`` continues from (the same happens on Ctrl-C). ``device``
    (auto, cpu, cuda, cuda:N, mps) overrides the config's, on resume too: where a run computes is not its recipe.
    """
    if epochs is not None and not resume:
        raise QDMError("epochs: only for a resume; a new run takes its epochs from its config")
    out = Path(out)
    ctx = setup(devices.resolve_device(_device_choice(cfg, out, resume, device)))
    devices.apply_backend_settings(ctx.device)
    try:
        with _interrupt_at_step_boundary() as stop_requested:
            return _train(cfg, Path(data_dir), out, ctx, resume, epochs, progress, stop_after_steps,
                          stop_requested)
    finally:
        teardown(ctx)


def _device_choice(cfg: TrainConfig | None, out: Path, resume: bool, device: str | None) -> str:
    """The ``--device`` of this invocation: the given one, else the run's config (its config.yaml on resume)."""
    if device is not None:
        return device
    if resume:
        return load_config(out / ckpt.CONFIG).device if (out / ckpt.CONFIG).is_file() else "auto"
    return cfg.device if cfg is not None else "auto"


@dataclass
class Position:
    """Where a run is: what its checkpoints hold besides the step's state (weights, optimizer, RNG, average)."""

    epoch: int = 0
    batch_in_epoch: int = 0
    best_top1: float = -1.0
    bad_epochs: int = 0
    running: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss sum, correct, seen (this epoch)
    history: list[dict] = field(default_factory=list)  # the metrics rows of the finished epochs

    @classmethod
    def restore(cls, state: dict | None, out: Path) -> Position:
        if state is None:
            return cls()
        if "history" in state:
            history = [dict(row) for row in state["history"]]
        else:  # a checkpoint written before the rows were kept in it: the file's rows up to its epoch, once each
            history = ckpt.history_until(ckpt.read_metrics_csv(out / ckpt.METRICS), state["epoch"])
        return cls(state["epoch"], state["batch_in_epoch"], state["best_top1"], state["bad_epochs"],
                   list(state["running"]), history)

    def checkpoint(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "best_top1": self.best_top1,
                "bad_epochs": self.bad_epochs, "running": list(self.running),
                "history": [dict(row) for row in self.history]}


@dataclass
class _Run:
    """One invocation of ``train``: the resolved run and its moving parts."""

    cfg: TrainConfig
    data_dir: Path
    out: Path
    ctx: DistContext
    progress: bool
    splits: dict
    trainer: TrainStep
    loader: BatchLoader
    soft_table: np.ndarray | None
    pos: Position
    info: dict  # model, params, macs and class count, for the summary
    peak: tuple[float | None, str] = (None, "not measured")  # the machine's GMAC/s and where that comes from

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def snapshot(self) -> dict:
        return {**self.trainer.state_dict(), **self.pos.checkpoint()}

    def save(self, *names: str) -> None:
        """The current state into the checkpoints ``names`` (main process only)."""
        with _explain_write_failure(self.out, self.data_dir):
            for name in names:
                ckpt.save_checkpoint(self.out / ckpt.CHECKPOINTS / name, self.snapshot())


def _resolve(cfg: TrainConfig | None, out: Path, resume: bool, epochs: int | None, source: Path | None):
    """The run's config (its own config.yaml on resume, with a new length), checkpoint and (old, new) length."""
    if not resume:
        return cfg, None, None
    cfg = load_config(out / ckpt.CONFIG)  # the run's own config, so the schedule is unchanged
    state = ckpt.load_checkpoint(source)
    if epochs is None or epochs == cfg.epochs:
        return cfg, state, None
    if epochs < state["epoch"]:
        raise QDMError(f"--epochs: the run in {out} has done {state['epoch']} epochs already; "
                       f"expected at least {state['epoch']}")
    return cfg.updated(epochs=epochs), state, (cfg.epochs, epochs)


def _open_splits(cfg: TrainConfig, data_dir: Path, out: Path, resume: bool) -> dict:
    store = Store.open(data_dir)
    splits = store.splits(cfg.split_spec(), cfg.classes)
    classes = splits["train"].classes
    if resume:
        saved = ckpt.read_labels(out / ckpt.LABELS)
        if saved != classes:
            raise QDMError(f"{out / ckpt.LABELS}: the run's {len(saved)} classes differ from the data's "
                           f"{len(classes)} classes in {data_dir}")
    if min(splits["train"].counts) == 0:
        empty = classes[splits["train"].counts.index(0)]
        raise QDMError(f"{data_dir}: class {empty!r} has no training rows after the split")
    return splits


def _build_run(cfg, data_dir, out, ctx, state, progress, stop_requested) -> _Run:
    splits = _open_splits(cfg, data_dir, out, state is not None)
    classes = splits["train"].classes
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=len(classes), **cfg.model_kwargs)
    with torch.random.fork_rng(devices=[]):  # a train-mode pass may draw dropout masks: not from the run's RNG
        train_macs = count_train_macs(model)
    info = {"model": cfg.model, "params": count_params(model), "macs": count_macs(model), "train_macs": train_macs,
            "classes": len(classes)}
    loader = BatchLoader(splits["train"], cfg.batch_size, shuffle=True, augment=cfg.augmentation(),
                         balanced=cfg.balanced, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size,
                         drop_last=True, channels_last=cfg.channels_last, device=ctx.device)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise QDMError(f"{data_dir}: fewer training rows ({len(splits['train'])}) than one batch "
                       f"({cfg.batch_size} x {ctx.world_size} ranks); lower batch_size")
    total_steps = steps_per_epoch * cfg.epochs
    trainer = TrainStep(cfg, model, lambda step: lr_at(cfg, step, total_steps, steps_per_epoch),
                        class_counts=splits["train"].counts, state=state, rank=ctx.rank, distributed=ctx.enabled,
                        device=ctx.device)
    soft_table = (teachers.soft_targets(cfg.distill, splits["train"], classes, out, ctx, resume=state is not None,
                                        batch_size=cfg.eval_batch_size, bf16=cfg.bf16,
                                        progress=progress and ctx.is_main, stop=stop_requested)
                  if cfg.distill.enabled else None)
    info.update(device=str(ctx.device), device_name=devices.device_name(ctx.device),
                autocast=trainer.precision.name, compiled=cfg.compile,
                ddp_backend=devices.ddp_backend(ctx.device) if ctx.enabled else None)
    peak = devices.peak_gmacs_of(ctx.device, trainer.precision, threads=torch.get_num_threads(),
                                 measure=ctx.is_main and steps_per_epoch * cfg.epochs >= MFU_MIN_STEPS)
    return _Run(cfg, data_dir, out, ctx, progress, splits, trainer, loader, soft_table,
                Position.restore(state, out), info, peak)


# A run of fewer steps does not measure the CPU's peak for its MFU (a second of 3x3 convolutions would be a good
# share of it: the test suite's runs); its summary says so ("peak_source": "not measured", "mfu": null).
MFU_MIN_STEPS = 100


def mfu(train_macs: int, samples_per_s: float, peak_gmacs: float | None, world_size: int) -> float | None:
    """Model FLOPs utilization, as nanoGPT reports it: the training MACs done per second over the peak of all
    ``world_size`` processes (each with ``peak_gmacs``); None without a peak."""
    if peak_gmacs is None or peak_gmacs <= 0:
        return None
    return train_macs * samples_per_s / (peak_gmacs * 1e9 * world_size)


def _write_start(run: _Run, resume: bool, new_length, source: Path | None) -> None:
    """The run folder's files before the first step: config, labels, soft targets and a step-0 checkpoint for a
    fresh run; on resume the metrics rows of the checkpoint (and the config, with a new length)."""
    out = run.out
    with _explain_write_failure(out, run.data_dir):
        ensure_dir(out / ckpt.CHECKPOINTS)
        if not resume:
            write_text_atomic(out / ckpt.CONFIG, run.cfg.to_yaml())
            ckpt.write_labels(out / ckpt.LABELS, run.splits["train"].classes)
            if run.soft_table is not None:
                save_npy_atomic(out / distill.TEACHER_PROBS, run.soft_table)
            ckpt.save_checkpoint(out / ckpt.CHECKPOINTS / ckpt.LAST, run.snapshot())  # resumable from step 0 on
        else:
            if new_length is not None:
                write_text_atomic(out / ckpt.CONFIG, run.cfg.to_yaml())
            if run.pos.history:  # the checkpoint's rows: a kill may have left the file a row ahead or behind
                ckpt.write_metrics_csv(out / ckpt.METRICS, run.pos.history)
            else:
                (out / ckpt.METRICS).unlink(missing_ok=True)
    if run.progress:
        info = run.info
        ranks = f", {run.ctx.world_size} processes ({info['ddp_backend']})" if run.ctx.enabled else ""
        precision = "float32" if info["autocast"] == "float32" else f"{info['autocast']} autocast"
        tqdm.write(f"training on {info['device']} ({info['device_name']}), {precision}{ranks}"
                   f"{', compiled' if info['compiled'] else ''}")
    if run.progress and resume:
        length = (f"; epochs {new_length[0]} -> {new_length[1]} (config.yaml updated, the learning-rate "
                  f"schedule now spans {new_length[1]} epochs)" if new_length else "")
        tqdm.write(f"resuming {out} from {source.name} at epoch {run.pos.epoch + 1}, "
                   f"batch {run.pos.batch_in_epoch}{length}")


def _run_epoch(run: _Run, should_stop) -> tuple[int, float]:
    """The rest of the current epoch's steps; returns (samples, start time). ``should_stop(steps)`` is asked
    after each step with the steps made so far; it stopping raises KeyboardInterrupt (the caller checkpoints)."""
    pos, ctx, loader, spe = run.pos, run.ctx, run.loader, run.steps_per_epoch
    run.trainer.net.train()
    loader.set_epoch(pos.epoch)
    bar = tqdm(loader.batches(start=pos.batch_in_epoch), total=spe, initial=pos.batch_in_epoch,
               desc=f"epoch {pos.epoch + 1}/{run.cfg.epochs}", unit="batch",
               disable=not (run.progress and ctx.is_main), dynamic_ncols=True)
    epoch_start, samples = time.perf_counter(), 0

    def after_step(index: int, result: StepResult) -> bool:
        nonlocal samples
        pos.running[0] += result.loss * result.count
        pos.running[1] += result.correct  # on a mixed batch: against the own label
        pos.running[2] += result.count
        pos.batch_in_epoch += 1
        samples += result.count
        elapsed = time.perf_counter() - epoch_start
        bar.set_postfix(loss=f"{pos.running[0] / pos.running[2]:.3f}", acc=f"{pos.running[1] / pos.running[2]:.3f}",
                        sps=f"{samples * ctx.world_size / max(elapsed, 1e-9):.0f}")
        if broadcast_flag(ctx, should_stop()):
            raise KeyboardInterrupt
        return False

    try:
        train_one_epoch(run.trainer, bar, pos.epoch * spe + pos.batch_in_epoch, soft_table=run.soft_table,
                        soft_rows=lambda index: loader.batch_indices(index - pos.epoch * spe), after_step=after_step)
    except NonFiniteLoss as exc:
        raise QDMError(f"{exc} at epoch {pos.epoch + 1}, batch {pos.batch_in_epoch}; stopped, last good checkpoint "
                       f"kept in {run.out / ckpt.CHECKPOINTS} (lower lr or enable grad_clip)") from exc
    bar.close()
    return samples, epoch_start


def _end_epoch(run: _Run, samples: int, epoch_start: float, writer) -> bool:
    """Validate, record the epoch's row, checkpoint; returns whether early stopping ends the run."""
    pos, ctx, cfg = run.pos, run.ctx, run.cfg
    loss_sum, correct, seen = all_reduce_sum(ctx, pos.running)
    val_logits, val_labels = logits_for_split(run.trainer.eval_model, run.splits["val"], cfg.eval_batch_size)
    val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(val_labels)))
    val_top1 = float((val_logits.argmax(1) == val_labels).mean()) if len(val_labels) else float("nan")
    row = {"epoch": pos.epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
           "val_loss": val_loss, "val_acc": val_top1, "lr": run.trainer.optimizer.param_groups[0]["lr"],
           "samples_per_s": samples * ctx.world_size / (time.perf_counter() - epoch_start)}
    pos.history.append(row)
    improved = val_top1 > pos.best_top1
    if improved:
        pos.best_top1, pos.bad_epochs = val_top1, 0
    else:
        pos.bad_epochs += 1
    pos.epoch, pos.batch_in_epoch, pos.running = pos.epoch + 1, 0, [0.0, 0.0, 0.0]
    stopped_early = broadcast_flag(ctx, cfg.patience > 0 and pos.bad_epochs >= cfg.patience)
    if ctx.is_main:
        _log_epoch(writer, row)
        with _explain_write_failure(run.out, run.data_dir):
            if improved:
                ckpt.save_checkpoint(run.out / ckpt.CHECKPOINTS / ckpt.BEST, run.snapshot())
                ckpt.save_weights(run.out / ckpt.WEIGHTS, run.trainer.eval_model.state_dict())
            ckpt.save_checkpoint(run.out / ckpt.CHECKPOINTS / ckpt.LAST, run.snapshot())
            ckpt.write_metrics_csv(run.out / ckpt.METRICS, pos.history)  # after last.pt, which holds the rows too
        if run.progress:
            used = mfu(run.info["train_macs"], row["samples_per_s"], run.peak[0], ctx.world_size)
            tqdm.write(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
                       f" | val loss {val_loss:.4f} top-1 {val_top1:.4f}"
                       f"{' (best)' if improved else ''} | {row['samples_per_s']:.0f} samples/s"
                       f"{f' | MFU {used:.1%}' if used is not None else ''}")
    return stopped_early


def _train(cfg, data_dir, out, ctx, resume, epochs, progress, stop_after_steps, stop_requested) -> dict:
    source = _prepare_run_dir(out, resume, data_dir, ctx.is_main)
    cfg, state, new_length = _resolve(cfg, out, resume, epochs, source)
    _configure_threads(cfg, ctx)
    run = _build_run(cfg, data_dir, out, ctx, state, progress, stop_requested)
    started, cpu_started = time.perf_counter(), time.process_time()
    if ctx.is_main:
        _write_start(run, resume, new_length, source)
    writer = _tensorboard(out) if ctx.is_main else None
    steps = 0

    def should_stop() -> bool:
        nonlocal steps
        steps += 1
        return stop_requested.is_set() or (stop_after_steps is not None and steps >= stop_after_steps)

    stopped_early, interrupted = False, False
    try:
        while run.pos.epoch < cfg.epochs and not stopped_early:
            samples, epoch_start = _run_epoch(run, should_stop)
            stopped_early = _end_epoch(run, samples, epoch_start, writer)
    except KeyboardInterrupt:
        interrupted = True
        if ctx.is_main:
            run.save(ckpt.LAST)
            if progress:
                tqdm.write(f"stopped at epoch {run.pos.epoch + 1}, batch {run.pos.batch_in_epoch}; "
                           f"continue with: {resume_command(out, data_dir)}")
    finally:
        if writer is not None:
            writer.close()
    summary = _summary(run, interrupted, stopped_early, started, cpu_started)
    if ctx.is_main and not interrupted:
        with _explain_write_failure(out, data_dir):
            write_json_atomic(out / ckpt.SUMMARY, summary)
    return summary


def _summary(run: _Run, interrupted: bool, stopped_early: bool, started: float, cpu_started: float) -> dict:
    history = run.pos.history
    return {
        **run.info, "train_samples": len(run.splits["train"]), "val_samples": len(run.splits["val"]),
        "test_samples": len(run.splits["test"]), "epochs_done": run.pos.epoch, "complete": not interrupted,
        "early_stopped": stopped_early, "best_val_top1": run.pos.best_top1,
        "best_epoch": (max(history, key=lambda r: r["val_acc"])["epoch"] if history else None),
        "train_seconds_this_call": time.perf_counter() - started,
        "cpu_seconds_this_call": time.process_time() - cpu_started,  # all threads of this process
        "threads": torch.get_num_threads(), "world_size": run.ctx.world_size,
        **_utilization(run),
    }


def _utilization(run: _Run) -> dict:
    """The last epoch's drawings/s and its share of the machine's peak (None before an epoch ends)."""
    sps = run.pos.history[-1]["samples_per_s"] if run.pos.history else None
    used = mfu(run.info["train_macs"], sps, run.peak[0], run.ctx.world_size) if sps is not None else None
    return {"samples_per_s": sps, "peak_gmacs_per_process": run.peak[0], "peak_source": run.peak[1], "mfu": used}


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
