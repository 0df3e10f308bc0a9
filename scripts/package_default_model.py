"""Package a trained run as the bundled default model (src/quickdraw_mobile/pretrained/default/).

    python scripts/package_default_model.py RUN_DIR STORE_DIR EVAL_DIR

Copies the run's weights, config, labels and training curves, the test-split metrics from EVAL_DIR (made by
`qdm evaluate`), and adds two small real samples of the run's own splits so that export and verification of
`--model default` need no data folder: calibration.npz (2,048 class-balanced training drawings) and
sample.npz (20 test drawings per class).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from quickdraw_mobile.data.store import Store
from quickdraw_mobile.export.calibration import CALIBRATION_FILE, SAMPLE_FILE, save_drawings
from quickdraw_mobile.fileio import write_json_atomic, write_text_atomic
from quickdraw_mobile.train.config import load_config

DEST = Path(__file__).resolve().parents[1] / "src" / "quickdraw_mobile" / "pretrained" / "default"
MAX_BYTES = 6_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("store", type=Path)
    parser.add_argument("eval", type=Path)
    args = parser.parse_args()
    cfg = load_config(args.run / "config.yaml")
    spec = cfg.split_spec()
    splits = Store.open(args.store).splits(spec, cfg.classes)
    labels = (args.run / "labels.txt").read_text().splitlines()
    assert splits["train"].classes == labels, "the store's classes differ from the run's labels"

    DEST.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.yaml", "labels.txt", "metrics.csv", "train_summary.json"):
        shutil.copyfile(args.run / name, DEST / name)
    calibration = splits["train"].gather(splits["train"].balanced_indices(2048, seed=0))
    save_drawings(DEST / CALIBRATION_FILE, *calibration, compressed=True)
    sample = splits["test"].gather(splits["test"].balanced_indices(20 * len(labels), seed=0))
    save_drawings(DEST / SAMPLE_FILE, *sample, compressed=True)
    metrics = json.loads((args.eval / "metrics.json").read_text())
    summary = {k: metrics[k] for k in ("split", "n", "top1", "top5", "map3", "macro_f1")}
    write_json_atomic(DEST / "test_metrics.json", summary)
    write_text_atomic(DEST / "ATTRIBUTION.md", (
        "Trained on real Quick, Draw! drawings. The Quick, Draw! dataset is by Google, licensed under CC BY 4.0\n"
        "(https://quickdraw.withgoogle.com/data, https://creativecommons.org/licenses/by/4.0/).\n"
        "calibration.npz and sample.npz hold unmodified bitmaps of that dataset.\n"))
    total = sum(p.stat().st_size for p in DEST.iterdir())
    print(f"{DEST}: {total:,} bytes; test top-1 {summary['top1']:.4f} on {summary['n']} drawings")
    if total > MAX_BYTES:
        raise SystemExit(f"the bundle is {total:,} bytes, over the {MAX_BYTES:,} limit")


if __name__ == "__main__":
    main()
