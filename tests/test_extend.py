"""``qdm extend``: new classes from a few drawings, the old ones kept, written as an ordinary run folder."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import TINY_CLASSES, make_store

from quickdraw_mobile.cli import main
from quickdraw_mobile.data.loader import normalize
from quickdraw_mobile.data.render import render_many
from quickdraw_mobile.data.store import Store
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.export import load_artifact, normalize_pixels
from quickdraw_mobile.export.calibration import verification_set
from quickdraw_mobile.export.executorch import load as load_pte
from quickdraw_mobile.export.executorch import to_pte
from quickdraw_mobile.export.pipeline import export_model
from quickdraw_mobile.extend import calibrate_groups, extend
from quickdraw_mobile.modelref import load_model
from quickdraw_mobile.models import create_model
from quickdraw_mobile.models.cnn import multiscale
from quickdraw_mobile.quant.pt2e import PT2EConfig, quantize_graph

NEW = ["fish", "house"]  # embedded classes that tiny_run (apple, cat, star) lacks
STROKED = ["triangle", "zigzag"]  # official classes the bundled default lacks, drawn here as strokes
SHOTS = 5
METHODS = ["prototype", "probe", "finetune"]
MULTISCALE = "probe-multiscale"  # --method probe --features multiscale


def _shape_lines(word: str, n: int) -> list[str]:
    """``n`` hand-drawn ``word``s (a triangle, or a zigzag), each shifted and stretched a little."""
    base = {"triangle": [[20, 128, 236, 20], [220, 20, 220, 220]],
            "zigzag": [[0, 60, 120, 180, 250], [200, 40, 200, 40, 200]]}[word]
    lines = []
    for i in range(n):
        xs = [int(x * (0.8 + 0.04 * (i % 5))) + 3 * (i % 4) for x in base[0]]
        ys = [int(y * (0.85 + 0.03 * (i % 4))) + 2 * (i % 3) for y in base[1]]
        lines.append(json.dumps({"word": word, "countrycode": "ZZ", "recognized": True, "key_id": str(i),
                                 "drawing": [[xs, ys]]}))
    return lines


@pytest.fixture(scope="module")
def stroke_folder(tmp_path_factory):
    """A folder of .ndjson stroke files (as the shared simplified/ folder): 12 triangles and 12 zigzags."""
    folder = tmp_path_factory.mktemp("strokes")
    for word in STROKED:
        (folder / f"{word}.ndjson").write_text("\n".join(_shape_lines(word, 12)) + "\n")
    return folder


@pytest.fixture(scope="module")
def extended(stroke_folder, tmp_path_factory):
    """``method -> run folder``: the bundled default extended with triangle and zigzag by each method."""
    runs = {}
    for method in METHODS:
        out = tmp_path_factory.mktemp(method) / "run"
        assert main(["extend", "--model", "default", "--data", str(stroke_folder), "--out", str(out), "--method",
                     method, "--shots", str(SHOTS), "--views", "2", "--steps", "15"]) == 0
        runs[method] = out
    out = tmp_path_factory.mktemp(MULTISCALE) / "run"
    assert main(["extend", "--model", "default", "--data", str(stroke_folder), "--out", str(out), "--method",
                 "probe", "--features", "multiscale", "--shots", str(SHOTS), "--views", "2"]) == 0
    runs[MULTISCALE] = out
    return runs


@pytest.fixture(scope="module")
def new_store(drawings, tmp_path_factory):
    """20 real drawings of each of two classes tiny_run lacks."""
    return make_store(drawings, tmp_path_factory.mktemp("new"), dict.fromkeys(NEW, 20)).root


@pytest.fixture(scope="module")
def all_store(drawings, tmp_path_factory):
    """tiny_run's classes and the new ones together, for evaluate."""
    return make_store(drawings, tmp_path_factory.mktemp("all"), dict.fromkeys([*TINY_CLASSES, *NEW], 100)).root


def test_a_plain_cnn_has_features_and_no_cosine_head():
    model = create_model("cnn", 4, width=8, blocks=(1, 1)).eval()
    x = torch.randn(2, 1, 28, 28)
    assert not any(name.startswith(("cosine_head", "feature_mean")) for name in model.state_dict())
    assert torch.equal(model(x), model.head(model.features(x)))


def test_a_plain_cnn_draws_the_same_weights_and_has_no_wide_head():
    """The wide head is made last and only when asked: everything else draws the same initial weights."""
    torch.manual_seed(0)
    plain = create_model("cnn", 4, width=8, blocks=(1, 1)).eval()
    torch.manual_seed(0)
    wide = create_model("cnn", 6, width=8, blocks=(1, 1), wide_classes=2).eval()
    assert not any(name.startswith(("wide_head", "multiscale_scale")) for name in plain.state_dict())
    extra = [name for name in wide.state_dict() if name not in plain.state_dict()]
    assert sorted(extra) == ["multiscale_scale", "wide_head.bias", "wide_head.weight"]
    assert all(torch.equal(value, wide.state_dict()[name]) for name, value in plain.state_dict().items())
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        logits, features = plain.logits_and_features(x)
        torch.testing.assert_close(wide(x)[:, :4], plain(x), rtol=0, atol=0)
        wide_logits, wide_features = wide.logits_and_features(x)
    assert torch.equal(logits, plain(x)) and torch.equal(features, plain.features(x))
    assert torch.equal(wide_logits, wide(x)) and torch.equal(wide_features, plain.features(x))
    early, late, pooled = plain.maps(x)
    # stage 1 avg, max; pooled; stage 2 max; stage 1 on a 2x2 grid
    blocks = multiscale(early, late, pooled).split([16, 16, 32, 32, 64], dim=1)
    for block in blocks:
        torch.testing.assert_close(block.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(blocks[2], plain.features(x) / plain.features(x).norm(dim=1, keepdim=True))
    # averaged with the mirrored drawing's: the same for a drawing and its mirror image
    torch.testing.assert_close(plain.multiscale_features(x), plain.multiscale_features(x.flip(3)))
    torch.testing.assert_close(wide(x)[:, 4:], wide(x.flip(3))[:, 4:])


@pytest.mark.parametrize("method", [*METHODS, MULTISCALE])
def test_extended_run_loads_with_old_and_new_labels(extended, method, drawings):
    old, new = load_model("default"), load_model(extended[method])
    assert new.labels == [*old.labels, *STROKED]
    summary = json.loads((extended[method] / "train_summary.json").read_text())["extended"]
    assert summary["method"] == method.split("-")[0] and summary["shots"] == SHOTS
    assert summary["new_classes"] == STROKED
    assert summary["features"] == ("multiscale" if method == MULTISCALE else "pooled")
    x = normalize(np.concatenate([drawings(name, 4) for name in ("apple", "cat", "star", "tree")]))
    with torch.no_grad():
        before, after = old.model(x), new.model(x)
    assert after.shape == (len(x), len(old.labels) + len(STROKED))
    if method != "finetune":  # prototype and probe leave the old logits exactly as they were
        torch.testing.assert_close(after[:, : len(old.labels)], before, rtol=0, atol=1e-5)
    else:  # the fine-tune moves every weight, and still knows the old drawings
        assert not torch.equal(after[:, : len(old.labels)], before)
        assert (after.argmax(1) == before.argmax(1)).float().mean() >= 0.75


@pytest.mark.parametrize("method", [*METHODS, MULTISCALE])
def test_the_new_classes_are_guessed_for_their_shots_and_others(extended, method):
    new = load_model(extended[method])
    pixels = np.concatenate([render_many([json.loads(line)["drawing"] for line in _shape_lines(word, 12)])
                             for word in STROKED])
    truth = np.repeat(np.arange(len(STROKED)) + len(new.labels) - len(STROKED), 12)
    with torch.no_grad():
        guessed = new.model(normalize(pixels)).argmax(1).numpy()
    assert (guessed == truth).mean() >= 0.9, guessed


def test_an_extended_run_exports_to_onnx_without_data(extended, tmp_path):
    onnx = tmp_path / "prototype.onnx"
    assert main(["export", "--model", str(extended["prototype"]), "--format", "onnx", "--out", str(onnx)]) == 0
    assert onnx.stat().st_size > 0


def test_a_multiscale_run_keeps_its_new_rows_in_a_wide_head(extended):
    run = load_model(extended[MULTISCALE])
    assert run.config.model_kwargs["wide_classes"] == len(STROKED)
    default = load_model("default").model
    torch.testing.assert_close(run.model.head.weight, default.head.weight, rtol=0, atol=0)
    summary = json.loads((extended[MULTISCALE] / "train_summary.json").read_text())["extended"]
    assert float(run.model.multiscale_scale) == pytest.approx(summary["multiscale_scale"]) and \
        summary["multiscale_scale"] > 1.0  # unit blocks (norm 2) brought up to the pooled features' norm


# the FP32 .pte is slow (-m slow); the INT8 one is checked for one delegate below
@pytest.mark.parametrize("fmt", ["onnx", pytest.param("pte", marks=pytest.mark.slow)])
def test_a_multiscale_run_exports_close_to_eager(extended, fmt, tmp_path):
    """The wide head's per-block normalisation and max pools lower to ONNX (with the features output) and to an
    XNNPACK .pte; the files answer as the eager model does on the bundled sample."""
    out = tmp_path / f"wide.{fmt}"
    meta = export_model(extended[MULTISCALE], fmt, "none", out, features=fmt == "onnx")
    assert meta["verification"]["top1_agreement"] == 1.0
    sample = verification_set(extended[MULTISCALE])
    model = load_model(extended[MULTISCALE]).model.eval()
    with torch.no_grad():
        eager_logits, eager_features = model.logits_and_features(normalize(sample.pixels))
    if fmt == "onnx":
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        logits, features = session.run(["logits", "features"], {"pixels": normalize_pixels(sample.pixels)})
        np.testing.assert_allclose(features, eager_features.numpy(), atol=1e-4, rtol=1e-4)
    else:
        logits = load_artifact(out).run_pixels(sample.pixels)
    assert logits.shape[1] == 52 + len(STROKED)
    np.testing.assert_allclose(logits, eager_logits.numpy(), atol=1e-3, rtol=1e-3)


def test_a_wide_cnn_is_one_int8_xnnpack_delegate_that_loads_and_runs(tmp_path):
    """The mirror (a linear), the pairing of each drawing with its mirror image (views, a permute, linears) and the
    per-block sums of squares (average pools): nothing is left to the portable kernels, and XNNPACK builds the
    program at load time (two passes sharing their conv weights lowered, then failed to load)."""
    torch.manual_seed(0)
    model = create_model("cnn", 6, width=8, blocks=(1, 1), wide_classes=2).eval()
    x = normalize(verification_set("default").pixels[:64])
    quantized = quantize_graph(model, PT2EConfig(), x)
    data, report = to_pte(quantized)
    assert report.subgraphs == 1 and report.not_delegated == {}
    (tmp_path / "wide.pte").write_bytes(data)
    forward, _, _ = load_pte(tmp_path / "wide.pte", 1)
    logits = forward(x[:8].numpy())
    with torch.no_grad():
        expected = quantized(x[:8]).numpy()
    assert logits.shape == (8, 6)
    assert np.corrcoef(logits.ravel(), expected.ravel())[0, 1] > 0.99


@pytest.mark.slow  # the bundled default's size: 30 s; the architecture is checked above on a small cnn
def test_a_multiscale_run_is_one_int8_xnnpack_delegate(extended, tmp_path):
    """The per-block sums of squares are average pools: nothing of the wide head is left to the portable kernels."""
    meta = export_model(extended[MULTISCALE], "pte", "int8", tmp_path / "wide.int8.pte", calib=256)
    assert meta["export"]["not_delegated_ops"] == {}
    assert meta["verification"]["top1_agreement"] >= 0.95


def test_a_multiscale_run_takes_more_classes_into_its_wide_head_only(tiny_run, tiny_store, new_store, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--data", str(new_store), "--shots", str(SHOTS), "--views", "1", "--method", "probe"]
    assert main(["extend", "--model", str(tiny_run), "--out", str(first), "--classes", NEW[0], "--replay",
                 str(tiny_store), "--features", "multiscale", *common]) == 0
    with pytest.raises(QDMError, match="--features: a model extended with --features multiscale takes more"):
        extend(first, new_store, tmp_path / "pooled", method="probe", classes=[NEW[1]])
    assert main(["extend", "--model", str(first), "--out", str(second), "--classes", NEW[1],
                 "--features", "multiscale", *common]) == 0
    before, after = load_model(first), load_model(second)
    assert after.labels == [*TINY_CLASSES, *NEW] and after.config.model_kwargs["wide_classes"] == 2
    assert float(after.model.multiscale_scale) == float(before.model.multiscale_scale)
    x = normalize(np.concatenate([np.array(Store.open(new_store).array(n)[:5]) for n in NEW]))
    with torch.no_grad():
        torch.testing.assert_close(after.model(x)[:, :-1], before.model(x), rtol=0, atol=1e-5)


def test_an_extended_tiny_run_evaluates_on_a_store_of_old_and_new(tiny_run, tiny_store, new_store, all_store,
                                                                  tmp_path):
    for method in ("prototype", "probe"):
        run = tmp_path / f"run-{method}"
        assert main(["extend", "--model", str(tiny_run), "--data", str(new_store), "--out", str(run), "--method",
                     method, "--shots", str(SHOTS), "--replay", str(tiny_store), "--views", "1"]) == 0
        assert main(["evaluate", "--model", str(run), "--data", str(all_store), "--out", str(tmp_path / method),
                     "--no-plots"]) == 0
        metrics = json.loads((tmp_path / method / "metrics.json").read_text())
        assert metrics["n"] == 5 * 10 and 0.0 <= metrics["top1"] <= 1.0


@pytest.mark.parametrize("args, says", [
    (["--method", "knn"], "--method: expected one of prototype, probe, finetune"),
    (["--shots", "50"], "--shots 50: class 'fish' has only 20 drawings"),
    (["--classes", "apple"], "--classes: the model already knows apple"),
    (["--old-kept", "1.5"], "--old-kept: expected a fraction in (0, 1], got 1.5"),
    (["--features", "deep"], "--features: expected one of pooled, multiscale, got 'deep'"),
    (["--features", "multiscale"], "--features multiscale: only with --method probe or finetune"),
])
def test_bad_input_is_a_one_line_error(tiny_run, tiny_store, new_store, tmp_path, capsys, args, says):
    """An unknown method, more shots than drawings, a class the model knows: one line, exit 2, no folder."""
    code = main(["extend", "--model", str(tiny_run), "--data", str(new_store), "--out", str(tmp_path / "run"),
                 "--replay", str(tiny_store), *args])
    err = capsys.readouterr().err
    assert code == 2 and says in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kept", [1.0, 0.99, 0.9, 0.5])
def test_calibrate_groups_gives_the_largest_offset_that_keeps_the_fraction_on_old_classes(kept):
    logits = torch.randn(1000, 7, generator=torch.Generator().manual_seed(0))  # 4 old classes, 3 new
    offset = calibrate_groups(logits, 3, kept)
    shifted = logits.clone()
    shifted[:, 4:] += offset
    assert (shifted.argmax(1) < 4).float().mean() >= kept
    shifted[:, 4:] += 1e-4  # a hair more, and one drawing too many moves to a new class
    assert (shifted.argmax(1) < 4).float().mean() < kept


def test_calibrate_groups_pulls_down_new_classes_that_would_swallow_the_old():
    logits = torch.randn(500, 6, generator=torch.Generator().manual_seed(1))
    logits[:, 3:] += 5.0  # new classes far too loud: nearly every old drawing goes to one
    assert calibrate_groups(logits, 3, 0.99) < -3.0


@pytest.mark.parametrize("features", ["pooled", "multiscale"])
def test_old_kept_shifts_only_the_new_logits_by_the_calibrated_offset(tiny_run, tiny_store, new_store, tmp_path,
                                                                      features):
    runs = {}
    for name, extra in (("plain", []), ("calibrated", ["--old-kept", "0.9"])):
        runs[name] = tmp_path / name
        assert main(["extend", "--model", str(tiny_run), "--data", str(new_store), "--out", str(runs[name]),
                     "--method", "probe", "--shots", str(SHOTS), "--replay", str(tiny_store), "--views", "1",
                     "--features", features, *extra]) == 0
    summary = json.loads((runs["calibrated"] / "train_summary.json").read_text())["extended"]
    assert summary["old_kept"] == 0.9 and summary["replay_old_kept_after"] >= 0.9
    x = normalize(np.concatenate([np.array(Store.open(new_store).array(n)[:5]) for n in NEW]))
    with torch.no_grad():
        plain, calibrated = load_model(runs["plain"]).model(x), load_model(runs["calibrated"]).model(x)
    torch.testing.assert_close(calibrated[:, :-2], plain[:, :-2], rtol=0, atol=1e-5)
    torch.testing.assert_close(calibrated[:, -2:], plain[:, -2:] + summary["group_offset"], rtol=0, atol=1e-4)
