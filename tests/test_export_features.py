"""An .onnx exported with its features output (what the drawing page runs): logits as before, plus the pooled
features the page computes its taught classes from, close to the eager model's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import SMALL_MODEL_OPTIONS, TINY_CLASSES

from quickdraw_mobile import runfolder as ckpt
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.export import load_artifact, normalize_pixels, read_metadata
from quickdraw_mobile.export.calibration import verification_set
from quickdraw_mobile.export.pipeline import export_model
from quickdraw_mobile.export.selfcheck import run_selfcheck
from quickdraw_mobile.fileio import write_text_atomic
from quickdraw_mobile.modelref import load_model
from quickdraw_mobile.models import create_model
from quickdraw_mobile.train.config import TrainConfig


def _run_folder(root: Path, name: str, options: dict) -> Path:
    """A run folder holding model ``name`` with seeded random weights."""
    torch.manual_seed(0)
    model = create_model(name, len(TINY_CLASSES), **options)
    if getattr(model, "feature_mean", None) is not None:
        model.feature_mean.uniform_(0, 1)  # a centring that is not zero, so that using it counts
    root.mkdir(parents=True)
    write_text_atomic(root / ckpt.CONFIG, TrainConfig(model=name, model_kwargs=options, max_per_class=200).to_yaml())
    ckpt.write_labels(root / ckpt.LABELS, TINY_CLASSES)
    ckpt.save_weights(root / ckpt.WEIGHTS, model.state_dict())
    return root


def _both_outputs(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "features"]
    logits, features = session.run(["logits", "features"], {"pixels": x})
    return logits, features


@torch.inference_mode()
def _eager(model_ref, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model = load_model(model_ref).model.eval()
    inputs = torch.from_numpy(x)
    return model(inputs).numpy(), model.features(inputs).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("options", [{}, {"cosine_classes": 1}], ids=["plain", "cosine"])
def test_fp32_features_output_is_the_eager_models(options, tiny_store, tmp_path):
    run = _run_folder(tmp_path / "run", "cnn", {**SMALL_MODEL_OPTIONS["cnn"], **options})
    out = tmp_path / "model.onnx"
    meta = export_model(run, "onnx", "none", out, data_dir=tiny_store, features=True)
    assert meta["features"]["name"] == "features" and meta["features"]["shape"] == ["batch", 32]  # 4 x width 8
    assert read_metadata(out)[0]["features"] == meta["features"]
    x = normalize_pixels(verification_set(run, tiny_store).pixels)
    logits, features = _both_outputs(out, x)
    eager_logits, eager_features = _eager(run, x)
    np.testing.assert_allclose(features, eager_features, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logits, eager_logits, atol=1e-4, rtol=1e-4)
    assert features.std() > 0.01  # real features, not a constant
    # Everything that runs an artifact still reads the logits (verification, self-check, load_artifact).
    np.testing.assert_array_equal(load_artifact(out).run(x), logits)
    assert meta["verification"]["top1_agreement"] == 1.0


def test_int8_browser_model_of_the_default_model(browser_model):
    """The file the page runs (``browser_model``: the serve tests' export of default, or of ``QDM_TEST_MODEL``):
    INT8, both outputs close to the eager model's on real drawings."""
    out, model = browser_model, os.environ.get("QDM_TEST_MODEL", "default")
    meta, _ = read_metadata(out)
    assert meta["features"]["shape"] == ["batch", load_model(model).model.head.in_features]
    x = normalize_pixels(verification_set(model).pixels)
    logits, features = _both_outputs(out, x)
    eager_logits, eager_features = _eager(model, x)
    assert np.median(_cosines(features, eager_features)) > 0.999
    assert _cosines(features, eager_features).min() > 0.99
    assert (logits.argmax(1) == eager_logits.argmax(1)).mean() > 0.98
    assert meta["verification"]["top1_agreement"] > 0.98
    assert run_selfcheck(load_artifact(out))["passed"]


def test_features_output_only_where_it_exists(tiny_store, tmp_path):
    run = _run_folder(tmp_path / "run", "vit_tiny", SMALL_MODEL_OPTIONS["vit_tiny"])
    out = tmp_path / "vit.onnx"
    meta = export_model(run, "onnx", "none", out, data_dir=tiny_store, features=True)
    assert "features" not in meta  # a model without features(x) gets its logits only
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    with pytest.raises(QDMError, match=r"features output: only an \.onnx export has one, not --format pte"):
        export_model(run, "pte", "none", tmp_path / "vit.pte", data_dir=tiny_store, features=True)
