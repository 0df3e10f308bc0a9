"""Export to phone runtimes and run the result: ExecuTorch .pte (XNNPACK) and ONNX, FP32 or INT8, verified.

- ``pipeline.export_model``: run folder or ``default`` -> verified artifact + metadata.json + labels.txt
- ``runtime.load_artifact``: any artifact -> ``Artifact`` with ``.labels``, ``.metadata``, ``.run(x) -> logits``
- ``executorch`` / ``onnx``: the two runtimes (each converts and loads its files; ``artifact_names.RUNTIMES``
  lists them); ``calibration``: the real drawings they use;
  ``metadata``: the input contract written beside each artifact; ``verify``: exported vs eager;
  ``selfcheck``: the drawings and answers an app re-runs on its device (``run_selfcheck``).

Only the light runtime side is imported here (no torch), so loading an .onnx stays torch-free.
"""

from .metadata import read_metadata, sidecar_paths
from .runtime import Artifact, load_artifact, normalize_pixels

__all__ = ["Artifact", "load_artifact", "normalize_pixels", "read_metadata", "sidecar_paths"]
