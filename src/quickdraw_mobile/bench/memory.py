"""Peak resident memory of a fresh process that loads a model and runs it, as an app process would.

``peak_memory(ref)`` starts ``python -m quickdraw_mobile.bench.memory REF``; the child imports only what the
model's runtime needs (no torch for an .onnx), notes its resident size, loads the model, runs it, and prints
its own peak resident size as JSON. Reported in MB (10^6 bytes): the peak, and the part of it that came after
the imports (the model, its runtime state and the run).

The peak is the kernel's high-water mark of the process's own memory map (``VmHWM`` in /proc/self/status), not
``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries ru_maxrss across fork and exec, so a child started by a big
parent (a bench process holding torch and several models) reports the parent's peak. Measured here: every child
of a 965 MB bench process reported 965 MB by ru_maxrss, and 66 MB (ONNX Runtime) to 766 MB (ExecuTorch) by
VmHWM, which matches the same children started from a shell.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

from ..errors import QDMError


def _status_kb(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise QDMError(f"/proc/self/status has no {field} (peak memory is measured on Linux only)")


def measure(ref: str, batch: int, runs: int) -> dict:
    """In this process: import the runtime, load ``ref``, run it ``runs`` times on a batch; memory figures."""
    import numpy as np

    from ..artifact_names import runtime_of_file  # not modelref: that would import torch into an ONNX process

    runtime = runtime_of_file(ref)
    if runtime is not None:
        importlib.import_module(runtime.package)  # the runtime's own import cost belongs to the baseline
        from ..export.runtime import load_artifact

        baseline = _status_kb("VmRSS")
        run = load_artifact(ref).run
    else:
        import torch

        from ..modelref import load_model

        baseline = _status_kb("VmRSS")
        model = load_model(ref).model

        def run(x: np.ndarray) -> object:
            with torch.inference_mode():
                return model(torch.from_numpy(x))

    x = np.full((batch, 1, 28, 28), -1.0, dtype=np.float32)  # empty paper: memory does not depend on content
    for _ in range(runs):
        run(x)
    peak = _status_kb("VmHWM")
    return {"peak_rss_mb": peak * 1024 / 1e6, "after_import_rss_mb": baseline * 1024 / 1e6,
            "model_rss_mb": (peak - baseline) * 1024 / 1e6, "batch": batch, "torch_imported": "torch" in sys.modules}


def peak_memory(ref: str | Path, batch: int = 1, runs: int = 10, timeout: float = 300) -> dict:
    """Memory figures of a fresh process that loads ``ref`` (artifact, run folder or 'default') and runs it."""
    cmd = [sys.executable, "-m", "quickdraw_mobile.bench.memory", str(ref), str(batch), str(runs)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise QDMError(f"{ref}: the memory measurement took longer than {timeout:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise QDMError(f"{ref}: the memory measurement process failed ({tail})")
    return json.loads(lines[-1])


if __name__ == "__main__":
    try:
        print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
    except QDMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
