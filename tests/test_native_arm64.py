"""qdm-native on ARM64: cross-compiled against the aarch64 executorch wheel and run under qemu 10 user mode.

Runs ``benchmarks/arm64_check.sh`` on a subset of the default model's test sample with one CPU profile without SME
(cortex-a76) and one with it (max), plus bookworm's qemu 7.2 with ``-cpu max``, whose SME emulation is wrong: the
device self-check must catch it. Needs the toolchain of ``scripts/setup_arm64.sh`` (root, apt); skipped without it
unless ``QDM_REQUIRE_ARM64=1`` (CI sets it), which makes a missing toolchain a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QEMU10 = REPO / "native" / ".arm64" / "bin" / "qemu10-aarch64"


@pytest.fixture(scope="module")
def arm64_table(native_bin, default_ptes, tmp_path_factory) -> dict:
    if not QEMU10.exists() or shutil.which("aarch64-linux-gnu-g++") is None:
        message = "ARM64 toolchain not set up: run 'bash scripts/setup_arm64.sh' as root"
        if os.environ.get("QDM_REQUIRE_ARM64") == "1":
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("arm64") / "arm64.json"
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "arm64_check.sh"), "--drawings", "48",
                           "--fp32-drawings", "6", "--profiles", "qemu10:cortex-a76,qemu10:max,qemu7:max",
                           "--fp32", str(default_ptes["none"]), "--int8", str(default_ptes["int8"]),
                           "--json", str(out)], capture_output=True, text=True, timeout=1200, cwd=REPO)
    print(done.stdout[-2000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {f"{row['emulator']}:{row['cpu']}": row for row in json.loads(out.read_text())["rows"]}


@pytest.mark.parametrize("profile", ["qemu10:cortex-a76", "qemu10:max"])
def test_qemu10_gives_x86s_answers_and_passes_the_selfcheck(profile, arm64_table):
    row = arm64_table[profile]
    assert row["version"].startswith("qemu 10.")
    for quant, tolerance in (("fp32", 1e-4), ("int8", 0.0)):
        result = row[quant]
        assert result["top1_agree"] == result["drawings"] > 0
        assert result["max_abs_logit_diff"] <= tolerance  # INT8: bit-identical; FP32: other summation orders
        assert result["selfcheck_passed"], result["selfcheck"]


def test_the_selfcheck_catches_qemu7s_broken_sme(arm64_table):
    row = arm64_table["qemu7:max"]
    assert row["version"].startswith("qemu 7.2")
    assert row["int8"]["top1_agree"] < row["int8"]["drawings"] // 2  # the INT8 answers are wrong there
    assert not row["int8"]["selfcheck_passed"] and row["int8"]["selfcheck"].startswith("selfcheck FAILED")
