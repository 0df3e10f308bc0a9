"""The run report: ``report.md`` (tables + plots, each section naming the stage and files its numbers come from)
and ``report.json`` (the config and every stage's result).

Every number is read from the stage results (``pipeline.json``); the quantization and benchmark tables are the
ones those stages render themselves (``comparison.md``, ``bench.report.markdown_table``), so the report and the
stage outputs can never disagree. Paths in report.md are relative to the run folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from .bench.report import markdown_table
from .fileio import write_json_atomic, write_text_atomic
from .results import (
    BenchResult,
    DataResult,
    EvalResult,
    ExportedArtifact,
    ExportResult,
    QuantizeResult,
    RunResults,
    TrainResult,
)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _rel(out: Path, path: str | Path) -> str:
    """``path`` relative to the run folder when it is inside it (the embedded store, say, is not)."""
    path = Path(path)
    inside = Path(os.path.abspath(path)).is_relative_to(os.path.abspath(out))
    return os.path.relpath(path, out) if inside else str(path)


def _image(out: Path, path: str | Path, caption: str) -> list[str]:
    return [f"![{caption}]({_rel(out, path)})", ""] if Path(path).exists() else []


def _embed(markdown: str) -> list[str]:
    """A stage's own Markdown under a report section: its title dropped, its other headings one level down."""
    lines = markdown.rstrip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return [f"##{line}" if line.startswith("#") else line for line in lines] + [""]


def _source(*files: str) -> list[str]:
    return [f"_Numbers from: {', '.join(files)}._", ""]


def _data(out: Path, data: DataResult) -> list[str]:
    split = data.split
    return [
        "## Data", "",
        *_source("stage `data` (`pipeline.json`)"),
        f"- store: `{_rel(out, data.store)}` (source: {', '.join(data.sources)})",
        f"- {len(data.classes)} classes, {data.drawings:,} drawings; split train {split['train']:,}"
        f" / val {split['val']:,} / test {split['test']:,} (test never used for model selection)",
        f"- classes: {', '.join(data.classes)}",
        "",
    ]


def _training(out: Path, trained: TrainResult, eval_dir: Path) -> list[str]:
    run = trained.run
    return [
        "## Training", "",
        *_source(f"stage `train` (`{_rel(out, run.summary_path)}`, curves from `{_rel(out, run.metrics_path)}`)"),
        "| model | params | MACs (1×28×28) | epochs | best val top-1 | best epoch | train time |",
        "|---|---|---|---|---|---|---|",
        f"| {trained.model} | {trained.params:,} | {trained.macs:,} | {trained.epochs_done} | "
        f"{_pct(trained.best_val_top1)} | {trained.best_epoch} | {trained.seconds:.0f} s |",
        "",
        *_image(out, eval_dir / "training_curves.png", "training curves"),
    ]


def _evaluation(out: Path, evaluated: EvalResult) -> list[str]:
    eval_dir = evaluated.dir
    return [
        "## Evaluation", "",
        *_source(f"stage `evaluate` (`{_rel(out, evaluated.metrics_path)}`)"),
        f"On the **{evaluated.split}** split ({evaluated.n:,} drawings):",
        "",
        "| top-1 | top-5 | MAP@3 | macro precision | macro recall | macro F1 |",
        "|---|---|---|---|---|---|",
        f"| {_pct(evaluated.top1)} | {_pct(evaluated.top5)} | {evaluated.map3:.4f} | "
        f"{evaluated.macro_precision:.4f} | {evaluated.macro_recall:.4f} | {evaluated.macro_f1:.4f} |",
        "",
        *_image(out, eval_dir / "per_class_accuracy.png", "per-class accuracy"),
        *_image(out, eval_dir / "worst_confusion.png", "confusion of the worst classes"),
    ]


def _quantization(out: Path, quantized: QuantizeResult) -> list[str]:
    size_plot, latency_plot = quantized.plots
    methods = ", ".join(f"`{_rel(out, quantized.dir / r['artifact'])}`" for r in quantized.rows)
    return [
        "## Quantization", "",
        *_source(f"stage `quantize` (`{_rel(out, quantized.comparison)}`, table: "
                 f"`{_rel(out, quantized.markdown)}`)"),
        *_embed(quantized.markdown.read_text(encoding="utf-8")),
        f"Artifacts, one per method: {methods}.",
        "",
        *_image(out, size_plot, "accuracy against size"),
        *_image(out, latency_plot, "accuracy against latency"),
    ]


def _ops(artifact: ExportedArtifact) -> str:
    """Which runtime runs which operators: XNNPACK-delegated vs portable kernels, or ONNX Runtime's provider."""
    ops = artifact.ops
    if "delegated_ops" in ops:
        outside = ops["not_delegated_ops"]
        rest = ", ".join(f"{op} ×{n}" for op, n in outside.items()) or "none"
        return f"{ops['backend']}: {sum(ops['delegated_ops'].values())} ops delegated; not delegated: {rest}"
    return f"all {sum(ops['ops'].values())} nodes ({len(ops['ops'])} op types) on {ops['provider']}"


def _export(out: Path, exported: ExportResult) -> list[str]:
    artifacts = exported.artifacts
    lines = [
        "## Export", "",
        *_source("stage `export` (`<artifact>.metadata.json` beside each file; verification in the artifact's "
                 "own runtime against the eager model)"),
        "| artifact | runtime | quant | size | top-1 agreement with eager | max logit diff | top-1 exported / eager "
        "| operators |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for a in artifacts:
        check = a.verification
        lines.append(f"| `{_rel(out, a.path)}` | {a.runtime} | {a.quant} | {a.bytes / 1e3:,.1f} KB | "
                     f"{_pct(check['top1_agreement'])} ({check['disagreements']} of {check['drawings']} differ) | "
                     f"{check['max_abs_logit_diff']:.3g} | {_pct(check['exported_top1'])} / "
                     f"{_pct(check['eager_top1'])} | {_ops(a)} |")
    lines += ["", f"Verified on {artifacts[0].verification['source']}." if artifacts else "", ""]
    calibrated = next((a.calibration for a in artifacts if a.calibration), None)
    if calibrated:
        lines += [f"INT8 calibration: {calibrated['source']}, seed {calibrated['seed']}.", ""]
    for a in artifacts:
        if a.lowering:
            lines += [f"Lowering of `{_rel(out, a.path)}`:", "", *[f"- {line}" for line in a.lowering], ""]
    return lines


def _bench(out: Path, benched: BenchResult) -> list[str]:
    return [
        "## Benchmark", "",
        *_source(f"stage `bench` (`{_rel(out, benched.json_path)}`; the eager run folder and the export stage's "
                 "files, each in its own runtime)"),
        *_embed(markdown_table(benched.bench)),
        *_image(out, benched.plot_path, "latency and size per runtime"),
    ]


def write_report(out: Path, results: RunResults, config: dict) -> dict[str, Path]:
    lines = [
        "# QuickDraw Mobile run report",
        "",
        f"Made by `qdm run` into `{out}`; every number below comes from the stage named in its section "
        "(all stage results: `pipeline.json` and `report.json`).",
        "",
        *_data(out, results.data),
        *_training(out, results.train, results.evaluate.dir),
        *_evaluation(out, results.evaluate),
        *_quantization(out, results.quantize),
        *_export(out, results.export),
        *_bench(out, results.bench),
    ]
    paths = {"markdown": out / "report.md", "json": out / "report.json"}
    write_text_atomic(paths["markdown"], "\n".join(lines))
    write_json_atomic(paths["json"], {"config": config, **results.to_json()})
    return paths
