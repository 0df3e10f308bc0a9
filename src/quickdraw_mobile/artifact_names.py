"""What exported models and the files beside them are called: the one place that names artifact files.

An artifact is an ``.pte`` (ExecuTorch) or an ``.onnx`` (ONNX Runtime) file; its two sidecars are named after the
whole file name (``model.pte.metadata.json``, ``model.pte.labels.txt``), so a .pte and an .onnx of the same stem
can share a folder. The exports that bench and the pipeline make are called ``<stem>_fp32.pte``,
``<stem>_int8.onnx`` and so on. Imports nothing (no torch), so every layer may use it.
"""

from __future__ import annotations

from pathlib import Path

FORMATS = {"pte": ".pte", "onnx": ".onnx"}  # --format -> file suffix
RUNTIMES = {".pte": "executorch", ".onnx": "onnxruntime"}  # file suffix -> the runtime that loads it
METADATA_SUFFIX = ".metadata.json"
LABELS_SUFFIX = ".labels.txt"


def is_artifact(ref: str | Path) -> bool:
    """True for an exported model file (.pte or .onnx), which runs in its own runtime, not in PyTorch."""
    return Path(str(ref)).suffix in RUNTIMES


def sidecar_paths(artifact: str | Path) -> tuple[Path, Path]:
    """(metadata.json, labels.txt) beside ``artifact``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + METADATA_SUFFIX), artifact.with_name(artifact.name + LABELS_SUFFIX)


def export_file_name(stem: str, fmt: str, quant: str) -> str:
    """The name of the ``fmt`` export of ``stem`` with quantization ``quant`` (``none`` is fp32)."""
    return f"{stem}_{'fp32' if quant == 'none' else quant}{FORMATS[fmt]}"
