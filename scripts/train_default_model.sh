#!/usr/bin/env bash
# Reproduce the bundled default model: the `cnn` on all 52 real classes of ../shared/quickdraw/numpy_bitmap,
# trained on 2 CPU cores with configs/default_model.yaml, evaluated on its held-out test split, then packaged.
#   bash scripts/train_default_model.sh [WORK_DIR]      (default WORK_DIR: runs/default_model)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-runs/default_model}"
SHARED="${QDM_SHARED_DATA:-../shared/quickdraw}"
QDM=.venv/bin/qdm
mkdir -p "$WORK"
[ -f "$WORK/store/manifest.json" ] || $QDM data ingest "$SHARED/numpy_bitmap" --out "$WORK/store"
# wall-clock time and peak memory of the training run go to $WORK/train.time
/usr/bin/time -v -o "$WORK/train.time" $QDM train --data "$WORK/store" --config configs/default_model.yaml \
  --out "$WORK/run"
$QDM evaluate --model "$WORK/run" --data "$WORK/store" --out "$WORK/eval"
.venv/bin/python scripts/package_default_model.py "$WORK/run" "$WORK/store" "$WORK/eval"
