"""``qdm export``: a run folder (or ``default``) -> a verified .pte or .onnx with its metadata and labels.

Order of work, so that nothing wrong ever sits under the final name:
1. load the model and the real drawings (calibration: training split; verification: test split or sample), and
   run the verification drawings through the eager model (non-finite logits, e.g. NaN weights, are an error);
2. convert (ExecuTorch + XNNPACK, or ONNX; FP32 or static INT8);
3. write the bytes to a temporary file beside ``--out``, load it in its own runtime, run the verification
   drawings through it and compare its logits with the eager model's (non-finite logits are an error, and so is
   an FP32 export that changes the top-1 class of more than 0.5% of the drawings); a few of those drawings, with
   the artifact's own answers, become the device self-check in the metadata (``selfcheck``);
4. write the sidecars (metadata.json, labels.txt), then rename the artifact into place. A failure at any step
   leaves earlier files untouched.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from .. import __version__
from ..artifact_names import FORMATS
from ..errors import QDMError
from ..fileio import atomic_path
from ..modelref import describe_model, load_model
from ..options import CALIBRATION_SIZE
from .calibration import calibration_set, verification_set
from .metadata import build_metadata, read_metadata, write_sidecars
from .runtime import Artifact
from .selfcheck import build_selfcheck
from .verify import check_agreement, eager_logits, verify_artifact

QUANT_MODES = ("none", "int8")


def check_options(fmt: str, quant: str, out: str | Path) -> Path:
    if fmt not in FORMATS:
        raise QDMError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if quant not in QUANT_MODES:
        raise QDMError(f"--quant: expected one of {', '.join(QUANT_MODES)}, got {quant!r}")
    out = Path(out)
    if out.suffix != FORMATS[fmt]:
        raise QDMError(f"--out: expected a file name ending in {FORMATS[fmt]} for --format {fmt}, got {out}")
    return out


def export_model(model_ref: str | Path, fmt: str, quant: str, out: str | Path, data_dir: str | Path | None = None,
                 calib: int = CALIBRATION_SIZE, seed: int = 0) -> dict:
    """Export, verify and write ``out`` plus its sidecars; returns the metadata written (with a lowering report)."""
    out = check_options(fmt, quant, out)
    loaded = load_model(model_ref)
    verification = verification_set(model_ref, data_dir)
    eager = eager_logits(loaded.model, verification, str(out))
    calibration = calibration_set(model_ref, data_dir, calib, seed) if quant == "int8" else None
    pixels = calibration.pixels if calibration else None

    lowering: list[str] = []
    if fmt == "pte":
        from .executorch import PTE_MAX_BATCH, to_pte

        data, report = to_pte(loaded.model, quant, pixels)
        max_batch, lowering = PTE_MAX_BATCH, report.lines()
        backend = {"runtime": "executorch", "executorch": version("executorch"), "backend": "XNNPACK",
                   "delegated_ops": report.delegated, "not_delegated_ops": report.not_delegated}
        scheme = ("PT2E static: INT8 weights per output channel (symmetric), INT8 activations per tensor "
                  "(affine), XNNPACKQuantizer")
    else:
        from .onnx import op_counts, to_onnx

        data = to_onnx(loaded.model, quant, pixels)
        max_batch = None
        backend = {"runtime": "onnxruntime", "onnxruntime": version("onnxruntime"),
                   "provider": "CPUExecutionProvider", "ops": op_counts(data)}
        scheme = ("ONNX Runtime static QDQ: INT8 weights per output channel (symmetric), UINT8 activations per "
                  "tensor (affine), min/max calibration")
    model_info = describe_model(loaded)
    export_info = {"tool": f"quickdraw-mobile {__version__}", "torch": version("torch"), **backend,
                   "quantization": scheme if quant == "int8" else "none (float32)",
                   "calibration": None if calibration is None else
                   {"drawings": len(calibration.pixels), "seed": seed, "source": calibration.source}}

    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        metadata = build_metadata(name=out.name, written=tmp, quant=quant, classes=loaded.labels,
                                  max_batch=max_batch, model=model_info, export=export_info)
        result, logits = verify_artifact(Artifact(tmp, metadata, loaded.labels, probe=False), eager, verification,
                                         str(out))
        check_agreement(result, quant, str(out))
        metadata["verification"] = result
        metadata["selfcheck"] = build_selfcheck(verification.pixels, verification.labels, logits, quant,
                                                source=verification.source)
        write_sidecars(out, metadata, loaded.labels)
    read_metadata(out)  # the files on disk describe each other
    return {**metadata, "lowering": lowering, "path": str(out)}
