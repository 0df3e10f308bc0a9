"""What several verbs share."""

from __future__ import annotations

from pathlib import Path

OFFICIAL_HINT = "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/"


def data_dir(text: str) -> Path:
    """A store folder, or ``embedded`` for the real subset shipped inside the package."""
    if text == "embedded":
        from ..data.embedded import embedded_store

        return embedded_store()
    return Path(text)
