"""``qdm data``: download, ingest, render, view and summarise stores."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import OFFICIAL_HINT, data_dir


def _cmd_data_download(args: argparse.Namespace) -> int:
    from ..data.classes import parse_class_list, sample_classes
    from ..data.download import OFFICIAL_BASE_URL, download

    classes = parse_class_list(args.classes) if args.classes else sample_classes(args.num_classes, args.seed)
    store = download(
        classes,
        per_class=args.per_class,
        out=Path(args.out),
        base_url=args.base_url or OFFICIAL_BASE_URL,
        workers=args.workers,
    )
    print(f"{store.root}: {len(store.classes)} classes, {sum(store.counts.values())} drawings")
    return 0


def _cmd_data_ingest(args: argparse.Namespace) -> int:
    from ..data.classes import parse_class_list
    from ..data.ingest import ingest

    classes = parse_class_list(args.classes) if args.classes else None
    store = ingest(Path(args.path), Path(args.out), classes=classes, max_per_class=args.per_class,
                   allow_shrink=args.allow_shrink)
    print(f"{store.root}: {len(store.classes)} classes, {sum(store.counts.values())} drawings")
    return 0


def _cmd_data_render(args: argparse.Namespace) -> int:
    from ..data.render import render_ndjson_file

    count = render_ndjson_file(Path(args.input), Path(args.out), fmt=args.format)
    print(f"{args.out}: {count} drawings rendered to 28x28")
    return 0


def _cmd_data_view(args: argparse.Namespace) -> int:
    from ..data.store import Store
    from ..data.view import view_grid

    store = Store.open(data_dir(args.dir))
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    out = view_grid(store, classes=classes, n=args.n, out=Path(args.out), seed=args.seed)
    print(f"wrote {out}")
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from ..data.store import Store

    store = Store.open(data_dir(args.dir))
    print(store.describe(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed))
    return 0


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share per class (default 0.1)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="test share per class (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")


def add_parser(verbs: argparse._SubParsersAction) -> None:
    data = verbs.add_parser(
        "data",
        help="download, ingest, render, inspect and view Quick, Draw! data",
        description="Quick, Draw! data: every verb writes or reads one on-disk store layout "
        "(per-class uint8 .npy files, memory-mapped, plus manifest.json). "
        "Use the folder name 'embedded' for the real subset shipped with the package.",
    )
    sub = data.add_subparsers(dest="data_verb", metavar="VERB", required=True)

    p = sub.add_parser(
        "download",
        help="fetch official numpy_bitmap files (only the rows you need)",
        description="Fetch the first N drawings of each class from the official numpy_bitmap files with HTTP "
        "Range requests (falling back to a streamed download), resumable and verified, several classes at once. "
        f"Default base URL: {OFFICIAL_HINT}",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--classes", help='comma-separated official names, e.g. "cat,The Eiffel Tower"')
    which.add_argument("--num-classes", type=int, help="pick N classes at random (see --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed for --num-classes (default 0)")
    p.add_argument("--per-class", type=int, required=True, help="drawings to keep per class (the first N rows)")
    p.add_argument("--out", required=True, help="store folder to create or extend")
    p.add_argument("--base-url", default=None, help="folder URL holding <class>.npy (default: the official one)")
    p.add_argument("--workers", type=int, default=4, help="classes fetched in parallel (default 4)")
    p.set_defaults(func=_cmd_data_download)

    p = sub.add_parser(
        "ingest",
        help="build a store from local .npy / .bin / .ndjson files",
        description="Build a store from a folder (or one file) of official numpy_bitmap .npy files, raw .bin files "
        "(rows of 784 uint8 bytes) or .ndjson stroke files (simplified or raw; rendered with the built-in "
        "renderer). The class of each file is its file name (official spelling). A class already in the store is "
        "replaced, but never by fewer drawings unless --allow-shrink is given (like 'data download', which never "
        "cuts a class down).",
    )
    p.add_argument("path", help="a folder of <class>.npy|.bin|.ndjson files, or one such file")
    p.add_argument("--out", required=True, help="store folder to create or extend")
    p.add_argument("--classes", help="only these classes (comma-separated)")
    p.add_argument("--per-class", type=int, default=None, help="keep at most N drawings per class")
    p.add_argument("--allow-shrink", action="store_true",
                   help="replace a class the store holds with fewer drawings (otherwise an error)")
    p.set_defaults(func=_cmd_data_ingest)

    p = sub.add_parser(
        "render",
        help="render an .ndjson of strokes to an (N, 784) uint8 .npy",
        description="Render each line of an .ndjson stroke file (official simplified or raw format) into a 28x28 "
        "bitmap exactly as the official numpy_bitmap files are made; one row per drawing, in order. Blank lines "
        "hold no drawing and are skipped (as NDJSON allows, and as 'qdm predict' does): row N is the N-th "
        "non-blank line.",
    )
    p.add_argument("input", help="an .ndjson file, one drawing per line")
    p.add_argument("--out", required=True, help="output .npy path")
    p.add_argument("--format", choices=["auto", "simplified", "raw"], default="auto",
                   help="stroke format (default: detect per line)")
    p.set_defaults(func=_cmd_data_render)

    p = sub.add_parser("view", help="draw a labelled grid of drawings to a PNG",
                       description="Draw a labelled grid of drawings from a store.")
    p.add_argument("dir", help="store folder, or 'embedded'")
    p.add_argument("--classes", help="classes to show (comma-separated; default: all, up to 16)")
    p.add_argument("--n", type=int, default=16, help="drawings per class (default 16)")
    p.add_argument("--seed", type=int, default=0, help="which drawings are picked (default 0)")
    p.add_argument("--out", required=True, help="output PNG path")
    p.set_defaults(func=_cmd_data_view)

    p = sub.add_parser("info", help="summarise a store: classes, counts, source and split sizes",
                       description="Summarise a store and its deterministic train/validation/test split.")
    p.add_argument("dir", help="store folder, or 'embedded'")
    _add_split_options(p)
    p.set_defaults(func=_cmd_data_info)
