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
    store = ingest(Path(args.path), Path(args.out), classes=classes, max_per_class=args.per_class,
                   allow_shrink=args.allow_shrink)
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
    "val_fraction": (float, "share of each class for validation (picks the best epoch)"),
    "test_fraction": (float, "share of each class held out for testing (drawn first)"),
    "split_seed": (int, "seed of the train/val/test split"),
    "threads": (int, "torch threads (0 = all cores)"),
    "mixup_alpha": (float, "mixup: Beta(alpha, alpha) blend of batch pairs (0 = off)"),
    "cutmix_alpha": (float, "CutMix: Beta(alpha, alpha) share of a drawing kept, the rest pasted (0 = off)"),
    "mix_prob": (float, "share of batches mixed when mixup or CutMix is on"),
    "ema_decay": (float, "validate and save an EMA of the weights with this per-step decay (0 = off)"),
    "stretch": (float, "augmentation: change the aspect ratio by up to this fraction either way"),
    "distill_weight": (float, "distillation: share of the loss on the teachers' soft targets (default 0.5)"),
    "distill_temperature": (float, "distillation: softmax temperature of teachers and student (default 1)"),
}
TRAIN_FLAGS = {  # boolean switches
    "bf16": "bfloat16 autocast",
    "balanced": "class-balanced sampling",
    "class_weights": "inverse-frequency class weights in the loss",
    "reframe": "augmentation: refit each warped drawing to the official bitmaps' framing",
    "ema_warmup": "EMA: decay min(ema_decay, (1 + n) / (10 + n)) at update n, so it soon forgets the initial weights",
    "no_augment": "turn off the light affine augmentation",
    "teacher_hflip": "distillation: average each teacher over the drawing and its mirror",
}


RESUME_OPTIONS = {"epochs"}  # what --resume may change; everything else comes from the run's config.yaml


def _options_given(args: argparse.Namespace) -> list[str]:
    """The train options set on the command line, as flags (those left at their defaults are not given)."""
    names = [*TRAIN_OPTIONS, *TRAIN_FLAGS, "model", "config", "out", "classes", "model_kwargs", "teacher"]
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) not in (None, False)]


def _cmd_train(args: argparse.Namespace) -> int:
    import json

    from .fileio import json_text
    from .train import load_config, train

    if args.resume:
        refused = [flag for flag in _options_given(args) if flag[2:].replace("-", "_") not in RESUME_OPTIONS]
        if refused:
            raise QDMError(f"{', '.join(refused)}: not allowed with --resume (a run continues with its own "
                           "config.yaml; only --epochs may change its length); start a new run with --out instead")
        summary = train(None, _data_dir(args.data), args.resume, resume=True, epochs=args.epochs)
    else:
        if not args.out:
            raise QDMError("--out: required (the run folder to create), or use --resume RUN_DIR")
        overrides = {name: getattr(args, name) for name in TRAIN_OPTIONS}
        overrides["model"] = args.model
        overrides["classes"] = [c.strip() for c in args.classes.split(",")] if args.classes else None
        overrides["teachers"] = args.teacher
        if args.model_kwargs:
            try:
                overrides["model_kwargs"] = json.loads(args.model_kwargs)
            except json.JSONDecodeError as exc:
                raise QDMError(f"--model-kwargs: expected a JSON object ({exc})") from exc
        for flag in TRAIN_FLAGS.keys() - {"no_augment"}:
            overrides[flag] = True if getattr(args, flag) else None
        overrides["augment"] = False if args.no_augment else None
        cfg = load_config(args.config, **overrides)
        summary = train(cfg, _data_dir(args.data), args.out)
    print(json_text(summary, "the training summary"))
    return 0


def _add_train_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "train",
        help="train a model on a store into a run folder",
        description="Train a registered model (see 'qdm models'). The run folder gets the resolved config.yaml, "
        "model.safetensors (best on validation), labels.txt, metrics.csv, TensorBoard events and checkpoints/ "
        "(best.pt, last.pt). Ctrl-C stops cleanly and prints the command that continues the run: --resume RUN_DIR "
        "--data STORE continues bit-exactly with the run's own config.yaml. With --resume, only --epochs may be "
        "given: it changes the run's length (config.yaml is updated and the cosine schedule recomputed over the new "
        "length, so the result differs from a run started with that many epochs). Under "
        "'torchrun --nproc_per_node N' it trains with DistributedDataParallel.",
    )
    p.add_argument("--data", required=True, help="store folder, or 'embedded'")
    p.add_argument("--model", default=None, help="model name (default: the config's, else 'cnn')")
    p.add_argument("--config", default=None, help="YAML file of training options (see configs/)")
    p.add_argument("--out", default=None, help="run folder to create")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run with its own config (only --epochs may be given, to change its length)")
    p.add_argument("--classes", default=None, help="train on these classes only (comma-separated)")
    p.add_argument("--model-kwargs", default=None, help='model options as JSON, e.g. \'{"width": 32}\'')
    p.add_argument("--teacher", action="append", default=None, metavar="MODEL",
                   help="distill from this trained run folder (or 'default'); repeat to average several")
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
                         'drawing, in order: {"top": [{"class": ..., "prob": ...}, ...]}: one per row of an .npy, '
                         "one per non-blank line of an .ndjson (blank lines hold no drawing and are skipped, as "
                         "NDJSON allows and as 'qdm data render' does: output line N is the N-th non-blank input "
                         "line). A model whose answers are NaN or infinite is an error.")
    p.add_argument("--model", required=True, help="run folder, 'default', or an exported .pte / .onnx")
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
        description="Run the whole pipeline into one run folder: data -> train -> evaluate (test split) -> "
        "quantize (every method) -> export (FP32 and INT8 .pte and .onnx, each verified in its runtime) -> bench "
        "-> report (report.md, report.json). Stages are cached: a re-run redoes only the stages whose config "
        "section or inputs changed, and an interrupted training stage resumes. Default config: the embedded real "
        "subset, within 15 minutes on 2 CPU cores (configs/default.yaml; configs/shared52.yaml and "
        "configs/seed344.yaml are larger recipes).",
    )
    p.add_argument("--config", default=None, help="pipeline YAML (default: the packaged configs/default.yaml)")
    p.add_argument("--out", default="runs/default", help="run folder (default runs/default)")
    p.set_defaults(func=_cmd_run)


# ---------------------------------------------------------------------------------------------- qdm serve
def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(args.model, host=args.host, port=args.port, browser_model=args.browser_model, data_dir=args.data)
    return 0


def _add_serve_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("serve", help="prediction API and drawing page (FastAPI + uvicorn)",
                         description="Serve POST /predict (strokes or a PNG -> top classes), GET /classes, /health, "
                         "/model, OpenAPI docs at /docs, and a drawing page at / for phone and desktop browsers that "
                         "guesses while you draw, on the server or in the browser (INT8 ONNX, WASM).")
    p.add_argument("--model", default="default", help="run folder or 'default' (default: the bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--browser-model", default="auto", metavar="ONNX|auto|none",
                   help="model for the page's in-browser mode: an .onnx from 'qdm export --format onnx', 'auto' "
                   "(default: export the model to INT8 ONNX once, cached in ~/.cache/quickdraw-mobile) or 'none'")
    p.add_argument("--data", default=None, help="store the model was trained on: calibration drawings for the "
                   "'auto' export of a run folder without calibration.npz")
    p.set_defaults(func=_cmd_serve)


# ---------------------------------------------------------------------------------------------- qdm export / bench
def _cmd_export(args: argparse.Namespace) -> int:
    from .export.pipeline import export_model

    data = _data_dir(args.data) if args.data else None
    meta = export_model(args.model, args.format, args.quant, args.out, data_dir=data, calib=args.calib,
                        seed=args.seed)
    art, check = meta["artifact"], meta["verification"]
    print(f"wrote {meta['path']} ({art['bytes'] / 1e3:,.1f} KB, {art['runtime']}, quant {art['quant']}) "
          f"+ {art['file']}.metadata.json + {art['file']}.labels.txt")
    for line in meta["lowering"]:
        print(line)
    print(f"verified in {art['runtime']} on {check['source']}: top-1 agreement with eager "
          f"{100 * check['top1_agreement']:.2f}% ({check['disagreements']} of {check['drawings']} differ), "
          f"largest logit difference {check['max_abs_logit_diff']:.3g}; top-1 eager {100 * check['eager_top1']:.2f}%"
          f", exported {100 * check['exported_top1']:.2f}%")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.report import markdown_table, write_report
    from .bench.runner import run_bench

    try:
        threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    except ValueError as exc:
        raise QDMError(f"--threads: expected comma-separated thread counts, e.g. 1,2 ({exc})") from exc
    if threads is not None and min(threads) < 1:
        raise QDMError(f"--threads: expected positive thread counts, got {args.threads}")
    result = run_bench(args.model, args.out, data_dir=_data_dir(args.data) if args.data else None, runs=args.runs,
                       warmup=args.warmup, batch=args.batch, threads=threads, memory=not args.no_memory,
                       native=not args.no_native,
                       export=not args.no_export, calib=args.calib)
    paths = write_report(result, args.out)
    print(markdown_table(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


METHODS = "{methods}"  # replaced in help texts by the quantization methods, read from their registry


class _MethodsHelp(argparse.HelpFormatter):
    """Help that names the quantization methods: read from the registry only when help is shown (it loads torch)."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(_with_methods(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return _with_methods(super()._expand_help(action))


def _with_methods(text: str) -> str:
    if METHODS not in text:
        return text
    from .quant.registry import method_names_help

    return text.replace(METHODS, method_names_help())


def _add_export_parsers(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "export",
        help="export to ExecuTorch .pte (XNNPACK) or ONNX, FP32 or quantized, verified in its own runtime",
        formatter_class=_MethodsHelp,
        description="Export a model for phones: --format pte (ExecuTorch, XNNPACK delegate) or onnx; --quant none "
        "(FP32), int8 (static quantization calibrated on class-balanced training drawings; for a .pte it is "
        "int8-ptq) or, for a .pte, any method of 'qdm quantize', whose artifact in that study this file then is "
        "(same calibration drawings, same seed). The file is "
        "loaded in its own runtime and compared with the eager model on real test drawings before it is written "
        "(an FP32 export that changes more than 0.5%% of top-1 answers is an error). Beside it: "
        "FILE.metadata.json (the exact input contract, classes, how it was made and verified) and "
        "FILE.labels.txt.",
    )
    p.add_argument("--model", required=True, help="run folder or 'default'")
    p.add_argument("--format", required=True, help="pte or onnx")
    p.add_argument("--quant", default="none", help=f"none (FP32, default), int8 (= int8-ptq for a .pte) or, for a "
                   f".pte, a method of 'qdm quantize': {METHODS}")
    p.add_argument("--out", required=True, help="output file (.pte or .onnx)")
    p.add_argument("--data", default=None, help="the store the model was trained on (required for run folders: "
                   "calibration and verification use the run's own training and test splits); for 'default', "
                   "its bundled real samples are used when omitted")
    p.add_argument("--calib", type=int, default=2048, help="calibration drawings (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="which calibration drawings are picked (default 0)")
    p.set_defaults(func=_cmd_export)

    p = verbs.add_parser(
        "bench",
        help="size, latency, throughput and memory across runtimes",
        description="Benchmark models in their runtimes: a run folder or 'default' in eager PyTorch (and, unless "
        "--no-export, exported and verified to FP32/INT8 .pte and .onnx under OUT/artifacts), a .pte in "
        "ExecuTorch (and, with qdm-native built, in ExecuTorch's C++ runtime), an .onnx in ONNX Runtime. Measures size on disk, single-drawing latency p50/p95 on 1 thread "
        "and all threads, batch throughput, achieved GMAC/s against the machine's measured fp32 peak, and the "
        "peak memory of a fresh process that loads and runs the model. Writes bench.json, bench.md, bench.png.",
    )
    p.add_argument("--model", required=True, nargs="+", help="run folders, 'default', .pte or .onnx files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", default=None, help="the model's store: exports calibrate on its training split and "
                   "top-1 is measured on its test split (default: the bundled samples of 'default')")
    p.add_argument("--runs", type=int, default=200, help="timed single-drawing runs (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed warm-up runs (default 20)")
    p.add_argument("--batch", type=int, default=32, help="batch size for throughput (default 32)")
    p.add_argument("--threads", default=None, help="thread counts, comma-separated (default: 1 and all cores)")
    p.add_argument("--calib", type=int, default=2048, help="calibration drawings for the int8 exports")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--no-native", action="store_true", help="skip the ExecuTorch C++ rows (qdm-native, built by "
                   "scripts/setup.sh from native/)")
    p.add_argument("--no-export", action="store_true", help="bench run folders in eager PyTorch only")
    p.set_defaults(func=_cmd_bench)


# ---------------------------------------------------------------------------------------------- qdm quantize
def _cmd_quantize(args: argparse.Namespace) -> int:
    from .quant import parse_methods
    from .quant.compare import compare, parse_options

    rows = compare(args.model, parse_methods(args.methods), args.out,
                   data_dir=_data_dir(args.data) if args.data else None, calib=args.calib, seed=args.seed,
                   options=parse_options(args.set), threads=args.threads, runs=args.runs)
    print((Path(args.out) / "comparison.md").read_text(), end="")
    print(f"wrote {len(rows)} rows to {Path(args.out) / 'comparison.json'}, comparison.md and two plots")
    return 0


def _add_quantize_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "quantize",
        help="compare quantization methods side by side (INT8, 4-bit, mixed, pruned)",
        formatter_class=_MethodsHelp,
        description="Apply each method to the model with the same calibration drawings (class-balanced, from its "
        "training split), write its deployable artifact (ExecuTorch .pte, XNNPACK) and measure it in its "
        "runtime on the same test split: top-1, top-5, change against fp32, size on disk, single-drawing "
        "latency p50, peak memory. Methods: " + METHODS + ". Writes comparison.json, comparison.md, accuracy_vs_size.png, "
        "accuracy_vs_latency.png and artifacts/.",
    )
    p.add_argument("--model", required=True, help="run folder or 'default'")
    p.add_argument("--methods", default="all", help="'all' (default) or a comma-separated list of methods")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", default=None, help="the store the model was trained on: calibration and fine-tuning "
                   "use its training split, scores its test split (required for the methods that fine-tune; for "
                   "'default' without it, the bundled real samples are used)")
    p.add_argument("--calib", type=int, default=2048, help="calibration drawings (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="picks the calibration drawings and seeds fine-tuning")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                   help="a method option, e.g. int8-qat.steps=500 or int4-gptq.act_order=true (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="threads for the latency measurement (default 1)")
    p.add_argument("--runs", type=int, default=100, help="timed single-drawing runs per artifact (default 100)")
    p.set_defaults(func=_cmd_quantize)


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
    _add_export_parsers(verbs)
    _add_quantize_parser(verbs)
    _add_run_parser(verbs)
    _add_serve_parser(verbs)
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
    except OSError as exc:  # a file or folder the stage could not read or write (read-only, full, not a folder)
        from .fileio import describe_os_error

        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
