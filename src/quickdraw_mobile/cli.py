"""The ``qdm`` command line: thin argument parsing over the stage functions, one verb group per stage.

Stage modules are imported inside each handler so that ``qdm --help`` stays fast (no torch import).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import QDMError

OFFICIAL_HINT = "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/"


def _data_dir(text: str) -> Path:
    """A store folder, or ``embedded`` for the real subset shipped inside the package."""
    if text == "embedded":
        from .data.embedded import embedded_store

        return embedded_store()
    return Path(text)


# ---------------------------------------------------------------------------------------------- qdm data
def _cmd_data_download(args: argparse.Namespace) -> int:
    from .data.classes import parse_class_list, sample_classes
    from .data.download import OFFICIAL_BASE_URL, download

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
    from .data.classes import parse_class_list
    from .data.ingest import ingest

    classes = parse_class_list(args.classes) if args.classes else None
    store = ingest(Path(args.path), Path(args.out), classes=classes, max_per_class=args.per_class)
    print(f"{store.root}: {len(store.classes)} classes, {sum(store.counts.values())} drawings")
    return 0


def _cmd_data_render(args: argparse.Namespace) -> int:
    from .data.render import render_ndjson_file

    count = render_ndjson_file(Path(args.input), Path(args.out), fmt=args.format)
    print(f"{args.out}: {count} drawings rendered to 28x28")
    return 0


def _cmd_data_view(args: argparse.Namespace) -> int:
    from .data.store import Store
    from .data.view import view_grid

    store = Store.open(_data_dir(args.dir))
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    out = view_grid(store, classes=classes, n=args.n, out=Path(args.out), seed=args.seed)
    print(f"wrote {out}")
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from .data.store import Store

    store = Store.open(_data_dir(args.dir))
    print(store.describe(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed))
    return 0


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share per class (default 0.1)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="test share per class (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")


def _add_data_parser(verbs: argparse._SubParsersAction) -> None:
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
        "renderer). The class of each file is its file name (official spelling).",
    )
    p.add_argument("path", help="a folder of <class>.npy|.bin|.ndjson files, or one such file")
    p.add_argument("--out", required=True, help="store folder to create or extend")
    p.add_argument("--classes", help="only these classes (comma-separated)")
    p.add_argument("--per-class", type=int, default=None, help="keep at most N drawings per class")
    p.set_defaults(func=_cmd_data_ingest)

    p = sub.add_parser(
        "render",
        help="render an .ndjson of strokes to an (N, 784) uint8 .npy",
        description="Render each line of an .ndjson stroke file (official simplified or raw format) into a 28x28 "
        "bitmap exactly as the official numpy_bitmap files are made; one row per input line, in order.",
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


# ---------------------------------------------------------------------------------------------- qdm train
TRAIN_OPTIONS = {  # CLI flag -> (type, help); each one overrides the config file's value
    "epochs": (int, "training epochs"),
    "batch_size": (int, "batch size (per process)"),
    "optimizer": (str, "adamw (default), lamb or sgd"),
    "lr": (float, "peak learning rate"),
    "weight_decay": (float, "weight decay (not applied to biases and norms)"),
    "warmup_epochs": (float, "linear warm-up length in epochs, then cosine"),
    "label_smoothing": (float, "label smoothing"),
    "grad_clip": (float, "max gradient norm (0 = off)"),
    "patience": (int, "early stopping patience in epochs on validation top-1 (0 = off)"),
    "max_per_class": (int, "use at most N drawings per class"),
    "seed": (int, "seed for init, batch order, augmentation and dropout"),
    "split_seed": (int, "seed of the train/val/test split"),
    "threads": (int, "torch threads (0 = all cores)"),
}
TRAIN_FLAGS = {  # boolean switches
    "bf16": "bfloat16 autocast",
    "balanced": "class-balanced sampling",
    "class_weights": "inverse-frequency class weights in the loss",
    "no_augment": "turn off the light affine augmentation",
}


def _cmd_train(args: argparse.Namespace) -> int:
    import json

    from .train import load_config, train

    if args.resume:
        summary = train(None, _data_dir(args.data), args.resume, resume=True)
    else:
        if not args.out:
            raise QDMError("--out: required (the run folder to create), or use --resume RUN_DIR")
        overrides = {name: getattr(args, name) for name in TRAIN_OPTIONS}
        overrides["model"] = args.model
        overrides["classes"] = [c.strip() for c in args.classes.split(",")] if args.classes else None
        if args.model_kwargs:
            try:
                overrides["model_kwargs"] = json.loads(args.model_kwargs)
            except json.JSONDecodeError as exc:
                raise QDMError(f"--model-kwargs: expected a JSON object ({exc})") from exc
        for flag in ("bf16", "balanced", "class_weights"):
            overrides[flag] = True if getattr(args, flag) else None
        overrides["augment"] = False if args.no_augment else None
        cfg = load_config(args.config, **overrides)
        summary = train(cfg, _data_dir(args.data), args.out)
    print(json.dumps(summary, indent=2))
    return 0


def _add_train_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "train",
        help="train a model on a store into a run folder",
        description="Train a registered model (see 'qdm models'). The run folder gets the resolved config.yaml, "
        "model.safetensors (best on validation), labels.txt, metrics.csv, TensorBoard events and checkpoints/ "
        "(best.pt, last.pt). Ctrl-C stops cleanly; --resume continues bit-exactly. Under "
        "'torchrun --nproc_per_node N' it trains with DistributedDataParallel.",
    )
    p.add_argument("--data", required=True, help="store folder, or 'embedded'")
    p.add_argument("--model", default=None, help="model name (default: the config's, else 'cnn')")
    p.add_argument("--config", default=None, help="YAML file of training options (see configs/)")
    p.add_argument("--out", default=None, help="run folder to create")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--classes", default=None, help="train on these classes only (comma-separated)")
    p.add_argument("--model-kwargs", default=None, help='model options as JSON, e.g. \'{"width": 32}\'')
    for name, (kind, text) in TRAIN_OPTIONS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=text)
    for name, text in TRAIN_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=text)
    p.set_defaults(func=_cmd_train)


# ---------------------------------------------------------------------------------------------- qdm evaluate / predict / models
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate.runner import evaluate

    metrics = evaluate(args.model, _data_dir(args.data), args.out, split=args.split, plots=not args.no_plots)
    print(f"{args.split}: top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  MAP@3 {metrics['map3']:.4f}"
          f"  ({metrics['n']} drawings) -> {Path(args.out) / 'metrics.json'}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_file

    count = predict_file(args.model, args.input, args.out, k=args.top_k)
    print(f"{args.out}: {count} predictions")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import create_model, list_models
    from .models.profile import count_macs, count_params

    print(f"{'model':<16}{'params':>12}{'MACs':>14}")
    for name in list_models():
        model = create_model(name, num_classes=args.num_classes)
        print(f"{name:<16}{count_params(model):>12,}{count_macs(model):>14,}")
    return 0


def _add_model_parsers(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("evaluate", help="metrics and plots on the held-out test split",
                         description="Evaluate a model on a store's test split (never used for model selection): "
                         "top-1, top-5, MAP@3, per-class precision/recall/F1, confusion; metrics.json and plots.")
    p.add_argument("--model", required=True, help="run folder or 'default'")
    p.add_argument("--data", required=True, help="store folder, or 'embedded'")
    p.add_argument("--split", default="test", help="test (default), val or train")
    p.add_argument("--out", required=True, help="output folder for metrics.json and plots")
    p.add_argument("--no-plots", action="store_true", help="metrics only")
    p.set_defaults(func=_cmd_evaluate)

    p = verbs.add_parser("predict", help="top-k classes for bitmaps (.npy) or strokes (.ndjson)",
                         description="Predict the top-k classes of each drawing; writes one JSON object per "
                         'input line, in order: {"top": [{"class": ..., "prob": ...}, ...]}.')
    p.add_argument("--model", required=True, help="run folder or 'default'")
    p.add_argument("--input", required=True, help="(N, 784) or (N, 28, 28) uint8 .npy, or .ndjson of drawings")
    p.add_argument("--out", required=True, help="output .jsonl")
    p.add_argument("--top-k", type=int, default=5, help="classes per drawing (default 5)")
    p.set_defaults(func=_cmd_predict)

    p = verbs.add_parser("models", help="list the registered models with parameters and MACs",
                         description="List registered models with parameter count and MACs for one 1x28x28 input.")
    p.add_argument("--num-classes", type=int, default=52, help="head size used for the count (default 52)")
    p.set_defaults(func=_cmd_models)


# ---------------------------------------------------------------------------------------------- qdm run
def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run

    state = run(args.config, args.out)
    print(f"report: {state['report']['result']['markdown']}")
    return 0


def _add_run_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "run",
        help="the whole pipeline on one config, with a report",
        description="Run the pipeline (data -> train -> evaluate -> report) into one run folder. Stages are "
        "cached: a re-run redoes only the stages whose config or inputs changed, and an interrupted training "
        "stage resumes. Default config: the embedded real subset, fast (configs/default.yaml).",
    )
    p.add_argument("--config", default=None, help="pipeline YAML (default: the packaged configs/default.yaml)")
    p.add_argument("--out", default="runs/default", help="run folder (default runs/default)")
    p.set_defaults(func=_cmd_run)


# ---------------------------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qdm",
        description="QuickDraw Mobile: Quick, Draw! doodles to a phone-ready classifier. "
        "Each verb is one stage of the pipeline; 'qdm VERB --help' explains it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    _add_data_parser(verbs)
    _add_train_parser(verbs)
    _add_model_parsers(verbs)
    _add_run_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except QDMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qdm data info DIR | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
