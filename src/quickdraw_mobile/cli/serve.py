"""``qdm serve``: the prediction API and drawing page."""

from __future__ import annotations

import argparse


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import serve

    serve(args.model, host=args.host, port=args.port, browser_model=args.browser_model, data_dir=args.data,
          teach=args.teach, teach_token=args.teach_token, teach_dir=args.teach_dir)
    return 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("serve", help="prediction API and drawing page (FastAPI + uvicorn)",
                         description="Serve POST /predict (strokes or a PNG -> top classes), GET /classes, /health, "
                         "/model, OpenAPI docs at /docs, and a drawing page at / for phone and desktop browsers that "
                         "guesses while you draw, on the server or in the browser (INT8 ONNX, WASM). With --teach, "
                         "clients may also teach it new classes from a few drawings each (POST /classes), kept across "
                         "restarts.")
    p.add_argument("--model", default="default", help="run folder or a bundled model: default, default345 "
                   "(default: default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--browser-model", default="auto", metavar="ONNX|auto|none",
                   help="model for the page's in-browser mode: an .onnx from 'qdm export --format onnx', 'auto' "
                   "(default: export the model to INT8 ONNX once, cached in ~/.cache/quickdraw-mobile) or 'none'")
    p.add_argument("--data", default=None, help="store the model was trained on: calibration drawings for the "
                   "'auto' export of a run folder without calibration.npz")
    p.add_argument("--teach", action="store_true", help="let clients teach new classes from a few drawings "
                   "(POST /classes, DELETE /classes/NAME); off by default")
    p.add_argument("--teach-token", default=None, metavar="TOKEN", help="bearer token teaching requests must carry "
                   "(default: $QDM_TEACH_TOKEN); required with --teach on any host but loopback")
    p.add_argument("--teach-dir", default=None, metavar="DIR", help="folder of the taught classes (default: "
                   "~/.cache/quickdraw-mobile/taught/<weights hash>)")
    p.set_defaults(func=_cmd_serve)
