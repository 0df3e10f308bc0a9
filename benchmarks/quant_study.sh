#!/usr/bin/env bash
# The quantization study of docs/quantization.md: every method of `qdm quantize`, side by side, on
#   1. the bundled default model (cnn, 52 real classes), with its own store for calibration, fine-tuning and test;
#   2. a vit_tiny (width 192, depth 12, 3 heads, 4x4 patches) trained briefly (4 epochs) on the same 52 classes.
# Needs the 52-class store that scripts/train_default_model.sh builds (WORK/store), from ../shared/quickdraw.
#   bash benchmarks/quant_study.sh [OUT]        (default OUT: runs/quant_study; about 90 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/quant_study}"
SHARED="${QDM_SHARED_DATA:-../shared/quickdraw}"
QDM=.venv/bin/qdm
STORE="$OUT/store52"
mkdir -p "$OUT"
[ -f "$STORE/manifest.json" ] || $QDM data ingest "$SHARED/numpy_bitmap" --out "$STORE"

# 1. the default model: its split settings are in its config, so the store gives back its own test split
$QDM quantize --model default --data "$STORE" --methods all --out "$OUT/default"

# 2. vit_tiny, trained briefly (the study is about what each method loses, not about the ViT's own accuracy); the
#    52-class store gives it 11,593 test drawings, so one drawing is 0.009 points (the embedded subset's 1,000 made
#    it 0.1, as large as the differences measured)
[ -f "$OUT/vit_tiny52/model.safetensors" ] || $QDM train --data "$STORE" --model vit_tiny --epochs 4 \
  --warmup-epochs 0.5 --lr 0.001 --batch-size 128 --label-smoothing 0.1 --bf16 --out "$OUT/vit_tiny52"
$QDM quantize --model "$OUT/vit_tiny52" --data "$STORE" --methods all --out "$OUT/vit_tiny52_quant"
