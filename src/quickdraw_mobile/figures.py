"""Every figure of the package is made by ``figure`` and written by ``save``: the one place that picks the renderer
and writes the files.

The renderer is Agg, chosen here once: each figure gets its own Agg canvas, so nothing depends on pyplot's global
backend (no display needed, no GUI window, no pyplot figure registry that would keep figures alive and need
closing; a figure is freed once dropped) and a caller's own matplotlib backend is left alone. Files are PNG,
written to a temporary name and renamed (``fileio.atomic_path``), so a failed draw leaves an earlier file intact.
Importing this module imports matplotlib: figure code imports it where it draws, not at the top of a module that
the CLI imports anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .fileio import atomic_path


def figure(**options) -> Figure:
    """A new figure drawn by Agg; ``options`` go to ``matplotlib.figure.Figure`` (figsize, dpi, layout...)."""
    fig = Figure(**options)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out: str | os.PathLike, **savefig) -> Path:
    """Write ``fig`` as the PNG ``out``, atomically; ``savefig``: options of ``Figure.savefig`` (dpi, ...)."""
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", **savefig)  # format given: the temporary name does not end in .png
    return out

