"""What exported models and the files beside them are called, and which runtime runs each: the runtime registry.

An artifact is a file that runs in a runtime of its own, not in PyTorch: an ``.pte`` (ExecuTorch) or an ``.onnx``
(ONNX Runtime). ``RUNTIMES`` declares each runtime in one line (its --format name, file suffix, display name, the
``export/`` module that converts and loads it, and what it accepts); everything that names, converts, loads or
measures an artifact reads it from there. Its two sidecars are named after the whole file name
(``model.pte.metadata.json``, ``model.pte.labels.txt``), so a .pte and an .onnx of the same stem can share a
folder. The exports that bench and the pipeline make are called ``<stem>_fp32.pte``, ``<stem>_int8.onnx`` and so
on. Imports nothing (no torch, no runtime), so every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

METADATA_SUFFIX = ".metadata.json"
LABELS_SUFFIX = ".labels.txt"


@dataclass(frozen=True)
class Runtime:
    """A runtime that runs exported models, as declared in one line of ``RUNTIMES``.

    ``module`` is imported only when a file is converted or loaded (``export.runtime.runtime_module``); it
    provides ``convert(model, quant, calibration) -> export.runtime.Lowered`` and ``load(path, threads) ->
    (forward, input shape, output shape)``, and may provide ``probe(path)`` (a check before loading) and
    ``reset_threads(threads)`` (a process-wide thread pool)."""

    name: str  # what metadata.json says runs the file (artifact.runtime)
    format: str  # the value of ``qdm export --format``
    suffix: str  # the file's suffix
    display: str  # how tables and messages name it ("ExecuTorch INT8")
    module: str  # the module that converts and loads its files
    package: str  # the Python package that runs its files (imported first when its memory is measured)
    # --quant values the runtime quantizes with itself (calibrated when not none); None: any method of the
    # quantization registry, which the export verb applies before the runtime lowers the model as it is given
    quants: tuple[str, ...] | None = None
    fixed_max_batch: bool = False  # the file holds its largest batch (metadata's batch.max must equal it)


RUNTIMES: list[Runtime] = [
    Runtime("executorch", "pte", ".pte", "ExecuTorch", "quickdraw_mobile.export.executorch", "executorch.runtime",
            fixed_max_batch=True),
    Runtime("onnxruntime", "onnx", ".onnx", "ONNX Runtime", "quickdraw_mobile.export.onnx", "onnxruntime",
            quants=("none", "int8")),
]


def register_runtime(runtime: Runtime) -> Runtime:
    """Add ``runtime`` to ``RUNTIMES`` (a runtime outside the package, or a test's); its name, format and suffix
    must be new. ``unregister_runtime`` takes it out again."""
    for known in RUNTIMES:
        if {known.name, known.format, known.suffix} & {runtime.name, runtime.format, runtime.suffix}:
            raise ValueError(f"runtime {runtime.name!r} clashes with {known.name!r} (name, format or suffix)")
    RUNTIMES.append(runtime)
    return runtime


def unregister_runtime(name: str) -> None:
    RUNTIMES[:] = [r for r in RUNTIMES if r.name != name]


def runtime_named(name: str) -> Runtime | None:
    return next((r for r in RUNTIMES if r.name == name), None)


def runtime_of_format(fmt: str) -> Runtime | None:
    """The runtime ``qdm export --format fmt`` writes for, or None."""
    return next((r for r in RUNTIMES if r.format == fmt), None)


def runtime_of_file(ref: str | Path) -> Runtime | None:
    """The runtime that runs the file ``ref`` (by its suffix), or None for anything that is not an artifact."""
    suffix = Path(str(ref)).suffix
    return next((r for r in RUNTIMES if r.suffix == suffix), None)


def either(words: list[str], last: str = "or") -> str:
    """``a``, ``a or b``, ``a, b or c``: a list of alternatives in a sentence."""
    return f"{', '.join(words[:-1])} {last} {words[-1]}" if len(words) > 1 else "".join(words)


def is_artifact(ref: str | Path) -> bool:
    """True for an exported model file (.pte, .onnx, ...), which runs in its own runtime, not in PyTorch."""
    return runtime_of_file(ref) is not None


def sidecar_paths(artifact: str | Path) -> tuple[Path, Path]:
    """(metadata.json, labels.txt) beside ``artifact``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + METADATA_SUFFIX), artifact.with_name(artifact.name + LABELS_SUFFIX)


def export_file_name(stem: str, fmt: str, quant: str) -> str:
    """The name of the ``fmt`` export of ``stem`` with quantization ``quant`` (``none`` is fp32)."""
    return f"{stem}_{'fp32' if quant == 'none' else quant}{runtime_of_format(fmt).suffix}"
