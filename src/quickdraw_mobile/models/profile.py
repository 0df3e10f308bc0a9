"""Size and cost of a model for one 1x28x28 input: parameters, multiply-accumulates (MACs) of inference and of a
training step, fp32 size.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one eager forward pass: the multiply-adds of
convolutions, linear layers and matmuls (FLOPs / 2). Biases, normalization, activations, pooling and adds are not
counted, the usual convention for reporting MACs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

INPUT_SHAPE = (1, 1, 28, 28)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def _counted_macs(model: nn.Module, input_shape: tuple[int, ...], training: bool) -> int:
    """Multiply-accumulates of one pass on a zero input of ``input_shape``: a no-grad forward in eval mode, or with
    ``training`` a forward and backward in train mode. The model comes back as it was: its mode, its gradients and
    its buffers (a train-mode forward would move BN's running statistics)."""
    param = next(model.parameters(), None)
    x = torch.zeros(input_shape, device=param.device if param is not None else None)
    was_training = model.training
    grads = [p.grad for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    model.train(training)
    try:
        with FlopCounterMode(display=False) as counter:
            if training:
                model(x).sum().backward()
            else:
                with torch.no_grad():
                    model(x)
    finally:
        model.train(was_training)
        for p, grad in zip(model.parameters(), grads, strict=True):
            p.grad = grad
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
    return counter.get_total_flops() // 2


def count_macs(model: nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE) -> int:
    """Multiply-accumulates of one forward pass in eval mode on a zero input of ``input_shape``."""
    return _counted_macs(model, input_shape, training=False)


def count_train_macs(model: nn.Module, batch: int = 2) -> int:
    """Multiply-accumulates of one training step (forward and backward, in train mode) per drawing, as counted on a
    zero batch of ``batch``. The backward pass computes each layer's weight gradient and, for every layer but the
    first, its input's gradient, so the step comes to a little under three forwards."""
    return _counted_macs(model, (batch, *INPUT_SHAPE[1:]), training=True) // batch


def describe(model: nn.Module) -> dict[str, int | float]:
    """``params``, ``macs`` (one 1x28x28 input) and ``size_mb``: fp32 bytes of the parameters / 1e6."""
    params = count_params(model)
    return {"params": params, "macs": count_macs(model), "size_mb": params * 4 / 1e6}
