"""One way to run an exported model, whatever its runtime: ``load_artifact(path).run(x) -> logits``.

``load_artifact`` reads the sidecar metadata (checked against the file: name, size, sha256, labels), loads the
file in its own runtime and checks what the runtime declares against the metadata: one input of
(batch, 1, 28, 28) float32, one output of (batch, num_classes). Verification, ``qdm predict``, ``qdm bench`` and
the web server all run models through this class.

A runtime is a line of ``artifact_names.RUNTIMES`` and a module of this package (``executorch``, ``onnx``) with
the functions of ``RuntimeModule``; ``runtime_module`` imports it when a file of that runtime is first converted
or loaded. Nothing here imports torch or a runtime, so an ONNX Runtime process stays as small as an app's would be.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..artifact_names import Runtime, runtime_named
from ..errors import QDMError
from .metadata import MEAN, SIDE, STD, read_metadata

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass
class Lowered:
    """What a runtime's ``convert`` made of a model: the file's bytes and how they were made."""

    data: bytes
    backend: dict  # metadata.json's export fields naming the runtime, its version, backend and operators
    lowering: list[str] = field(default_factory=list)  # what the runtime took, for the user (qdm export prints it)
    max_batch: int | None = None  # the largest batch the file takes, when it holds one
    # a runtime that quantizes with its own tools (``Runtime.quants``) names what it did:
    method: str | None = None  # fp32, onnxruntime-int8, ...
    scheme: str | None = None  # one line: weights, activations, granularity
    features: int | None = None  # D of the file's second output, the (batch, D) pooled features, when it has one


class RuntimeModule(Protocol):
    """What the module named by ``Runtime.module`` provides (two functions; ``probe`` and ``reset_threads`` are
    optional: ``getattr(module, name, None)``)."""

    def convert(self, model, quant: str, calibration: np.ndarray | None) -> Lowered:
        """The file's bytes for ``model`` (a torch module). A runtime of the quantization registry's methods
        (``Runtime.quants`` None) lowers the model as it is given, already quantized, of precision ``quant``;
        one with its own quantization applies ``quant`` itself, calibrated on ``calibration`` (uint8 bitmaps
        (N, 784), None for ``none``)."""

    def load(self, path: Path, threads: int | None) -> tuple[Forward, list, list]:
        """(forward, input shape, output shape) of the file: what its runtime declares (ints, or names for a
        dynamic dimension); ``threads``: compute threads, None for the runtime's default."""


def runtime_module(runtime: Runtime) -> RuntimeModule:
    return importlib.import_module(runtime.module)


def normalize_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint8 bitmaps (B, 784) or (B, 28, 28) -> float32 (B, 1, 28, 28): ``data.loader.normalize`` in numpy."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise QDMError(f"pixels: expected dtype uint8, got {pixels.dtype}")
    if pixels.ndim < 2 or pixels.shape[1:] not in ((SIDE * SIDE,), (SIDE, SIDE), (1, SIDE, SIDE)):
        raise QDMError(f"pixels: expected shape (B, 784) or (B, 28, 28), got {pixels.shape}")
    # Same float32 arithmetic as the torch version (divide by 127.5, then add -1): bit-identical inputs.
    x = pixels.reshape(len(pixels), 1, SIDE, SIDE).astype(np.float32) / np.float32(255.0 * STD)
    return x + np.float32(-MEAN / STD)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def failure_message(stage: str, exc: BaseException) -> str:
    """One line naming the stage, the operator when the error names one, and the error's first line."""
    texts = []
    while exc is not None and len(texts) < 5:
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    ops = re.findall(r"aten[.:]{1,2}[a-zA-Z_][\w]*", "\n".join(texts))
    first = next((line.strip() for t in texts for line in t.splitlines() if line.strip()), "unknown error")
    first = re.sub(r"\x1b\[[0-9;]*m", "", first)[:300]
    return f"{stage} failed" + (f" at operator {ops[0].replace('::', '.')}" if ops else "") + f": {first}"


class Artifact:
    """An exported model loaded in its own runtime, with its checked metadata and labels."""

    def __init__(self, path: str | Path, metadata: dict, labels: list[str], threads: int | None = None,
                 probe: bool = True):
        """``probe=False`` skips the runtime's check before loading (a .pte is loaded in a child process first):
        only for bytes this process just serialized itself (the export's own verification), never for a file
        from outside."""
        self.path = Path(path)
        self.metadata = metadata
        self.labels = labels
        self.runtime = metadata["artifact"]["runtime"]
        self.num_classes = int(metadata["num_classes"])
        self.max_batch = metadata["input"].get("batch", {}).get("max")
        spec = runtime_named(self.runtime)
        if spec is None:
            raise QDMError(f"{self.path}: its metadata names runtime {self.runtime!r}, which no runtime is")
        self.fixed_max_batch = spec.fixed_max_batch
        module = runtime_module(spec)
        check_loads = getattr(module, "probe", None)
        if probe and check_loads is not None:
            check_loads(self.path)
        self._forward, in_shape, out_shape = module.load(self.path, threads)
        self._check_shapes(in_shape, out_shape)

    def _check_shapes(self, in_shape: list, out_shape: list) -> None:
        """What the runtime declares must be what the metadata promises (catches a swapped or stale file)."""
        where = f"{self.path}: the model"
        if len(in_shape) != 4 or list(in_shape[1:]) != [1, SIDE, SIDE]:
            raise QDMError(f"{where} takes input of shape {in_shape}, metadata says (batch, 1, 28, 28)")
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != self.num_classes):
            raise QDMError(f"{where} gives {out_shape[1] if len(out_shape) == 2 else out_shape} outputs per "
                           f"drawing, metadata says {self.num_classes} classes")
        if self.fixed_max_batch and self.max_batch is not None and in_shape[0] != self.max_batch:
            raise QDMError(f"{where} takes batches of up to {in_shape[0]}, metadata says {self.max_batch}")

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def quant(self) -> str:
        return self.metadata["artifact"]["quant"]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (B, num_classes) float32 for normalized input (B, 1, 28, 28) float32 (numpy or torch)."""
        x = np.ascontiguousarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (1, SIDE, SIDE):
            raise QDMError(f"input: expected shape (B, 1, 28, 28), got {x.shape}")
        step = self.max_batch or max(1, len(x))
        outputs = [self._forward(x[i : i + step]) for i in range(0, len(x), step)]
        if not outputs:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        """One bare runtime call, for timing: ``x`` C-contiguous float32 (B, 1, 28, 28), B <= max_batch."""
        return self._forward(x)

    def run_pixels(self, pixels: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Logits for uint8 bitmaps (N, 784) or (N, 28, 28), normalized exactly as in training."""
        return np.concatenate([self.run(normalize_pixels(pixels[i : i + batch_size]))
                               for i in range(0, len(pixels), batch_size)] or
                              [np.zeros((0, self.num_classes), dtype=np.float32)])


def load_artifact(path: str | Path, threads: int | None = None, probe: bool = True) -> Artifact:
    """Load an artifact (.pte, .onnx, ...) with its checked sidecars. ``threads``: compute threads (None: the runtime's default);
    ``probe``: see ``Artifact`` (False only for files this process wrote itself)."""
    metadata, labels = read_metadata(path)
    return Artifact(path, metadata, labels, threads=threads, probe=probe)
