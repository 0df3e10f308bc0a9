#!/usr/bin/env bash
# 10-epoch proxies of default-model recipes on the 52-class store. Each variant is the earlier default recipe
# (configs/default_model.yaml with blocks 2+2 and a 10% validation split, without the mixup and EMA it gained later:
# an EMA of decay 0.999 still carries the first steps' weights after 10 epochs) with a few options changed, trained for
# 10 epochs with 1 thread, two at a time (on 2 cores, two 1-thread runs get about the samples/s of one 2-thread
# run). Prints each variant's best validation top-1; the test split is not looked at. About 45 minutes a pair
# on a 2-core AMD EPYC machine (300-400 samples/s per run). PROXY_THREADS=2 gives a single variant both cores.
# distill10 learns from two teachers: the bundled default model and the learned-pool run of the README
# (runs/pool_full/run), which never saw this split's validation or test drawings.
#   bash benchmarks/recipe_proxies.sh [OUT [VARIANT ...]]    (default OUT: runs/recipe; default: every variant)
set -euo pipefail
cd "$(dirname "$0")/.."
QDM=.venv/bin/qdm
OUT="${1:-runs/recipe}"
STORE="runs/default_model/store"  # the store scripts/train_default_model.sh builds
[ -f "$STORE/manifest.json" ] || $QDM data ingest "${QDM_SHARED_DATA:-../shared/quickdraw}/numpy_bitmap" --out "$STORE"
mkdir -p "$OUT"
B22='{"dropout": 0.2, "blocks": [2, 2]}'
B13='{"dropout": 0.2, "blocks": [1, 3]}'
B22_POOL='{"dropout": 0.2, "blocks": [2, 2], "pool": "learned"}'
B13_POOL='{"dropout": 0.2, "blocks": [1, 3], "pool": "learned"}'
TEACHERS=(--teacher default --teacher runs/pool_full/run --teacher-hflip)
MIXEMA=(--mixup-alpha 0.2 --mix-prob 0.5 --ema-decay 0.999 --ema-warmup)  # the shipped recipe's mixing and EMA
VARIANTS=(base10 b13_10 b13_sgd10 b13_cutmix10 pool10 b13_pool10 mixema10 mixema_pool10 distill10)
[ $# -gt 1 ] && VARIANTS=("${@:2}")
options() {  # variant -> OPTS, the options it changes
  case "$1" in
    base10) OPTS=(--model-kwargs "$B22") ;;
    b13_10) OPTS=(--model-kwargs "$B13") ;;
    b13_sgd10) OPTS=(--model-kwargs "$B13" --optimizer sgd --lr 0.1 --weight-decay 0.0005) ;;
    b13_cutmix10) OPTS=(--model-kwargs "$B13" --cutmix-alpha 1.0 --mix-prob 0.5) ;;
    pool10) OPTS=(--model-kwargs "$B22_POOL") ;;
    b13_pool10) OPTS=(--model-kwargs "$B13_POOL") ;;
    mixema10) OPTS=(--model-kwargs "$B22" "${MIXEMA[@]}") ;;
    mixema_pool10) OPTS=(--model-kwargs "$B22_POOL" "${MIXEMA[@]}") ;;
    distill10) OPTS=(--model-kwargs "$B22" "${MIXEMA[@]}" "${TEACHERS[@]}") ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}
for v in "${VARIANTS[@]}"; do options "$v"; done  # an unknown name stops here, not inside a background run
run() {  # one variant; skipped when its run folder is complete
  [ -f "$OUT/$1/train_summary.json" ] && return
  rm -rf "${OUT:?}/$1"
  options "$1"
  $QDM train --data "$STORE" --config configs/default_model.yaml --epochs 10 --val-fraction 0.1 --threads "${PROXY_THREADS:-1}" \
    --mixup-alpha 0 --ema-decay 0 "${OPTS[@]}" --out "$OUT/$1" > "$OUT/$1.log" 2>&1
}
for ((i = 0; i < ${#VARIANTS[@]}; i += 2)); do
  run "${VARIANTS[i]}" &
  if [ -n "${VARIANTS[i+1]:-}" ]; then run "${VARIANTS[i+1]}" & fi
  wait
done
printf '%-14s %8s %6s  %s\n' variant params "val" options
for v in "${VARIANTS[@]}"; do
  options "$v"
  .venv/bin/python - "$OUT/$v/train_summary.json" "$v" "${OPTS[*]}" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<14} {s['params']:>8,} {100 * s['best_val_top1']:6.2f}  {sys.argv[3]}")
PY
done
