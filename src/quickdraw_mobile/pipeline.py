"""``qdm run``: the whole pipeline on one config, composed of the same stage functions the CLI exposes.

data -> train -> evaluate (test split) -> quantize (every method) -> export (FP32 and INT8 .pte and .onnx, each
verified in its runtime) -> bench -> report. Each stage's inputs (its config sections and the keys of the stages
it reads) are hashed into a key stored in ``<run>/pipeline.json``; a re-run skips every stage whose key is
unchanged and finished, and redoes a stage (and the stages that read it) when its inputs changed. Each stage
returns a small dataclass (``results``): the later stages and the report read its fields, and its ``to_json`` is
the stage's entry in pipeline.json.

Every section is checked when the config is loaded, so a misspelled bench option fails before training starts.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import QDMError
from .fileio import write_json_atomic
from .results import (
    BenchResult,
    DataResult,
    EvalResult,
    ExportedArtifact,
    ExportResult,
    QuantizeResult,
    ReportResult,
    RunResults,
    StageResult,
    TrainResult,
)
from .runfolder import RunFolder

SECTIONS = ("data", "train", "evaluate", "quantize", "export", "bench", "report")
CONFIGS = Path(__file__).resolve().parent / "configs"  # also reachable as configs/ at the repository root
DEFAULT_CONFIG = CONFIGS / "default.yaml"


@dataclass
class Context:
    out: Path
    config: dict
    progress: bool
    results: dict[str, StageResult] = field(default_factory=dict)  # stage name -> its result
    resuming: bool = False  # the current stage ran before with the same inputs but did not finish


def load_pipeline_config(path: str | Path) -> dict:
    """The config at ``path`` with every section present and checked (options, their types and ranges)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise QDMError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise QDMError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(config, dict):
        raise QDMError(f"{path}: expected sections {', '.join(SECTIONS)} at the top level")
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise QDMError(f"{path}: unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}")
    for name in SECTIONS:
        section = config.setdefault(name, {})
        if section is None:  # `bench:` with nothing under it
            section = config[name] = {}
        if not isinstance(section, dict):
            raise QDMError(f"{path}: section {name!r} must be a mapping")
    try:
        _train_config(config)
        for parse in (_data_options, _evaluate_options, _quantize_options, _export_options, _bench_options,
                      _report_options):
            parse(config)
    except QDMError as exc:
        raise QDMError(f"{path}: {exc}") from exc
    return config


# ---------------------------------------------------------------------------------------------- options
def _section(config: dict, name: str, allowed: tuple[str, ...]) -> dict:
    """A copy of section ``name``; an option outside ``allowed`` is an error (never silently ignored)."""
    values = dict(config[name])
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise QDMError(f"{name}: unknown option(s) {', '.join(unknown)}; expected {', '.join(allowed) or 'none'}")
    return values


def _keywords(fn: Callable, supplied: set[str]) -> tuple[str, ...]:
    """The options a section may set: the parameters of the stage function ``fn``, less those the pipeline
    supplies itself (model, output folder, store...)."""
    return tuple(name for name in inspect.signature(fn).parameters if name not in supplied)


def _count(values: dict, where: str, keys: tuple[str, ...], minimum: int = 1) -> None:
    """Options ``keys``, where given, must be integers of at least ``minimum`` (YAML's true is not one)."""
    for key in keys:
        value = values.get(key, minimum)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise QDMError(f"{where}.{key}: expected an integer >= {minimum}, got {value!r}")


def _flag(values: dict, where: str, key: str) -> None:
    if key in values and not isinstance(values[key], bool):
        raise QDMError(f"{where}.{key}: expected true or false, got {values[key]!r}")


def _train_config(config: dict):
    from .train.config import from_dict

    return from_dict(config["train"], "train")


def _data_options(config: dict) -> dict:
    values = {"source": "embedded", **_section(config, "data", ("source",))}
    if not isinstance(values["source"], str) or not values["source"]:
        raise QDMError(f"data.source: expected 'embedded' or a folder, got {values['source']!r}")
    return values


def _evaluate_options(config: dict) -> dict:
    values = {"split": "test", **_section(config, "evaluate", ("split",))}
    if values["split"] not in ("test", "val", "train"):
        raise QDMError(f"evaluate.split: expected test, val or train, got {values['split']!r}")
    return values


def _quantize_options(config: dict) -> dict:
    """Keyword arguments of ``quant.compare.compare``; options left out keep that function's defaults."""
    from .quant import make_config, parse_methods
    from .quant.compare import compare

    values = _section(config, "quantize", _keywords(compare, {"model_ref", "out", "data_dir"}))
    methods = values.pop("methods", "all")
    if isinstance(methods, list):
        methods = ",".join(str(m) for m in methods)
    if not isinstance(methods, str):
        raise QDMError(f"quantize.methods: expected 'all' or a list of methods, got {methods!r}")
    try:
        values["methods"] = parse_methods(methods)
    except QDMError as exc:
        raise QDMError(f"quantize.methods: {exc}") from exc
    _count(values, "quantize", ("calib", "threads", "runs"))
    _count(values, "quantize", ("seed",), minimum=0)
    _flag(values, "quantize", "memory")
    options = values.get("options") or {}
    if not isinstance(options, dict) or any(not isinstance(v, dict) for v in options.values()):
        raise QDMError("quantize.options: expected a mapping of method: {option: value}, e.g. int8-qat: {steps: 200}")
    resolved = {}
    for method, given in options.items():
        if method not in values["methods"]:
            raise QDMError(f"quantize.options: options given for {method!r}, which is not among quantize.methods")
        # YAML lists become tuples: the method configs are frozen dataclasses with tuple fields
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
        try:
            make_config(method, **given)
        except QDMError as exc:
            raise QDMError(f"quantize.options.{method}: {exc}") from exc
        resolved[method] = given
    values["options"] = resolved
    return values


def _export_options(config: dict) -> dict:
    """Keyword arguments of ``export.pipeline.export_model`` (calibration of the INT8 exports)."""
    from .export.pipeline import export_model

    values = _section(config, "export", _keywords(export_model, {"model_ref", "fmt", "quant", "out", "data_dir"}))
    _count(values, "export", ("calib",))
    _count(values, "export", ("seed",), minimum=0)
    return values


def _bench_options(config: dict) -> dict:
    """Keyword arguments of ``bench.runner.run_bench``; options left out keep that function's defaults."""
    from .bench.runner import run_bench

    # the stage benches the files the export stage wrote: no exports (and so no calibration) of its own
    values = _section(config, "bench", _keywords(run_bench, {"refs", "out", "data_dir", "export", "calib"}))
    _count(values, "bench", ("runs", "batch"))
    _count(values, "bench", ("warmup",), minimum=0)
    _flag(values, "bench", "memory")
    threads = values.get("threads")  # absent or null: 1 and all cores
    counts = isinstance(threads, list) and threads and \
        all(isinstance(t, int) and not isinstance(t, bool) and t >= 1 for t in threads)
    if threads is not None and not counts:
        raise QDMError(f"bench.threads: expected a list of positive thread counts, e.g. [1, 2], got {threads!r}")
    return values


def _report_options(config: dict) -> dict:
    return _section(config, "report", ())


# ---------------------------------------------------------------------------------------------- stages
def _fresh_dir(path: Path) -> Path:
    """An empty ``path``: a stage that runs again must not leave files of its previous inputs behind."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def stage_data(ctx: Context) -> DataResult:
    from .data.store import Store

    source = _data_options(ctx.config)["source"]
    if source == "embedded":
        from .data.embedded import embedded_store

        store_dir = embedded_store()
    elif Path(source, "manifest.json").exists():
        store_dir = Path(source).resolve()
    else:
        from .data.ingest import ingest

        # the run's own copy of the configured source: a smaller source replaces it (the config says so)
        store_dir = ingest(Path(source), ctx.out / "data", allow_shrink=True).root
    store = Store.open(store_dir)
    train_cfg = _train_config(ctx.config)
    spec = train_cfg.split_spec()
    splits = store.splits(spec, train_cfg.classes)
    return DataResult(store=Path(store_dir), source=source, classes=splits["train"].classes,
                      drawings=sum(store.counts[c] for c in splits["train"].classes),
                      split={name: len(split) for name, split in splits.items()},
                      sources=sorted({e["source"] for e in store.entries}))


def stage_train(ctx: Context) -> TrainResult:
    from .train.loop import train

    run = RunFolder(ctx.out / "train")
    resume = ctx.resuming and run.last_checkpoint.exists()
    if run.exists() and not resume:  # stale: this stage's inputs changed since it ran
        shutil.rmtree(run.root)
    summary = train(_train_config(ctx.config) if not resume else None, ctx.results["data"].store, run.root,
                    resume=resume, progress=ctx.progress)
    return TrainResult(run, summary)


def stage_evaluate(ctx: Context) -> EvalResult:
    from .evaluate.runner import evaluate

    split = _evaluate_options(ctx.config)["split"]
    out = ctx.out / "eval"
    metrics = evaluate(ctx.results["train"].run.root, ctx.results["data"].store, out, split=split)
    return EvalResult.from_json({"dir": out, **metrics})


def stage_quantize(ctx: Context) -> QuantizeResult:
    from .quant.compare import compare

    options = _quantize_options(ctx.config)
    out = _fresh_dir(ctx.out / "quantize")
    compare(ctx.results["train"].run.root, options.pop("methods"), out, data_dir=ctx.results["data"].store,
            **options)
    comparison = out / "comparison.json"
    return QuantizeResult(out, comparison, out / "comparison.md",
                          [out / "accuracy_vs_size.png", out / "accuracy_vs_latency.png"],
                          # the file's rows, not compare()'s return value: method notes are made JSON-safe there
                          json.loads(comparison.read_text(encoding="utf-8")))


def stage_export(ctx: Context) -> ExportResult:
    from .artifact_names import export_file_name
    from .bench.runner import EXPORTS
    from .export.metadata import sidecar_paths
    from .export.pipeline import export_model

    options = _export_options(ctx.config)
    out = _fresh_dir(ctx.out / "export")
    trained, store = ctx.results["train"], ctx.results["data"].store
    artifacts = []
    for fmt, quant in EXPORTS:  # FP32 and INT8 .pte and .onnx, the four files bench compares
        path = out / export_file_name(trained.model, fmt, quant)
        meta = export_model(trained.run.root, fmt, quant, path, data_dir=store,
                            **options)  # verified in its runtime against eager before it is written
        export = meta["export"]
        artifacts.append(ExportedArtifact(
            path=Path(meta["path"]), metadata=sidecar_paths(path)[0], format=fmt, **meta["artifact"],
            verification=meta["verification"], lowering=meta["lowering"],
            ops={k: export[k] for k in ("delegated_ops", "not_delegated_ops", "ops", "provider", "backend")
                 if k in export},
            calibration=export["calibration"]))
    return ExportResult(out, artifacts)


def stage_bench(ctx: Context) -> BenchResult:
    from .bench.report import write_report
    from .bench.runner import run_bench

    out = _fresh_dir(ctx.out / "bench")
    # eager from the run folder plus the files the export stage wrote and verified: nothing is exported twice
    refs = [str(ctx.results["train"].run.root), *(str(a.path) for a in ctx.results["export"].artifacts)]
    result = run_bench(refs, out, data_dir=ctx.results["data"].store, export=False, **_bench_options(ctx.config))
    paths = write_report(result, out)
    return BenchResult(out, paths["json"], paths["markdown"], paths["plot"], result)


def stage_report(ctx: Context) -> ReportResult:
    from .report import write_report

    paths = write_report(ctx.out, RunResults(**ctx.results), ctx.config)
    return ReportResult(paths["markdown"], paths["json"])


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], StageResult]
    result: type[StageResult]  # what it returns, and how a cached result is read back from pipeline.json
    upstream: tuple[str, ...]  # the stages whose keys feed this one's key
    sections: tuple[str, ...]  # the config sections it reads


STAGES = [
    Stage("data", stage_data, DataResult, (), ("data", "train")),
    Stage("train", stage_train, TrainResult, ("data",), ("train",)),
    Stage("evaluate", stage_evaluate, EvalResult, ("train",), ("evaluate",)),
    Stage("quantize", stage_quantize, QuantizeResult, ("train",), ("quantize",)),
    Stage("export", stage_export, ExportResult, ("train",), ("export",)),
    Stage("bench", stage_bench, BenchResult, ("train", "export"), ("bench",)),
    Stage("report", stage_report, ReportResult, ("data", "train", "evaluate", "quantize", "export", "bench"),
          ("report",)),
]


def _downstream(name: str) -> list[str]:
    """The stages that read ``name``'s outputs, directly or through other stages (STAGES is in run order)."""
    found: list[str] = []
    for stage in STAGES:
        if name in stage.upstream or any(u in found for u in stage.upstream):
            found.append(stage.name)
    return found


def _stage_key(stage: Stage, ctx: Context, state: dict) -> str:
    payload = {"stage": stage.name, "config": {s: ctx.config[s] for s in stage.sections},
               "upstream": {u: state[u]["key"] for u in stage.upstream}}
    if stage.name == "report":  # the report reads everything; rewrite it whenever anything ran
        payload["results"] = {u: state[u].get("finished") for u in stage.upstream}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(stage: Stage, entry: dict | None, key: str) -> StageResult | None:
    """The result of ``stage`` kept in pipeline.json, if it ran to the end with the same inputs and reads back
    (an entry this version cannot read, e.g. of an older layout, means running the stage again)."""
    if not entry or entry["key"] != key or not entry.get("complete", True):
        return None
    try:
        return stage.result.from_json(entry["result"])
    except (KeyError, TypeError, ValueError):
        return None


def run(config_path: str | Path | None, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the pipeline into ``out``; returns the per-stage state written to pipeline.json."""
    config = load_pipeline_config(config_path or DEFAULT_CONFIG)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "pipeline.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    ctx = Context(out, config, progress)
    for stage in STAGES:
        name = stage.name
        key = _stage_key(stage, ctx, state)
        cached = state.get(name)
        result = _cached(stage, cached, key)
        if result is not None:
            ctx.results[name] = result
            if progress:
                print(f"[{name}] cached ({cached['seconds']:.1f} s when it ran)")
            continue
        # same inputs, stopped early (an interrupted training): continue it rather than start again
        ctx.resuming = bool(cached and cached["key"] == key and not cached.get("complete", True))
        if progress:
            print(f"[{name}] {'resuming' if ctx.resuming else 'running'}")
        started = time.perf_counter()
        result = stage.run(ctx)
        ctx.results[name] = result
        state[name] = {"key": key, "result": result.to_json(), "seconds": time.perf_counter() - started,
                       "finished": time.time(), "complete": result.complete}
        for later in _downstream(name):
            state.pop(later, None)  # what read this stage's old outputs must be redone
        write_json_atomic(state_path, state)
        if not result.complete:
            raise QDMError(f"stage {name} stopped before the end; run the same command again to continue")
    return state
