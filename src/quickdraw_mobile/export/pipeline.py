"""``qdm export``: a run folder (or ``default``) -> a verified .pte or .onnx with its metadata and labels.

Order of work, so that nothing wrong ever sits under the final name:
1. load the model and the real drawings (calibration: training split; verification: test split or sample), and
   run the verification drawings through the eager model (non-finite logits, e.g. NaN weights, are an error);
2. convert: a .pte is made by a method of the quantization registry (``--quant``: none = fp32, int8 = int8-ptq,
   or any method of ``qdm quantize``), with the inputs ``qdm quantize`` gives it (``quant.inputs``), so the file is
   the artifact of that method's row in the study; an .onnx is FP32 or ONNX Runtime's own static INT8;
3. write the bytes to a temporary file beside ``--out``, load it in its own runtime, run the verification
   drawings through it and compare its logits with the eager model's (non-finite logits are an error, and so is
   an FP32 export that changes the top-1 class of more than 0.5% of the drawings); a few of those drawings, with
   the artifact's own answers, become the device self-check in the metadata (``selfcheck``);
4. write the sidecars (metadata.json, labels.txt), then rename the artifact into place. A failure at any step
   leaves earlier files untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from .. import __version__
from ..artifact_names import FORMATS
from ..errors import QDMError
from ..fileio import atomic_path
from ..modelref import LoadedModel, describe_model, load_model
from ..options import CALIBRATION_SIZE
from ..quant.inputs import check_training_data, method_inputs
from ..quant.registry import ALIASES, get_method
from .calibration import Drawings, calibration_set, verification_set
from .executorch import PTE_MAX_BATCH
from .metadata import build_metadata, read_metadata, write_sidecars
from .runtime import Artifact
from .selfcheck import build_selfcheck
from .verify import check_agreement, eager_logits, verify_artifact

ONNX_QUANT = ("none", "int8")  # ONNX Runtime's FP32 and static INT8; the registry's methods deploy as .pte
ONNX_INT8_METHOD = "onnxruntime-int8"


@dataclass
class Converted:
    """The bytes of an artifact and how they were made."""

    data: bytes
    quant: str  # precision: none | int8 | int4
    method: str  # the registry method (or ONNX_INT8_METHOD)
    scheme: str
    backend: dict
    calibration: Drawings | None
    max_batch: int | None = None
    lowering: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # the method's bits and notes (a .pte)


def check_options(fmt: str, quant: str, out: str | Path) -> tuple[Path, str]:
    """(``out``, the method ``--quant`` names): none -> fp32, int8 -> int8-ptq, or a method of ``qdm quantize``."""
    if fmt not in FORMATS:
        raise QDMError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "onnx" and quant not in ONNX_QUANT:
        raise QDMError(f"--quant: expected none or int8 for --format onnx (ONNX Runtime's own quantization; the "
                       f"methods of qdm quantize deploy as .pte), got {quant!r}")
    method = ALIASES.get(quant, quant)
    try:
        get_method(method)
    except QDMError as exc:
        raise QDMError(f"--quant: {exc} (or none, int8)") from exc
    out = Path(out)
    if out.suffix != FORMATS[fmt]:
        raise QDMError(f"--out: expected a file name ending in {FORMATS[fmt]} for --format {fmt}, got {out}")
    return out, method


def _to_pte(model_ref: str | Path, loaded: LoadedModel, method: str, data_dir, calib: int, seed: int) -> Converted:
    """The .pte of ``method``, quantized exactly as ``qdm quantize`` quantizes it (same inputs, same seed)."""
    inputs = method_inputs(model_ref, loaded, [method], data_dir, calib, seed)
    qm = inputs.apply(loaded.model, method)
    data, report = qm.to_pte()
    backend = {"runtime": "executorch", "executorch": version("executorch"), "backend": "XNNPACK",
               "delegated_ops": report.delegated, "not_delegated_ops": report.not_delegated}
    return Converted(data, qm.precision, qm.method, qm.scheme, backend, inputs.calibration, PTE_MAX_BATCH,
                     report.lines(), {"bits": qm.bits, "notes": qm.notes})


def _to_onnx(model_ref: str | Path, loaded: LoadedModel, quant: str, data_dir, calib: int, seed: int) -> Converted:
    from .onnx import op_counts, to_onnx

    calibration = calibration_set(model_ref, data_dir, calib, seed) if quant == "int8" else None
    data = to_onnx(loaded.model, quant, calibration.pixels if calibration else None)
    backend = {"runtime": "onnxruntime", "onnxruntime": version("onnxruntime"),
               "provider": "CPUExecutionProvider", "ops": op_counts(data)}
    if quant == "none":
        return Converted(data, "none", "fp32", "none (float32)", backend, None)
    scheme = ("ONNX Runtime static QDQ: INT8 weights per output channel (symmetric), UINT8 activations per "
              "tensor (affine), min/max calibration")
    return Converted(data, "int8", ONNX_INT8_METHOD, scheme, backend, calibration)


def export_model(model_ref: str | Path, fmt: str, quant: str, out: str | Path, data_dir: str | Path | None = None,
                 calib: int = CALIBRATION_SIZE, seed: int = 0) -> dict:
    """Export, verify and write ``out`` plus its sidecars; returns the metadata written (with a lowering report)."""
    out, method = check_options(fmt, quant, out)
    check_training_data([method], data_dir)
    loaded = load_model(model_ref)
    verification = verification_set(model_ref, data_dir)
    eager = eager_logits(loaded.model, verification, str(out))
    made = (_to_pte(model_ref, loaded, method, data_dir, calib, seed) if fmt == "pte" else
            _to_onnx(model_ref, loaded, quant, data_dir, calib, seed))
    model_info = describe_model(loaded)
    export_info = {"tool": f"quickdraw-mobile {__version__}", "torch": version("torch"), **made.backend,
                   "method": made.method, "quantization": made.scheme, **made.facts,
                   "calibration": None if made.calibration is None else
                   {"drawings": len(made.calibration.pixels), "seed": seed, "source": made.calibration.source}}

    with atomic_path(out) as tmp:
        tmp.write_bytes(made.data)
        metadata = build_metadata(name=out.name, written=tmp, quant=made.quant, method=made.method,
                                  classes=loaded.labels, max_batch=made.max_batch, model=model_info,
                                  export=export_info)
        result, logits = verify_artifact(Artifact(tmp, metadata, loaded.labels, probe=False), eager, verification,
                                         str(out))
        # Only the fp32 method must compute what the eager model computes; the others differ from it by design.
        check_agreement(result, "none" if made.method == "fp32" else made.method, str(out))
        metadata["verification"] = result
        metadata["selfcheck"] = build_selfcheck(verification.pixels, verification.labels, logits, made.quant,
                                                source=verification.source)
        write_sidecars(out, metadata, loaded.labels)
    read_metadata(out)  # the files on disk describe each other
    return {**metadata, "lowering": made.lowering, "path": str(out)}
