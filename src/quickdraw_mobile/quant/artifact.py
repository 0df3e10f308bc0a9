"""A quantized model -> its deployable file: an ExecuTorch .pte with the sidecars every artifact carries.

The .pte and its metadata.json / labels.txt are written the way ``qdm export`` writes them (so
``export.load_artifact`` runs the file with the same checks), with the method's name (``artifact.method``), its
precision (``artifact.quant``: none, int8, int4), scheme and notes recorded. The artifact is renamed into place last: a failure leaves no file under the final name.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from .. import __version__
from ..errors import QDMError
from ..export.executorch import PTE_MAX_BATCH, backend_info
from ..export.metadata import build_metadata, write_sidecars
from ..fileio import atomic_path
from .registry import QuantizedModel


def save_pte(qm: QuantizedModel, out: str | Path, labels: list[str], model_info: dict | None = None,
             calibration: dict | None = None) -> dict:
    """Write ``out`` (.pte) and its sidecars; returns the metadata written, with the lowering report."""
    out = Path(out)
    if out.suffix != ".pte":
        raise QDMError(f"{out}: expected a file name ending in .pte")
    data, report = qm.to_pte()
    export_info = {"tool": f"quickdraw-mobile {__version__}", "torch": version("torch"), **backend_info(report),
                   "method": qm.method, "bits": qm.bits, "quantization": qm.scheme, "notes": qm.notes,
                   "calibration": calibration}
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        metadata = build_metadata(name=out.name, written=tmp, quant=qm.precision, method=qm.method, classes=labels,
                                  max_batch=PTE_MAX_BATCH, model=model_info or {}, export=export_info)
        write_sidecars(out, metadata, labels)
    return {**metadata, "lowering": report.lines()}
