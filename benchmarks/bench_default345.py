"""The bundled ``default345`` against ``default``: the 52 old classes on default's own test split, the 293 new ones
on the drawings held out of the build.

- The 52: ``default``'s test split of the shared ``numpy_bitmap/`` (ingested into a temporary store and split as
  ``default``'s config says: 10% of each class, seed 0; the 11,593 drawings of ``test_metrics.json``, checked by
  reproducing its top-1), ranked among all 345 classes by ``default345`` and among the 52 by ``default``.
- The 293: the 6 drawings a class held out of the build (``key_ids.json`` of the bundle), rendered from the
  shared ``simplified/`` and ``raw/`` files, ranked among all 345 and (for reference) among the 293 only.
- The same without the calibration offset (the new group's logits shifted back), to show what it does.

    PYTHONPATH=src python benchmarks/bench_default345.py --out runs/default345_eval
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from quickdraw_mobile.data.ingest import ingest
from quickdraw_mobile.data.strokefiles import distinct_strokes
from quickdraw_mobile.export.calibration import verification_set
from quickdraw_mobile.extend import group_metrics
from quickdraw_mobile.fileio import write_json_atomic, write_text_atomic
from quickdraw_mobile.inference import logits_for_pixels
from quickdraw_mobile.modelref import bundled_model_dir, load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "quickdraw"
NAME = "default345"


def old_test_split(data: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """``default``'s test split of ``numpy_bitmap/`` and the top-1 ``test_metrics.json`` records on it."""
    with tempfile.TemporaryDirectory(prefix="qdm-bench345-") as tmp:
        ingest(data / "numpy_bitmap", Path(tmp) / "store")
        test = verification_set("default", Path(tmp) / "store")
    recorded = json.loads((bundled_model_dir("default") / "test_metrics.json").read_text())
    assert len(test.pixels) == recorded["n"], f"{len(test.pixels)} test drawings, default was tested on {recorded['n']}"
    return test.pixels, test.labels, recorded["top1"]


def held_out(data: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The drawings the bundle lists as held out, rendered from the stroke files, labelled in its order."""
    listed = json.loads((bundled_model_dir(NAME) / "key_ids.json").read_text())["held_out"]
    pixels, truth = [], []
    for name, key_ids in listed.items():
        strokes = distinct_strokes(data, name)
        rows = [strokes.key_ids.index(k) for k in key_ids]
        pixels.append(strokes.render()[rows])
        truth.append(np.full(len(rows), labels.index(name)))
    return np.concatenate(pixels), np.concatenate(truth)


def measure(data: Path) -> dict:
    default, extended = load_model("default"), load_model(NAME)
    old = len(default.labels)
    offset = json.loads(extended.run.summary_path.read_text())["extended"]["group_offset"]
    old_pixels, old_labels, recorded_top1 = old_test_split(data)
    new_pixels, new_labels = held_out(data, extended.labels)
    logits = np.concatenate([logits_for_pixels(extended.model, old_pixels), logits_for_pixels(extended.model,
                                                                                               new_pixels)])
    labels = np.concatenate([old_labels, new_labels])
    uncalibrated = logits.copy()
    uncalibrated[:, old:] -= offset
    before = group_metrics(logits_for_pixels(default.model, old_pixels), old_labels, old)["old"]
    if abs(before["top1"] - recorded_top1) > 1e-6:
        raise SystemExit(f"default scores {before['top1']:.6f} on the reproduced test split, not the recorded "
                         f"{recorded_top1:.6f}: the split differs")
    return {"old_drawings": "default's test split of numpy_bitmap (reproduced: 10% a class, seed 0; default's "
                            "top-1 on it equals test_metrics.json's)",
            "new_drawings": "the 6 held-out drawings a class (key_ids.json)", "group_offset": offset,
            "default345": group_metrics(logits, labels, old),
            "default345_uncalibrated": group_metrics(uncalibrated, labels, old), "default": before}


def markdown(result: dict) -> str:
    def pct(value):
        return f"{100 * value:.2f}"

    a, u, d = result["default345"], result["default345_uncalibrated"], result["default"]
    lines = ["| model | 52 old: top-1 % | top-5 % | 293 new (345-way): top-1 % | top-5 % | "
             "293 new (293-way): top-1 % | top-5 % |", "|---|---:|---:|---:|---:|---:|---:|",
             f"| `default` (52-way) | {pct(d['top1'])} | {pct(d['top5'])} | – | – | – | – |"]
    for name, m in ((f"`default345` (offset {result['group_offset']:+.2f})", a), ("`default345` without the offset", u)):
        lines.append(f"| {name} | {pct(m['old']['top1'])} | {pct(m['old']['top5'])} | {pct(m['new']['top1'])} | "
                     f"{pct(m['new']['top5'])} | {pct(m['new']['top1_within'])} | {pct(m['new']['top5_within'])} |")
    lines.append(f"\n{a['old']['n']:,} old-class drawings (default's test split), {a['new']['n']:,} new-class "
                 "drawings (held out of the build).")
    return "\n".join(lines) + "\n"


def plot(result: dict, out: Path) -> None:
    from quickdraw_mobile.figures import figure, save

    fig = figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    groups = ["52 old, top-1", "52 old, top-5", "293 new, top-1", "293 new, top-5"]
    bars = {"default": [result["default"]["top1"], result["default"]["top5"], np.nan, np.nan]}
    for key, label in (("default345", "default345"), ("default345_uncalibrated", "default345, no offset")):
        m = result[key]
        bars[label] = [m["old"]["top1"], m["old"]["top5"], m["new"]["top1"], m["new"]["top5"]]
    width = 0.8 / len(bars)
    for i, (label, values) in enumerate(bars.items()):
        ax.bar(np.arange(len(groups)) + i * width, 100 * np.array(values), width, label=label)
    ax.set_xticks(np.arange(len(groups)) + width * (len(bars) - 1) / 2, labels=groups)
    ax.set(ylabel="% (345-way for default345)", ylim=(0, 100), title="default345 against default")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    save(fig, out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED, help="the folder with numpy_bitmap/, simplified/, raw/")
    p.add_argument("--out", type=Path, default=Path("runs/default345_eval"))
    args = p.parse_args(argv)
    start = time.time()
    result = measure(args.data)
    result["seconds"] = round(time.time() - start, 1)
    table = markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "default345.json", result)
    write_text_atomic(args.out / "default345.md", table)
    plot(result, args.out / "default345.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
