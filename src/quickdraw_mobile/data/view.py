"""A labelled grid of drawings from a store, as a PNG: one row per class, dark ink on white."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import QDMError
from .store import Store, class_row_order

DEFAULT_MAX_CLASSES = 16
MAX_PER_ROW = 64  # beyond this the PNG gets unwieldy and the drawings unreadably small
CELL = 28
GAP = 2  # light grey lines between drawings, so empty white cells stay visible
GAP_SHADE = 200
SCALE = 2  # screen pixels per bitmap pixel at the saved resolution
DPI = 100


def pick_rows(name: str, count: int, n: int, seed: int) -> np.ndarray:
    """``n`` rows of a class, spread over the whole file, the same for the same seed on any machine."""
    return np.sort(class_row_order(name, count, seed)[:n])


def mosaic(store: Store, classes: list[str], n: int, seed: int) -> np.ndarray:
    """One uint8 image, white background: row ``r`` holds up to ``n`` drawings of ``classes[r]``."""
    step = CELL + GAP
    image = np.full((len(classes) * step + GAP, n * step + GAP), GAP_SHADE, dtype=np.uint8)
    for r, name in enumerate(classes):
        array = store.array(name)
        rows = pick_rows(name, len(array), n, seed)
        for c in range(n):
            top, left = GAP + r * step, GAP + c * step
            cell = 255 - array[rows[c]].reshape(CELL, CELL) if c < len(rows) else 255  # invert: ink is 255
            image[top : top + CELL, left : left + CELL] = cell
    return image


def view_grid(store: Store, classes: list[str] | None, n: int, out: Path, seed: int = 0) -> Path:
    """Draw ``n`` drawings of each class (default: the store's first 16 classes) into the PNG ``out``."""
    from ..figures import figure, save  # matplotlib only when a grid is drawn

    if not 1 <= n <= MAX_PER_ROW:
        raise QDMError(f"--n: expected 1..{MAX_PER_ROW} drawings per class, got {n}")
    names = store.select(classes) if classes else store.classes[:DEFAULT_MAX_CLASSES]
    if not names:
        raise QDMError(f"{store.root}: the store has no classes")
    image = mosaic(store, names, n, seed)

    label_inches = 0.08 * max(len(name) for name in names) + 0.3
    width, height = image.shape[1] * SCALE / DPI, image.shape[0] * SCALE / DPI
    fig = figure(figsize=(width + label_inches, height + 0.45), dpi=DPI)
    ax = fig.add_axes((label_inches / (width + label_inches), 0.05 / (height + 0.45),
                       width / (width + label_inches), height / (height + 0.45)))
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    step = CELL + GAP
    ax.set_yticks([GAP + r * step + CELL / 2 for r in range(len(names))], labels=names)
    ax.set_xticks([])
    ax.tick_params(axis="y", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"{store.root.name}: {len(names)} classes, {n} drawings each (seed {seed})", fontsize=9)

    return save(fig, out, dpi=DPI, facecolor="white")
