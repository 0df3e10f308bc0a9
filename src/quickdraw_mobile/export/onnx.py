"""PyTorch model -> ONNX, FP32 or INT8 (ONNX Runtime static quantization, QDQ format).

FP32: ``torch.onnx.export(dynamo=True)`` with a dynamic batch dimension and the weights inside the file.
INT8: ONNX Runtime's ``quant_pre_process`` (shape inference and graph cleanup), then ``quantize_static`` in the
QDQ format: UINT8 activations (per tensor, asymmetric), INT8 weights per output channel (symmetric), calibrated
(min/max) on the same real drawings as the .pte. This u8s8 QDQ form was the fastest on the CPUs measured here;
ORT fuses each DequantizeLinear -> op -> QuantizeLinear into its integer kernels when it loads the model.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import QDMError
from .executorch import failure_message
from .runtime import normalize_pixels

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
CALIBRATION_BATCH = 32


def _export_fp32(model: nn.Module, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    try:
        # The exporter reports each step on stdout; only its errors matter here.
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(model.eval(), (torch.zeros(2, 1, 28, 28),), dynamo=True,
                                        dynamic_shapes=({0: batch},), input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], external_data=False, verbose=False)
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


def to_onnx(model: nn.Module, quant: str, calibration: np.ndarray | None = None) -> bytes:
    """The .onnx bytes of ``model`` (``quant`` = none | int8)."""
    if quant not in ("none", "int8"):
        raise QDMError(f"quant: expected none or int8, got {quant!r}")
    with tempfile.TemporaryDirectory(prefix="qdm-onnx-") as tmp:
        workdir = Path(tmp)
        fp32 = workdir / "model.onnx"
        _export_fp32(model, fp32)
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
