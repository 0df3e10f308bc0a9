"""benchmarks/bench_scale.py end to end at a tiny size: the mirror, the local server, every phase in its own
child process, and the table, JSON and plot it writes. No timing thresholds: only that the figures exist and
hang together."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from conftest import EMBEDDED_CLASSES, REPO

PHASES = ["download", "ingest", "split", "train"]


def test_bench_scale_measures_every_phase_at_a_tiny_size(drawings, tmp_path):
    out, work, source = tmp_path / "out", tmp_path / "work", tmp_path / "source"
    source.mkdir()
    for name in EMBEDDED_CLASSES[:3]:  # real drawings of 3 classes, reused for all 345 (as the bench says)
        np.save(source / f"{name}.npy", drawings(name, 30))  # fewer rows than asked: cycled
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_scale.py"), "--per-class", "50",
                           "--steps", "3", "--source", str(source), "--out", str(out),
                           "--work", str(work)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert not work.exists()  # cleaned up without --keep

    report = json.loads((out / "bench_scale.json").read_text())
    assert report["meta"]["classes"] == 345 and report["meta"]["source_classes"] == 3
    [size] = report["sizes"]
    assert size["per_class"] == 50 and size["drawings"] == 345 * 50
    assert list(size["phases"]) == PHASES
    for phase, figures in size["phases"].items():
        assert figures["wall_s"] > 0, phase
        assert figures["peak_rss_mb"] > 0, phase
        assert 0 < figures["anon_at_peak_mb"] <= figures["peak_rss_mb"], phase
        assert figures["anon_at_peak_mb"] <= figures["max_anon_mb"], phase
        assert figures["max_data_mapped_mb"] <= figures["max_file_mb"], phase
        assert figures["samples_taken"] > 0, phase
        assert figures["other_cpu_cores"] >= 0, phase
    for phase in ("download", "ingest", "split"):
        assert size["phases"][phase]["drawings_per_s"] > 0
    train = size["phases"]["train"]
    assert train["steps"] == 3 and train["warmup_steps"] == 1 and train["samples_per_s"] > 0
    assert train["train_samples"] == 345 * 40  # the default split keeps 80% of each class for training
    assert size["phases"]["split"]["rows"] == {"train": 345 * 40, "val": 345 * 5, "test": 345 * 5}
    assert size["phases"]["train"]["peak_rss_mb"] > size["phases"]["split"]["peak_rss_mb"]  # torch and a model

    table = (out / "bench_scale.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| 50 |")]
    assert [row.split("|")[3].strip() for row in rows] == PHASES
    header = next(line for line in table if line.startswith("| N per class"))
    assert all(row.count("|") == header.count("|") for row in rows)
    assert (out / "bench_scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mirror_is_the_official_layout_made_of_real_rows(drawings, tmp_path):
    from quickdraw_mobile.data.classes import all_classes

    bench, source = _bench_module(), tmp_path / "source"
    source.mkdir()
    for name in EMBEDDED_CLASSES[:2]:
        np.save(source / f"{name}.npy", drawings(name, 7))
    plan = bench.mirror_plan(source, list(all_classes()))
    bench.build_mirror(tmp_path / "mirror", 10, plan)
    files = sorted(p.stem for p in (tmp_path / "mirror").glob("*.npy"))
    assert files == sorted(all_classes()) and not list((tmp_path / "mirror").glob("*.tmp"))
    for name, real, offset in plan[:5]:  # each class: the real rows of its source, cycled from its offset
        rows = np.load(tmp_path / "mirror" / f"{name}.npy")
        assert rows.shape == (10, 784) and rows.dtype == np.uint8
        np.testing.assert_array_equal(rows, np.load(real)[(offset + np.arange(10)) % 7])
    assert plan[2][2] != plan[0][2] and plan[2][1] == plan[0][1]  # a reused source starts elsewhere
