"""``mobilenetv3``: MobileNetV3-Small 1.0 from timm (``mobilenetv3_small_100``), one input channel, at 28x28.

The network is built for 224x224 with output stride 32 (stem and four stages at stride 2), ending at 7x7. At 28x28
it would end at 1x1, with most blocks on 2x2 and 1x1 maps. Measured for one input (MACs,
``models.profile.count_macs``):

    timm as is                                 2.1 M MACs   stage maps 7 4 2 2 1 1
    stem stride 1                              5.0 M MACs   stage maps 14 7 4 4 2 2
    stem and first block stride 1  <--        14.7 M MACs   stage maps 28 14 7 7 4 4

We use the last (output stride 8): the last blocks see a 4x4 map, not 1x1, as the original's see 7x7 at 224x224,
and the cost stays below the default ``cnn``. Only strides change, so the parameter count is timm's.
"""

from __future__ import annotations

from torch import nn

from .registry import register_model
from .timm_models import create_timm, set_stride_one


@register_model
def mobilenetv3(num_classes: int, dropout: float = 0.2, drop_path: float = 0.0) -> nn.Module:
    """MobileNetV3-Small 1.0 with output stride 8 (stride-1 stem and first block)."""
    model = create_timm("mobilenetv3_small_100", num_classes, dropout, drop_path)
    set_stride_one(model.conv_stem)
    set_stride_one(model.blocks[0][0].conv_dw)
    return model
