"""Models and inputs from a hostile new user (issue 26): NaN weights, corrupt exports, blank lines, shrinking a class.

Every failure is one ``error:`` line (exit 2) and leaves what was already written byte for byte as it was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, artifact_with_bytes, stroke_lines
from safetensors.torch import load_file, save_file

from quickdraw_mobile import runfolder as ckpt
from quickdraw_mobile.cli import main as qdm
from quickdraw_mobile.data.render import render_ndjson
from quickdraw_mobile.data.store import Store
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.export.executorch import LoweringReport
from quickdraw_mobile.export.pipeline import export_model
from quickdraw_mobile.inference import logits_for_pixels
from quickdraw_mobile.modelref import load_model

NON_FINITE = "produces non-finite logits (NaN or infinity)"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (hidden ones too) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(capsys) -> str:
    """The one line a failed command printed to stderr."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def good(tiny_run, tiny_store, tmp_path_factory) -> dict[str, Path]:
    """FP32 .pte and .onnx of ``tiny_run``, exported and verified."""
    root = tmp_path_factory.mktemp("good")
    return {fmt: Path(export_model(tiny_run, fmt, "none", root / f"m.{fmt}", data_dir=tiny_store)["path"])
            for fmt in ("pte", "onnx")}


@pytest.fixture(scope="module")
def nan_models(tiny_run, good, tmp_path_factory) -> dict[str, Path]:
    """The same model with NaN in it: a run folder whose head weights are NaN (written with safetensors), and the
    good exports with the head's bias bytes (stored once, as is, in either file) set to NaN, metadata matching."""
    root = tmp_path_factory.mktemp("nan")
    run = root / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    weights = load_file(run / ckpt.WEIGHTS)
    bias = weights["head.bias"].numpy().tobytes()
    weights["head.weight"][0] = float("nan")
    save_file(weights, run / ckpt.WEIGHTS)
    models = {"run": run}
    nan_bias = np.full(len(TINY_CLASSES), np.nan, np.float32).tobytes()
    for fmt, path in good.items():
        data = path.read_bytes()
        assert data.count(bias) == 1
        models[fmt] = artifact_with_bytes(path, root / f"nan.{fmt}", data.replace(bias, nan_bias))
    return models


# ------------------------------------------------------------------------------------- 1. non-finite logits
@pytest.mark.parametrize("kind", ["run", "pte", "onnx"])
def test_predict_refuses_non_finite_logits_and_keeps_the_old_output(kind, nan_models, tiny_store, tmp_path, capsys):
    """predict on a model computing NaN (run folder, .pte, .onnx): one error line, the earlier output unchanged."""
    np.save(tmp_path / "in.npy", Store.open(tiny_store).array("cat")[:4])
    out = tmp_path / "p.jsonl"
    out.write_text('{"top": []}\n')
    assert qdm(["predict", "--model", str(nan_models[kind]), "--input", str(tmp_path / "in.npy"),
                "--out", str(out)]) == 2
    assert error_line(capsys) == (f"error: {nan_models[kind]}: the model {NON_FINITE} on 4 of 4 drawings of "
                                  f"{tmp_path / 'in.npy'}; nothing was written")
    assert out.read_text() == '{"top": []}\n'


@pytest.mark.parametrize(("fmt", "quant"), [("pte", "none"), ("pte", "int8"), ("onnx", "none"), ("onnx", "int8")])
def test_export_of_nan_weights_fails_and_keeps_the_file_at_out(fmt, quant, nan_models, good, tiny_store, tmp_path):
    """export of a run folder with NaN weights fails before converting (INT8 calibration used to crash on NaN),
    and a good export already at --out stays byte-identical, sidecars included."""
    out = artifact_with_bytes(good[fmt], tmp_path / f"m.{fmt}", good[fmt].read_bytes())
    before = snapshot(tmp_path)
    with pytest.raises(QDMError) as info:
        export_model(nan_models["run"], fmt, quant, out, data_dir=tiny_store, calib=64)
    assert str(info.value) == f"{out}: the eager model {NON_FINITE} on 90 of 90 verification drawings; nothing was written"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fmt", ["pte", "onnx"])
def test_export_refuses_an_exported_file_with_non_finite_logits(fmt, nan_models, good, tiny_run, tiny_store,
                                                                tmp_path, monkeypatch):
    """A converter whose file computes NaN (the eager model being fine) fails the export in the file's runtime,
    and the good export at --out stays byte-identical."""
    import quickdraw_mobile.export.executorch as executorch_export
    import quickdraw_mobile.export.onnx as onnx_export

    data = nan_models[fmt].read_bytes()
    monkeypatch.setattr(executorch_export, "to_pte", lambda *args, **kwargs: (data, LoweringReport()))
    monkeypatch.setattr(onnx_export, "to_onnx", lambda *args, **kwargs: data)
    out = artifact_with_bytes(good[fmt], tmp_path / f"m.{fmt}", good[fmt].read_bytes())
    before = snapshot(tmp_path)
    with pytest.raises(QDMError) as info:
        export_model(tiny_run, fmt, "none", out, data_dir=tiny_store)
    assert str(info.value) == (f"{out}: the exported model {NON_FINITE} on 90 of 90 verification drawings; "
                               "nothing was written")
    assert snapshot(tmp_path) == before


def test_quantize_refuses_a_model_with_nan_weights(nan_models, tiny_store, tmp_path, capsys):
    """quantize on NaN weights: one error line before any method runs; an earlier comparison stays as it was."""
    out = tmp_path / "q"
    out.mkdir()
    (out / "comparison.json").write_text("[]\n")
    assert qdm(["quantize", "--model", str(nan_models["run"]), "--data", str(tiny_store), "--methods", "fp32,int8-ptq",
                "--out", str(out)]) == 2
    assert error_line(capsys) == (f"error: {nan_models['run']}: the model {NON_FINITE} on 720 of 720 calibration "
                                  "drawings; nothing was written")
    assert snapshot(out) == {"comparison.json": b"[]\n"}


def test_quantize_refuses_a_method_with_non_finite_logits_and_keeps_the_last_comparison(tiny_run, tiny_store,
                                                                                       tmp_path, monkeypatch):
    """A method whose evaluation gives NaN fails the comparison; the artifacts and tables of the previous one are
    byte-identical (artifacts are staged and moved into place only when every method succeeded)."""
    import quickdraw_mobile.quant.compare as compare_module
    import quickdraw_mobile.quant.inputs as inputs_module  # where every method is applied, for compare and export

    out = tmp_path / "q"
    args = dict(data_dir=tiny_store, calib=64, options={"int4-rtn": {"dynamic_activations": False}}, runs=1,
                memory=False)
    compare_module.compare(tiny_run, ["int4-rtn"], out, **args)  # weight-only int4: scored eagerly, no lowering
    before = snapshot(out)
    real = inputs_module.quantize

    def overflowing(*a, **kw):
        qm = real(*a, **kw)
        with torch.no_grad():
            qm.model.head.bias.fill_(float("inf"))
        return qm

    monkeypatch.setattr(inputs_module, "quantize", overflowing)
    with pytest.raises(QDMError) as info:
        compare_module.compare(tiny_run, ["int4-rtn"], out, **args)
    assert str(info.value) == (f"{out / 'artifacts' / 'int4-rtn.safetensors'}: method 'int4-rtn' {NON_FINITE} on "
                               "90 of 90 test drawings; nothing was written")
    assert snapshot(out) == before


@pytest.mark.parametrize("kind", ["run", "pte", "onnx"])
def test_bench_refuses_non_finite_logits_before_exporting_or_timing(kind, nan_models, tiny_store, tmp_path, capsys):
    """bench on a model computing NaN: one error line before any export or timing; the last report stays."""
    out = tmp_path / "bench"
    out.mkdir()
    (out / "bench.json").write_text("{}\n")
    assert qdm(["bench", "--model", str(nan_models[kind]), "--data", str(tiny_store), "--out", str(out),
                "--runs", "1", "--warmup", "0", "--threads", "1", "--no-memory", "--no-native"]) == 2
    assert error_line(capsys) == (f"error: {nan_models[kind]}: the model {NON_FINITE} on 32 of 32 benchmark "
                                  "drawings; nothing was written")
    assert snapshot(out) == {"bench.json": b"{}\n"}  # nothing exported under artifacts/ either


# ------------------------------------------------------------------------------------- 4. unloadable files
def corrupt(good: dict[str, Path], root: Path) -> dict[str, Path]:
    """Unloadable or damaged copies of the good exports, each with metadata that matches it."""
    rng = np.random.default_rng(0)
    pte, onnx = good["pte"].read_bytes(), good["onnx"].read_bytes()

    def flipped(data: bytes, at: int) -> bytes:
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]

    cases = {
        "random.pte": rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes(),
        "truncated.pte": pte[: len(pte) // 2],
        "middle.pte": flipped(pte, len(pte) // 2),
        "backend.pte": flipped(pte, pte.index(b"XnnpackBackend") + 1),  # ExecuTorch logs the name it cannot find
        "random.onnx": rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes(),
        "truncated.onnx": onnx[: len(onnx) // 2],
        "middle.onnx": flipped(onnx, len(onnx) // 2),
    }
    return {name: artifact_with_bytes(good[name.split(".")[1]], root / name, data) for name, data in cases.items()}


@pytest.mark.parametrize("case", ["random.pte", "backend.pte"])
def test_an_unloadable_pte_is_one_error_line_not_an_abort(case, good, tiny_store, tmp_path):
    """qdm predict on 300,000 random bytes, or on a .pte whose backend name has a byte that is not UTF-8 (which
    made ExecuTorch's binding call std::terminate: exit 134), with matching metadata: exit 2 and one line."""
    path = corrupt(good, tmp_path)[case]
    np.save(tmp_path / "in.npy", Store.open(tiny_store).array("cat")[:2])
    done = subprocess.run([sys.executable, "-m", "quickdraw_mobile.cli", "predict", "--model", str(path),
                           "--input", str(tmp_path / "in.npy"), "--out", str(tmp_path / "p.jsonl")],
                          capture_output=True, text=True, errors="replace", timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {path}: ExecuTorch cannot load it (")
    assert errors[0].endswith("); corrupt or not a .pte")
    assert not (tmp_path / "p.jsonl").exists()


LOAD_ALL = """
import json, sys
import numpy as np
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.export import load_artifact
results = {}
for path in sys.argv[1:]:
    try:
        logits = load_artifact(path).run_pixels(np.zeros((2, 784), np.uint8))
        results[path] = f"ran: {logits.shape}"
    except QDMError as exc:
        results[path] = f"error: {exc}"
print(json.dumps(results))
"""


def test_unloadable_pte_and_onnx_files_are_clean_errors(good, tmp_path):
    """load_artifact (what predict, bench and serve load through) on random bytes, a truncated file and a flipped
    byte, .pte and .onnx with matching metadata: a QDMError or a model that runs, never a dead process."""
    files = corrupt(good, tmp_path)
    done = subprocess.run([sys.executable, "-c", LOAD_ALL, *map(str, files.values())], capture_output=True,
                          text=True, errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = {Path(p).name: r for p, r in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    for name in ("random.pte", "truncated.pte", "backend.pte"):
        assert results[name].startswith(f"error: {files[name]}: ExecuTorch cannot load it ("), results[name]
    for name in ("random.onnx", "truncated.onnx"):
        assert results[name].startswith(f"error: {files[name]}: ONNX Runtime cannot load it ("), results[name]
    for name in ("middle.pte", "middle.onnx"):  # inside the weights: loads (and runs) or is refused, cleanly
        assert results[name] == "ran: (2, 3)" or results[name].startswith(f"error: {files[name]}: "), results[name]
    assert all("\n" not in r for r in results.values())


# ------------------------------------------------------------------------------------- 8. silent data changes
def test_blank_ndjson_lines_are_skipped_by_predict_and_render_as_their_help_says(tiny_run, tmp_path, capsys):
    """predict and data render agree: one row per drawing, blank lines skipped; both helps say so."""
    lines = stroke_lines("cat", 3)
    src = tmp_path / "d.ndjson"
    src.write_text(f"{lines[0]}\n\n{lines[1]}\n   \n{lines[2]}\n")
    assert qdm(["data", "render", str(src), "--out", str(tmp_path / "d.npy")]) == 0
    assert qdm(["predict", "--model", str(tiny_run), "--input", str(src), "--out", str(tmp_path / "p.jsonl"),
                "--top-k", "1"]) == 0
    rendered = np.load(tmp_path / "d.npy")
    np.testing.assert_array_equal(rendered, render_ndjson(src)[0])
    loaded = load_model(tiny_run)
    expected = [loaded.labels[i] for i in logits_for_pixels(loaded.model, rendered).argmax(1)]
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rendered) == len(rows) == 3 and [r["top"][0]["class"] for r in rows] == expected
    for verb in (["predict"], ["data", "render"]):
        with pytest.raises(SystemExit):
            qdm([*verb, "--help"])
        assert "blank lines hold no drawing and are skipped" in " ".join(capsys.readouterr().out.split()).lower()


def test_ingest_refuses_to_shrink_a_class_without_allow_shrink(drawings, tmp_path, capsys):
    """ingest never cuts a class down (by --per-class or a smaller file) unless --allow-shrink; the store is left
    byte-identical, and the flag replaces the class."""
    src, store = tmp_path / "src", tmp_path / "store"
    src.mkdir()
    np.save(src / "apple.npy", drawings("apple", 200))
    assert qdm(["data", "ingest", str(src / "apple.npy"), "--out", str(store)]) == 0
    before = snapshot(store)

    assert qdm(["data", "ingest", str(src / "apple.npy"), "--out", str(store), "--per-class", "100"]) == 2
    assert error_line(capsys) == (f"error: {store}: class 'apple' has 200 drawings; ingesting apple.npy would cut it "
                                  "down to 100 (--per-class 100); pass --allow-shrink to replace it with fewer")
    ndjson = tmp_path / "apple.ndjson"  # its count is known only once rendered
    ndjson.write_text("\n".join(stroke_lines("apple", 5)) + "\n")
    assert qdm(["data", "ingest", str(ndjson), "--out", str(store)]) == 2
    assert error_line(capsys).endswith("ingesting apple.ndjson would cut it down to 5; pass --allow-shrink to "
                                       "replace it with fewer")
    assert snapshot(store) == before

    assert qdm(["data", "ingest", str(src / "apple.npy"), "--out", str(store), "--per-class", "100",
                "--allow-shrink"]) == 0
    assert Store.open(store, verify=True).counts == {"apple": 100}
