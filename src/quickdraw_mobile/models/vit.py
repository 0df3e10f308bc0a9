"""``vit_tiny`` and ``vit_tiny_224``: ViT-Tiny (width 192, depth 12, 3 heads) from timm, trained from scratch.

- ``vit_tiny`` works at the native 28x28 with 4x4 patches: 49 tokens + a class token. Cheap enough for a CPU.
- ``vit_tiny_224`` is timm's ``vit_tiny_patch16_224`` configuration (16x16 patches, 196 tokens) fed by a
  nearest-neighbour 8x upsampling of the 28x28 input inside the model; about 4x the MACs, meant for a GPU.

Weights are never downloaded (``pretrained=False``). timm's fused attention (``F.scaled_dot_product_attention``)
is switched off on every attention module after construction, so the exported graph holds plain matmul + softmax,
which every backend and quantizer understands. timm is imported inside the constructors: importing this package
stays fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import QDMError
from .registry import check_fraction, check_positive, register_model
from .timm_models import create_timm


def disable_fused_attention(model: nn.Module) -> nn.Module:
    """Make every timm attention module use the explicit ``softmax(q @ k^T) @ v`` path.

    timm decides ``fused_attn`` per module when it is built (from ``TIMM_FUSED_ATTN`` read at import time); setting
    the attribute per module keeps the choice local to our models instead of changing timm's global state."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return model


def _check_vit_options(embed_dim: int, depth: int, num_heads: int, dropout: float, drop_path: float) -> None:
    for name, value in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads)):
        check_positive(name, value)
    if embed_dim % num_heads:
        raise QDMError(
            f"model option embed_dim: expected a multiple of num_heads={num_heads}, got {embed_dim}"
        )
    check_fraction("dropout", dropout)
    check_fraction("drop_path", drop_path)


@register_model
def vit_tiny(
    num_classes: int,
    embed_dim: int = 192,
    depth: int = 12,
    num_heads: int = 3,
    patch_size: int = 4,
    dropout: float = 0.0,
    drop_path: float = 0.1,
) -> nn.Module:
    """ViT-Tiny on 28x28 with 4x4 patches (49 tokens); ``drop_path`` is stochastic depth, as in DeiT-Tiny."""
    from timm.models.vision_transformer import VisionTransformer

    _check_vit_options(embed_dim, depth, num_heads, dropout, drop_path)
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1 or 28 % patch_size:
        raise QDMError(f"model option patch_size: expected a divisor of 28 (2, 4, 7, 14), got {patch_size!r}")
    model = VisionTransformer(
        img_size=28,
        patch_size=patch_size,
        in_chans=1,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        drop_rate=dropout,
        drop_path_rate=drop_path,
    )
    return disable_fused_attention(model)


class Upsampled(nn.Module):
    """Nearest-neighbour upsampling of the input by an integer factor, then ``model``."""

    def __init__(self, model: nn.Module, scale: int):
        super().__init__()
        self.scale = scale
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


@register_model
def vit_tiny_224(
    num_classes: int, depth: int = 12, dropout: float = 0.0, drop_path: float = 0.1
) -> nn.Module:
    """timm ``vit_tiny_patch16_224`` (one input channel), fed 28x28 input upsampled 8x to 224x224."""
    _check_vit_options(192, depth, 3, dropout, drop_path)
    vit = create_timm("vit_tiny_patch16_224", num_classes, dropout, drop_path, depth=depth)
    return Upsampled(disable_fused_attention(vit), scale=8)
