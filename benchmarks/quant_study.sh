#!/usr/bin/env bash
# The quantization study of docs/quantization.md: every method of `qdm quantize`, side by side, on
#   1. the bundled default model (cnn, 52 real classes), with its own store for calibration, fine-tuning and test;
#   2. a vit_tiny (width 192, depth 12, 3 heads, 4x4 patches) trained briefly on the embedded 10-class subset.
# Needs the 52-class store that scripts/train_default_model.sh builds (WORK/store), from ../shared/quickdraw.
#   bash benchmarks/quant_study.sh [OUT]        (default OUT: runs/quant_study; about 30 minutes on 2 cores)
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

# 2. vit_tiny, trained briefly (the study is about what each method loses, not about the ViT's own accuracy)
[ -f "$OUT/vit_tiny/model.safetensors" ] || $QDM train --data embedded --model vit_tiny --epochs 6 \
  --lr 0.001 --batch-size 128 --bf16 --out "$OUT/vit_tiny"
# QAT and the pruning fine-tune run through fake-quantized / pruned graphs: on this CPU a ViT QAT step takes about
# 3.5 s, so both get shorter schedules than the methods' defaults (300 steps)
$QDM quantize --model "$OUT/vit_tiny" --data embedded --methods all --out "$OUT/vit_tiny_quant" \
  --set int8-qat.steps=60 --set pruned.steps=100
