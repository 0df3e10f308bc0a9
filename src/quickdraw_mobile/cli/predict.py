"""``qdm predict``: top-k classes for bitmaps or strokes."""

from __future__ import annotations

import argparse

from .common import add_device_option


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..predict import predict_file

    count = predict_file(args.model, args.input, args.out, k=args.top_k, device=args.device)
    print(f"{args.out}: {count} predictions")
    return 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("predict", help="top-k classes for bitmaps (.npy) or strokes (.ndjson)",
                         description="Predict the top-k classes of each drawing; writes one JSON object per "
                         'drawing, in order: {"top": [{"class": ..., "prob": ...}, ...]}: one per row of an .npy, '
                         "one per non-blank line of an .ndjson (blank lines hold no drawing and are skipped, as "
                         "NDJSON allows and as 'qdm data render' does: output line N is the N-th non-blank input "
                         "line). A model whose answers are NaN or infinite is an error.")
    p.add_argument("--model", required=True, help="run folder, a bundled model (default, default345), or an exported .pte / .onnx")
    p.add_argument("--input", required=True, help="(N, 784) or (N, 28, 28) uint8 .npy, or .ndjson of drawings")
    p.add_argument("--out", required=True, help="output .jsonl")
    p.add_argument("--top-k", type=int, default=5, help="classes per drawing (default 5)")
    add_device_option(p, "a run folder's model")
    p.set_defaults(func=_cmd_predict)
