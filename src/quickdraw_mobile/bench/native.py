"""The "ExecuTorch C++" rows of ``qdm bench``: the same .pte run by ``qdm-native`` (native/), as an app runs it.

``qdm-native bench`` times single drawings and batches on each thread count and reports its own peak resident
memory (VmHWM); ``qdm-native classify --logits`` gives the answers on the accuracy drawings. Both run in a
process of their own, so the Python process's memory and thread settings do not touch them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import QDMError

_REPO_BUILD = Path(__file__).resolve().parents[3] / "native" / "build" / "qdm-native"
NATIVE_RUNTIME = "executorch"  # the runtime whose files qdm-native runs (artifact_names.RUNTIMES): its C++ side


def find_native() -> Path | None:
    """``qdm-native``: ``$QDM_NATIVE``, the checkout's native/build (what scripts/setup.sh builds), or the PATH."""
    for candidate in (os.environ.get("QDM_NATIVE"), _REPO_BUILD, shutil.which("qdm-native")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _run(binary: Path, *args) -> None:
    done = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise QDMError(f"qdm-native {args[0]} failed: {(done.stderr.strip() or 'no message').splitlines()[-1]}")


def native_row(binary: Path, name: str, pte: str, quant: str, macs: int, pixels: np.ndarray, *, runs: int,
               warmup: int, batch: int, threads: list[int], memory: bool = True) -> dict:
    """The bench row ``name`` for ``pte`` run by ``binary``; timed on ``pixels`` (uint8 (N, 784)). ``memory``: with
    the process's peak resident memory (measured anyway: it is the timing process itself)."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "pixels.npy", np.ascontiguousarray(pixels, dtype=np.uint8))
        _run(binary, "bench", "--model", pte, "--input", Path(tmp) / "pixels.npy", "--runs", runs, "--warmup",
             warmup, "--batch", batch, "--threads", ",".join(map(str, threads)), "--json", Path(tmp) / "b.json")
        report = json.loads((Path(tmp) / "b.json").read_text())
    per_thread = report["threads"]
    return {"name": name, "runtime": f"{NATIVE_RUNTIME}-cpp",
            "quant": quant, "path": pte, "size_bytes": Path(pte).stat().st_size, "macs": macs,
            "latency": {t: v["latency"] for t, v in per_thread.items()},
            "throughput": {t: v["throughput"] for t, v in per_thread.items()},
            "gmacs": {t: macs / (v["latency"]["p50_ms"] / 1e3) / 1e9 for t, v in per_thread.items()},
            "carried_bytes": report["carried_bytes"], "binary_bytes": report["binary_bytes"],
            **({"memory": {"peak_rss_mb": report["peak_rss_mb"]}} if memory else {})}


def native_predictions(binary: Path, pte: str, pixels: np.ndarray) -> np.ndarray:
    """Top-1 class indices of ``pixels`` from ``qdm-native classify``."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "pixels.npy", np.ascontiguousarray(pixels, dtype=np.uint8))
        _run(binary, "classify", "--model", pte, "--input", Path(tmp) / "pixels.npy", "--out",
             Path(tmp) / "top.jsonl", "--top-k", 1, "--logits", Path(tmp) / "logits.npy")
        return np.load(Path(tmp) / "logits.npy").argmax(1)
