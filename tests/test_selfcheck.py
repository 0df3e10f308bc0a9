"""The device self-check in every metadata.json: drawings with the artifact's own answers, checked on load and run."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.export import load_artifact, read_metadata, sidecar_paths
from quickdraw_mobile.export.calibration import verification_set
from quickdraw_mobile.export.pipeline import export_model
from quickdraw_mobile.export.selfcheck import REL_TOLERANCE, build_selfcheck, margins, run_selfcheck

# ------------------------------------------------------------------------------------ the choice, on made-up logits


def made_up(rows: list[tuple[int, float]], num_classes: int = 4) -> np.ndarray:
    """Logits whose top-1 is ``cls`` by ``margin`` over the runner-up (all other logits 0)."""
    logits = np.zeros((len(rows), num_classes), np.float32)
    for i, (cls, margin) in enumerate(rows):
        logits[i, cls], logits[i, (cls + 1) % num_classes] = 10.0, 10.0 - margin
    return logits


def test_best_margin_of_each_class_in_class_order_then_the_best_of_the_rest():
    rows = [(2, 3.0), (0, 2.0), (0, 5.0), (1, 4.0), (2, 9.0), (1, 0.5), (3, 6.0), (3, 7.0)]
    logits, pixels = made_up(rows), np.arange(8, dtype=np.uint8)[:, None].repeat(784, 1)
    labels = np.array([c for c, _ in rows])
    labels[7] = 0  # the best drawing of class 3 is wrong: not usable
    sc = build_selfcheck(pixels, labels, logits, "none", source="made up")
    # tolerance 1e-3 * 10; margin 0.5 still > 2 * 0.01
    chosen = [bytes.fromhex(b)[0] for b in sc["bitmaps"]]
    assert chosen == [2, 3, 4, 6, 0, 1, 5]  # class 0, 1, 2, 3 (6, not 7), then margins 3.0, 2.0, 0.5
    assert sc["drawings"] == 7 and sc["expected_top1"] == [0, 1, 2, 3, 2, 0, 1]
    assert sc["tolerance"] == pytest.approx(0.01) and sc["min_margin"] == 0.5 and sc["source"] == "made up"
    assert build_selfcheck(pixels, labels, logits, "none", source="made up") == sc


def test_drawings_are_capped_at_16_and_small_margins_are_left_out():
    rows = [(i % 4, 1.0 + i) for i in range(30)]
    sc = build_selfcheck(np.zeros((30, 784), np.uint8), None, made_up(rows), "int8")
    assert sc["drawings"] == 16 and len(sc["expected_logits"]) == 16
    tight = made_up([(0, 0.9), (1, 1.1)])  # tolerance 5e-2 * 10 = 0.5: margins must exceed 1.0
    assert build_selfcheck(np.zeros((2, 784), np.uint8), None, tight, "int8")["expected_top1"] == [1]


def test_no_usable_drawing_means_no_selfcheck_and_non_finite_logits_are_errors():
    assert build_selfcheck(np.zeros((2, 784), np.uint8), None, made_up([(0, 0.9), (1, 1.0)]), "int8") is None
    logits = made_up([(0, 5.0), (1, 5.0)])
    logits[1, 2] = np.nan
    with pytest.raises(QDMError, match=r"non-finite logits \(NaN or infinity\) on 1 of 2"):
        build_selfcheck(np.zeros((2, 784), np.uint8), None, logits, "none")


# ------------------------------------------------------------------------------------ the default model, exported


@pytest.fixture(scope="module")
def exports(default_ptes) -> dict[str, Path]:
    """The bundled default model as FP32 and INT8 .pte (exported once per session, shared with the C++ tests)."""
    return default_ptes


def selfcheck_of(path: Path) -> dict:
    text = sidecar_paths(path)[0].read_text()

    def refuse(name):
        raise AssertionError(f"metadata.json holds {name}: not valid JSON")

    return json.loads(text, parse_constant=refuse)["selfcheck"]


@pytest.mark.parametrize("quant", ["none", "int8"])
def test_selfcheck_holds_the_artifacts_own_answers(quant, exports):
    sc, artifact = selfcheck_of(exports[quant]), load_artifact(exports[quant])
    n, num_classes = sc["drawings"], artifact.num_classes
    assert sc["version"] == 1 and 8 <= n <= 16
    sample = verification_set("default")
    assert sc["source"] == sample.source
    assert len(sc["bitmaps"]) == len(sc["expected_top1"]) == len(sc["expected_logits"]) == n
    assert all(len(b) == 1568 and b == b.lower() for b in sc["bitmaps"])
    pixels = np.stack([np.frombuffer(bytes.fromhex(b), np.uint8) for b in sc["bitmaps"]])
    rows = [np.flatnonzero((sample.pixels == p).all(1))[0] for p in pixels]  # each is a verification drawing
    assert sample.labels[rows].tolist() == sc["expected_top1"] == list(range(n))  # right, one per class
    expected = np.array(sc["expected_logits"])
    assert expected.shape == (n, num_classes) and np.array_equal(expected.astype(np.float32), expected)
    assert np.array_equal(expected.argmax(1), sc["expected_top1"])
    logits = artifact.run_pixels(sample.pixels)
    assert sc["tolerance"] == REL_TOLERANCE[quant] * float(np.abs(logits).max())
    assert sc["min_margin"] == margins(expected).min() > 2 * sc["tolerance"]


@pytest.mark.parametrize("quant", ["none", "int8"])
def test_selfcheck_passes_in_the_same_runtime_and_fails_when_answers_are_off(quant, exports):
    artifact = load_artifact(exports[quant])
    report = run_selfcheck(artifact)
    assert report["passed"] and report["max_abs_logit_diff"] == 0.0
    assert report["top1_agreement"] == 1.0 and report["drawings"] == artifact.metadata["selfcheck"]["drawings"]
    good = copy.deepcopy(artifact.metadata)
    tolerance = good["selfcheck"]["tolerance"]

    artifact.metadata["selfcheck"]["expected_logits"][3][0] -= 1.5 * tolerance  # row 3's top-1 is class 3
    off = run_selfcheck(artifact)
    assert not off["passed"] and off["top1_agreement"] == 1.0
    assert off["max_abs_logit_diff"] == pytest.approx(1.5 * tolerance, rel=1e-6)

    artifact.metadata = copy.deepcopy(good)
    artifact.metadata["selfcheck"]["expected_top1"][0] = 1
    flipped = run_selfcheck(artifact)
    assert not flipped["passed"] and flipped["disagreements"] == 1 and flipped["max_abs_logit_diff"] == 0.0


def copy_with_metadata(src: Path, dst_dir: Path, change) -> Path:
    """``src`` and its sidecars under the same names in ``dst_dir``, the metadata changed by ``change(meta)``."""
    dst_dir.mkdir()
    for path in (src, *sidecar_paths(src)):
        shutil.copyfile(path, dst_dir / path.name)
    meta_path = sidecar_paths(dst_dir / src.name)[0]
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta_path.write_text(json.dumps(meta))
    return dst_dir / src.name


def _set(field: str, value):
    return lambda meta: meta["selfcheck"].__setitem__(field, value)


@pytest.mark.parametrize(("change", "field"), [
    (lambda meta: meta["selfcheck"]["bitmaps"].__setitem__(2, meta["selfcheck"]["bitmaps"][2][:-2]), "bitmaps"),
    (lambda meta: meta["selfcheck"]["bitmaps"].__setitem__(0, meta["selfcheck"]["bitmaps"][0].upper()), "bitmaps"),
    (lambda meta: meta["selfcheck"]["expected_logits"][1].pop(), "expected_logits"),
    (lambda meta: meta["selfcheck"]["expected_top1"].pop(), "expected_top1"),
    (_set("drawings", 17), "drawings"),
    (_set("min_margin", 0.0), "min_margin"),
    (_set("tolerance", "0.1"), "tolerance"),
    (_set("version", 2), "version"),
])
def test_malformed_selfcheck_is_refused_in_one_line(change, field, exports, tmp_path):
    path = copy_with_metadata(exports["none"], tmp_path / "bad", change)
    with pytest.raises(QDMError, match=rf"metadata\.json: field 'selfcheck\.{field}'") as info:
        read_metadata(path)
    assert "\n" not in str(info.value)


def test_an_export_without_selfcheck_still_loads(exports, tmp_path):
    path = copy_with_metadata(exports["none"], tmp_path / "old", lambda meta: meta.pop("selfcheck"))
    artifact = load_artifact(path)
    assert artifact.labels == read_metadata(exports["none"])[1]
    with pytest.raises(QDMError, match="has no self-check drawings"):
        run_selfcheck(artifact)


# ------------------------------------------------------------------------------------ ONNX, determinism, NaN


def test_onnx_export_carries_the_same_deterministic_selfcheck(exports, tmp_path):
    first = export_model("default", "onnx", "none", tmp_path / "a.onnx")["selfcheck"]
    again = export_model("default", "onnx", "none", tmp_path / "b.onnx")["selfcheck"]
    assert first == again == selfcheck_of(tmp_path / "a.onnx")
    report = run_selfcheck(load_artifact(tmp_path / "a.onnx"))
    assert report["passed"] and report["max_abs_logit_diff"] == 0.0
    assert first["bitmaps"] == selfcheck_of(exports["none"])["bitmaps"]  # FP32 runtimes agree on the choice


class NaNHead(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.head = nn.Linear(784, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1)) * torch.tensor(float("nan"))


def test_non_finite_logits_fail_the_export_and_write_nothing(exports, tmp_path, monkeypatch):
    import quickdraw_mobile.export.onnx as onnx_export

    real, num_classes = onnx_export.to_onnx, load_artifact(exports["none"]).num_classes
    monkeypatch.setattr(onnx_export, "to_onnx", lambda model, quant, calib=None, features=False: real(NaNHead(num_classes), quant))
    with pytest.raises(QDMError, match=r"m\.onnx: the exported model produces non-finite logits") as info:
        export_model("default", "onnx", "none", tmp_path / "m.onnx")
    assert "\n" not in str(info.value) and not any(tmp_path.iterdir())
