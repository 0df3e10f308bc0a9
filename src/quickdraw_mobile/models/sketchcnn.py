"""``sketchcnn``: the QuickSketch design, a plain VGG-style baseline.

Three stages of two Conv-BN-LeakyReLU (64 -> 128 -> 256 channels at width 64), max-pool after the first two
(28 -> 14 -> 7), adaptive average pool to 4x4, then an MLP head 4096 -> 256 -> classes with dropout. It spends
most of its parameters in the 4096 -> 256 linear layer; ``cnn`` reaches the same job with global pooling instead.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import check_fraction, check_positive, register_model


def conv_bn_lrelu(in_chs: int, out_chs: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.LeakyReLU(0.1, inplace=True),
    ]


class SketchCNN(nn.Module):
    def __init__(self, num_classes: int, width: int = 64, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.features = nn.Sequential(
            *conv_bn_lrelu(1, c1), *conv_bn_lrelu(c1, c1), nn.MaxPool2d(2),  # 28 -> 14
            *conv_bn_lrelu(c1, c2), *conv_bn_lrelu(c2, c2), nn.MaxPool2d(2),  # 14 -> 7
            *conv_bn_lrelu(c2, c3), *conv_bn_lrelu(c3, c3),
            nn.AdaptiveAvgPool2d(4),  # 7 -> 4 (overlapping windows)
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * 4 * 4, hidden),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def sketchcnn(num_classes: int, width: int = 64, hidden: int = 256, dropout: float = 0.5) -> SketchCNN:
    """QuickSketch: channels 64/128/256, Linear 4096 -> 256 -> classes."""
    check_positive("width", width)
    check_positive("hidden", hidden)
    check_fraction("dropout", dropout)
    return SketchCNN(num_classes, width=width, hidden=hidden, dropout=dropout)
