"""``qdm serve``: the prediction API (FastAPI + uvicorn) and the drawing page, see ``app.py``.

The page's in-browser mode needs an INT8 ONNX copy of the served model. ``serve`` takes one given with
``--browser-model``, or exports it once with ``qdm export``'s own code into a cache folder keyed by the
model's weights (calibrated on the run's bundled ``calibration.npz``, or on ``--data``), with the pooled features
as a second output (when the model has them) for the classes the page is taught in the browser.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import QDMError
from ..export.pipeline import export_model
from ..fileio import sha256_file
from ..modelref import resolve_run
from .app import create_app

__all__ = ["browser_model_for", "create_app", "default_cache_dir", "serve"]

AUTO = "auto"
NONE = "none"
BROWSER_MODEL_FILE = "model.int8.onnx"
# Part of the cache path: bumped whenever the browser model's outputs change, so an older cached file is not
# reused (2: logits and features).
BROWSER_MODEL_FORMAT = 2


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "quickdraw-mobile" / "serve"


def browser_model_for(model: str | Path, choice: str = AUTO, data_dir: str | Path | None = None,
                      cache_dir: str | Path | None = None) -> Path | None:
    """The ONNX file for the page's in-browser mode: ``choice`` is a path, ``none``, or ``auto`` (the cached
    INT8 export of ``model``, made now if missing; ``None`` with a note on stderr when it cannot be made)."""
    if choice == NONE:
        return None
    if choice != AUTO:
        return Path(choice)
    weights = resolve_run(model).weights_path
    folder = Path(cache_dir or default_cache_dir()) / sha256_file(weights)[:16] / f"browser-v{BROWSER_MODEL_FORMAT}"
    out = folder / BROWSER_MODEL_FILE
    if not out.is_file():
        print(f"exporting the browser model (INT8 ONNX) to {out} ...", file=sys.stderr, flush=True)
        try:
            export_model(model, "onnx", "int8", out, data_dir=data_dir, features=True)
        except QDMError as exc:
            print(f"note: no in-browser mode: {exc}", file=sys.stderr)
            return None
    return out


def serve(model: str | Path = "default", host: str = "127.0.0.1", port: int = 8000, browser_model: str = AUTO,
          data_dir: str | Path | None = None) -> None:
    """Load ``model`` and serve it until Ctrl-C (uvicorn, one process)."""
    import uvicorn

    app = create_app(model, browser_model=browser_model_for(model, browser_model, data_dir))
    print(f"QuickDraw Mobile: drawing page http://{host}:{port}/  API docs http://{host}:{port}/docs", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
