"""Shared test fixtures. Real Quick, Draw! data comes from ../shared/quickdraw beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QDM_SHARED_DATA", REPO.parent / "shared" / "quickdraw"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (numpy_bitmap/, simplified/, raw/, render_pairs.npz, categories.txt)."""
    if not (SHARED / "numpy_bitmap").is_dir():
        pytest.skip(f"real Quick, Draw! data not found at {SHARED} (set QDM_SHARED_DATA)")
    return SHARED
