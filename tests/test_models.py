"""Model registry, every registered architecture (forward, torch.export), and the MAC/parameter counters."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import SMALL_MODEL_OPTIONS
from torch import nn

from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.models import (
    count_macs,
    count_params,
    count_train_macs,
    create_model,
    describe,
    list_models,
    model_options,
)
from quickdraw_mobile.models.cnn import CNN, ResidualBlock
from quickdraw_mobile.models.registry import register_model

REQUIRED = {"cnn", "sketchcnn", "vit_tiny", "vit_tiny_224", "mobilevit", "mobilenetv3"}
NUM_CLASSES = 52

def small_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, NUM_CLASSES, **SMALL_MODEL_OPTIONS.get(name, {}))


def drawing_batch(n: int) -> torch.Tensor:
    """Input in the documented range: background -1, ink up to +1."""
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n)) * 2 - 1


# ---------------------------------------------------------------- registry


def test_list_models_has_the_required_families():
    names = list_models()
    assert set(names) >= REQUIRED
    assert names == sorted(names)


def test_unknown_model_names_the_choices_and_suggests():
    with pytest.raises(
        QDMError, match=r"unknown model 'cnnn' \(did you mean 'cnn'\?\); available: .*mobilevit"
    ):
        create_model("cnnn", 10)


def test_unknown_option_is_named_with_a_suggestion():
    with pytest.raises(
        QDMError, match=r"model 'cnn' has no option 'widht' \(did you mean 'width'\?\); options: width"
    ):
        create_model("cnn", 10, widht=16)
    with pytest.raises(QDMError, match=r"model 'mobilenetv3' has no option 'depth'"):
        create_model("mobilenetv3", 10, depth=3)


@pytest.mark.parametrize(
    ("name", "options", "field"),
    [
        ("cnn", dict(width=0), "width"),
        ("cnn", dict(blocks=(1,)), "blocks"),
        ("cnn", dict(dropout=1.5), "dropout"),
        ("cnn", dict(pool="max"), "pool"),
        ("vit_tiny", dict(embed_dim=50, num_heads=3), "embed_dim"),
        ("vit_tiny", dict(patch_size=5), "patch_size"),
        ("sketchcnn", dict(hidden=-1), "hidden"),
    ],
)
def test_bad_option_values_raise_one_line_errors(name, options, field):
    with pytest.raises(QDMError, match=f"model option {field}: expected") as info:
        create_model(name, 10, **options)
    assert "\n" not in str(info.value)


def test_bad_num_classes():
    with pytest.raises(QDMError, match="num_classes: expected a positive integer"):
        create_model("cnn", 0)


def test_model_options_lists_defaults():
    assert model_options("cnn") == {"width": 32, "blocks": (2, 2), "dropout": 0.1, "pool": "avg", "cosine_classes": 0,
                                    "wide_classes": 0}


def test_register_model_rejects_duplicates_and_hidden_options():
    def cnn(num_classes: int) -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="registered twice"):
        register_model(cnn)

    def loose_model(num_classes: int, **options) -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="explicit keyword parameters"):
        register_model(loose_model)
    assert "loose_model" not in list_models()


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = create_model("cnn_small", 5).state_dict()
    torch.manual_seed(3)
    b = create_model("cnn_small", 5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- every model


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_gradients(name):
    model = small_model(name)
    x = drawing_batch(3)
    model.train()
    logits = model(x)
    assert logits.shape == (3, NUM_CLASSES)
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, NUM_CLASSES) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_torch_export_matches_eager(name):
    model = small_model(name).eval()
    program = torch.export.export(model, (torch.randn(1, 1, 28, 28),))
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("scaled_dot_product" in op for op in ops), ops
    x = drawing_batch(1)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vit_tiny", "vit_tiny_224", "mobilevit"])
def test_fused_attention_is_off(name):
    flags = [m.fused_attn for m in small_model(name).modules() if hasattr(m, "fused_attn")]
    assert flags and not any(flags)


@pytest.mark.parametrize("name", list_models())
def test_no_batchnorm_starts_at_zero_weight(name):
    """A zero BN weight gives a zero activation range, hence a NaN scale, when quantization-aware training starts."""
    bns = [m for m in small_model(name).modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((bn.weight != 0).all() for bn in bns)


# ---------------------------------------------------------------- architecture claims


def cnn_param_formula(num_classes: int, width: int, blocks: tuple[int, int]) -> int:
    """Parameters of ``cnn`` as its docstring describes it (3x3 convs without bias, BN weight + bias)."""
    conv_bn = lambda i, o: 9 * i * o + 2 * o  # noqa: E731
    total = conv_bn(1, width)
    in_chs = width
    for i, n in enumerate(blocks):
        out_chs = width * 2 ** (i + 1)
        total += conv_bn(in_chs, out_chs) + n * 2 * conv_bn(out_chs, out_chs)
        in_chs = out_chs
    return total + in_chs * num_classes + num_classes


@pytest.mark.parametrize(("width", "blocks"), [(32, (2, 2)), (16, (0, 3))])
def test_cnn_parameters_follow_the_documented_layout(width, blocks):
    model = create_model("cnn", NUM_CLASSES, width=width, blocks=blocks)
    assert count_params(model) == cnn_param_formula(NUM_CLASSES, width, blocks)


def test_default_cnn_budget_and_resolutions():
    model = create_model("cnn", NUM_CLASSES).eval()
    assert count_params(model) <= 1_500_000
    maps = []
    for stage in model.stages:
        stage.register_forward_hook(lambda _m, _i, out: maps.append(tuple(out.shape[1:])))
    model(drawing_batch(1))
    assert maps == [(64, 14, 14), (128, 7, 7)]


@pytest.mark.parametrize("pool", ["avg", "learned"])
def test_cnn_uses_only_int8_friendly_modules(pool):
    allowed = (CNN, ResidualBlock, nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d)
    allowed += (nn.Dropout, nn.Linear)
    model = create_model("cnn", NUM_CLASSES, pool=pool)
    assert all(isinstance(m, allowed) for m in model.modules())
    # every conv feeds a BN (foldable), so it has no bias of its own
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_cnn_learned_pool_starts_as_the_average_and_adds_one_weight_per_channel_and_position():
    avg, learned = create_model("cnn", NUM_CLASSES), create_model("cnn", NUM_CLASSES, pool="learned").eval()
    chs = 128
    assert count_params(learned) - count_params(avg) == chs * 7 * 7 + 2 * chs  # depthwise 7x7 + its BN
    assert count_macs(learned) - count_macs(avg) == chs * 7 * 7
    features = learned.stages(learned.stem(drawing_batch(3)))
    pooled = learned.pool[0](features).flatten(1)  # the conv before its (still identity) BN
    assert torch.allclose(pooled, features.mean((2, 3)), atol=1e-5)
    assert learned(drawing_batch(3)).shape == (3, NUM_CLASSES)


def test_vit_tiny_parameter_count():
    d, depth, patch, tokens, c = 192, 12, 4, 49 + 1, NUM_CLASSES
    per_block = 12 * d * d + 13 * d  # qkv, proj, mlp 4x (weights + biases) and two LayerNorms
    expected = (patch * patch * d + d) + d + tokens * d + depth * per_block + 2 * d + d * c + c
    assert count_params(create_model("vit_tiny", c)) == expected
    # the 224 variant differs only in its 16x16 patch embedding and 197 position embeddings
    expected_224 = expected - (patch * patch * d + tokens * d) + (16 * 16 * d + 197 * d)
    assert count_params(create_model("vit_tiny_224", c)) == expected_224


def test_sketchcnn_parameter_count():
    convs = 9 * (1 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 256 * 256)
    bns = 2 * 2 * (64 + 128 + 256)
    head = (4096 * 256 + 256) + (256 * NUM_CLASSES + NUM_CLASSES)
    assert count_params(create_model("sketchcnn", NUM_CLASSES)) == convs + bns + head


@pytest.mark.parametrize(
    ("name", "timm_name", "input_size", "feature_map"),
    [
        ("mobilevit", "mobilevit_xxs", 32, (320, 2, 2)),
        ("mobilenetv3", "mobilenetv3_small_100", 28, (576, 4, 4)),
    ],
)
def test_timm_models_keep_timm_parameters_with_documented_strides(name, timm_name, input_size, feature_map):
    ours = create_model(name, NUM_CLASSES).eval()
    stock = timm.create_model(timm_name, pretrained=False, in_chans=1, num_classes=NUM_CLASSES)
    assert count_params(ours) == count_params(stock)
    net = ours.model if name == "mobilevit" else ours
    with torch.no_grad():
        features = net.forward_features(torch.zeros(1, 1, input_size, input_size))
    assert tuple(features.shape[1:]) == feature_map


def test_mobilevit_pads_with_background():
    model = create_model("mobilevit", NUM_CLASSES).eval()
    seen = []
    model.model.stem.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0]))
    with torch.no_grad():
        model(torch.ones(1, 1, 28, 28))
    padded = seen[0]
    assert padded.shape == (1, 1, 32, 32)
    assert (
        (padded[..., 2:30, 2:30] == 1).all()
        and padded[..., :2, :].eq(-1).all()
        and padded[..., :, 30:].eq(-1).all()
    )


# ---------------------------------------------------------------- profile


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)  # 28x28 out
        self.down = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)  # 14x14 out
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        x = F.relu(self.down(F.relu(self.conv(x))))
        q = x.flatten(2)  # (B, 8, 196)
        x = x + (q @ q.transpose(1, 2) @ q).view_as(x)  # an 8x196x8 and an 8x8x196 matmul
        return self.fc(x.flatten(1))


def test_count_macs_and_params_by_hand():
    model = TinyNet().train()
    conv = 4 * 1 * 9 * 28 * 28
    down = 8 * 4 * 9 * 14 * 14
    matmuls = 8 * 196 * 8 + 8 * 8 * 196
    fc = 8 * 14 * 14 * 10
    assert count_macs(model) == conv + down + matmuls + fc
    assert model.training  # the count switches to eval and back
    assert count_params(model) == (4 * 9 + 4) + 8 * 4 * 9 + (8 * 14 * 14 * 10 + 10)
    info = describe(model)
    assert info["params"] == count_params(model)
    assert info["macs"] == conv + down + matmuls + fc
    assert info["size_mb"] == pytest.approx(info["params"] * 4 / 1e6)


def test_count_train_macs_by_hand():
    hidden, classes = 16, 5
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                          nn.Linear(hidden, classes)).eval()
    first, last = 784 * hidden, hidden * classes
    # forward: both layers; backward: both weight gradients, and the input gradient of the last layer only
    assert count_train_macs(model, batch=3) == 2 * first + 3 * last
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    bn = model[2]  # the train-mode forward's update of the running statistics is undone
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_var, torch.ones(hidden))


def test_count_macs_for_the_cnn_by_hand():
    width, c = 8, 7
    model = create_model("cnn", c, width=width, blocks=(1, 1))
    expected = 9 * 1 * width * 28 * 28
    expected += 9 * width * 2 * width * 14 * 14 + 2 * 9 * (2 * width) ** 2 * 14 * 14
    expected += 9 * 2 * width * 4 * width * 7 * 7 + 2 * 9 * (4 * width) ** 2 * 7 * 7
    expected += 4 * width * c
    assert count_macs(model) == expected
