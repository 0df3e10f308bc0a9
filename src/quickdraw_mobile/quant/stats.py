"""What the calibration drawings look like at the input of each layer: the statistics the methods search on.

One pass of forward hooks gathers, per layer, the Gram matrix ``X^T X`` of its inputs (GPTQ's Hessian is
``2 X^T X``; AWQ's output error is a quadratic form in it) and per input channel the mean and max of ``|x|``
(AWQ's and SmoothQuant's scales). A Linear's input rows are its tokens; a 1x1 convolution's are its pixels.
Nothing but these d x d and d-sized sums is kept, so memory does not grow with the calibration set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

CALIB_BATCH = 128


@dataclass
class InputStats:
    rows: int
    gram: torch.Tensor | None  # (d, d) float64: sum of x x^T over input rows
    abs_sum: torch.Tensor  # (d,) float64: sum of |x|
    abs_max: torch.Tensor  # (d,) float32: max of |x|

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.rows, 1)


def spread(n: int, total: int) -> torch.Tensor:
    """Indices of ``min(n, total)`` items spread evenly over ``total``: a calibration set comes sorted by class,
    so its first ``n`` drawings would be a few classes only."""
    return torch.linspace(0, total - 1, min(n, total)).round().long().unique()


def is_pointwise_conv(module: nn.Module) -> bool:
    """A 1x1 convolution without groups: a Linear applied at every pixel."""
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1
            and module.stride == (1, 1) and module.padding in ((0, 0), "valid"))


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as (rows, in_features): tokens of a Linear, pixels of a 1x1 convolution."""
    if isinstance(module, nn.Conv2d):
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    return x.reshape(-1, x.shape[-1])


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as (out_features, in_features) (a 1x1 convolution's (out, in, 1, 1) flattened)."""
    return module.weight.detach().reshape(module.weight.shape[0], -1)


@torch.no_grad()
def collect_input_stats(model: nn.Module, layers: dict[str, nn.Module], calib: torch.Tensor, *,
                        gram: bool = True, desc: str = "calibration statistics") -> dict[str, InputStats]:
    """Run ``calib`` through ``model`` once and return the input statistics of each named layer."""
    stats: dict[str, InputStats] = {}

    def hook(name: str):
        def record(module: nn.Module, args: tuple, _output) -> None:
            rows = input_rows(module, args[0].detach()).float()
            s = stats.get(name)
            if s is None:
                d = rows.shape[1]
                s = stats[name] = InputStats(0, torch.zeros(d, d, dtype=torch.float64) if gram else None,
                                             torch.zeros(d, dtype=torch.float64), torch.zeros(d))
            s.rows += rows.shape[0]
            if gram:
                s.gram += (rows.T @ rows).double()
            s.abs_sum += rows.abs().sum(0).double()
            torch.maximum(s.abs_max, rows.abs().amax(0), out=s.abs_max)
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(calib), CALIB_BATCH), desc=desc, unit="batch", dynamic_ncols=True):
            model(calib[start : start + CALIB_BATCH])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    missing = [name for name in layers if name not in stats]
    if missing:
        raise RuntimeError(f"layers never ran during calibration: {', '.join(missing)}")
    return stats
