"""Running an eager model over many bitmaps: one place for batching, normalization and eval mode."""

from __future__ import annotations

import numpy as np
import torch

from .data.loader import normalize
from .data.store import Split


@torch.inference_mode()
def logits_for_pixels(model: torch.nn.Module, pixels: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits (N, C) float32 for uint8 bitmaps (N, 784) or (N, 28, 28)."""
    was_training = model.training
    model.eval()
    outputs = [model(normalize(pixels[i : i + batch_size])).float() for i in range(0, len(pixels), batch_size)]
    model.train(was_training)
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), dtype=np.float32)


def logits_for_split(model: torch.nn.Module, split: Split, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels for every sample of ``split``, in its flat (class by class) order."""
    logits, labels = [], []
    for start in range(0, len(split), batch_size):
        pixels, batch_labels = split.gather(np.arange(start, min(start + batch_size, len(split))))
        logits.append(logits_for_pixels(model, pixels, batch_size))
        labels.append(batch_labels)
    return np.concatenate(logits), np.concatenate(labels)
