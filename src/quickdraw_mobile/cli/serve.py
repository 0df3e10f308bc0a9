"""``qdm serve``: the prediction API and drawing page."""

from __future__ import annotations

import argparse


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import serve

    serve(args.model, host=args.host, port=args.port, browser_model=args.browser_model, data_dir=args.data)
    return 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("serve", help="prediction API and drawing page (FastAPI + uvicorn)",
                         description="Serve POST /predict (strokes or a PNG -> top classes), GET /classes, /health, "
                         "/model, OpenAPI docs at /docs, and a drawing page at / for phone and desktop browsers that "
                         "guesses while you draw, on the server or in the browser (INT8 ONNX, WASM).")
    p.add_argument("--model", default="default", help="run folder or a bundled model: default, default345 (default: default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--browser-model", default="auto", metavar="ONNX|auto|none",
                   help="model for the page's in-browser mode: an .onnx from 'qdm export --format onnx', 'auto' "
                   "(default: export the model to INT8 ONNX once, cached in ~/.cache/quickdraw-mobile) or 'none'")
    p.add_argument("--data", default=None, help="store the model was trained on: calibration drawings for the "
                   "'auto' export of a run folder without calibration.npz")
    p.set_defaults(func=_cmd_serve)
