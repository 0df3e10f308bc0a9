"""``mobilevit``: MobileViT-XXS from timm (``mobilevit_xxs``), one input channel, adapted to 28x28.

timm's network has output stride 32 (a stride-2 stem, then four stride-2 stages). At 28x28 it shrinks to
14/14/7/4/2/1: the three MobileViT blocks would see 7x7, 4x4 and 1x1 maps, and at 7x7 and 1x1 timm resamples the
features bilinearly to fit its 2x2 patches. Measured for one input (MACs, ``models.profile.count_macs``):

    timm as is, 28x28                      5.5 M MACs   maps 14 14 7 4 2 1   (resamples inside blocks)
    stem stride 1, 28x28                  18.5 M MACs   maps 28 28 14 7 4 2   (still resamples at 7x7)
    stem stride 1, padded to 32x32  <--   20.6 M MACs   maps 32 32 16 8 4 2   (every map divides into patches)

We use the last: the stem convolution gets stride 1 and the input is padded by 2 pixels of background (-1, the
value of empty paper after normalization) on each side. Padding adds nothing to the drawing and keeps the graph free
of interpolation; the parameter count is timm's unchanged.

``zero_init_last=False``: timm would start the last BN of each residual branch at weight 0, which gives a zero
activation range and hence a NaN scale at the start of quantization-aware training. Fused attention is off
(see ``vit.disable_fused_attention``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .timm_models import create_timm, set_stride_one
from .vit import disable_fused_attention

BACKGROUND = -1.0  # normalized value of an empty pixel


class PaddedMobileViT(nn.Module):
    """Pads the 28x28 input to 32x32 with background, then runs MobileViT."""

    def __init__(self, model: nn.Module, pad: int = 2):
        super().__init__()
        self.pad = pad
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(F.pad(x, (self.pad,) * 4, value=BACKGROUND))


@register_model
def mobilevit(num_classes: int, dropout: float = 0.0, drop_path: float = 0.0) -> nn.Module:
    """MobileViT-XXS with stride-1 stem on 28x28 input padded to 32x32."""
    model = create_timm("mobilevit_xxs", num_classes, dropout, drop_path, zero_init_last=False)
    set_stride_one(model.stem.conv)
    return PaddedMobileViT(disable_fused_attention(model))
