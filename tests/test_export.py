"""Export to ExecuTorch .pte and ONNX (FP32 and INT8), checked by running the files in their own runtimes."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_MODEL_OPTIONS, TINY_CLASSES
from torch import nn

from quickdraw_mobile import runfolder as ckpt
from quickdraw_mobile.cli import main as qdm
from quickdraw_mobile.data.loader import normalize
from quickdraw_mobile.data.render import RENDERER_VERSION
from quickdraw_mobile.data.store import balanced_subset
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.export import load_artifact, normalize_pixels, read_metadata, sidecar_paths
from quickdraw_mobile.export.calibration import calibration_set, run_splits, verification_set
from quickdraw_mobile.export.executorch import to_pte
from quickdraw_mobile.export.onnx import to_onnx
from quickdraw_mobile.export.pipeline import export_model
from quickdraw_mobile.fileio import write_text_atomic
from quickdraw_mobile.inference import logits_for_pixels
from quickdraw_mobile.modelref import default_model_dir, load_model
from quickdraw_mobile.models import create_model, list_models
from quickdraw_mobile.train.config import TrainConfig


def random_run(root: Path, name: str, options: dict | None = None) -> Path:
    """A run folder holding model ``name`` (small configuration, or ``options``) with seeded random weights."""
    torch.manual_seed(0)
    options = SMALL_MODEL_OPTIONS.get(name, {}) if options is None else options
    model = create_model(name, len(TINY_CLASSES), **options)
    root.mkdir(parents=True)
    cfg = TrainConfig(model=name, model_kwargs=options, max_per_class=200)
    write_text_atomic(root / ckpt.CONFIG, cfg.to_yaml())
    ckpt.write_labels(root / ckpt.LABELS, TINY_CLASSES)
    ckpt.save_weights(root / ckpt.WEIGHTS, model.state_dict())
    return root


# ------------------------------------------------------------------------------------ every model, FP32


SLOW_EXPORTS = {("mobilevit", "pte"), ("mobilenetv3", "pte")}  # about a minute, and 20 s: many subgraphs to lower


@pytest.mark.parametrize(("name", "fmt"), [
    pytest.param(n, f, marks=pytest.mark.slow) if (n, f) in SLOW_EXPORTS else (n, f)
    for n in list_models() for f in ("pte", "onnx")])
def test_every_model_exports_fp32_and_runs(name, fmt, tiny_store, tmp_path):
    run = random_run(tmp_path / "run", name)
    out = tmp_path / f"{name}.{fmt}"
    meta = export_model(run, fmt, "none", out, data_dir=tiny_store)
    assert meta["verification"]["top1_agreement"] == 1.0
    assert meta["verification"]["drawings"] == 60  # the run's test split: 10% of 3 x 200

    artifact = load_artifact(out)
    pixels, _ = run_splits(run, tiny_store)["test"].materialize()
    expected = logits_for_pixels(load_model(run).model, pixels)
    np.testing.assert_allclose(artifact.run_pixels(pixels), expected, atol=1e-3, rtol=1e-3)
    assert artifact.labels == TINY_CLASSES and artifact.runtime == {"pte": "executorch", "onnx": "onnxruntime"}[fmt]


# ------------------------------------------------------------------------------------ INT8


@pytest.mark.parametrize("fmt", ["pte", "onnx"])
def test_trained_model_int8_export_agrees_and_is_smaller(fmt, tiny_run, tiny_store, tmp_path):
    fp32 = export_model(tiny_run, fmt, "none", tmp_path / f"fp32.{fmt}", data_dir=tiny_store)
    int8 = export_model(tiny_run, fmt, "int8", tmp_path / f"int8.{fmt}", data_dir=tiny_store, calib=256)
    assert int8["artifact"]["bytes"] < 0.6 * fp32["artifact"]["bytes"]
    check = int8["verification"]
    assert check["top1_agreement"] >= 0.9 and check["drawings"] == 90
    assert abs(check["exported_top1"] - check["eager_top1"]) <= 0.1
    calib = int8["export"]["calibration"]
    assert calib["drawings"] == 256 and "training split" in calib["source"]
    if fmt == "pte":  # the whole CNN is one XNNPACK delegate, quantize/dequantize included
        assert int8["export"]["not_delegated_ops"] == {}
        assert int8["export"]["delegated_ops"]["aten::convolution"] == 7
        assert int8["export"]["delegated_ops"]["quantized_decomposed::quantize_per_tensor"] > 0


def test_cnn_with_learned_pool_is_one_int8_delegate(tiny_store, tmp_path):
    run = random_run(tmp_path / "run", "cnn", {"width": 8, "blocks": [1, 1], "pool": "learned"})
    meta = export_model(run, "pte", "int8", tmp_path / "int8.pte", data_dir=tiny_store, calib=64)
    assert meta["export"]["not_delegated_ops"] == {}
    assert meta["export"]["delegated_ops"]["aten::convolution"] == 8  # stem, 2 x (down + 2 in the block), pool
    assert meta["verification"]["top1_agreement"] >= 0.9


@pytest.mark.parametrize("fmt", ["pte", "onnx"])
def test_default_model_int8_agrees_with_eager_on_the_bundled_sample(fmt, tmp_path):
    if not (default_model_dir() / ckpt.WEIGHTS).exists():
        pytest.skip("the bundled default model is not in this checkout")
    out = tmp_path / f"default_int8.{fmt}"
    meta = export_model("default", fmt, "int8", out)
    artifact = load_artifact(out)
    sample = verification_set("default")
    eager = logits_for_pixels(load_model("default").model, sample.pixels)
    agreement = float((artifact.run_pixels(sample.pixels).argmax(1) == eager.argmax(1)).mean())
    assert agreement >= 0.98
    assert meta["verification"]["top1_agreement"] == pytest.approx(agreement)
    assert len(sample.pixels) >= 20 * artifact.num_classes


# ------------------------------------------------------------------------------------ metadata and labels


def test_metadata_and_labels_state_the_contract(tiny_run, tiny_store, tmp_path):
    out = tmp_path / "model.onnx"
    export_model(tiny_run, "onnx", "none", out, data_dir=tiny_store)
    meta_path, labels_path = sidecar_paths(out)
    assert meta_path.name == "model.onnx.metadata.json" and labels_path.name == "model.onnx.labels.txt"
    meta = json.loads(meta_path.read_text())
    assert labels_path.read_text().splitlines() == TINY_CLASSES == meta["classes"]
    assert meta["num_classes"] == 3 and meta["output"]["shape"] == ["batch", 3]
    assert meta["artifact"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["artifact"]["bytes"] == out.stat().st_size
    contract = meta["input"]
    assert contract["shape"] == ["batch", 1, 28, 28] and contract["dtype"] == "float32"
    assert contract["value_range"] == [-1.0, 1.0] and contract["renderer"] == RENDERER_VERSION
    assert contract["bitmap"] == {"dtype": "uint8", "background": 0, "ink": 255, "height": 28, "width": 28}
    assert "ink is positive" in contract["ink_polarity"]
    # the stated normalization is the training one, for every grey level
    levels = np.resize(np.arange(256, dtype=np.uint8), (1, 784))
    stated = (levels / 255.0 - contract["mean"]) / contract["std"]
    np.testing.assert_allclose(normalize(levels).reshape(-1).numpy(), stated.reshape(-1), atol=1e-6)
    assert meta["model"]["name"] == "cnn_small" and meta["model"]["macs"] > 0
    assert meta["artifact"]["quant"] == "none" and meta["artifact"]["method"] == "fp32"
    assert read_metadata(out)[1] == TINY_CLASSES


def test_numpy_normalization_is_bit_identical_to_the_training_one():
    pixels = np.arange(784 * 2, dtype=np.int64).reshape(2, 784).__mod__(256).astype(np.uint8)
    assert np.array_equal(normalize_pixels(pixels), normalize(pixels).numpy())
    assert normalize_pixels(pixels).dtype == np.float32


# ------------------------------------------------------------------------------------ calibration data


def test_calibration_is_class_balanced_from_the_training_split(tiny_run, tiny_store):
    calib = calibration_set(tiny_run, tiny_store, n=90, seed=0)
    assert np.bincount(calib.labels).tolist() == [30, 30, 30]
    splits = run_splits(tiny_run, tiny_store)
    test_rows = {r.tobytes() for r in splits["test"].materialize()[0]}
    assert not any(r.tobytes() in test_rows for r in calib.pixels)
    assert np.array_equal(calib.pixels, calibration_set(tiny_run, tiny_store, n=90, seed=0).pixels)
    assert not np.array_equal(calib.pixels, calibration_set(tiny_run, tiny_store, n=90, seed=1).pixels)


def test_bundled_samples_are_used_without_data(tiny_run, tiny_store, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(QDMError, match="--data: required"):
        calibration_set(run)
    splits = run_splits(run, tiny_store)
    for name, split in (("calibration.npz", "train"), ("sample.npz", "test")):
        pixels, labels = splits[split].materialize()
        np.savez_compressed(run / name, pixels=pixels, labels=labels)
    calib = calibration_set(run, n=30)
    assert np.bincount(calib.labels).tolist() == [10, 10, 10] and "calibration.npz" in calib.source
    assert len(verification_set(run).pixels) == 90
    meta = export_model(run, "pte", "int8", tmp_path / "m.pte", calib=30)
    assert "calibration.npz" in meta["export"]["calibration"]["source"]
    assert "sample.npz" in meta["verification"]["source"]


def test_balanced_subset_spreads_over_classes():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    picks = balanced_subset(labels, 10, seed=0)
    per_class = np.bincount(labels[picks]).tolist()
    assert per_class[1] == 2 and min(per_class[0], per_class[2]) >= 3 and sum(per_class) == 10  # 1 gives all it has
    assert np.array_equal(picks, np.sort(picks)) and len(set(picks.tolist())) == 10


# ------------------------------------------------------------------------------------ bad input


def test_unknown_format_quant_and_suffix(tiny_run, tmp_path):
    with pytest.raises(QDMError, match=r"--format: expected one of pte, onnx, got 'tflite'"):
        export_model(tiny_run, "tflite", "none", tmp_path / "m.tflite")
    with pytest.raises(QDMError, match=r"--quant: unknown quantization method 'int4' \(did you mean 'int4-\w+'\?\)"):
        export_model(tiny_run, "pte", "int4", tmp_path / "m.pte")
    with pytest.raises(QDMError, match=r"--quant: expected none or int8 for --format onnx"):
        export_model(tiny_run, "onnx", "int4-rtn", tmp_path / "m.onnx")
    with pytest.raises(QDMError, match="--data: required for int8-qat"):
        export_model(tiny_run, "pte", "int8-qat", tmp_path / "m.pte")
    with pytest.raises(QDMError, match=r"--out: expected a file name ending in \.onnx"):
        export_model(tiny_run, "onnx", "none", tmp_path / "m.pte")
    with pytest.raises(QDMError, match="--data: required"):
        export_model(tiny_run, "onnx", "none", tmp_path / "m.onnx")
    assert qdm(["export", "--model", str(tiny_run), "--format", "tflite", "--out", str(tmp_path / "x")]) == 2
    assert not any(tmp_path.iterdir())


class CumMax(nn.Module):
    """A model using an operator neither ExecuTorch's edge dialect nor the ONNX exporter supports."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(28, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cummax(x, dim=-1).values.mean(dim=(1, 2)))


@pytest.mark.parametrize("convert", [to_pte, lambda model: to_onnx(model, "none")])
def test_a_model_that_fails_to_export_names_the_operator(convert):
    with pytest.raises(QDMError, match=r"failed at operator aten\.cummax") as info:
        convert(CumMax())
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def exported(tiny_run, tiny_store, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exported")
    return {fmt: Path(export_model(tiny_run, fmt, "none", root / f"m.{fmt}", data_dir=tiny_store)["path"])
            for fmt in ("pte", "onnx")}


def copy_artifact(src: Path, dst: Path) -> Path:
    for a, b in zip((src, *sidecar_paths(src)), (dst, *sidecar_paths(dst)), strict=True):
        shutil.copyfile(a, b)
    meta_path = sidecar_paths(dst)[0]
    meta = json.loads(meta_path.read_text())
    meta["artifact"]["file"] = dst.name
    meta_path.write_text(json.dumps(meta))
    return dst


def rewrite(path: Path, **changes) -> None:
    """Change the artifact file and/or its metadata, keeping the recorded size and sha256 consistent."""
    meta_path, labels_path = sidecar_paths(path)
    meta = json.loads(meta_path.read_text())
    if "data" in changes:
        path.write_bytes(changes["data"])
    if "classes" in changes:
        meta["classes"], meta["num_classes"] = changes["classes"], len(changes["classes"])
        meta["output"]["shape"] = ["batch", len(changes["classes"])]
        labels_path.write_text("".join(f"{c}\n" for c in changes["classes"]))
        meta.pop("selfcheck")  # its logits are per class: gone, as in an older export, so the runtime check speaks
    if "max_batch" in changes:
        meta["input"]["batch"]["max"] = changes["max_batch"]
    meta["artifact"].update(bytes=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("fmt", ["pte", "onnx"])
def test_corrupt_or_mismatched_artifacts_are_refused(fmt, exported, tmp_path):
    good = exported[fmt]
    changed = copy_artifact(good, tmp_path / f"changed.{fmt}")
    changed.write_bytes(good.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(QDMError, match="sha256 differs"):
        load_artifact(changed)

    corrupt = copy_artifact(good, tmp_path / f"corrupt.{fmt}")
    rewrite(corrupt, data=good.read_bytes()[: len(good.read_bytes()) // 3])
    with pytest.raises(QDMError, match="cannot load it"):
        load_artifact(corrupt)

    wrong_classes = copy_artifact(good, tmp_path / f"classes.{fmt}")
    rewrite(wrong_classes, classes=["apple", "cat", "star", "bee"])
    with pytest.raises(QDMError, match="gives 3 outputs per drawing, metadata says 4 classes"):
        load_artifact(wrong_classes)

    other_labels = copy_artifact(good, tmp_path / f"labels.{fmt}")
    sidecar_paths(other_labels)[1].write_text("apple\ncat\n")
    with pytest.raises(QDMError, match="labels differ"):
        load_artifact(other_labels)

    (tmp_path / f"alone.{fmt}").write_bytes(good.read_bytes())
    with pytest.raises(QDMError, match=r"alone\..*\.metadata\.json: missing"):
        load_artifact(tmp_path / f"alone.{fmt}")


def test_pte_batch_bound_must_match_metadata(exported, tmp_path):
    pte = copy_artifact(exported["pte"], tmp_path / "bound.pte")
    rewrite(pte, max_batch=16)
    with pytest.raises(QDMError, match="takes batches of up to 32, metadata says 16"):
        load_artifact(pte)


def test_artifact_runs_any_batch_size(exported, tiny_run, tiny_store):
    pixels, _ = run_splits(tiny_run, tiny_store)["test"].materialize()
    expected = logits_for_pixels(load_model(tiny_run).model, pixels)
    for fmt, path in exported.items():
        artifact = load_artifact(path)
        for n in (1, 33, 60):  # 33 and 60 exceed the .pte's batch bound of 32: run in chunks
            np.testing.assert_allclose(artifact.run_pixels(pixels[:n]), expected[:n], atol=1e-4, err_msg=fmt)
        with pytest.raises(QDMError, match=r"input: expected shape \(B, 1, 28, 28\)"):
            artifact.run(np.zeros((2, 28, 28), np.float32))


def test_failed_verification_writes_nothing(tiny_run, tiny_store, tmp_path, monkeypatch):
    """An FP32 export that disagrees with eager leaves no file under its name and keeps the earlier one."""
    import quickdraw_mobile.export.onnx as onnx_export

    out = tmp_path / "m.onnx"
    export_model(tiny_run, "onnx", "none", out, data_dir=tiny_store)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    torch.manual_seed(1)
    other = create_model("cnn_small", 3, width=8).eval()  # untrained: its answers differ from the run's
    real = onnx_export.to_onnx
    monkeypatch.setattr(onnx_export, "to_onnx", lambda model, quant, calib=None, features=False: real(other, quant, calib, features))
    with pytest.raises(QDMError, match=r"the FP32 export disagrees with the eager model on \d+ of 90"):
        export_model(tiny_run, "onnx", "none", out, data_dir=tiny_store)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ------------------------------------------------------------------------------------ predict


@pytest.mark.parametrize("fmt", ["pte", "onnx"])
def test_predict_runs_an_exported_model_in_its_runtime(fmt, exported, tiny_run, tiny_store, tmp_path, capsys):
    pixels, _ = run_splits(tiny_run, tiny_store)["test"].materialize()
    np.save(tmp_path / "in.npy", pixels)
    assert qdm(["predict", "--model", str(exported[fmt]), "--input", str(tmp_path / "in.npy"),
                "--out", str(tmp_path / "p.jsonl"), "--top-k", "2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    eager = logits_for_pixels(load_model(tiny_run).model, pixels).argmax(1)
    assert [r["top"][0]["class"] for r in rows] == [TINY_CLASSES[i] for i in eager]
    assert all(len(r["top"]) == 2 for r in rows)

    bad = copy_artifact(exported[fmt], tmp_path / f"bad.{fmt}")
    rewrite(bad, data=b"not a model at all")
    assert qdm(["predict", "--model", str(bad), "--input", str(tmp_path / "in.npy"),
                "--out", str(tmp_path / "q.jsonl")]) == 2
    assert "cannot load it" in capsys.readouterr().err
    assert not (tmp_path / "q.jsonl").exists()


def test_export_cli_prints_delegation_and_verification(tiny_run, tiny_store, tmp_path, capsys):
    out = tmp_path / "m.pte"
    assert qdm(["export", "--model", str(tiny_run), "--format", "pte", "--quant", "int8", "--calib", "64",
                "--data", str(tiny_store), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "XNNPACK delegated (1 subgraph)" in printed
    assert "not delegated (portable kernels): none" in printed
    assert "top-1 agreement with eager" in printed and "(test split, 90 drawings)" in printed
    assert load_artifact(out).quant == "int8"


def test_one_place_names_artifacts_and_writes_their_sidecars(tmp_path):
    from quickdraw_mobile.artifact_names import export_file_name, is_artifact
    from quickdraw_mobile.export.metadata import write_sidecars

    assert export_file_name("run", "pte", "none") == "run_fp32.pte"
    assert export_file_name("run", "onnx", "int8") == "run_int8.onnx"
    assert is_artifact("m.onnx") and is_artifact(tmp_path / "m.pte") and not is_artifact("default")
    artifact = tmp_path / "m.pte"
    write_sidecars(artifact, {"classes": ["cat", "dog"]}, ["cat", "dog"])
    meta_path, labels_path = sidecar_paths(artifact)
    assert labels_path.read_text() == "cat\ndog\n" and json.loads(meta_path.read_text()) == {"classes": ["cat", "dog"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pte.labels.txt", "m.pte.metadata.json"]


# ------------------------------------------------------------------------------------ a runtime is one module


def _toy_runtime_module() -> types.ModuleType:
    """A whole runtime in a few lines: torch.export's own .pt2 files, run by ``torch.export.load``."""
    import io

    from quickdraw_mobile.export.runtime import Lowered

    def convert(model: nn.Module, quant: str, calibration: np.ndarray | None) -> Lowered:
        program = torch.export.export(model.eval(), (torch.zeros(2, 1, 28, 28),),
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        return Lowered(buffer.getvalue(), {"runtime": "torch-export"}, ["one torch.export program"],
                       method="fp32", scheme="none (float32)")

    def load(path: Path, threads: int | None):
        module = torch.export.load(path).module()

        def forward(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()

        return forward, ["batch", 1, 28, 28], ["batch", forward(np.zeros((1, 1, 28, 28), np.float32)).shape[1]]

    toy = types.ModuleType("qdm_toy_runtime")
    toy.convert, toy.load = convert, load
    return toy


@pytest.fixture
def toy_runtime(monkeypatch):
    """The toy runtime registered (its one line) for one test, and taken out again afterwards."""
    from quickdraw_mobile.artifact_names import Runtime, register_runtime, unregister_runtime

    monkeypatch.setitem(sys.modules, "qdm_toy_runtime", _toy_runtime_module())
    runtime = register_runtime(Runtime("torch-export", "pt2", ".pt2", "torch.export", "qdm_toy_runtime", "torch",
                                       quants=("none",)))
    yield runtime
    unregister_runtime(runtime.name)


def test_a_runtime_registered_in_one_line_exports_loads_and_benches(toy_runtime, tmp_path, capsys):
    from quickdraw_mobile.artifact_names import is_artifact
    from quickdraw_mobile.bench.runner import artifact_subject
    from quickdraw_mobile.export.selfcheck import run_selfcheck

    with pytest.raises(SystemExit):
        qdm(["export", "--help"])
    assert "pt2 (torch.export)" in " ".join(capsys.readouterr().out.split())
    out = tmp_path / "default_fp32.pt2"
    assert qdm(["export", "--model", "default", "--format", "pt2", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    artifact = load_artifact(out)  # its sidecars checked, opened by the toy module, shapes checked
    assert artifact.runtime == "torch-export" and artifact.quant == "none" and is_artifact(out)
    assert artifact.metadata["export"]["method"] == "fp32" and artifact.metadata["verification"]["disagreements"] == 0
    pixels = verification_set("default", None).pixels[:64]
    eager = logits_for_pixels(load_model("default").model, pixels)
    np.testing.assert_allclose(artifact.run_pixels(pixels), eager, rtol=1e-4, atol=1e-4)
    assert run_selfcheck(artifact)["passed"]
    assert artifact_subject(str(out)).name == "torch.export FP32"
    with pytest.raises(QDMError, match=r"expected none for --format pt2 \(torch.export's own quantization"):
        export_model("default", "pt2", "int8", tmp_path / "q.pt2")


def test_the_toy_runtime_is_gone_after_its_test():
    from quickdraw_mobile.artifact_names import RUNTIMES, is_artifact

    assert [r.format for r in RUNTIMES] == ["pte", "onnx"] and not is_artifact("m.pt2")


def test_describe_model_is_the_metadata_model_section():
    from quickdraw_mobile.modelref import describe_model
    from quickdraw_mobile.models import count_macs, count_params

    loaded = load_model("default")
    info = describe_model(loaded)
    assert info == {"name": loaded.config.model, "options": loaded.config.model_kwargs, "source": "default",
                    "params": count_params(loaded.model), "macs": count_macs(loaded.model)}
    assert list(info) == ["name", "options", "source", "params", "macs"]  # the order metadata.json has


# ------------------------------------------------------------------------------------ one INT8 path


def _float_adds(graph: torch.fx.GraphModule) -> tuple[int, int]:
    """(adds whose output stays float, adds whose output is quantized) in a converted PT2E graph."""
    adds = [n for n in graph.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.add.Tensor]
    quantized = [n for n in adds if any("quantize_per_tensor" in str(u.target) for u in n.users)]
    return len(adds) - len(quantized), len(quantized)


def test_vit_int8_ptq_keeps_every_add_float(tmp_path):
    """The graph a ViT's INT8 export is lowered from: every add (residual and position embedding) left in float (an
    all-INT8 ViT collapses)."""
    from quickdraw_mobile.data.embedded import embedded_store
    from quickdraw_mobile.quant import quantize

    store = embedded_store()
    run = random_run(tmp_path / "run", "vit_tiny")
    pixels = calibration_set(run, store, n=64, seed=0).pixels
    graph = quantize(load_model(run).model, "int8-ptq", normalize(pixels), seed=0).model
    floating, quantized = _float_adds(graph)
    assert floating >= 2 * SMALL_MODEL_OPTIONS["vit_tiny"]["depth"] and quantized == 0
    all_int8 = quantize(load_model(run).model, "int8-ptq", normalize(pixels), float_residual_adds=False).model
    assert _float_adds(all_int8)[1] >= 2 * SMALL_MODEL_OPTIONS["vit_tiny"]["depth"]  # the check can fail


@pytest.mark.slow  # two ViT lowerings, 40 s; the float adds are checked above, ViT INT8 .pte deploys in test_quant
def test_vit_int8_export_is_the_study_int8_ptq_with_float_residual_adds(tmp_path):
    """`qdm export --quant int8` of a ViT is the artifact of the int8-ptq row of `qdm quantize`, byte for byte,
    and its residual adds stay float (an all-INT8 ViT collapses); every method of the study exports."""
    from quickdraw_mobile.data.embedded import embedded_store
    from quickdraw_mobile.quant.compare import compare

    store = embedded_store()
    run = random_run(tmp_path / "run", "vit_tiny")
    assert qdm(["export", "--model", str(run), "--format", "pte", "--quant", "int8", "--calib", "64",
                "--data", str(store), "--out", str(tmp_path / "int8.pte")]) == 0
    meta, _ = read_metadata(tmp_path / "int8.pte")
    rows = compare(run, ["int8-ptq"], tmp_path / "study", data_dir=store, calib=64, runs=2, memory=False)
    study = tmp_path / "study" / rows[0]["artifact"]
    assert (tmp_path / "int8.pte").read_bytes() == study.read_bytes()
    assert meta["artifact"]["method"] == "int8-ptq" == read_metadata(study)[0]["artifact"]["method"]
    assert meta["artifact"]["quant"] == "int8" and load_artifact(tmp_path / "int8.pte").quant == "int8"
    assert rows[0]["top1"] == pytest.approx(100 * meta["verification"]["exported_top1"])
    assert meta["export"]["notes"]["residual_adds"] == "float" == rows[0]["notes"]["residual_adds"]
    assert meta["export"]["calibration"]["drawings"] == 64


def test_export_of_an_int4_method_states_it(tiny_run, tiny_store, tmp_path):
    meta = export_model(tiny_run, "pte", "int4-rtn", tmp_path / "w4.pte", data_dir=tiny_store, calib=64)
    assert meta["artifact"]["quant"] == "int4" and meta["artifact"]["method"] == "int4-rtn"
    assert meta["export"]["bits"] == 4 and meta["export"]["notes"]["int4_layers"] == ["head"]
    assert meta["verification"]["top1_agreement"] >= 0.9
    assert load_artifact(tmp_path / "w4.pte").run_pixels(run_splits(tiny_run, tiny_store)["test"].materialize()[0][:4]
                                                         ).shape == (4, 3)
