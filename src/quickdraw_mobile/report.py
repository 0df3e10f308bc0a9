"""The run report: ``report.md`` (tables + plots, each number beside the stage that made it) and ``report.json``."""

from __future__ import annotations

import os
from pathlib import Path

from .fileio import write_json_atomic, write_text_atomic


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _image(out: Path, path: Path, caption: str) -> str:
    return f"![{caption}]({os.path.relpath(path, out)})" if path.exists() else ""


def write_report(out: Path, results: dict, config: dict) -> dict[str, Path]:
    data, trained, evaluated = results["data"], results["train"], results["evaluate"]
    eval_dir = Path(evaluated["dir"])
    lines = [
        "# QuickDraw Mobile run report",
        "",
        f"Made by `qdm run` into `{out}`; every number below comes from the stage named in its section "
        "(stage results: `pipeline.json`, full metrics: `eval/metrics.json`).",
        "",
        "## Data",
        "",
        f"- store: `{data['store']}` (source: {', '.join(data['sources'])})",
        f"- {len(data['classes'])} classes, {data['drawings']:,} drawings; split train {data['split']['train']:,}"
        f" / val {data['split']['val']:,} / test {data['split']['test']:,} (test never used for model selection)",
        f"- classes: {', '.join(data['classes'])}",
        "",
        "## Training",
        "",
        "| model | params | MACs (1×28×28) | epochs | best val top-1 | best epoch | train time |",
        "|---|---|---|---|---|---|---|",
        f"| {trained['model']} | {trained['params']:,} | {trained['macs']:,} | {trained['epochs_done']} | "
        f"{_pct(trained['best_val_top1'])} | {trained['best_epoch']} | {trained['train_seconds_this_call']:.0f} s |",
        "",
        _image(out, eval_dir / "training_curves.png", "training curves"),
        "",
        "## Evaluation",
        "",
        f"On the **{evaluated['split']}** split ({evaluated['n']:,} drawings):",
        "",
        "| top-1 | top-5 | MAP@3 | macro precision | macro recall | macro F1 |",
        "|---|---|---|---|---|---|",
        f"| {_pct(evaluated['top1'])} | {_pct(evaluated['top5'])} | {evaluated['map3']:.4f} | "
        f"{evaluated['macro_precision']:.4f} | {evaluated['macro_recall']:.4f} | {evaluated['macro_f1']:.4f} |",
        "",
        _image(out, eval_dir / "per_class_accuracy.png", "per-class accuracy"),
        "",
        _image(out, eval_dir / "worst_confusion.png", "confusion of the worst classes"),
        "",
    ]
    paths = {"markdown": out / "report.md", "json": out / "report.json"}
    write_text_atomic(paths["markdown"], "\n".join(lines))
    write_json_atomic(paths["json"], {"config": config, **results})
    return paths
