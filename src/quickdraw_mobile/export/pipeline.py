"""``qdm export``: a run folder (or ``default``) -> a verified .pte or .onnx with its metadata and labels.

Order of work, so that nothing wrong ever sits under the final name:
1. load the model and the real drawings (calibration: training split; verification: test split or sample), and
   run the verification drawings through the eager model (non-finite logits, e.g. NaN weights, are an error);
2. convert, by the runtime of ``--format`` (``artifact_names.RUNTIMES``): for a runtime of the quantization
   registry's methods (a .pte), the method ``--quant`` names (none = fp32, int8 = int8-ptq, or any method of
   ``qdm quantize``) is applied here with the inputs ``qdm quantize`` gives it (``quant.inputs``), and the runtime
   lowers the result as it is, so the file is the artifact of that method's row in the study; a runtime with its
   own quantization (an .onnx: FP32 or ONNX Runtime's static INT8) converts and quantizes the float model itself;
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
from ..artifact_names import RUNTIMES, Runtime, either, runtime_of_format
from ..errors import QDMError
from ..fileio import atomic_path
from ..modelref import LoadedModel, describe_model, load_model
from ..options import CALIBRATION_SIZE
from ..quant.inputs import check_training_data, method_inputs
from ..quant.registry import ALIASES, get_method
from .calibration import Drawings, calibration_set, verification_set
from .metadata import build_metadata, read_metadata, write_sidecars
from .onnx import has_features
from .runtime import Artifact, Lowered, runtime_module
from .selfcheck import build_selfcheck
from .verify import check_agreement, eager_logits, verify_artifact


@dataclass
class Converted:
    """The bytes of an artifact and how they were made."""

    lowered: Lowered
    quant: str  # precision: none | int8 | int4
    method: str  # the registry method (or the runtime's own: onnxruntime-int8)
    scheme: str
    calibration: Drawings | None
    facts: dict = field(default_factory=dict)  # the method's bits and notes (a method of the registry)


def check_options(fmt: str, quant: str, out: str | Path) -> tuple[Path, Runtime, str]:
    """(``out``, the runtime of ``--format``, the method ``--quant`` names): none -> fp32, int8 -> int8-ptq, or a
    method of ``qdm quantize`` (a runtime with its own quantization takes its own values instead)."""
    runtime = runtime_of_format(fmt)
    if runtime is None:
        raise QDMError(f"--format: expected one of {', '.join(r.format for r in RUNTIMES)}, got {fmt!r}")
    if runtime.quants is not None and quant not in runtime.quants:
        registry_suffixes = either([r.suffix for r in RUNTIMES if r.quants is None])
        raise QDMError(f"--quant: expected {either(list(runtime.quants))} for --format {fmt} ({runtime.display}'s "
                       f"own quantization; the methods of qdm quantize deploy as {registry_suffixes}), got {quant!r}")
    method = ALIASES.get(quant, quant)
    try:
        get_method(method)
    except QDMError as exc:
        raise QDMError(f"--quant: {exc} (or none, int8)") from exc
    out = Path(out)
    if out.suffix != runtime.suffix:
        raise QDMError(f"--out: expected a file name ending in {runtime.suffix} for --format {fmt}, got {out}")
    return out, runtime, method


def _by_registry_method(runtime: Runtime, model_ref: str | Path, loaded: LoadedModel, method: str, data_dir,
                        calib: int, seed: int) -> Converted:
    """``method`` applied exactly as ``qdm quantize`` applies it (same inputs, same seed), then lowered by
    ``runtime``: the artifact of that method's row in the study."""
    inputs = method_inputs(model_ref, loaded, [method], data_dir, calib, seed)
    qm = inputs.apply(loaded.model, method)
    if qm.no_pte:
        raise QDMError(f"{qm.method}: no {runtime.display} program: {qm.no_pte}")
    lowered = runtime_module(runtime).convert(qm.model, qm.precision, None)
    return Converted(lowered, qm.precision, qm.method, qm.scheme, inputs.calibration,
                     {"bits": qm.bits, "notes": qm.notes})


def _by_runtime_itself(runtime: Runtime, model_ref: str | Path, loaded: LoadedModel, quant: str, data_dir,
                       calib: int, seed: int, features: bool = False) -> Converted:
    """The runtime's own conversion and quantization (``quant``), calibrated on the training split's drawings;
    ``features``: with the features output too."""
    calibration = calibration_set(model_ref, data_dir, calib, seed) if quant != "none" else None
    pixels = calibration.pixels if calibration else None
    convert = runtime_module(runtime).convert
    lowered = convert(loaded.model, quant, pixels, features=True) if features else convert(loaded.model, quant, pixels)
    return Converted(lowered, quant, lowered.method, lowered.scheme, calibration)


def export_model(model_ref: str | Path, fmt: str, quant: str, out: str | Path, data_dir: str | Path | None = None,
                 calib: int = CALIBRATION_SIZE, seed: int = 0, features: bool = False) -> dict:
    """Export, verify and write ``out`` plus its sidecars; returns the metadata written (with a lowering report).

    ``features``: an .onnx also outputs the pooled features (``export.onnx``), when the model has them (the cnn
    family; a model without gets the logits only): what the drawing page's taught classes are computed from."""
    out, runtime, method = check_options(fmt, quant, out)
    if features and runtime.format != "onnx":
        raise QDMError(f"features output: only an .onnx export has one, not --format {fmt}")
    check_training_data([method], data_dir)
    loaded = load_model(model_ref)
    verification = verification_set(model_ref, data_dir)
    eager = eager_logits(loaded.model, verification, str(out))
    features = features and has_features(loaded.model)
    made = (_by_registry_method(runtime, model_ref, loaded, method, data_dir, calib, seed) if runtime.quants is None
            else _by_runtime_itself(runtime, model_ref, loaded, quant, data_dir, calib, seed, features))
    model_info = describe_model(loaded)
    export_info = {"tool": f"quickdraw-mobile {__version__}", "torch": version("torch"), **made.lowered.backend,
                   "method": made.method, "quantization": made.scheme, **made.facts,
                   "calibration": None if made.calibration is None else
                   {"drawings": len(made.calibration.pixels), "seed": seed, "source": made.calibration.source}}

    with atomic_path(out) as tmp:
        tmp.write_bytes(made.lowered.data)
        metadata = build_metadata(name=out.name, written=tmp, quant=made.quant, method=made.method,
                                  classes=loaded.labels, max_batch=made.lowered.max_batch, model=model_info,
                                  export=export_info, features=made.lowered.features)
        result, logits = verify_artifact(Artifact(tmp, metadata, loaded.labels, probe=False), eager, verification,
                                         str(out))
        # Only the fp32 method must compute what the eager model computes; the others differ from it by design.
        check_agreement(result, "none" if made.method == "fp32" else made.method, str(out))
        metadata["verification"] = result
        metadata["selfcheck"] = build_selfcheck(verification.pixels, verification.labels, logits, made.quant,
                                                source=verification.source)
        write_sidecars(out, metadata, loaded.labels)
    read_metadata(out)  # the files on disk describe each other
    return {**metadata, "lowering": made.lowered.lowering, "path": str(out)}
