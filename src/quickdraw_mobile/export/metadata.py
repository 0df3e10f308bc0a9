"""The contract shipped beside every exported model, so that an app cannot get the preprocessing wrong.

``model.pte`` (or ``model.onnx``) gets two sidecar files named after the whole artifact file name (so a ``.pte``
and an ``.onnx`` of the same stem can share a folder):

    model.pte.metadata.json   what goes in and what comes out: shape, dtype, value range, ink polarity,
                              normalization, renderer version, class list; plus the artifact's sha256 and size,
                              how it was made (model, quantization method, calibration) and how it was verified;
                              and a device self-check (a few drawings with this artifact's answers: selfcheck.py)
    model.pte.labels.txt      the class names, one a line, in logit order

``read_metadata`` checks the JSON against the file it describes (name, size, sha256) and against the labels,
so a stale, swapped or corrupt artifact is caught before anything runs.
"""

from __future__ import annotations

from pathlib import Path

from ..artifact_names import RUNTIMES, either, runtime_of_file, sidecar_paths
from ..data.render import RENDERER_VERSION
from ..errors import QDMError
from ..fileio import read_versioned_json, sha256_file, write_json_atomic, write_text_atomic
from .selfcheck import check_selfcheck

ARTIFACT_FORMAT = "quickdraw-mobile-artifact"
ARTIFACT_VERSION = 1
SIDE = 28
FEATURES_NAME = "features"  # the features output's name (export/onnx.py names it so)
# The normalization of data.loader.normalize, restated here so reading metadata needs no torch.
MEAN = 0.5
STD = 0.5


def runtime_for(path: str | Path) -> str:
    """The name of the runtime that runs ``path`` (``executorch`` for a .pte, ...); anything else is an error."""
    path = Path(path)
    runtime = runtime_of_file(path)
    if runtime is None:
        raise QDMError(f"{path}: expected an exported model ({either([r.suffix for r in RUNTIMES])}), got "
                       f"{path.suffix or 'no suffix'!r}")
    return runtime.name


def input_contract(max_batch: int | None) -> dict:
    """What the model takes, stated completely: an app reproduces exactly this and nothing else."""
    return {
        "name": "pixels",
        "shape": ["batch", 1, SIDE, SIDE],
        "batch": {"min": 1, "max": max_batch},
        "dtype": "float32",
        "layout": "NCHW: one channel, 28 rows of 28 pixels, row-major (top row first)",
        "value_range": [-1.0, 1.0],
        "ink_polarity": "ink is positive: +1.0 is full ink, -1.0 is empty paper",
        "normalization": "x = (p / 255 - 0.5) / 0.5 = p / 127.5 - 1 for each uint8 grey level p of the bitmap",
        "mean": MEAN,
        "std": STD,
        "bitmap": {"dtype": "uint8", "background": 0, "ink": 255, "height": SIDE, "width": SIDE},
        "renderer": RENDERER_VERSION,
        "rendering": "strokes become the bitmap as in the official numpy_bitmap files: simplified strokes "
        "(0..255) centred in a 304-unit frame scaled to 28x28, round-capped lines 16 units wide, 2x2 "
        "supersampled coverage, strokes composited with 'over' (see quickdraw_mobile.data.render)",
    }


def features_contract(width: int) -> dict:
    """The second output of an artifact exported with its features (an .onnx for the drawing page)."""
    return {
        "name": FEATURES_NAME,
        "shape": ["batch", width],
        "dtype": "float32",
        "meaning": "the pooled features the logits are computed from (the model's features(x)); a class taught "
        "from a few drawings scores scale * cos(unit(f - feature_mean), prototype) + offset on them",
    }


def build_metadata(*, name: str, written: Path, quant: str, method: str, classes: list[str],
                   max_batch: int | None, model: dict, export: dict, verification: dict | None = None,
                   features: int | None = None) -> dict:
    """The metadata.json of the artifact called ``name``, whose bytes are in ``written`` (size and sha256).

    ``quant``: its precision (none, int8, int4); ``method``: what made it, a method of the quantization registry
    (fp32, int8-ptq, ...; ``qdm quantize --help`` lists them) or ``onnxruntime-int8`` (ONNX Runtime's own static
    INT8 of an .onnx); ``features``: D of its features output, when it has one (then the ``features`` entry)."""
    return {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "artifact": {
            "file": name,
            "runtime": runtime_for(name),
            "quant": quant,
            "method": method,
            "bytes": written.stat().st_size,
            "sha256": sha256_file(written),
        },
        "input": input_contract(max_batch),
        "output": {
            "name": "logits",
            "shape": ["batch", len(classes)],
            "dtype": "float32",
            "meaning": "unnormalized class scores in the order of 'classes'; softmax gives probabilities",
        },
        **({"features": features_contract(features)} if features else {}),
        "num_classes": len(classes),
        "classes": list(classes),
        "model": model,
        "export": export,
        "verification": verification,
    }


def labels_text(classes: list[str]) -> str:
    return "".join(f"{c}\n" for c in classes)


def write_sidecars(artifact: str | Path, metadata: dict, classes: list[str]) -> None:
    """Write the labels.txt and metadata.json beside ``artifact`` (the final name; each file atomically).

    Every writer of an artifact calls this before renaming the artifact into place, so the file never sits under
    its final name without sidecars that describe it."""
    meta_path, labels_path = sidecar_paths(artifact)
    write_text_atomic(labels_path, labels_text(classes))
    write_json_atomic(meta_path, metadata)


def read_metadata(artifact: str | Path, check_file: bool = True) -> tuple[dict, list[str]]:
    """Metadata and labels of ``artifact``, checked against each other and (``check_file``) the file itself."""
    artifact = Path(artifact)
    runtime = runtime_for(artifact)
    if not artifact.is_file():
        raise QDMError(f"{artifact}: no such exported model")
    meta_path, labels_path = sidecar_paths(artifact)
    for path in (meta_path, labels_path):
        if not path.is_file():
            raise QDMError(f"{path}: missing; every exported model needs it beside it (made by 'qdm export')")
    meta = read_versioned_json(meta_path, ARTIFACT_FORMAT, ARTIFACT_VERSION)
    for key, kind in (("artifact", dict), ("input", dict), ("output", dict), ("classes", list),
                      ("num_classes", int)):
        if not isinstance(meta.get(key), kind):
            raise QDMError(f"{meta_path}: field {key!r} missing or not a {kind.__name__}")
    classes, num_classes = meta["classes"], meta["num_classes"]
    if len(classes) != num_classes or num_classes < 1:
        raise QDMError(f"{meta_path}: num_classes is {num_classes} but 'classes' lists {len(classes)}")
    if meta["input"].get("shape") != ["batch", 1, SIDE, SIDE] or meta["input"].get("dtype") != "float32":
        raise QDMError(f"{meta_path}: input must be float32 of shape ['batch', 1, 28, 28], got "
                       f"{meta['input'].get('dtype')} {meta['input'].get('shape')}")
    if meta["output"].get("shape") != ["batch", num_classes]:
        raise QDMError(f"{meta_path}: output shape {meta['output'].get('shape')} does not match "
                       f"{num_classes} classes")
    features = meta.get("features")
    if features is not None and not (isinstance(features, dict) and features.get("name") == FEATURES_NAME and
                                     isinstance(features.get("shape"), list) and len(features["shape"]) == 2):
        raise QDMError(f"{meta_path}: field 'features' must name the {FEATURES_NAME!r} output of shape "
                       f"['batch', D], got {features!r}"[:300])
    if meta["artifact"].get("runtime") != runtime:
        raise QDMError(f"{meta_path}: describes a {meta['artifact'].get('runtime')} model, not a {runtime} one")
    if meta.get("selfcheck") is not None:  # older exports have none
        check_selfcheck(meta["selfcheck"], num_classes, str(meta_path))
    labels = [line for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if labels != classes:
        raise QDMError(f"{labels_path}: {len(labels)} labels differ from the {num_classes} classes of {meta_path}")
    if check_file:
        if meta["artifact"].get("file") != artifact.name:
            raise QDMError(f"{meta_path}: describes {meta['artifact'].get('file')!r}, not {artifact.name!r}")
        size = artifact.stat().st_size
        if size != meta["artifact"].get("bytes") or sha256_file(artifact) != meta["artifact"].get("sha256"):
            raise QDMError(f"{artifact}: size or sha256 differs from {meta_path.name} (file changed or corrupt; "
                           "export it again)")
    return meta, labels
