"""Running an eager model over many bitmaps: one place for batching, normalization and eval mode. The batches go
to the device the model is on (``model_device``); the logits come back to the host."""

from __future__ import annotations

import numpy as np
import torch

from .data.loader import normalize
from .data.store import Split
from .device import to_device


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model without tensors)."""
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


@torch.inference_mode()
def logits_for_pixels(model: torch.nn.Module, pixels: np.ndarray, batch_size: int = 1024, *, mirror: bool = False,
                      bf16: bool = False) -> np.ndarray:
    """Logits (N, C) float32 for uint8 bitmaps (N, 784) or (N, 28, 28); of their mirror images with ``mirror``.

    ``bf16`` runs the model under bfloat16 autocast (about 3x faster on a CPU with bf16 support). The model
    runs where it is (``model_device``).
    """
    was_training = model.training
    model.eval()
    outputs = []
    device = model_device(model)
    for i in range(0, len(pixels), batch_size):
        x = to_device(normalize(pixels[i : i + batch_size]), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs.append(model(x.flip(-1) if mirror else x).float().cpu())
    model.train(was_training)
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), dtype=np.float32)


def softmax_for_pixels(model: torch.nn.Module, pixels: np.ndarray, batch_size: int = 1024, *,
                       temperature: float = 1.0, mirror_average: bool = False, bf16: bool = False) -> np.ndarray:
    """softmax(logits / temperature), (N, C) float32; with ``mirror_average`` the mean over each drawing and its
    mirror (the doodles of most classes are drawn facing either way)."""
    views = (False, True) if mirror_average else (False,)
    probs = [torch.softmax(torch.from_numpy(logits_for_pixels(model, pixels, batch_size, mirror=view, bf16=bf16))
                           / temperature, dim=1) for view in views]
    return (sum(probs) / len(probs)).numpy()


def logits_for_split(model: torch.nn.Module, split: Split, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels for every sample of ``split``, in its flat (class by class) order."""
    logits, labels = [], []
    for start in range(0, len(split), batch_size):
        pixels, batch_labels = split.gather(np.arange(start, min(start + batch_size, len(split))))
        logits.append(logits_for_pixels(model, pixels, batch_size))
        labels.append(batch_labels)
    return np.concatenate(logits), np.concatenate(labels)
