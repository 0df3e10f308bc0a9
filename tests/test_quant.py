"""Quantization methods on a tiny model trained on real drawings: every method deploys, and each algorithm is
checked against a reference computation (GPTQ vs a column-by-column version with explicit inverses, AWQ and GPTQ
vs round-to-nearest on real layer inputs, SmoothQuant as an exact equivalence)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from quickdraw_mobile.cli import main as qdm
from quickdraw_mobile.data.loader import normalize
from quickdraw_mobile.data.store import SplitSpec, Store
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.export import load_artifact
from quickdraw_mobile.export.calibration import balanced_subset
from quickdraw_mobile.modelref import load_model
from quickdraw_mobile.models import create_model
from quickdraw_mobile.quant import QuantizedModel, TrainingData, get_method, list_methods, quantize
from quickdraw_mobile.quant.artifact import save_pte
from quickdraw_mobile.quant.awq import awq_search
from quickdraw_mobile.quant.compare import compare, parse_options
from quickdraw_mobile.quant.gptq import gptq_quantize
from quickdraw_mobile.quant.int4 import (
    QMAX,
    QMIN,
    dequantize_groups,
    layer_error,
    pack_int4,
    save_packed,
    unpack_int4,
)
from quickdraw_mobile.quant.pt2e import PT2EConfig, qat_graph
from quickdraw_mobile.quant.registry import WeightFile, methods_markdown, register_method, unregister_method
from quickdraw_mobile.quant.rtn import rtn_quantize
from quickdraw_mobile.quant.scaling import scale_inputs
from quickdraw_mobile.quant.smoothquant import scope_layers, smooth, smoothable_layers
from quickdraw_mobile.quant.stats import collect_input_stats, weight_matrix

CLASSES = ["apple", "cat", "star"]
METHODS = list_methods()
FAST = {  # short schedules and searches: the tests check the machinery, the comparison measures the methods
    "int8-smoothquant": {"alphas": (0.35, 0.65), "search_drawings": 64},
    "int8-qat": {"steps": 30, "batch_size": 32},
    "int8-mixed": {"sensitivity_drawings": 64},
    "pruned": {"steps": 30, "batch_size": 32},
}


@pytest.fixture(scope="module")
def tiny(tiny_run, tiny_store):
    """The tiny model of conftest (3 real classes), with its calibration, test and training data."""
    run, root, store = tiny_run, tiny_store, Store.open(tiny_store)
    loaded = load_model(run)
    cfg = loaded.config
    splits = store.splits(SplitSpec(cfg.val_fraction, cfg.test_fraction, cfg.split_seed, cfg.max_per_class),
                          loaded.labels)
    pixels, labels = splits["train"].materialize()
    keep = balanced_subset(labels, 128, seed=0)
    test_pixels, test_labels = splits["test"].materialize()
    return {"model": loaded.model, "labels": loaded.labels, "calib": normalize(pixels[keep]),
            "calib_labels": torch.from_numpy(labels[keep]), "test": normalize(test_pixels),
            "test_labels": torch.from_numpy(test_labels), "train": TrainingData(splits["train"], loaded.config),
            "run": run, "store": root}


def _top1(logits: torch.Tensor | np.ndarray, labels: torch.Tensor) -> float:
    return float((torch.as_tensor(logits).argmax(1) == labels).float().mean())


# ------------------------------------------------------------------------------------------------ registry
def test_methods_are_named_as_the_issue_names_them():
    named = ["fp32", "int8-ptq", "int8-smoothquant", "int8-qat", "int8-mixed", "int4-rtn", "int4-gptq", "int4-awq",
             "pruned"]
    assert [m for m in list_methods() if m in named] == named  # in table order; new methods may come in between
    assert {m: get_method(m).bits for m in named} == {"fp32": 32, "int8-ptq": 8, "int8-smoothquant": 8,
                                                      "int8-qat": 8, "int8-mixed": 8, "int4-rtn": 4,
                                                      "int4-gptq": 4, "int4-awq": 4, "pruned": 32}


def test_readme_table_of_methods_is_the_registry_s():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert methods_markdown() in readme


# A whole quantization method in one place: registering it is the only edit, and it appears everywhere.
@dataclass(frozen=True)
class ToyConfig:
    """fp16-toy: weights rounded to float16 (computed in float32)."""


def _save_half(model: torch.nn.Module, path: Path) -> int:
    from safetensors.torch import save_file

    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.stat().st_size


@pytest.fixture
def toy_method():
    @register_method("fp16-toy", ToyConfig, order=45, bits=16, description="weights rounded to float16",
                     summary=lambda notes: f"{notes['tensors']} tensors in float16",
                     weight_file=WeightFile(".fp16.safetensors", _save_half))
    def apply(model, config, calib, **_):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
        return QuantizedModel("fp16-toy", model, 16, "float16 weights, float32 compute (a test's method)",
                              {"tensors": len(list(model.parameters()))}, no_pte="a test method, saved as fp16")

    yield "fp16-toy"
    unregister_method("fp16-toy")


def test_a_method_registered_in_one_place_appears_everywhere(toy_method, tmp_path, capsys):
    from quickdraw_mobile import runfolder as ckpt
    from quickdraw_mobile.modelref import default_model_dir

    names = list_methods()
    assert names.index(toy_method) == names.index("int8-mixed") + 1  # its declared place in the table
    assert "| `fp16-toy` | 16 | no | weights rounded to float16 |" in methods_markdown()
    for verb in ("quantize", "export"):
        with pytest.raises(SystemExit):
            qdm([verb, "--help"])
        assert "int8-mixed, fp16-toy, int4-rtn" in " ".join(capsys.readouterr().out.split())
    if not (default_model_dir() / ckpt.WEIGHTS).exists():
        pytest.skip("the bundled default model is not in this checkout")
    rows = compare("default", [toy_method], tmp_path, calib=32, runs=2, memory=False)
    row = rows[0]
    assert row["method"] == toy_method and row["bits"] == 16 and row["artifact"] == "artifacts/fp16-toy.fp16.safetensors"
    assert (tmp_path / row["artifact"]).stat().st_size == row["size_bytes"] > 0
    assert row["top1"] > 80  # the default model, its weights rounded to float16, on the bundled sample
    assert f"| fp16-toy | 16 | {row['top1']:.2f} |" in (tmp_path / "comparison.md").read_text()
    assert f"| {row['notes']['tensors']} tensors in float16 |" in (tmp_path / "comparison.md").read_text()


def test_the_toy_method_is_gone_after_its_test():
    assert "fp16-toy" not in list_methods()


def test_bad_method_option_or_missing_data_is_one_line_error(tiny):
    with pytest.raises(QDMError, match="did you mean 'int4-gptq'"):
        quantize(tiny["model"], "int4-gptqq", tiny["calib"])
    with pytest.raises(QDMError, match="has no option 'group'.*did you mean 'group_size'"):
        quantize(tiny["model"], "int4-rtn", tiny["calib"], group=32)
    with pytest.raises(QDMError, match="group_size: expected a multiple of 32"):
        quantize(tiny["model"], "int4-rtn", tiny["calib"], group_size=48)
    with pytest.raises(QDMError, match="needs the training split"):
        quantize(tiny["model"], "int8-qat", tiny["calib"])
    with pytest.raises(QDMError, match=r"expected a tensor \(N, 1, 28, 28\)"):
        quantize(tiny["model"], "int8-ptq", tiny["calib"][:, 0])


# ------------------------------------------------------------------------------------- 4-bit primitives
def test_rtn_error_is_at_most_half_a_step_and_matches_torchao():
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor,
    )

    weight = torch.randn(24, 64) * torch.logspace(-2, 1, 64)  # columns of very different magnitudes
    q, scale = rtn_quantize(weight, 32)
    assert q.dtype == torch.int8 and int(q.min()) >= QMIN and int(q.max()) <= QMAX
    step = scale.double().repeat_interleave(32, dim=1)
    error = (weight.double() - dequantize_groups(q.double(), scale.double(), 32)).abs()
    assert torch.all(error <= step / 2 + 1e-6 * weight.double().abs())  # plus float32 rounding of w / s
    assert float((error / step).max()) > 0.45  # the bound is tight: some weights sit half a step away
    reference = IntxUnpackedToInt8Tensor.from_hp(weight, (1, 32), torch.int4)
    assert torch.equal(reference.qdata, q) and torch.equal(reference.scale, scale)


def test_int4_packing_is_two_values_a_byte_and_lossless():
    q = torch.randint(QMIN, QMAX + 1, (6, 64), dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (6, 32)
    assert torch.equal(unpack_int4(packed), q)


def test_weight_only_int4_has_no_pte_but_a_packed_file(tiny, tmp_path: Path):
    from safetensors.torch import load_file

    qm = quantize(tiny["model"], "int4-rtn", tiny["calib"], dynamic_activations=False)
    with pytest.raises(QDMError, match="only with 8-bit dynamic activations"):
        qm.to_pte()
    size = save_packed(qm.model, tmp_path / "w4.safetensors")
    assert size == (tmp_path / "w4.safetensors").stat().st_size
    stored = load_file(tmp_path / "w4.safetensors")
    head = qm.model.head.weight
    assert stored["head.qweight"].dtype == torch.uint8 and stored["head.qweight"].numel() == head.numel() // 2
    assert torch.equal(unpack_int4(stored["head.qweight"]), head.qdata)
    assert stored["head.scales"].dtype == torch.float16 and "head.weight" not in stored


def _reference_gptq(weight, gram, rows, group_size, damp):
    """GPTQ without its tricks: quantize column j, then update the remaining columns with the explicitly
    inverted Hessian of the remaining columns (the OBS update), one column at a time."""
    W = weight.double().clone()
    n = W.shape[1]
    H = 2.0 * gram / rows
    H = H + damp * torch.mean(torch.diag(H)) * torch.eye(n, dtype=torch.float64)
    Q = torch.zeros_like(W, dtype=torch.int8)
    scale = torch.zeros(W.shape[0], n // group_size, dtype=torch.float64)
    for j in range(n):
        if j % group_size == 0:
            scale[:, j // group_size] = rtn_quantize(W[:, j : j + group_size].float(), group_size)[1][:, 0].double()
        s = scale[:, j // group_size]
        q = torch.clamp(torch.round(W[:, j] / s), QMIN, QMAX)
        Q[:, j] = q.to(torch.int8)
        Hinv = torch.linalg.inv(H[j:, j:])
        W[:, j:] -= ((W[:, j] - q * s) / Hinv[0, 0])[:, None] * Hinv[0][None, :]
    return Q, scale.float()


def test_gptq_equals_the_column_by_column_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 64, generator=gen, dtype=torch.float64) @ torch.randn(64, 64, generator=gen,
                                                                                 dtype=torch.float64)
    weight = torch.randn(12, 64, generator=gen)
    gram = x.T @ x
    # Blocks of 32 columns with groups of 16: exercises the lazy batch updates across blocks and groups.
    q, scale = gptq_quantize(weight, gram, 400, 16, block_size=32, damp=0.01)
    q_ref, scale_ref = _reference_gptq(weight, gram, 400, 16, 0.01)
    assert torch.equal(q, q_ref)
    assert torch.allclose(scale, scale_ref, rtol=1e-6)
    rtn = dequantize_groups(*rtn_quantize(weight, 16), 16)
    assert layer_error(weight, dequantize_groups(q, scale, 16), gram, 400) < layer_error(weight, rtn, gram, 400)
    q_act, scale_act = gptq_quantize(weight, gram, 400, 16, block_size=32, act_order=True)
    assert layer_error(weight, dequantize_groups(q_act, scale_act, 16), gram, 400) < \
        layer_error(weight, rtn, gram, 400)


def test_gptq_and_awq_beat_rtn_on_real_layer_inputs(tiny):
    """Searched on the calibration drawings, measured on held-out test drawings."""
    model = tiny["model"]
    layers = {"head": model.head}
    calib = collect_input_stats(model, layers, tiny["calib"])["head"]
    held_out = collect_input_stats(model, layers, tiny["test"])["head"]
    weight = weight_matrix(model.head)
    rtn = dequantize_groups(*rtn_quantize(weight, 32), 32)
    gptq = dequantize_groups(*gptq_quantize(weight, calib.gram, calib.rows, 32), 32)
    s, alpha, _ = awq_search(weight, calib.gram, calib.rows, calib.abs_mean, 32)
    q, scale = rtn_quantize((weight.double() * s).float(), 32)
    awq = dequantize_groups(q, scale, 32).double() / s
    errors = {name: layer_error(weight, w, held_out.gram, held_out.rows) for name, w in
              (("rtn", rtn), ("gptq", gptq), ("awq", awq))}
    assert alpha > 0
    assert errors["gptq"] < errors["rtn"] and errors["awq"] < errors["rtn"], errors


# ------------------------------------------------------------------------------------------ SmoothQuant
def test_smoothquant_leaves_fp32_outputs_unchanged(tiny):
    vit = create_model("vit_tiny", 3, embed_dim=32, depth=1, num_heads=2, patch_size=7).eval()
    for model in (copy.deepcopy(tiny["model"]), vit):
        stats = collect_input_stats(model, smoothable_layers(model), tiny["calib"], gram=False)
        before = model(tiny["test"]).detach()
        weights = {name: weight_matrix(m).clone() for name, m in smoothable_layers(model).items()}
        placement = smooth(model, stats, 0.5, tiny["calib"][:16])
        after = model(tiny["test"]).detach()
        assert (after - before).abs().max() <= 1e-5 * max(1.0, float(before.abs().max()))
        assert set(placement) == set(weights)
        moved = [name for name, w in weights.items() if not torch.allclose(weight_matrix(
            model.get_submodule(name if placement[name].startswith("folded") else f"{name}.layer")), w)]
        assert moved == list(weights)  # every layer's weights changed: the transform did something
    assert placement["blocks.0.attn.qkv"] == "folded into blocks.0.norm1"
    assert placement["blocks.0.mlp.fc1"] == "folded into blocks.0.norm2"
    assert placement["blocks.0.mlp.fc2"] == "ScaledInput"  # after GELU: nothing to fold into


def test_smoothquant_searches_the_scope_on_a_vit(tiny):
    """A ViT has both scopes: every Linear, or only qkv and fc1 (fed by a LayerNorm, where 1/s folds for free)."""
    vit = create_model("vit_tiny", 3, embed_dim=32, depth=1, num_heads=2, patch_size=7).eval()
    assert scope_layers(vit, "after-norm", tiny["calib"][:16]) == ["blocks.0.attn.qkv", "blocks.0.mlp.fc1"]
    sq = quantize(vit, "int8-smoothquant", tiny["calib"], alphas=(0.5,), search_drawings=64)
    assert set(sq.notes["logit_mse"]) == {"all", "after-norm"}
    best = min(sq.notes["logit_mse"], key=lambda scope: sq.notes["logit_mse"][scope][0.5])
    assert sq.notes["scope"] == best
    assert sq.notes["smoothed_layers"] == (2 if best == "after-norm" else len(smoothable_layers(vit)))
    with pytest.raises(QDMError, match="scopes"):
        quantize(vit, "int8-smoothquant", tiny["calib"], scopes=("first",))


@pytest.fixture(scope="module")
def outlier_model(tiny):
    """The tiny model with one huge input channel at its head (an exact FP32 equivalent): the activation outlier
    that breaks per-tensor INT8 and that SmoothQuant and mixed precision exist for."""
    model = copy.deepcopy(tiny["model"])
    s = torch.ones(model.head.in_features, dtype=torch.float64)
    s[0] = 1e-3
    scale_inputs(model, {"head": s}, tiny["calib"][:16])
    return model


def test_smoothquant_beats_ptq_on_activation_outliers(tiny, outlier_model):
    x, y = tiny["test"], tiny["test_labels"]
    fp32 = outlier_model(x).detach()
    ptq = quantize(outlier_model, "int8-ptq", tiny["calib"])
    sq = quantize(outlier_model, "int8-smoothquant", tiny["calib"], **FAST["int8-smoothquant"])
    error = {name: float(((m.logits(x) - fp32) ** 2).mean()) for name, m in (("ptq", ptq), ("sq", sq))}
    assert error["sq"] < error["ptq"] / 4, error
    assert _top1(sq.logits(x), y) >= _top1(ptq.logits(x), y)
    assert sq.notes["alpha"] in FAST["int8-smoothquant"]["alphas"]


def test_mixed_precision_keeps_the_sensitive_layer_float(tiny, outlier_model):
    mixed = quantize(outlier_model, "int8-mixed", tiny["calib"], labels=tiny["calib_labels"], max_drop=0.0,
                     **FAST["int8-mixed"])
    notes = mixed.notes
    assert notes["all_int8_drop"] > 0 and notes["drop"] <= 0.0
    assert notes["kept_float"][0] == "head.layer"  # the layer whose input carries the outlier
    assert max(notes["sensitivity"], key=lambda n: notes["sensitivity"][n]["logit_mse"]) == "head.layer"
    assert "head.layer" in notes["float_layers"]


# -------------------------------------------------------------------------------- every method deploys
@pytest.mark.parametrize("method", METHODS)
def test_every_method_deploys_as_a_pte_that_runs(method, tiny, tmp_path: Path):
    x, y = tiny["test"], tiny["test_labels"]
    fp32_top1 = _top1(tiny["model"](x).detach(), y)
    qm = quantize(tiny["model"], method, tiny["calib"], labels=tiny["calib_labels"], train=tiny["train"],
                  **FAST.get(method, {}))
    assert qm.method == method and qm.bits == get_method(method).bits
    eager = qm.logits(x)
    metadata = save_pte(qm, tmp_path / f"{method}.pte", tiny["labels"])
    artifact = load_artifact(tmp_path / f"{method}.pte")
    assert metadata["artifact"]["method"] == method and artifact.size_bytes == metadata["artifact"]["bytes"] > 0
    assert artifact.quant == {32: "none", 8: "int8", 4: "int4"}[qm.bits]
    exported = artifact.run(x)
    assert exported.shape == (len(x), len(CLASSES))
    # The .pte computes what the eager quantized model computes (XNNPACK kernels round a little differently).
    assert _top1(exported, eager.argmax(1)) >= 0.97
    assert _top1(exported, y) >= fp32_top1 - 0.08  # 3 classes, ~120 drawings: a few drawings of slack
    assert not metadata["export"]["not_delegated_ops"]  # the whole CNN runs in XNNPACK
    if method.startswith("int4"):
        assert metadata["export"]["notes"]["int4_layers"] and any(
            "choose_qparams_affine" in op for op in metadata["export"]["delegated_ops"])  # 8-bit dynamic acts
    if method == "int8-qat":  # quantization-aware training ran its schedule and converted to real INT8
        assert qm.notes["freeze_bn_step"] < qm.notes["freeze_observers_step"] < 30
        assert any("quantize_per_tensor" in op for op in metadata["export"]["delegated_ops"])
    if method == "pruned":
        assert qm.notes["params_after"] < qm.notes["params_before"]


# --------------------------------------------------------------------------------------- the comparison
def test_comparison_writes_one_measured_row_per_method(tiny, tmp_path: Path):
    rows = compare(tiny["run"], ["fp32", "int4-gptq"], tmp_path, data_dir=tiny["store"], calib=96, runs=5)
    assert [r["method"] for r in rows] == ["fp32", "int4-gptq"]
    written = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["method"] for r in written] == ["fp32", "int4-gptq"]
    for row in written:
        assert {"method", "bits", "top1", "top5", "size_bytes", "latency_ms_p50", "peak_mem_mb",
                "artifact"} <= set(row)
        assert 0 <= row["top1"] <= row["top5"] <= 100 and row["latency_ms_p50"] > 0 and row["peak_mem_mb"] > 0
        assert row["size_bytes"] == (tmp_path / row["artifact"]).stat().st_size
    assert written[0]["delta_top1"] == 0 and written[1]["bits"] == 4
    assert written[1]["notes"]["int4_layers"] == ["head"]
    table = (tmp_path / "comparison.md").read_text()
    assert "| int4-gptq | 4 |" in table and "training split, 96 class-balanced drawings" in table
    for name in ("accuracy_vs_size.png", "accuracy_vs_latency.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparison_of_fine_tuning_methods_needs_the_data(tiny, tmp_path: Path):
    with pytest.raises(QDMError, match="--data: required for int8-qat"):
        compare(tiny["run"], ["fp32", "int8-qat"], tmp_path)
    assert not (tmp_path / "comparison.json").exists()


def test_quantize_cli_rejects_bad_methods_and_options_before_any_work(tiny, tmp_path: Path, capsys):
    assert parse_options(["int8-qat.steps=500", "int8-smoothquant.alphas=[0.5, 0.8]"]) == {
        "int8-qat": {"steps": 500}, "int8-smoothquant": {"alphas": (0.5, 0.8)}}
    base = ["quantize", "--model", str(tiny["run"]), "--data", str(tiny["store"]), "--out", str(tmp_path / "q")]
    assert qdm([*base, "--methods", "fp32,int8-ptqq"]) == 2
    assert "unknown quantization method 'int8-ptqq' (did you mean 'int8-ptq'?)" in capsys.readouterr().err
    assert qdm([*base, "--methods", "fp32,int4-rtn", "--set", "int4-rtn.group=64"]) == 2
    assert "method 'int4-rtn' has no option 'group'" in capsys.readouterr().err
    assert qdm([*base, "--set", "steps=5"]) == 2
    assert "expected METHOD.OPTION=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_qat_of_a_vit_with_stochastic_depth_deploys(tiny, tmp_path: Path):
    """timm's DropPath traced in train mode is a bernoulli op that no ExecuTorch backend runs: QAT must drop it."""
    torch.manual_seed(0)
    vit = create_model("vit_tiny", len(CLASSES), embed_dim=48, depth=2, num_heads=3, drop_path=0.1).eval()
    qm = quantize(vit, "int8-qat", tiny["calib"][:32], labels=tiny["calib_labels"][:32], train=tiny["train"],
                  steps=2, batch_size=8)
    metadata = save_pte(qm, tmp_path / "vit_qat.pte", tiny["labels"])
    assert not any("bernoulli" in op for op in metadata["export"]["not_delegated_ops"])
    exported = load_artifact(tmp_path / "vit_qat.pte").run(tiny["test"][:8])
    assert _top1(exported, qm.logits(tiny["test"][:8]).argmax(1)) >= 0.75


def test_qat_training_graph_has_no_dropout_left(tiny):
    """torchao's move_exported_model_to_train turns every dropout of a graph, p=0 ones included, into p=0.5:
    QAT removes dropout first, so a ViT (no batch norm) computes the same in the QAT graph's train and eval mode."""
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_eval

    torch.manual_seed(0)
    vit = create_model("vit_tiny", len(CLASSES), embed_dim=48, depth=2, num_heads=3).eval()
    assert any(isinstance(m, torch.nn.Dropout) for m in vit.modules())  # timm's p=0 dropouts
    graph = qat_graph(vit, PT2EConfig(), tiny["calib"][:32])
    graph.apply(disable_observer)  # the two passes must see the same quantization ranges
    x = tiny["test"][:16]
    with torch.no_grad():
        train_mode = graph(x)
        eval_mode = move_exported_model_to_eval(graph)(x)
    assert torch.equal(train_mode, eval_mode)
