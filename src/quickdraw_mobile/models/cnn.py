"""``cnn``: the default model, a small residual CNN built for fast CPU inference and clean INT8 quantization.

Layout at 28x28 input, ``width`` = w (default 32):

    stem     3x3 conv 1 -> w                  28x28   (one cheap conv: full resolution only where channels are few)
    stage 1  3x3 conv stride 2, w -> 2w       14x14   + ``blocks[0]`` residual blocks of two 3x3 convs
    stage 2  3x3 conv stride 2, 2w -> 4w       7x7    + ``blocks[1]`` residual blocks
    head     pool 7x7 -> 1x1 -> dropout -> linear 4w -> num_classes
             ``pool="avg"``: global average; ``pool="learned"``: a 7x7 depthwise conv + BN (one weight per channel
             and position, started as the average): where a stroke sits in the frame can count, as the official
             bitmaps are all framed the same way
    cosine   ``cosine_classes`` = n > 0 (what ``qdm extend --method prototype`` writes): the last n of the
             ``num_classes`` logits come from a second linear layer on the centred (``feature_mean``),
             L2-normalised pooled features (a cosine classifier whose scale and offset are folded into its weights
             and bias); the first ``num_classes - n`` from ``head`` as before. ``features(x)`` is the pooled (4w)-d vector both read,
             ``classify(features)`` the logits of it.
    wide     ``wide_classes`` = n > 0 (what ``qdm extend --method probe --features multiscale`` writes): the last n
             logits come from a linear layer (``wide_head``) on the multi-scale features of the same frozen layers
             (``multiscale_features``): stage 1's output pooled globally (average and max), the pooled features,
             stage 2's output max-pooled and stage 1's output averaged on a 2x2 grid (20w-d), each block scaled to
             unit length and averaged with those of the drawing mirrored (both as one batch: twice the MACs), the whole
             times a fixed ``multiscale_scale``; the first ``num_classes - n`` from ``head`` (and ``cosine_head``) as before.
             ``features(x)`` stays the pooled (4w)-d vector; ``logits_and_features(x)`` gives the logits with it
             from one pass (``classify(features)`` alone cannot compute the wide logits).

Why it looks like this:
- Only Conv-BN-ReLU, residual add, average pool and linear: every op has an XNNPACK INT8 kernel, each BN folds
  into its conv, and ReLU fuses into it. No GELU/SiLU/hard-swish, no squeeze-excite, no attention.
- Most of the compute sits at 14x14 and 7x7, where channels are wide but positions few; a 28x28 map with many
  channels would dominate the MACs without helping a 28x28 line drawing much.
- The last BN of each residual branch starts at weight 1, not 0 (the "zero-init" trick): a zero BN weight gives a
  zero range, hence a NaN quantization scale, at the start of quantization-aware training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import QDMError
from .registry import check_fraction, check_positive, register_model


def conv_bn(in_chs: int, out_chs: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """3x3 convolution (no bias: BN follows) + BatchNorm (+ ReLU)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_chs),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 Conv-BN with an identity shortcut (ResNet "basic block")."""

    def __init__(self, chs: int):
        super().__init__()
        self.conv1 = conv_bn(chs, chs)
        self.conv2 = conv_bn(chs, chs, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.conv2(self.conv1(x)))


def multiscale_width(width: int) -> int:
    """Length of ``multiscale``: stage 1 (2w) twice, the pooled features (4w), stage 2 (4w) and stage 1 on a 2x2
    grid (4 * 2w)."""
    return 2 * (2 * width) + 2 * (4 * width) + 4 * (2 * width)


INPUT_SIDE = 28
FINAL_SIZE = 7  # 28x28 after two stride-2 stages
POOLS = ("avg", "learned")


def learned_pool(chs: int, size: int) -> nn.Sequential:
    """Depthwise ``size``x``size`` conv without padding (one output position) + BN, started as the average pool;
    BN folds into the conv on export, so it costs one depthwise conv."""
    conv = nn.Conv2d(chs, chs, size, groups=chs, bias=False)
    nn.init.constant_(conv.weight, 1.0 / size**2)
    return nn.Sequential(conv, nn.BatchNorm2d(chs))


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """x / |x| per row, spelled in elementwise ops (sum, rsqrt, mul) that every export path lowers."""
    return x * torch.rsqrt((x * x).sum(1, keepdim=True).clamp_min(1e-12))


def unit_rows_pooled(x: torch.Tensor) -> torch.Tensor:
    """``unit_rows`` with the sum of squares taken as C times a global average pool of them laid out as a
    (B, 1, C, 1) map: XNNPACK delegates the pool (its INT8 kernels run it), not a sum over a 2-d tensor's rows."""
    squares = (x * x).reshape(-1, 1, x.shape[1], 1)
    mean = F.adaptive_avg_pool2d(squares, 1).flatten(1)
    return x * torch.rsqrt((mean * x.shape[1]).clamp_min(1e-12))


def global_max(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C): one max pool over the whole map (a pooling op XNNPACK and ONNX both have)."""
    return F.max_pool2d(x, kernel_size=tuple(x.shape[-2:])).flatten(1)


def multiscale(early: torch.Tensor, late: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """Stage 1's map pooled (average, max), the pooled features, stage 2's map max-pooled and stage 1's map
    averaged over a 2x2 grid, each block unit length: the earlier layers keep detail, and the grid keeps where it
    sits, that the last pooled vector, tuned to the trained classes, drops."""
    grid = F.avg_pool2d(early, kernel_size=early.shape[-1] // 2).flatten(1)
    blocks = (F.adaptive_avg_pool2d(early, 1).flatten(1), global_max(early), pooled, global_max(late), grid)
    return torch.cat([unit_rows_pooled(block) for block in blocks], dim=1)


def mirror_matrix(side: int) -> torch.Tensor:
    """The (side, side) anti-identity: ``F.linear(x, it)`` mirrors ``x`` left-right as a linear layer, which
    XNNPACK delegates (``aten.flip`` it leaves to the portable kernels)."""
    return torch.eye(side).flip(1)


PAIR_WEIGHTS = {"first": torch.tensor([[1.0, 0.0]]), "mean": torch.tensor([[0.5, 0.5]])}


def pairs(rows: torch.Tensor) -> torch.Tensor:
    """(2B, C) rows, B drawings then the same B mirrored -> (B, C, 2): each drawing's pair, last. Views and a
    transpose, where slicing the batch in two would leave XNNPACK two slice ops it does not take."""
    return rows.reshape(2, -1, rows.shape[1]).permute(1, 2, 0)


class CNN(nn.Module):
    """Stem at 28x28, then one stage per entry of ``blocks`` (stride-2 conv doubling the width + residual blocks)."""

    def __init__(
        self,
        num_classes: int,
        width: int = 32,
        blocks: tuple[int, int] = (2, 2),
        dropout: float = 0.1,
        pool: str = "avg",
        cosine_classes: int = 0,
        wide_classes: int = 0,
    ):
        super().__init__()
        self.stem = conv_bn(1, width)
        stages = []
        in_chs = width
        for i, num_blocks in enumerate(blocks):
            out_chs = width * 2 ** (i + 1)
            stages.append(
                nn.Sequential(
                    conv_bn(in_chs, out_chs, stride=2), *(ResidualBlock(out_chs) for _ in range(num_blocks))
                )
            )
            in_chs = out_chs
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else learned_pool(in_chs, FINAL_SIZE)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(in_chs, num_classes - cosine_classes - wide_classes)
        # made after ``head`` and only when asked: a plain model draws the same initial weights as before
        self.cosine_head = nn.Linear(in_chs, cosine_classes) if cosine_classes else None
        if cosine_classes:  # subtracted before normalising (centred cosine, "CL2N"): ReLU features all point one way
            self.register_buffer("feature_mean", torch.zeros(in_chs))
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.groups == 1:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # after every other draw, and only when asked: the rest of the model starts as a plain one does
        self.wide_head = nn.Linear(multiscale_width(width), wide_classes) if wide_classes else None
        if wide_classes:  # the unit blocks' concatenation rescaled (fitted once by extend) into the pooled range
            self.register_buffer("multiscale_scale", torch.ones(()))
            # a constant of the exported graph (not of the state dict): only a wide model's forward mirrors
            self.register_buffer("mirror", mirror_matrix(INPUT_SIDE), persistent=False)
            for which, weights in PAIR_WEIGHTS.items():
                self.register_buffer(f"pair_{which}", weights.clone(), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features (B, 4w) that the heads read (before dropout)."""
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wide_head is None:
            return self.classify(self.features(x))
        return self.outputs(x)[0]

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the pooled features of ``x`` from one pass."""
        if self.wide_head is None:
            features = self.features(x)
            return self.classify(features), features
        logits, features, _ = self.outputs(x)
        return logits, features

    def multiscale_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 20w): ``multiscale`` of ``x`` and of ``x`` mirrored, averaged (unit blocks; the wide head reads them times
        ``multiscale_scale``)."""
        return self.outputs(x)[2]

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The logits, the pooled features and the multi-scale features (unit blocks, not rescaled) of ``x``
        from one pass over ``x`` and ``x`` mirrored, stacked as one batch (twice the MACs): the pooled features
        and the logits are ``x``'s own, the multi-scale ones the average of both (how a doodle faces says little
        of what it is; the model trained on mirrored copies). One batch, not two passes: XNNPACK's INT8 lowering
        fails on weights that two convolutions share."""
        early, late, pooled_both = self.maps(torch.cat([x, self.mirrored(x)]))
        pooled = F.linear(pairs(pooled_both), self.pair_weights(x, "first")).flatten(1)
        wide = F.linear(pairs(multiscale(early, late, pooled_both)), self.pair_weights(x, "mean")).flatten(1)
        logits = self.classify(pooled)
        if self.wide_head is not None:
            logits = torch.cat([logits, self.wide_head(wide * self.multiscale_scale)], dim=1)
        return logits, pooled, wide

    def mirrored(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` mirrored left-right: each pixel row times the anti-identity, as a linear layer on (B * H, W)
        rows."""
        mirror = self.mirror if self.wide_head is not None else mirror_matrix(x.shape[-1]).to(x)
        return F.linear(x.reshape(-1, x.shape[-1]), mirror).reshape(x.shape)

    def pair_weights(self, x: torch.Tensor, which: str) -> torch.Tensor:
        """(1, 2) weights on a drawing's pair of rows (itself, mirrored): the first, or the mean."""
        if self.wide_head is not None:
            return getattr(self, f"pair_{which}")
        return PAIR_WEIGHTS[which].to(x)

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1's output, the last stage's and the pooled features of ``x``."""
        early = self.stages[0](self.stem(x))
        late = self.stages[1:](early)
        return early, late, self.pool(late).flatten(1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The logits of pooled ``features`` from ``head`` and ``cosine_head`` (what ``forward`` does after
        ``features`` when there is no ``wide_head``)."""
        logits = self.head(self.dropout(features))
        if self.cosine_head is None:
            return logits
        return torch.cat([logits, self.cosine_head(unit_rows(features - self.feature_mean))], dim=1)


def _build(
    num_classes: int, width: int, blocks: tuple[int, ...] | list[int], dropout: float, pool: str,
    cosine_classes: int = 0, wide_classes: int = 0,
) -> CNN:
    check_positive("width", width)
    if (
        not isinstance(blocks, tuple | list)
        or len(blocks) != 2
        or any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in blocks)
    ):
        raise QDMError(
            f"model option blocks: expected two non-negative integers (14x14 and 7x7 stages), got {blocks!r}"
        )
    check_fraction("dropout", dropout)
    if pool not in POOLS:
        raise QDMError(f"model option pool: expected one of {', '.join(POOLS)}, got {pool!r}")
    if isinstance(cosine_classes, bool) or not isinstance(cosine_classes, int) or \
            not 0 <= cosine_classes < num_classes:
        raise QDMError(f"model option cosine_classes: expected an integer in 0..{num_classes - 1}, "
                       f"got {cosine_classes!r}")
    if isinstance(wide_classes, bool) or not isinstance(wide_classes, int) or \
            not 0 <= wide_classes < num_classes - cosine_classes:
        raise QDMError(f"model option wide_classes: expected an integer in 0..{num_classes - cosine_classes - 1}, "
                       f"got {wide_classes!r}")
    return CNN(num_classes, width=width, blocks=tuple(blocks), dropout=dropout, pool=pool,
               cosine_classes=cosine_classes, wide_classes=wide_classes)


@register_model
def cnn(
    num_classes: int,
    width: int = 32,
    blocks: tuple[int, int] = (2, 2),
    dropout: float = 0.1,
    pool: str = "avg",
    cosine_classes: int = 0,
    wide_classes: int = 0,
) -> CNN:
    """The default: width 32 (channels 32/64/128), two residual blocks at 14x14 and two at 7x7."""
    return _build(num_classes, width, blocks, dropout, pool, cosine_classes, wide_classes)


@register_model
def cnn_small(
    num_classes: int,
    width: int = 32,
    blocks: tuple[int, int] = (1, 1),
    dropout: float = 0.1,
    pool: str = "avg",
    cosine_classes: int = 0,
    wide_classes: int = 0,
) -> CNN:
    """Half the blocks of ``cnn``: about half the parameters and MACs, for the fastest phones and quick runs."""
    return _build(num_classes, width, blocks, dropout, pool, cosine_classes, wide_classes)
