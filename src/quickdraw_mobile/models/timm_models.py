"""Building timm architectures the project's way: one input channel, fresh weights (never from a hub)."""

from __future__ import annotations

from torch import nn

from .registry import check_fraction


def create_timm(name: str, num_classes: int, dropout: float, drop_path: float, **options: object) -> nn.Module:
    """``timm.create_model(name)`` for 1-channel input with the given head size, dropout and stochastic depth."""
    import timm  # imported here: listing or building the CNNs never pays for importing timm

    check_fraction("dropout", dropout)
    check_fraction("drop_path", drop_path)
    return timm.create_model(name, pretrained=False, in_chans=1, num_classes=num_classes, drop_rate=dropout,
                             drop_path_rate=drop_path, **options)


def set_stride_one(conv: nn.Module) -> None:
    """Turn a 3x3, padding-1, stride-2 convolution into a stride-1 one (same weights, same padding)."""
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.padding == (1, 1)):
        raise RuntimeError(f"expected a 3x3 nn.Conv2d with padding 1 to change its stride, got {conv!r}")
    conv.stride = (1, 1)
