"""``qdm bench`` end to end on a tiny setting, and its parts (timing, memory process, report). No timing asserts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from quickdraw_mobile.bench.latency import latency, peak_gmacs, throughput, time_calls
from quickdraw_mobile.bench.memory import peak_memory
from quickdraw_mobile.bench.report import markdown_table
from quickdraw_mobile.bench.runner import run_bench
from quickdraw_mobile.cli import main as qdm
from quickdraw_mobile.device import conv_peak_gmacs
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.export.pipeline import export_model


def test_bench_runs_end_to_end(tiny_run, tiny_store, tmp_path):
    out = tmp_path / "bench"
    result = run_bench([str(tiny_run)], out, data_dir=tiny_store, runs=5, warmup=1, batch=4, threads=[1], calib=64,
                       native=False)  # the C++ rows: tests/test_native.py
    names = [r["name"] for r in result["results"]]
    assert names == ["PyTorch eager FP32", "ExecuTorch FP32", "ExecuTorch INT8", "ONNX Runtime FP32",
                     "ONNX Runtime INT8"]
    for row in result["results"]:
        measured = Path(row["path"]) / "model.safetensors" if row["runtime"] == "pytorch" else Path(row["path"])
        assert row["size_bytes"] == measured.stat().st_size
        lat = row["latency"]["1"]
        assert 0 < lat["p50_ms"] <= lat["p95_ms"] and lat["runs"] == 5
        assert row["throughput"]["1"]["batch"] == 4 and row["throughput"]["1"]["images_per_s"] > 0
        assert row["gmacs"]["1"] == pytest.approx(row["macs"] / (lat["p50_ms"] / 1e3) / 1e9)
        mem = row["memory"]
        assert mem["peak_rss_mb"] >= mem["after_import_rss_mb"] > 0 and mem["model_rss_mb"] >= 0
        assert mem["torch_imported"] == (row["runtime"] != "onnxruntime")  # an ONNX app needs no torch
        assert 0 <= row["top1"] <= 1
    by_name = {r["name"]: r for r in result["results"]}
    assert by_name["ExecuTorch FP32"]["agreement_with_eager"] == 1.0
    assert by_name["ExecuTorch INT8"]["size_bytes"] < by_name["ExecuTorch FP32"]["size_bytes"]
    assert result["machine"]["peak_fp32_gmacs"]["1"] > 0
    assert "test split, 90 drawings" in result["settings"]["accuracy_on"]

    from quickdraw_mobile.bench.report import write_report

    paths = write_report(result, out)
    assert json.loads(paths["json"].read_text())["results"][0]["name"] == "PyTorch eager FP32"
    table = paths["markdown"].read_text()
    assert table.count("\n| ") == 6 and "| ExecuTorch INT8 |" in table and "fp32 matmul peak" in table
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "artifacts").iterdir() if not p.name.endswith((".json", ".txt"))) == \
        ["run_fp32.onnx", "run_fp32.pte", "run_int8.onnx", "run_int8.pte"]


def test_bench_cli_on_files(tiny_run, tiny_store, tmp_path, capsys):
    pte = export_model(tiny_run, "pte", "none", tmp_path / "m.pte", data_dir=tiny_store)["path"]
    onnx = export_model(tiny_run, "onnx", "int8", tmp_path / "m.onnx", data_dir=tiny_store, calib=64)["path"]
    out = tmp_path / "bench"
    assert qdm(["bench", "--model", pte, onnx, "--out", str(out), "--runs", "5", "--warmup", "1",
                "--batch", "8", "--threads", "1,2", "--no-memory", "--no-native"]) == 0
    printed = capsys.readouterr().out
    assert "| ExecuTorch FP32 |" in printed and "| ONNX Runtime INT8 |" in printed and "p50 ms (2t)" in printed
    result = json.loads((out / "bench.json").read_text())
    assert [r["name"] for r in result["results"]] == ["ExecuTorch FP32", "ONNX Runtime INT8"]
    assert all("memory" not in r and "top1" not in r for r in result["results"])
    assert set(result["results"][0]["latency"]) == {"1", "2"}

    assert qdm(["bench", "--model", pte, "--out", str(out), "--threads", "one"]) == 2
    assert "--threads: expected comma-separated thread counts" in capsys.readouterr().err
    with pytest.raises(QDMError, match="takes batches of at most 32, got 64"):
        run_bench([pte], out, batch=64, memory=False)


def _bench_result() -> dict:
    """A two-thread result of two runtimes, shaped like run_bench's, with made-up numbers."""
    def row(name: str, size: int, p50: float) -> dict:
        return {"name": name, "size_bytes": size, "macs": 1_000_000,
                "latency": {t: {"p50_ms": p50 / int(t), "p95_ms": 2 * p50 / int(t), "runs": 5} for t in ("1", "2")},
                "throughput": {t: {"images_per_s": 100.0 * int(t)} for t in ("1", "2")},
                "gmacs": {"1": 1.0, "2": 2.0}}

    return {"machine": {"cpu": "test cpu", "cores": 2, "peak_fp32_gmacs": {"1": 10.0, "2": 19.0}, "torch": "t",
                        "executorch": "e", "onnxruntime": "o"},
            "settings": {"threads": [1, 2], "runs": 5, "warmup": 1, "batch": 4},
            "results": [row("ExecuTorch FP32", 3_200_000, 0.4), row("ExecuTorch INT8", 900_000, 0.2)]}


def test_report_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    import matplotlib

    from quickdraw_mobile.bench.report import write_report

    backend = dict.__getitem__(matplotlib.rcParams, "backend")  # unresolved: reading it must not pick one
    paths = write_report(_bench_result(), tmp_path)
    assert dict.__getitem__(matplotlib.rcParams, "backend") == backend  # Agg per figure, not matplotlib.use
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| ExecuTorch INT8 | 900.0 |" in paths["markdown"].read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md", "bench.png"]  # no temp left


def test_timing_helpers_count_and_order():
    calls = []
    times = time_calls(lambda x: calls.append(x), np.zeros(1), runs=7, warmup=3)
    assert len(times) == 7 and len(calls) == 10 and (times >= 0).all()
    stats = latency(lambda x: x + 1, np.zeros(4), runs=20, warmup=2)
    assert stats["p50_ms"] <= stats["p95_ms"] and stats["runs"] == 20
    thr = throughput(lambda x: x * 2, np.zeros((8, 3)), runs=5, warmup=1)
    assert thr["images_per_s"] == pytest.approx(8 / (thr["ms_per_batch"] / 1e3))
    threads = torch.get_num_threads()
    assert peak_gmacs(1, size=128, repeats=2) > 0
    assert peak_gmacs(1, size=128, repeats=2, dtype="bfloat16") > 0
    assert conv_peak_gmacs(1, channels=16, batch=2, repeats=2) > 0
    assert torch.get_num_threads() == threads  # the peaks restore the thread count they change


def test_memory_process_reports_and_fails_clearly(tiny_run, tmp_path):
    mem = peak_memory(str(tiny_run), batch=2, runs=2)
    assert mem["batch"] == 2 and mem["peak_rss_mb"] >= mem["after_import_rss_mb"] > 0
    with pytest.raises(QDMError, match="the memory measurement process failed"):
        peak_memory(str(tmp_path / "missing.onnx"))


def test_markdown_table_marks_missing_columns():
    row = {"name": "X", "runtime": "onnxruntime", "quant": "none", "path": "x.onnx", "size_bytes": 2048,
           "macs": 1_000_000, "latency": {"1": {"p50_ms": 0.5, "p95_ms": 0.7, "mean_ms": 0.55, "runs": 9}},
           "throughput": {"1": {"batch": 32, "images_per_s": 1000.0, "ms_per_batch": 32.0, "runs": 5}},
           "gmacs": {"1": 2.0}}
    result = {"machine": {"cpu": "cpu", "cores": 1, "peak_fp32_gmacs": {"1": 10.0}, "torch": "t",
                          "executorch": "e", "onnxruntime": "o"},
              "settings": {"runs": 9, "warmup": 1, "batch": 32, "threads": [1], "accuracy_on": None},
              "results": [row]}
    table = markdown_table(result)
    assert "| X | 2.0 | 0.500 | 0.700 | 1,000 | 2.00 | - | - | - |" in table
    assert "model MACs per drawing: 1.00 M" in table
