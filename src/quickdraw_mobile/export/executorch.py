"""The ExecuTorch runtime (``.pte``, XNNPACK backend): lowering a model exactly as it is given, and running the file.

    torch.export (batch dimension dynamic, 1..PTE_MAX_BATCH)
      -> to_edge_transform_and_lower: core ATen edge dialect, an edge pass rewriting symbolic reshape sizes
         to -1, then XnnpackPartitioner -> to_executorch() -> bytes

Quantization happens before, in the quantization registry (``quant``; INT8 is ``int8-ptq``, whose XNNPACK
quantizer configuration lives in ``quant/pt2e.py`` alone): a converted PT2E graph or a model with torchao 4-bit
weights lowers here like a float model. This module imports nothing of ``quant``, which builds on it; the export
verb applies the method and hands ``convert`` the quantized model.

Two workarounds, both for a dynamic batch dimension:
- ``flatten`` exports as ``view(x, [sym_size(x, 0), C])``; XNNPACK's partitioner refuses a symbolic size, which
  splits the graph into two delegates with a portable ``view_copy`` between them. The only symbolic size of a
  reshape is rewritten to -1 (the same shape, inferred), and the whole CNN becomes one XNNPACK delegate.
- Lowering re-runs fake-tensor propagation, where the fake convolution picks a backend with a guard on the batch
  size (torch 2.14: ``_select_conv_backend``, NNPACK's and oneDNN's "batch >= 16" heuristics) that silently
  narrows the batch range to 2..15: the program then rejects batches over 15 (seen with MobileNetV3's depthwise
  convolutions). Every convolution runs in XNNPACK, so the eager CPU backend choice is irrelevant: lowering runs
  with NNPACK and oneDNN switched off (no heuristic, no guard) and ``backed_size_oblivious`` set.

Running (``load``): a .pte is first loaded once in a child process (``probe``): some corrupt files make
ExecuTorch's Python binding abort the process instead of raising, and a child can die in our place. Threads:
XNNPACK uses one process-wide thread pool, which the Python binding can only resize with
``_unsafe_reset_threadpool`` (public since executorch PR 9196, "experimental"); the pool is handed to the delegate
when a method is loaded, so it is resized before loading.
"""

from __future__ import annotations

import logging
import operator
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.fx.passes.infra.pass_base import PassResult

from ..errors import QDMError
from .runtime import Forward, Lowered, failure_message, first_line

PTE_MAX_BATCH = 32  # the largest batch a .pte takes; memory for activations is planned for it
_RESHAPES = {"aten::view_copy", "aten::view", "aten::reshape", "aten::_unsafe_view"}


@dataclass
class LoweringReport:
    """Which operators XNNPACK took and which stay on ExecuTorch's portable CPU kernels (per op, counts)."""

    delegated: dict[str, int] = field(default_factory=dict)
    not_delegated: dict[str, int] = field(default_factory=dict)
    subgraphs: int = 0

    def lines(self) -> list[str]:
        fmt = lambda ops: ", ".join(f"{op} x{n}" for op, n in ops.items()) or "none"  # noqa: E731
        return [f"XNNPACK delegated ({self.subgraphs} subgraph{'s' * (self.subgraphs != 1)}): "
                f"{fmt(self.delegated)}", f"not delegated (portable kernels): {fmt(self.not_delegated)}"]


def export_dynamic(model: nn.Module, max_batch: int = PTE_MAX_BATCH) -> torch.export.ExportedProgram:
    """``torch.export`` (of a model in eval mode) with the batch free in 1..max_batch (traced at 2: 1 would specialize)."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    example = torch.zeros(2, 1, 28, 28)
    try:
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export raises many types (Unsupported, UserError, guard errors)
        raise QDMError(failure_message("torch.export", exc)) from exc


def infer_symbolic_reshapes(graph_module: torch.fx.GraphModule) -> PassResult:
    """Edge pass: ``view_copy(x, [..., s, ...])`` with one symbolic size ``s`` becomes ``view_copy(x, [..., -1, ...])``."""
    changed = False
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or _op_name(node.target) not in _RESHAPES:
            continue
        sizes = list(node.args[1])
        symbolic = [i for i, s in enumerate(sizes) if isinstance(s, torch.fx.Node)]
        if len(symbolic) == 1 and -1 not in sizes:
            sizes[symbolic[0]] = -1
            node.args = (node.args[0], sizes, *node.args[2:])
            changed = True
    if changed:
        graph_module.graph.eliminate_dead_code()
        graph_module.recompile()
    return PassResult(graph_module, changed)


def _op_name(target: object) -> str:
    """``aten::convolution``, ``quantized_decomposed::quantize_per_tensor``, ... (edge ops name themselves)."""
    return target.name() if callable(getattr(target, "name", None)) else str(target)


def lowering_report(graph_module: torch.fx.GraphModule) -> LoweringReport:
    """Count the operators inside each XNNPACK delegate and those left in the top-level graph."""
    report = LoweringReport()
    delegated, outside = Counter(), Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or isinstance(node.target, type(operator.getitem)):
            continue  # graph plumbing: getitem and other Python builtins on outputs and sizes
        name = _op_name(node.target)
        if name == "executorch_call_delegate":
            report.subgraphs += 1
            subgraph = getattr(graph_module, node.args[0].target).original_module.graph
            delegated.update(_op_name(n.target) for n in subgraph.nodes
                             if n.op == "call_function" and not isinstance(n.target, type(operator.getitem)))
        elif "sym_size" not in name:
            outside[name] += 1
    report.delegated, report.not_delegated = dict(sorted(delegated.items())), dict(sorted(outside.items()))
    return report


def _check_kernels(report: LoweringReport) -> None:
    """Every operator left outside XNNPACK needs a kernel in the ExecuTorch runtime: name any that has none."""
    from executorch.runtime import Runtime

    registered = {name.split(".")[0] for name in Runtime.get().operator_registry.operator_names}
    for op in report.not_delegated:
        if op.split(".")[0] not in registered:
            raise QDMError(f"ExecuTorch export failed at operator {op}: XNNPACK does not take it and this "
                           "ExecuTorch runtime has no kernel for it")


def to_pte(model: nn.Module, max_batch: int = PTE_MAX_BATCH) -> tuple[bytes, LoweringReport]:
    """The .pte bytes of ``model`` (float, or already quantized) and which operators XNNPACK took."""
    quiet_executorch_import()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from torch.fx.experimental import _config as fx_config

    if not isinstance(model, torch.fx.GraphModule):  # a converted PT2E graph refuses .eval(); it is in eval form
        model = model.eval()
    program = export_dynamic(model, max_batch)
    try:
        with (fx_config.patch(backed_size_oblivious=True), torch.backends.nnpack.flags(enabled=False),
              torch.backends.mkldnn.flags(enabled=False)):
            lowered = to_edge_transform_and_lower(program, transform_passes=[infer_symbolic_reshapes],
                                                 partitioner=[XnnpackPartitioner()])
            report = lowering_report(lowered.exported_program().graph_module)
            _check_kernels(report)
            data = lowered.to_executorch().buffer
    except QDMError:
        raise
    except Exception as exc:
        raise QDMError(failure_message("ExecuTorch lowering", exc)) from exc
    return bytes(data), report


def convert(model: nn.Module, quant: str, calibration: np.ndarray | None = None) -> Lowered:
    """The .pte of ``model`` as it is given (quantized before, by a method of the quantization registry)."""
    data, report = to_pte(model, PTE_MAX_BATCH)
    return Lowered(data, backend_info(report), report.lines(), PTE_MAX_BATCH)


def backend_info(report: LoweringReport) -> dict:
    """The metadata's export fields of a .pte: runtime, its version, backend, and which operators it took."""
    return {"runtime": "executorch", "executorch": version("executorch"), "backend": "XNNPACK",
            "delegated_ops": report.delegated, "not_delegated_ops": report.not_delegated}


def quiet_executorch_import() -> None:
    """Importing ExecuTorch imports torchao, which registers an Enum as a pytree constant: torch 2.14 logs a
    deprecation warning about it on every start. Nothing for a user to act on."""
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


# The flatbuffer file identifier of an ExecuTorch program, at bytes 4..8: the first thing ExecuTorch checks.
PTE_IDENTIFIER = b"ET12"
PROBE_TIMEOUT_S = 300
# A child process that loads the program and its method in ExecuTorch, as ``load`` does (the bare binding
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


def probe(path: Path) -> None:
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


def reset_threads(threads: int) -> None:
    """Resize XNNPACK's process-wide thread pool (what the next loaded program gets)."""
    quiet_executorch_import()
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)


def load(path: Path, threads: int | None) -> tuple[Forward, list, list]:
    """The program's ``forward`` and the shapes it declares (each dimension's upper bound)."""
    quiet_executorch_import()
    from executorch.runtime import Runtime

    # XNNPACK's thread pool is process-wide: set it on every load, so that an earlier load asking for fewer
    # threads does not slow this one down (None: all cores, ExecuTorch's own default)
    reset_threads(threads or os.cpu_count() or 1)
    try:
        program = Runtime.get().load_program(path)
        method = program.load_method("forward")
    except (RuntimeError, ValueError) as exc:
        raise QDMError(f"{path}: ExecuTorch cannot load it ({first_line(exc)}); corrupt or not a .pte") from exc
    meta = method.metadata
    if meta.num_inputs() != 1 or meta.num_outputs() != 1:
        raise QDMError(f"{path}: expected 1 input and 1 output, the program has {meta.num_inputs()} and "
                       f"{meta.num_outputs()}")
    in_shape = list(meta.input_tensor_meta(0).sizes())  # the upper bound of each dimension
    out_shape = list(meta.output_tensor_meta(0).sizes())

    def forward(x: np.ndarray, _program=program) -> np.ndarray:  # the default keeps the program alive
        return method.execute([torch.from_numpy(x)])[0].numpy()

    return forward, in_shape, out_shape
