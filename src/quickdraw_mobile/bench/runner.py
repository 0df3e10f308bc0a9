"""``qdm bench``: the same model in each runtime, measured the same way in one run.

Each model reference is a *subject*: a run folder or ``default`` runs in eager PyTorch, a .pte in ExecuTorch, an
.onnx in ONNX Runtime. A run folder or ``default`` is also exported (verified) to FP32 and INT8 .pte and .onnx
under ``OUT/artifacts`` unless ``export=False``, so one command compares all five runtimes (and the C++ one). For each subject:

- size on disk (the .safetensors weights for eager, the file itself for an artifact);
- single-image latency p50 / p95 (warm-up, then ``runs`` timed calls) on 1 thread and on all threads;
- batch throughput (``batch`` images per call) on the same thread counts;
- achieved GMAC/s (the model's MACs / p50 latency), beside the machine's fp32 matmul peak;
- peak resident memory of a fresh process that loads it and runs it (``bench.memory``);
- with ``qdm-native`` built (native/), an "ExecuTorch C++" row for every .pte: the same file in ExecuTorch's C++
  runtime, timed and measured by ``qdm-native bench`` in a process of its own (``bench.native``);
- a subject whose logits on the benchmark batch are NaN or infinite is an error before anything is timed;
- top-1 on real labelled drawings (the model's test split with ``data_dir``, else its bundled sample) and
  agreement with the eager model's top-1, when the subject's classes are the model's.

Threads: torch via ``torch.set_num_threads``; ONNX Runtime per session (``intra_op_num_threads``); ExecuTorch's
XNNPACK thread pool is process-wide and resized before each load (``_unsafe_reset_threadpool``).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..artifact_names import export_file_name, runtime_named
from ..errors import QDMError
from ..export.selfcheck import check_finite
from ..inference import model_device
from ..modelref import bundled_name, is_artifact, load_model
from ..models.profile import count_macs
from ..options import CALIBRATION_SIZE
from .latency import RunFn, latency, peak_gmacs, throughput
from .memory import peak_memory
from .native import NATIVE_RUNTIME, find_native, native_predictions, native_row

EAGER = "PyTorch eager"  # the row name of a run folder or 'default' (an artifact's: its runtime's display name)
EXPORTS = (("pte", "none"), ("pte", "int8"), ("onnx", "none"), ("onnx", "int8"))


@dataclass
class Subject:
    name: str  # table row, e.g. "ExecuTorch INT8"
    runtime: str  # pytorch, or the runtime of an artifact (executorch, onnxruntime, ...)
    quant: str  # none | int8
    ref: str  # what is loaded: a run folder, 'default' or an artifact path
    size_path: Path  # the file whose size is reported
    macs: int
    labels: list[str]
    open: Callable[[int], RunFn]  # threads -> a function running one float32 (B, 1, 28, 28) batch
    max_batch: int | None = None  # the largest batch the file holds (None: any)


def eager_subject(model_ref: str, device: str = "cpu") -> Subject:
    """A run folder or ``default`` in eager PyTorch on ``device``; off the CPU each call includes the copies in
    and the logits' copy back (which waits for the device), so a latency is the whole call's."""
    loaded = load_model(model_ref, device)
    model = loaded.model
    where = model_device(model)

    def open_eager(threads: int) -> RunFn:
        torch.set_num_threads(threads)
        return lambda x: model(torch.from_numpy(x).to(where)).cpu()

    name = f"{EAGER} FP32" if where.type == "cpu" else f"{EAGER} FP32 ({where})"
    return Subject(name, "pytorch", "none", str(model_ref), loaded.run.weights_path, count_macs(model),
                   loaded.labels, open_eager)


def artifact_subject(path: str) -> Subject:
    from ..export import load_artifact, read_metadata

    metadata, labels = read_metadata(path)
    runtime, quant = runtime_named(metadata["artifact"]["runtime"]), metadata["artifact"]["quant"]
    name = f"{runtime.display} {'INT8' if quant == 'int8' else 'FP32'}"
    return Subject(name, runtime.name, quant, str(path), Path(path), int(metadata["model"]["macs"]), labels,
                   lambda threads: load_artifact(path, threads=threads).run_batch,
                   metadata["input"]["batch"]["max"] if runtime.fixed_max_batch else None)


def export_subjects(model_ref: str, out: Path, data_dir: str | Path | None, calib: int) -> list[str]:
    """Export (and verify) ``model_ref`` to FP32 and INT8 .pte and .onnx under ``out``; their paths."""
    from ..export.pipeline import export_model

    stem = bundled_name(model_ref) or Path(model_ref).resolve().name
    paths = []
    for fmt, quant in tqdm(EXPORTS, desc="export", unit="artifact"):
        path = out / export_file_name(stem, fmt, quant)
        export_model(model_ref, fmt, quant, path, data_dir=data_dir, calib=calib)
        paths.append(str(path))
    return paths


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _all_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _reset_thread_pools(subjects: list[Subject], threads: int) -> None:
    """Give the process-wide thread pool of each runtime that has one (ExecuTorch's XNNPACK) ``threads`` back."""
    from ..export.runtime import runtime_module

    for runtime in filter(None, map(runtime_named, dict.fromkeys(s.runtime for s in subjects))):
        reset = getattr(runtime_module(runtime), "reset_threads", None)
        if reset is not None:
            reset(threads)


def _accuracy(subjects: list[Subject], drawings, threads: int, native_preds: dict[str, np.ndarray]) -> dict[str, dict]:
    """Top-1 of each subject whose classes are the drawings' model's (and of the C++ rows' predictions), and
    agreement with the eager top-1."""
    from ..export.runtime import normalize_pixels

    x = normalize_pixels(drawings.pixels)
    preds = {}
    for s in subjects:
        run = s.open(threads)
        with torch.inference_mode():
            logits = [np.asarray(run(np.ascontiguousarray(x[i : i + 32]))) for i in range(0, len(x), 32)]
        preds[s.name] = np.concatenate(logits).argmax(1)
    preds.update(native_preds)
    eager = next((preds[s.name] for s in subjects if s.runtime == "pytorch"), None)
    return {name: {"top1": float((p == drawings.labels).mean()),
                   **({"agreement_with_eager": float((p == eager).mean())} if eager is not None else {})}
            for name, p in preds.items()}


def _check_batch(subjects: list[Subject], batch: int) -> None:
    for s in subjects:
        if s.max_batch is not None and batch > s.max_batch:
            raise QDMError(f"--batch: {s.ref} takes batches of at most {s.max_batch}, got {batch}")


def _with_exports(given: list[Subject], out: Path, data_dir, calib: int) -> list[Subject]:
    """The subjects with each run folder's exported files right after it."""
    subjects = []
    for s in given:
        subjects.append(s)
        if s.runtime == "pytorch":
            subjects += [artifact_subject(p) for p in export_subjects(s.ref, out, data_dir, calib)]
    return subjects


def _measure(s: Subject, threads: list[int], x_one: np.ndarray, x_batch: np.ndarray, runs: int,
             warmup: int) -> dict:
    """One subject's row: latency (one drawing), throughput (a batch) and GMAC/s on each thread count."""
    row: dict = {"name": s.name, "runtime": s.runtime, "quant": s.quant, "path": s.ref,
                 "size_bytes": s.size_path.stat().st_size, "macs": s.macs, "classes": len(s.labels),
                 "latency": {}, "throughput": {}, "gmacs": {}}
    for t in threads:
        run = s.open(t)  # ExecuTorch: resizes its process-wide thread pool, then loads
        lat = latency(run, x_one, runs=runs, warmup=warmup)
        row["latency"][str(t)] = lat
        row["throughput"][str(t)] = throughput(run, x_batch, runs=max(5, runs // 10), warmup=max(1, warmup // 5))
        row["gmacs"][str(t)] = s.macs / (lat["p50_ms"] / 1e3) / 1e9
    return row


def run_bench(refs: list[str], out: str | Path, data_dir: str | Path | None = None, runs: int = 200,
              warmup: int = 20, batch: int = 32, threads: list[int] | None = None, memory: bool = True,
              export: bool = True, calib: int = CALIBRATION_SIZE, native: bool = True, device: str = "cpu") -> dict:
    """Measure every subject of ``refs``; returns the results (``bench.report.write_report`` writes them). The
    eager rows run on ``device``; artifacts in their runtimes, on the CPU."""
    if runs < 1 or warmup < 0 or batch < 1:
        raise QDMError(f"--runs, --warmup, --batch: expected positive numbers, got {runs}, {warmup}, {batch}")
    out = Path(out)
    threads = sorted(set(threads or [1, _all_threads()]))
    model_refs = [r for r in refs if not is_artifact(r)]
    given = [artifact_subject(r) if is_artifact(r) else eager_subject(r, device) for r in refs]
    _check_batch(given, batch)

    from ..export.calibration import verification_set

    drawings = verification_set(model_refs[0], data_dir) if model_refs else None
    sample = drawings.pixels[:batch] if drawings is not None else np.zeros((batch, 784), np.uint8)
    from ..export.runtime import normalize_pixels

    x_batch = np.ascontiguousarray(np.resize(normalize_pixels(sample), (batch, 1, 28, 28)))
    x_one = np.ascontiguousarray(x_batch[:1])

    native_binary = find_native() if native else None
    native_rows: list[tuple[dict, Subject]] = []
    torch_threads = torch.get_num_threads()
    results = []
    subjects = list(given)
    try:
        for s in given:  # a model that computes NaN is refused before anything is exported, timed or written
            with torch.inference_mode():
                check_finite(np.asarray(s.open(max(threads))(x_batch)), f"{s.ref}: the model", "benchmark drawings")
        if export:  # each run folder's exports follow it; each export checks its own file's logits
            subjects = _with_exports(given, out / "artifacts", data_dir, calib)
            _check_batch(subjects, batch)
        names = [s.name for s in subjects]
        for s in subjects:  # two files of the same kind: tell them apart by file name
            if names.count(s.name) > 1:
                s.name = f"{s.name} ({Path(s.ref).name})"
        peaks = {str(t): peak_gmacs(t) for t in threads}
        with torch.inference_mode():
            for s in tqdm(subjects, desc="bench", unit="runtime"):
                row = _measure(s, threads, x_one, x_batch, runs, warmup)
                if memory:
                    row["memory"] = peak_memory(s.ref)
                results.append(row)
                if native_binary is not None and s.runtime == NATIVE_RUNTIME:
                    display = runtime_named(s.runtime).display
                    cpp = native_row(native_binary, s.name.replace(display, f"{display} C++"), s.ref, s.quant,
                                     s.macs, sample, runs=runs, warmup=warmup, batch=batch, threads=threads,
                                     memory=memory)
                    native_rows.append((cpp, s))
                    results.append(cpp)
        if drawings is not None:
            reference = next(s.labels for s in subjects if s.ref == str(model_refs[0]))
            native_preds = {row["name"]: native_predictions(native_binary, s.ref, drawings.pixels)
                            for row, s in native_rows if s.labels == reference}
            scores = _accuracy([s for s in subjects if s.labels == reference], drawings, max(threads), native_preds)
            for row in results:
                row.update(scores.get(row["name"], {}))
    finally:
        torch.set_num_threads(torch_threads)
        _reset_thread_pools([*given, *subjects], _all_threads())
    return {
        "machine": {"cpu": _cpu_name(), "cores": _all_threads(),
                    "peak_fp32_gmacs": peaks, "torch": version("torch"), "executorch": version("executorch"),
                    "onnxruntime": version("onnxruntime")},
        "settings": {"runs": runs, "warmup": warmup, "batch": batch, "threads": threads,
                     "native": str(native_binary) if native_binary else None,
                     "accuracy_on": drawings.source if drawings is not None else None},
        "results": results,
    }
