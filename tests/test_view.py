"""The grid viewer: a real PNG with one row per class, deterministic for a seed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_store
from PIL import Image

from quickdraw_mobile.cli import main
from quickdraw_mobile.data.store import Store
from quickdraw_mobile.data.view import mosaic, pick_rows, view_grid
from quickdraw_mobile.errors import QDMError

CLASSES = ("apple", "cat", "fish")


@pytest.fixture(scope="module")
def store(drawings, tmp_path_factory) -> Store:
    return make_store(drawings, tmp_path_factory.mktemp("view") / "store", dict.fromkeys(CLASSES, 200))


def test_png_written_with_sane_size(store, tmp_path):
    out = view_grid(store, None, 8, tmp_path / "grid.png")
    assert out == tmp_path / "grid.png"
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("L"))
    # 8 cells of 28 px at 2x across, 3 rows down, plus labels and title
    assert 8 * 28 * 2 <= width <= 8 * 28 * 2 + 400
    assert 3 * 28 * 2 <= height <= 3 * 28 * 2 + 150
    assert (pixels > 250).mean() > 0.5  # mostly white paper
    assert (pixels < 60).mean() > 0.01  # with dark ink
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_mosaic_holds_the_picked_drawings_inverted(store):
    image = mosaic(store, ["cat", "fish"], 4, seed=3)
    rows = pick_rows("fish", 200, 4, 3)
    top, left = 2 + 1 * 30, 2 + 2 * 30  # row 1 (fish), column 2
    cell = image[top : top + 28, left : left + 28]
    np.testing.assert_array_equal(cell, 255 - store.array("fish")[rows[2]].reshape(28, 28))


def test_seed_picks_deterministically(store):
    np.testing.assert_array_equal(mosaic(store, ["cat"], 6, seed=1), mosaic(store, ["cat"], 6, seed=1))
    assert not np.array_equal(mosaic(store, ["cat"], 6, seed=1), mosaic(store, ["cat"], 6, seed=2))


def test_more_cells_than_drawings_leaves_blanks(drawings, tmp_path):
    small = make_store(drawings, tmp_path / "small", {"star": 3})
    image = mosaic(small, ["star"], 5, seed=0)
    for c in range(5):
        cell = image[2:30, 2 + c * 30 : 2 + c * 30 + 28]
        assert (cell.min() == 0) if c < 3 else np.all(cell == 255)  # 3 drawings with full ink, then blank paper


def test_bad_requests(store, tmp_path):
    with pytest.raises(QDMError, match=r"unknown class 'fsh'; did you mean 'fish'"):
        view_grid(store, ["fsh"], 4, tmp_path / "x.png")
    with pytest.raises(QDMError, match="--n: expected 1..64"):
        view_grid(store, None, 0, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_cli_view(store, tmp_path, capsys):
    out = tmp_path / "cli.png"
    assert main(["data", "view", str(store.root), "--classes", "fish,apple", "--n", "5", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[1] < 3 * 28 * 2 + 150  # two rows
