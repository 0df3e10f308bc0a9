"""One way to run an exported model, whatever its runtime: ``load_artifact(path).run(x) -> logits``.

``load_artifact`` reads the sidecar metadata (checked against the file: name, size, sha256, labels), loads the
file in its own runtime (``executorch.runtime`` for .pte, ``onnxruntime`` for .onnx) and checks what the runtime
declares against the metadata: one input of (batch, 1, 28, 28) float32, one output of (batch, num_classes).
Verification, ``qdm predict``, ``qdm bench`` and the web server all run models through this class.

A .pte is first loaded once in a child process (``_check_pte_loads``): some corrupt files make ExecuTorch's
Python binding abort the process instead of raising, and a child can die in our place.

Nothing here imports torch unless a .pte is loaded (ExecuTorch's Python binding takes torch tensors), so an
ONNX Runtime process stays as small as an app's would be.

Threads: ONNX Runtime takes them per session. ExecuTorch's XNNPACK delegate uses one process-wide thread pool,
which the Python binding can only resize with ``_unsafe_reset_threadpool`` (public since executorch PR 9196,
"experimental"); the pool is handed to the delegate when a method is loaded, so it is resized before loading.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import QDMError
from .metadata import MEAN, SIDE, STD, read_metadata

Forward = Callable[[np.ndarray], np.ndarray]


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def quiet_executorch_import() -> None:
    """Importing ExecuTorch imports torchao, which registers an Enum as a pytree constant: torch 2.14 logs a
    deprecation warning about it on every start. Nothing for a user to act on."""
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


# The flatbuffer file identifier of an ExecuTorch program, at bytes 4..8: the first thing ExecuTorch checks.
PTE_IDENTIFIER = b"ET12"
PROBE_TIMEOUT_S = 300
# A child process that loads the program and its method in ExecuTorch, as _open_executorch does (the bare binding
# registers the same kernels and backends, without importing torch: under a second); a Python error is its one line.
_PROBE = """import sys
try:
    from executorch.extension.pybindings import _C
    _C._load_program(sys.argv[1]).load_method("forward")
except Exception as exc:
    print(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    sys.exit(3)
"""
_probed: set[tuple] = set()  # files this process has seen load in a child: (path, size, mtime, inode)


def _check_pte_loads(path: Path) -> None:
    """A QDMError unless ExecuTorch can load ``path``, found out where a failure cannot take this process down.

    During every call, ExecuTorch's Python binding redirects ``std::cerr`` (where its log goes) into
    ``sys.stderr`` with pybind11's ``scoped_estream_redirect``, which decodes the text as strict UTF-8 when the
    stream flushes: after each output, in the destructor of the stream's sentry, where an exception cannot pass.
    A log line that is not UTF-8 therefore ends the process with ``std::terminate`` (SIGABRT, exit 134) instead of
    raising. ExecuTorch puts bytes of the file into its log lines (a wrong file identifier, an unknown backend or
    operator name), so a corrupt .pte whose metadata matches it would abort ``qdm predict``, ``bench`` or
    ``serve``. Hence: the identifier is checked here, then the file is loaded once in a child process, which may
    die in our place, before this process loads it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
        stat = path.stat()
    except OSError as exc:
        raise QDMError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if head[4:8] != PTE_IDENTIFIER:
        raise QDMError(f"{path}: ExecuTorch cannot load it (bytes 4..8 are {head[4:8]!r}, not the program "
                       f"identifier {PTE_IDENTIFIER!r}); corrupt or not a .pte")
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key in _probed:
        return
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True,
                              errors="replace", timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise QDMError(f"{path}: ExecuTorch did not finish loading it within {PROBE_TIMEOUT_S} s") from exc
    if done.returncode < 0:
        reason = f"the loader crashed with {signal.Signals(-done.returncode).name}"
    elif done.returncode:
        reason = (done.stdout.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    else:
        _probed.add(key)
        return
    raise QDMError(f"{path}: ExecuTorch cannot load it ({reason}); corrupt or not a .pte")


def _open_executorch(path: Path, threads: int | None) -> tuple[Forward, list, list]:
    quiet_executorch_import()
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    # XNNPACK's thread pool is process-wide: set it on every load, so that an earlier load asking for fewer
    # threads does not slow this one down (None: all cores, ExecuTorch's own default)
    portable_lib._unsafe_reset_threadpool(threads or os.cpu_count() or 1)
    try:
        program = Runtime.get().load_program(path)
        method = program.load_method("forward")
    except (RuntimeError, ValueError) as exc:
        raise QDMError(f"{path}: ExecuTorch cannot load it ({_first_line(exc)}); corrupt or not a .pte") from exc
    meta = method.metadata
    if meta.num_inputs() != 1 or meta.num_outputs() != 1:
        raise QDMError(f"{path}: expected 1 input and 1 output, the program has {meta.num_inputs()} and "
                       f"{meta.num_outputs()}")
    in_shape = list(meta.input_tensor_meta(0).sizes())  # the upper bound of each dimension
    out_shape = list(meta.output_tensor_meta(0).sizes())

    def forward(x: np.ndarray, _program=program) -> np.ndarray:  # the default keeps the program alive
        return method.execute([torch.from_numpy(x)])[0].numpy()

    return forward, in_shape, out_shape


def _open_onnxruntime(path: Path, threads: int | None) -> tuple[Forward, list, list]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT warns about unused initializers and the like
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind error types (InvalidProtobuf, InvalidGraph, Fail, ...)
        raise QDMError(f"{path}: ONNX Runtime cannot load it ({_first_line(exc)}); corrupt or not an .onnx") from exc
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise QDMError(f"{path}: expected 1 input and 1 output, the model has {len(inputs)} and {len(outputs)}")
    if inputs[0].type != "tensor(float)":
        raise QDMError(f"{path}: input is {inputs[0].type}, expected tensor(float)")
    in_name, out_name = inputs[0].name, outputs[0].name

    def forward(x: np.ndarray) -> np.ndarray:
        return session.run([out_name], {in_name: x})[0]

    return forward, list(inputs[0].shape), list(outputs[0].shape)


class Artifact:
    """An exported model loaded in its own runtime, with its checked metadata and labels."""

    def __init__(self, path: str | Path, metadata: dict, labels: list[str], threads: int | None = None,
                 probe: bool = True):
        """``probe=False`` skips loading a .pte in a child process first: only for bytes this process just
        serialized itself (the export's own verification), never for a file from outside."""
        self.path = Path(path)
        self.metadata = metadata
        self.labels = labels
        self.runtime = metadata["artifact"]["runtime"]
        self.num_classes = int(metadata["num_classes"])
        self.max_batch = metadata["input"].get("batch", {}).get("max")
        opener = _open_executorch if self.runtime == "executorch" else _open_onnxruntime
        if probe and self.runtime == "executorch":
            _check_pte_loads(self.path)
        self._forward, in_shape, out_shape = opener(self.path, threads)
        self._check_shapes(in_shape, out_shape)

    def _check_shapes(self, in_shape: list, out_shape: list) -> None:
        """What the runtime declares must be what the metadata promises (catches a swapped or stale file)."""
        where = f"{self.path}: the model"
        if len(in_shape) != 4 or list(in_shape[1:]) != [1, SIDE, SIDE]:
            raise QDMError(f"{where} takes input of shape {in_shape}, metadata says (batch, 1, 28, 28)")
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != self.num_classes):
            raise QDMError(f"{where} gives {out_shape[1] if len(out_shape) == 2 else out_shape} outputs per "
                           f"drawing, metadata says {self.num_classes} classes")
        if self.runtime == "executorch" and self.max_batch is not None and in_shape[0] != self.max_batch:
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
    """Load a .pte or .onnx with its checked sidecars. ``threads``: compute threads (None: the runtime's default);
    ``probe``: see ``Artifact`` (False only for files this process wrote itself)."""
    metadata, labels = read_metadata(path)
    return Artifact(path, metadata, labels, threads=threads, probe=probe)
