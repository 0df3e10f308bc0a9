"""``qdm serve``: the prediction API (FastAPI + uvicorn) and the drawing page, see ``app.py``.

The page's in-browser mode needs an INT8 ONNX copy of the served model. ``serve`` takes one given with
``--browser-model``, or exports it once with ``qdm export``'s own code into a cache folder keyed by the
model's weights (calibrated on the run's bundled ``calibration.npz``, or on ``--data``), with the pooled features
as a second output (when the model has them) for the classes the page is taught in the browser.

With ``--teach`` the server also takes new classes (``POST /classes``), kept in a folder keyed by the model's
weights (``--teach-dir`` to choose another). Anyone who reaches the server could teach it, so on an address other
than loopback it needs a token (``--teach-token`` or ``QDM_TEACH_TOKEN``) or it does not start.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from ..errors import QDMError
from ..export.pipeline import export_model
from ..fileio import sha256_file
from ..modelref import resolve_run
from .app import create_app

__all__ = ["browser_model_for", "create_app", "default_cache_dir", "default_teach_dir", "serve", "teach_token_for"]

AUTO = "auto"
NONE = "none"
BROWSER_MODEL_FILE = "model.int8.onnx"
# Part of the cache path: bumped whenever the browser model's outputs change, so an older cached file is not
# reused (2: logits and features).
BROWSER_MODEL_FORMAT = 2
TEACH_TOKEN_ENV = "QDM_TEACH_TOKEN"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "quickdraw-mobile" / "serve"


def default_teach_dir(model: str | Path) -> Path:
    """Where the taught classes of ``model`` live unless ``--teach-dir`` says: keyed by its weights."""
    weights = resolve_run(model).weights_path
    return default_cache_dir().parent / "taught" / sha256_file(weights)[:16]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def teach_token_for(host: str, teach: bool, token: str | None) -> str | None:
    """The token teaching requests must carry (``token``, else ``QDM_TEACH_TOKEN``; none is needed on a loopback
    address); an error when teaching on another address has none, or a token is given without ``--teach``."""
    if not teach:
        if token is not None:
            raise QDMError("--teach-token: only with --teach")
        return None
    token = token if token is not None else os.environ.get(TEACH_TOKEN_ENV) or None
    if token is not None and not token.strip():
        raise QDMError("--teach-token: empty")
    if token is None and not is_loopback(host):
        raise QDMError(f"--teach: on {host} (not a loopback address) anyone who reaches the server could teach it; "
                       f"give --teach-token TOKEN (or set {TEACH_TOKEN_ENV})")
    return token


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
          data_dir: str | Path | None = None, teach: bool = False, teach_token: str | None = None,
          teach_dir: str | Path | None = None) -> None:
    """Load ``model`` and serve it until Ctrl-C (uvicorn, one process). ``teach``: take new classes (kept in
    ``teach_dir``, by default under the cache folder), with ``teach_token`` (see ``teach_token_for``)."""
    import uvicorn

    token = teach_token_for(host, teach, teach_token)
    if teach_dir is not None and not teach:
        raise QDMError("--teach-dir: only with --teach")
    folder = (Path(teach_dir) if teach_dir is not None else default_teach_dir(model)) if teach else None
    app = create_app(model, browser_model=browser_model_for(model, browser_model, data_dir), teach_dir=folder,
                     teach_token=token)
    predictor = app.state.predictor
    predictor.teach_info()  # the teach parameters, computed now rather than on the page's first request
    if predictor.taught is not None:
        print(f"teaching: on, {len(predictor.taught.snapshot.names)} taught classes in {folder}"
              f"{', token required' if token else ''}", flush=True)
    print(f"QuickDraw Mobile: drawing page http://{host}:{port}/  API docs http://{host}:{port}/docs", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
