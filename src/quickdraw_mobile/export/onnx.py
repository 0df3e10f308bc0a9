"""The ONNX Runtime runtime (``.onnx``): PyTorch model -> ONNX, FP32 or INT8 (its own static quantization, QDQ
format), and running the file.

FP32: ``torch.onnx.export(dynamo=True)`` with a dynamic batch dimension and the weights inside the file.
INT8: ONNX Runtime's ``quant_pre_process`` (shape inference and graph cleanup), then ``quantize_static`` in the
QDQ format: UINT8 activations (per tensor, asymmetric), INT8 weights per output channel (symmetric), calibrated
(min/max) on the same real drawings as the .pte. This u8s8 QDQ form was the fastest on the CPUs measured here;
ORT fuses each DequantizeLinear -> op -> QuantizeLinear into its integer kernels when it loads the model.

With ``features``, a model that has ``logits_and_features(x)`` (the cnn family) is exported with a
second output, ``features``: the pooled features (batch, D) its logits are computed from, in one pass. The drawing
page computes the logits of the classes it is taught in the browser from them (prototypes, as in ``extend``).

Running (``load``) imports neither torch nor anything that does (torch only converts), so an app-like process
that runs an .onnx stays small. Threads: ONNX Runtime takes them per session.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import QDMError
from .metadata import FEATURES_NAME
from .runtime import Forward, Lowered, failure_message, first_line, normalize_pixels

if TYPE_CHECKING:
    from torch import nn

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
CALIBRATION_BATCH = 32
INT8_METHOD = "onnxruntime-int8"  # the method metadata.json names for ONNX Runtime's own static INT8
INT8_SCHEME = ("ONNX Runtime static QDQ: INT8 weights per output channel (symmetric), UINT8 activations per "
               "tensor (affine), min/max calibration")


def has_features(model: nn.Module) -> bool:
    """Can ``model`` be exported with a features output (``logits_and_features(x)``)?"""
    return callable(getattr(model, "logits_and_features", None))


def with_features(model: nn.Module) -> nn.Module:
    """``model`` answering (logits, features) from one pass through its layers."""
    from torch import nn

    class LogitsAndFeatures(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.logits_and_features(x)

    if not has_features(model):
        raise QDMError(f"features output: model {type(model).__name__} has no logits_and_features(x) (the cnn "
                       "family has)")
    return LogitsAndFeatures(model)


def _export_fp32(model: nn.Module, path: Path, features: bool = False) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1)
    names = [OUTPUT_NAME, FEATURES_NAME] if features else [OUTPUT_NAME]
    try:
        # The exporter reports each step on stdout; only its errors matter here.
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export((with_features(model) if features else model).eval(),
                                        (torch.zeros(2, 1, 28, 28),), dynamo=True, dynamic_shapes=({0: batch},),
                                        input_names=[INPUT_NAME], output_names=names, external_data=False,
                                        verbose=False)
            program.save(str(path), external_data=False)
    except Exception as exc:  # torch.onnx wraps each step's failure in its own error types
        raise QDMError(failure_message("ONNX export", exc)) from exc


def _quantize_int8(fp32: Path, out: Path, calibration: np.ndarray, workdir: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.starts = iter(range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            start = next(self.starts, None)
            if start is None:
                return None
            return {INPUT_NAME: normalize_pixels(calibration[start : start + CALIBRATION_BATCH])}

    prepared = workdir / "prepared.onnx"
    try:
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    except Exception as exc:
        raise QDMError(failure_message("ONNX Runtime INT8 quantization", exc)) from exc


def to_onnx(model: nn.Module, quant: str, calibration: np.ndarray | None = None, features: bool = False) -> bytes:
    """The .onnx bytes of ``model`` (``quant`` = none | int8; ``features``: a second output, see the top)."""
    import tempfile

    if quant not in ("none", "int8"):
        raise QDMError(f"quant: expected none or int8, got {quant!r}")
    with tempfile.TemporaryDirectory(prefix="qdm-onnx-") as tmp:
        workdir = Path(tmp)
        fp32 = workdir / "model.onnx"
        _export_fp32(model, fp32, features)
        if quant == "none":
            return fp32.read_bytes()
        if calibration is None or len(calibration) == 0:
            raise QDMError("int8 export needs calibration drawings")
        int8 = workdir / "model.int8.onnx"
        _quantize_int8(fp32, int8, calibration, workdir)
        return int8.read_bytes()


def op_counts(data: bytes) -> dict[str, int]:
    """Operator types of an ONNX model and how often each occurs."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load_from_string(data).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))

def features_width(model: nn.Module) -> int:
    """D of the (batch, D) features ``model.features`` computes."""
    import torch

    with torch.inference_mode():
        return int(model.eval().features(torch.zeros(1, 1, 28, 28)).shape[1])


def convert(model: nn.Module, quant: str, calibration: np.ndarray | None = None, features: bool = False) -> Lowered:
    """The .onnx of ``model``: FP32 (``none``) or ONNX Runtime's static INT8 calibrated on ``calibration``;
    ``features``: with the features output too (an error for a model without one)."""
    from importlib.metadata import version  # here, like torch: a process that only runs an .onnx stays small

    data = to_onnx(model, quant, calibration, features)
    backend = {"runtime": "onnxruntime", "onnxruntime": version("onnxruntime"),
               "provider": "CPUExecutionProvider", "ops": op_counts(data)}
    width = features_width(model) if features else None
    if quant == "none":
        return Lowered(data, backend, method="fp32", scheme="none (float32)", features=width)
    return Lowered(data, backend, method=INT8_METHOD, scheme=INT8_SCHEME, features=width)


def load(path: Path, threads: int | None) -> tuple[Forward, list, list]:
    """An ONNX Runtime session's ``run`` on the CPU, and the shapes it declares (a name for the dynamic batch)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT warns about unused initializers and the like
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind error types (InvalidProtobuf, InvalidGraph, Fail, ...)
        raise QDMError(f"{path}: ONNX Runtime cannot load it ({first_line(exc)}); corrupt or not an .onnx") from exc
    inputs, outputs = session.get_inputs(), session.get_outputs()
    # One output (the logits), or the logits and the features (named so: which one is which is not guessed).
    names = [o.name for o in outputs]
    if len(inputs) != 1 or not (len(outputs) == 1 or sorted(names) == sorted([OUTPUT_NAME, FEATURES_NAME])):
        raise QDMError(f"{path}: expected 1 input and 1 output (or outputs {OUTPUT_NAME} and {FEATURES_NAME}), the "
                       f"model has {len(inputs)} inputs and outputs {names}")
    if inputs[0].type != "tensor(float)":
        raise QDMError(f"{path}: input is {inputs[0].type}, expected tensor(float)")
    logits = outputs[0] if len(outputs) == 1 else outputs[names.index(OUTPUT_NAME)]
    in_name, out_name = inputs[0].name, logits.name

    def forward(x: np.ndarray) -> np.ndarray:
        return session.run([out_name], {in_name: x})[0]

    return forward, list(inputs[0].shape), list(logits.shape)
