"""``qdm run``: the whole pipeline on one config, composed of the same stage functions the CLI exposes.

Each stage's inputs (its config section and the keys of the stages it reads) are hashed into a key stored in
``<run>/pipeline.json``; a re-run skips every stage whose key and outputs are unchanged, and redoes a stage
(and everything downstream of it) when its inputs changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import QDMError
from .fileio import write_json_atomic

SECTIONS = ("data", "train", "evaluate", "report")
CONFIGS = Path(__file__).resolve().parent / "configs"  # also reachable as configs/ at the repository root
DEFAULT_CONFIG = CONFIGS / "default.yaml"


@dataclass
class Context:
    out: Path
    config: dict
    progress: bool
    results: dict = field(default_factory=dict)  # stage name -> its JSON-able result
    resuming: bool = False  # the current stage ran before with the same inputs but did not finish


def load_pipeline_config(path: str | Path) -> dict:
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
        if not isinstance(section, dict):
            raise QDMError(f"{path}: section {name!r} must be a mapping")
    return config


# ---------------------------------------------------------------------------------------------- stages
def stage_data(ctx: Context) -> dict:
    from .data.store import SplitSpec, Store

    section = dict(ctx.config["data"])
    source = section.pop("source", "embedded")
    if section:
        raise QDMError(f"data: unknown option(s) {', '.join(sorted(section))}; expected source")
    if source == "embedded":
        from .data.embedded import embedded_store

        store_dir = embedded_store()
    elif Path(source, "manifest.json").exists():
        store_dir = Path(source).resolve()
    else:
        from .data.ingest import ingest

        store_dir = ingest(Path(source), ctx.out / "data").root
    store = Store.open(store_dir)
    train_cfg = _train_config(ctx)
    spec = SplitSpec(train_cfg.val_fraction, train_cfg.test_fraction, train_cfg.split_seed, train_cfg.max_per_class)
    splits = store.splits(spec, train_cfg.classes)
    return {"store": str(store_dir), "source": source, "classes": splits["train"].classes,
            "drawings": sum(store.counts[c] for c in splits["train"].classes),
            "split": {name: len(split) for name, split in splits.items()},
            "sources": sorted({e["source"] for e in store.entries})}


def _train_config(ctx: Context):
    from .train.config import from_dict

    return from_dict(ctx.config["train"], "train")


def stage_train(ctx: Context) -> dict:
    from .train import train

    run_dir = ctx.out / "train"
    resume = ctx.resuming and (run_dir / "checkpoints" / "last.pt").exists()
    if run_dir.exists() and not resume:  # stale: this stage's inputs changed since it ran
        shutil.rmtree(run_dir)
    summary = train(_train_config(ctx) if not resume else None, ctx.results["data"]["store"], run_dir,
                    resume=resume, progress=ctx.progress)
    return {"run": str(run_dir), **summary}


def stage_evaluate(ctx: Context) -> dict:
    from .evaluate.runner import evaluate

    section = dict(ctx.config["evaluate"])
    split = section.pop("split", "test")
    if section:
        raise QDMError(f"evaluate: unknown option(s) {', '.join(sorted(section))}; expected split")
    out = ctx.out / "eval"
    metrics = evaluate(ctx.results["train"]["run"], ctx.results["data"]["store"], out, split=split)
    keep = ("split", "n", "top1", "top5", "map3", "macro_precision", "macro_recall", "macro_f1")
    return {"dir": str(out), **{k: metrics[k] for k in keep}}


def stage_report(ctx: Context) -> dict:
    from .report import write_report

    paths = write_report(ctx.out, ctx.results, ctx.config)
    return {k: str(v) for k, v in paths.items()}


# name, function, upstream stages whose keys feed this one's key, config sections it reads
STAGES: list[tuple[str, Callable[[Context], dict], tuple[str, ...], tuple[str, ...]]] = [
    ("data", stage_data, (), ("data", "train")),
    ("train", stage_train, ("data",), ("train",)),
    ("evaluate", stage_evaluate, ("train",), ("evaluate",)),
    ("report", stage_report, ("data", "train", "evaluate"), ("report",)),
]


def _stage_key(name: str, ctx: Context, upstream: tuple[str, ...], sections: tuple[str, ...], state: dict) -> str:
    payload = {"stage": name, "config": {s: ctx.config[s] for s in sections},
               "upstream": {u: state[u]["key"] for u in upstream}}
    if name == "report":  # the report reads everything; rewrite it whenever anything ran
        payload["results"] = {u: state[u].get("finished") for u in upstream}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run(config_path: str | Path | None, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the pipeline into ``out``; returns the per-stage state written to pipeline.json."""
    config = load_pipeline_config(config_path or DEFAULT_CONFIG)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "pipeline.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    ctx = Context(out, config, progress)
    for name, fn, upstream, sections in STAGES:
        key = _stage_key(name, ctx, upstream, sections, state)
        cached = state.get(name)
        if cached and cached["key"] == key and cached.get("complete", True):
            ctx.results[name] = cached["result"]
            if progress:
                print(f"[{name}] cached ({cached['seconds']:.1f} s when it ran)")
            continue
        ctx.resuming = bool(cached and cached["key"] == key)
        if progress:
            print(f"[{name}] {'resuming' if ctx.resuming else 'running'}")
        started = time.perf_counter()
        result = fn(ctx)
        ctx.results[name] = result
        state[name] = {"key": key, "result": result, "seconds": time.perf_counter() - started,
                       "finished": time.time(), "complete": result.get("complete", True)}
        for later, *_ in STAGES[[s[0] for s in STAGES].index(name) + 1:]:
            state.pop(later, None)  # everything downstream must be redone
        write_json_atomic(state_path, state)
        if not state[name]["complete"]:
            raise QDMError(f"stage {name} stopped before the end; run the same command again to continue")
    return state
