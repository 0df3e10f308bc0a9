#!/usr/bin/env bash
# GPU check: trains each model a few hundred steps on a CUDA GPU, prints its drawings/s and the share of the GPU's
# bf16 tensor peak it reached (MFU, from train_summary.json), then resumes the GPU run's checkpoint on the CPU for
# a few steps and checks that it continues (checkpoints are device-independent). Without a GPU it says so and
# exits 0.
#
#   bash benchmarks/gpu_check.sh [--data STORE] [--steps N] [--batch B] [--models "cnn vit_tiny_224"]
#                                [--cpu-steps K] [--out DIR] [-- EXTRA QDM TRAIN OPTIONS, e.g. --compile]
#
# --data: a store folder or 'embedded' (default; 8,000 training drawings of 10 classes); --steps: about how many
# optimizer steps each model trains (default 300, rounded up to whole epochs); --batch: per step (default 256);
# --cpu-steps: steps of the CPU resume (default 3); --out: where the run folders go (default a temporary folder).
# Exits 1 when a training or the CPU resume fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=embedded STEPS=300 BATCH=256 MODELS="cnn vit_tiny_224" CPU_STEPS=3 OUT="" EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA="$2" ;;
    --steps) STEPS="$2" ;;
    --batch) BATCH="$2" ;;
    --models) MODELS="$2" ;;
    --cpu-steps) CPU_STEPS="$2" ;;
    --out) OUT="$2" ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "error: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift 2
done

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check"
  exit 0
fi
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu_check: {p.name}, '
  f'{p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}')"
[ -n "$OUT" ] || OUT=$(mktemp -d -t gpu_check.XXXXXX)
mkdir -p "$OUT"

# Whole epochs that make at least STEPS steps of BATCH on the store's training split (the default split).
EPOCHS=$("$PY" - "$DATA" "$STEPS" "$BATCH" <<'EOF'
import math, sys
from quickdraw_mobile.cli.common import data_dir
from quickdraw_mobile.data.store import Store
from quickdraw_mobile.train.config import TrainConfig
store, steps, batch = data_dir(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
train_rows = len(Store.open(store).splits(TrainConfig().split_spec())["train"])
print(max(1, math.ceil(steps / max(1, train_rows // batch))))
EOF
)

for MODEL in $MODELS; do
  RUN="$OUT/$MODEL"
  rm -rf "$RUN"
  echo "== $MODEL: $EPOCHS epochs of batch $BATCH on cuda (${EXTRA[*]:-no extra options})"
  "$PY" -m quickdraw_mobile.cli train --data "$DATA" --out "$RUN" --model "$MODEL" --epochs "$EPOCHS" \
    --batch-size "$BATCH" --device cuda "${EXTRA[@]}" > "$RUN.log" 2>&1 || { tail -20 "$RUN.log"; exit 1; }
  "$PY" - "$RUN" "$DATA" "$CPU_STEPS" "$EPOCHS" <<'EOF'
import json, sys
from pathlib import Path
from quickdraw_mobile.cli.common import data_dir
from quickdraw_mobile.runfolder import load_checkpoint
from quickdraw_mobile.train.loop import train
run, data, cpu_steps, epochs = Path(sys.argv[1]), data_dir(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = json.loads((run / "train_summary.json").read_text())
mfu = f"{s['mfu']:.1%}" if s["mfu"] is not None else "unknown (not in the peak table)"
print(f"{s['model']}: {s['device_name']} ({s['device']}, {s['autocast']}): "
      f"{s['samples_per_s']:,.0f} drawings/s in the last epoch; {s['train_macs'] / 1e6:,.1f} MMACs a drawing "
      f"(forward + backward); MFU {mfu} of {s['peak_source']}; val top-1 {s['best_val_top1']:.4f}")
before = load_checkpoint(run / "checkpoints" / "last.pt")
resumed = train(None, data, run, resume=True, epochs=epochs + 1, device="cpu", progress=False,
                stop_after_steps=cpu_steps)
after = load_checkpoint(run / "checkpoints" / "last.pt")
moved = sum(float((after["model"][k].float() - before["model"][k].float()).abs().sum())
            for k in before["model"] if before["model"][k].is_floating_point())
ok = (resumed["device"] == "cpu" and after["epoch"] == epochs and after["batch_in_epoch"] == cpu_steps
      and moved > 0 and after["running"][0] == after["running"][0])
print(f"{s['model']}: CPU resume of the GPU checkpoint: {after['batch_in_epoch']} steps into epoch {epochs + 1}, "
      f"train loss {after['running'][0] / max(after['running'][2], 1):.4f}, weights moved by {moved:.4g}: "
      f"{'ok' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
EOF
done
echo "gpu_check: run folders in $OUT"
