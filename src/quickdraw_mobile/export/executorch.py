"""PyTorch model -> ExecuTorch .pte with the XNNPACK backend: the lowering of a model exactly as it is given.

    torch.export (batch dimension dynamic, 1..PTE_MAX_BATCH)
      -> to_edge_transform_and_lower: core ATen edge dialect, an edge pass rewriting symbolic reshape sizes
         to -1, then XnnpackPartitioner -> to_executorch() -> bytes

Quantization happens before, in the quantization registry (``quant``; INT8 is ``int8-ptq``, whose XNNPACK
quantizer configuration lives in ``quant/pt2e.py`` alone): a converted PT2E graph or a model with torchao 4-bit
weights lowers here like a float model. This module imports nothing of ``quant``, which builds on it.

Two workarounds, both for a dynamic batch dimension:
- ``flatten`` exports as ``view(x, [sym_size(x, 0), C])``; XNNPACK's partitioner refuses a symbolic size, which
  splits the graph into two delegates with a portable ``view_copy`` between them. The only symbolic size of a
  reshape is rewritten to -1 (the same shape, inferred), and the whole CNN becomes one XNNPACK delegate.
- Lowering re-runs fake-tensor propagation, where the fake convolution picks a backend with a guard on the batch
  size (torch 2.14: ``_select_conv_backend``, NNPACK's and oneDNN's "batch >= 16" heuristics) that silently
  narrows the batch range to 2..15: the program then rejects batches over 15 (seen with MobileNetV3's depthwise
  convolutions). Every convolution runs in XNNPACK, so the eager CPU backend choice is irrelevant: lowering runs
  with NNPACK and oneDNN switched off (no heuristic, no guard) and ``backed_size_oblivious`` set.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.fx.passes.infra.pass_base import PassResult

from ..errors import QDMError
from .runtime import quiet_executorch_import

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
