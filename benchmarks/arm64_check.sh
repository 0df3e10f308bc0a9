#!/usr/bin/env bash
# ARM64: qdm-native cross-compiled against the aarch64 executorch wheel, run under qemu's user-mode emulator with
# several CPU profiles, checked against the x86-64 build on the default model's test sample (FP32 and INT8 .pte).
#
#   bash benchmarks/arm64_check.sh [--drawings N] [--fp32-drawings N] [--profiles LIST] [--fp32 M.pte --int8 M.pte]
#                                  [--json FILE]
#
# --drawings: how many of the sample's 1,040 drawings the INT8 model classifies (default all); --fp32-drawings: the
# FP32 model (default 104: emulated FP32 XNNPACK kernels take ~0.3-0.6 s a drawing, INT8 ones ~20-30 ms).
# LIST is comma-separated EMULATOR:CPU (EMULATOR qemu10 or qemu7; a bare CPU means qemu10). Default: every qemu 10
# profile below plus qemu7:max, bookworm's qemu 7.2 with SME on, whose SME emulation is wrong: its INT8 answers are
# expected to be wrong and its self-check to fail. Prints a table (top-1 agreement and largest logit difference
# against x86-64, self-check) and exits 1 when a qemu 10 profile disagrees with x86-64 or fails its self-check.
# Set-up (as root, once): scripts/setup_arm64.sh, run from here. Needs the x86-64 build (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
DRAWINGS=0  # 0: the whole sample
FP32_DRAWINGS=104
PROFILES="qemu10:cortex-a55,qemu10:cortex-a76,qemu10:cortex-a710,qemu10:neoverse-n2,qemu10:neoverse-v1,qemu10:max,qemu7:max"
FP32="" INT8="" JSON=""
while [ $# -gt 0 ]; do
  case "$1" in
    --drawings) DRAWINGS="$2" ;;
    --fp32-drawings) FP32_DRAWINGS="$2" ;;
    --profiles) PROFILES="$2" ;;
    --fp32) FP32="$2" ;;
    --int8) INT8="$2" ;;
    --json) JSON="$2" ;;
    *) echo "error: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift 2
done

ARM64=native/.arm64
BUILD=native/build-arm64
X86=native/build/qdm-native
PY=.venv/bin/python
[ -x "$X86" ] || { echo "error: $X86 is missing: run 'bash scripts/setup.sh' first" >&2; exit 2; }
bash scripts/setup_arm64.sh

echo "== cross-compiling native/ for aarch64 ($BUILD)"
.venv/bin/cmake -S native -B "$BUILD" -G Ninja -DCMAKE_MAKE_PROGRAM="$PWD/.venv/bin/ninja" \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/native/cmake/aarch64-linux-gnu.cmake" \
  -DCMAKE_PREFIX_PATH="$PWD/$ARM64/executorch" -DQDM_WERROR=ON >/dev/null
.venv/bin/cmake --build "$BUILD" --target qdm-native >/dev/null
file -b "$BUILD/qdm-native" | cut -d, -f1-2

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -z "$FP32" ] || [ -z "$INT8" ]; then
  echo "== exporting the default model to FP32 and INT8 .pte"
  FP32=$WORK/default_fp32.pte INT8=$WORK/default_int8.pte
  for quant in none int8; do
    model=$FP32; [ $quant = int8 ] && model=$INT8
    .venv/bin/qdm export --model default --format pte --quant $quant --out "$model" >"$WORK/export.log" 2>&1 \
      || { cat "$WORK/export.log" >&2; exit 2; }
  done
fi
"$PY" - "$WORK" "$DRAWINGS" "$FP32_DRAWINGS" <<'PY'
import sys
import numpy as np
from quickdraw_mobile.modelref import default_model_dir
pixels = np.load(default_model_dir() / "sample.npz")["pixels"]
for quant, count in (("int8", int(sys.argv[2])), ("fp32", int(sys.argv[3]))):
    np.save(f"{sys.argv[1]}/sample_{quant}.npy", pixels[: count or len(pixels)])
PY

run_profile() {  # NAME RUNNER...: classify both models and self-check them; logits and exit codes into $WORK/NAME.*
  local name=$1; shift
  for quant in fp32 int8; do
    local model=$FP32; [ $quant = int8 ] && model=$INT8
    "$@" classify --model "$model" --input "$WORK/sample_$quant.npy" --out "$WORK/$name.$quant.jsonl" \
      --logits "$WORK/$name.$quant.npy" 2>"$WORK/$name.$quant.err"
    set +e
    "$@" selfcheck --model "$model" >"$WORK/$name.$quant.selfcheck" 2>&1
    echo $? >"$WORK/$name.$quant.selfcheck_rc"
    set -e
  done
}

echo "== x86-64 reference ($(uname -m))"
run_profile x86 "$X86"
NAMES=""
for profile in ${PROFILES//,/ }; do
  emulator=${profile%%:*} cpu=${profile#*:}
  [ "$emulator" = "$profile" ] && emulator=qemu10
  qemu="$ARM64/bin/$emulator-aarch64"
  [ -x "$qemu" ] || { echo "error: $qemu is missing (scripts/setup_arm64.sh)" >&2; exit 2; }
  start=$(date +%s)
  run_profile "$emulator:$cpu" "$qemu" -cpu "$cpu" -L /usr/aarch64-linux-gnu "$BUILD/qdm-native"
  "$qemu" --version | head -1 | sed 's/^qemu-aarch64 version \([0-9.]*\).*/qemu \1/' >"$WORK/$emulator:$cpu.version"
  echo "== $(cat "$WORK/$emulator:$cpu.version") -cpu $cpu: $(( $(date +%s) - start )) s"
  NAMES="$NAMES $emulator:$cpu"
done

"$PY" - "$WORK" "$JSON" $NAMES <<'PY'
import json, sys
from pathlib import Path
import numpy as np
work, json_path, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
def load(name, quant):
    return np.load(work / f"{name}.{quant}.npy")
rows, bad = [], []
for name in names:
    row = {"emulator": name.split(":")[0], "cpu": name.split(":", 1)[1],
           "version": (work / f"{name}.version").read_text().strip()}
    for quant in ("fp32", "int8"):
        ref, got = load("x86", quant), load(name, quant)
        selfcheck = (work / f"{name}.{quant}.selfcheck").read_text().strip()
        row[quant] = {"drawings": len(ref), "top1_agree": int((ref.argmax(1) == got.argmax(1)).sum()),
                      "max_abs_logit_diff": float(np.abs(ref - got).max()),
                      "selfcheck_passed": (work / f"{name}.{quant}.selfcheck_rc").read_text().strip() == "0",
                      "selfcheck": selfcheck}
        if row["emulator"] == "qemu10" and (row[quant]["top1_agree"] != len(ref) or not row[quant]["selfcheck_passed"]):
            bad.append(f"{name} {quant}")
    rows.append(row)
print("\nqdm-native on aarch64 (qemu user mode) against x86-64, on the default model's test sample")
print("| emulator | -cpu | FP32 top-1 agree | FP32 max logit diff | INT8 top-1 agree | INT8 max logit diff | self-check FP32 / INT8 |")
print("|---|---|---:|---:|---:|---:|---|")
for r in rows:
    f, i = r["fp32"], r["int8"]
    verdict = lambda q: "pass" if q["selfcheck_passed"] else "FAIL"
    print(f"| {r['version']} | {r['cpu']} | {f['top1_agree']}/{f['drawings']} | {f['max_abs_logit_diff']:.3g} | "
          f"{i['top1_agree']}/{i['drawings']} | {i['max_abs_logit_diff']:.3g} | {verdict(f)} / {verdict(i)} |")
if json_path:
    Path(json_path).write_text(json.dumps({"rows": rows}, indent=1) + "\n")
if bad:
    print(f"\nFAILED: a qemu 10 profile disagrees with x86-64: {', '.join(bad)}")
    sys.exit(1)
print("\nevery qemu 10 profile gives x86-64's top-1 on every drawing and passes its self-check")
PY
