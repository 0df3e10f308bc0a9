"""Shared test fixtures. The tests run on the real drawings shipped in the package (``embedded``, ``tiny_store``,
``tiny_run``); the full Quick, Draw! data in ../shared/quickdraw (``shared_data``) is an extra layer that skips
without it."""

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


# -------------------------------------------------------------------------------- real drawings of the package
# The package ships the first 1,000 official bitmaps of 10 classes (quickdraw_mobile.data.embedded): the tests
# build their stores from them, so they run from a clean checkout; ``shared_data`` is the extra real-data layer.
EMBEDDED_CLASSES = ["airplane", "apple", "banana", "bicycle", "cat", "clock", "fish", "house", "star", "tree"]
EMBEDDED_ROWS = 1000


@pytest.fixture(scope="session")
def embedded(tmp_path_factory):
    """The embedded subset as a read-only store, unpacked once per session into a temporary cache."""
    from quickdraw_mobile.data.embedded import CACHE_ENV, embedded_store
    from quickdraw_mobile.data.store import Store

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("embedded_cache")))
        return Store.open(embedded_store())


@pytest.fixture(scope="session")
def drawings(embedded):
    """``drawings(name, rows=None)``: a writable copy of the first ``rows`` real bitmaps of an embedded class."""
    import numpy as np

    def first_rows(name: str, rows: int | None = None) -> np.ndarray:
        if rows is not None and rows > EMBEDDED_ROWS:
            raise ValueError(f"the package holds {EMBEDDED_ROWS} drawings of {name!r}, not {rows}")
        return np.array(embedded.array(name)[:rows])

    return first_rows


def make_store(drawings, root: Path, class_rows: dict[str, int]):
    """A store of the first ``rows`` real drawings of each class of ``{class: rows}`` (``drawings``: the fixture)."""
    from quickdraw_mobile.data.store import Store

    store = Store.create(root)
    for name, rows in class_rows.items():
        store.add_class(name, drawings(name, rows), source="test")
    return store


# A few strokes drawn by hand (a triangle, a square, a zigzag, ...), for the tests of stroke input: the package
# ships bitmaps, not strokes; tests that compare with the official strokes or renders use ``shared_data``.
_SHAPES = [
    [[[20, 128, 236, 20], [220, 20, 220, 220]]],
    [[[30, 225, 225, 30, 30], [30, 30, 225, 225, 30]], [[30, 225], [30, 225]]],
    [[[0, 60, 120, 180, 250], [200, 40, 200, 40, 200]]],
    [[[128, 160, 250, 160, 128, 96, 0, 96, 128], [0, 96, 128, 160, 250, 160, 128, 96, 0]]],
    [[[10, 245], [128, 128]], [[128, 128], [10, 245]], [[60, 200, 200, 60], [60, 60, 200, 200]]],
]


def stroke_lines(word: str, n: int, fmt: str = "simplified") -> list[str]:
    """``n`` ndjson lines shaped like the official ones (``fmt``: simplified ints, or raw x, y, t floats)."""
    import json

    lines = []
    for i in range(n):
        strokes = [[[x + i % 3 for x in xs], [y + i // 3 % 3 for y in ys]] for xs, ys in _SHAPES[i % len(_SHAPES)]]
        if fmt == "raw":  # raw strokes: screen coordinates (offset and scaled) with a time per point
            strokes = [[[1.5 * x + 40.25 for x in xs], [2.0 * y + 17.5 for y in ys], [50.0 * k for k in range(len(xs))]]
                       for xs, ys in strokes]
        lines.append(json.dumps({"word": word, "countrycode": "ZZ", "recognized": True, "key_id": str(i),
                                 "drawing": strokes}, separators=(",", ":")))
    return lines


# ---------------------------------------------------------------------------------------------- tiny real data
TINY_CLASSES = ["apple", "cat", "star"]
# A cnn_small trained for a few seconds: the model that train, export, bench and the quantization tests work on.
# 300 drawings a class (240 train, 30 val, 30 test) make a model the quantization tests can measure.
TINY_ROWS = 400
TINY_TRAIN = dict(model="cnn_small", model_kwargs={"width": 8}, epochs=3, batch_size=32, max_per_class=300,
                  warmup_epochs=0.5, threads=1, seed=3)
# Small configurations of the registered models keep the suite fast; others are tested at their defaults.
SMALL_MODEL_OPTIONS = {
    "cnn": dict(width=8, blocks=(1, 1)),
    "cnn_small": dict(width=8),
    "sketchcnn": dict(width=8, hidden=32),
    "vit_tiny": dict(embed_dim=48, depth=2, num_heads=3),
    "vit_tiny_224": dict(depth=1),
}


@pytest.fixture(scope="session")
def tiny_store(drawings, tmp_path_factory) -> Path:
    """3 real classes x TINY_ROWS drawings, from the package (tests must not change it)."""
    return make_store(drawings, tmp_path_factory.mktemp("store"), dict.fromkeys(TINY_CLASSES, TINY_ROWS)).root


@pytest.fixture(scope="session")
def tiny_run(tiny_store, tmp_path_factory) -> Path:
    """The one tiny training of the suite: a run folder of TINY_TRAIN on ``tiny_store`` (copy it to change it)."""
    from quickdraw_mobile.train.config import TrainConfig
    from quickdraw_mobile.train.loop import train

    out = tmp_path_factory.mktemp("run") / "run"
    train(TrainConfig(**TINY_TRAIN), tiny_store, out, progress=False)
    return out


@pytest.fixture(scope="session")
def browser_model(tmp_path_factory) -> Path:
    """The served model (``QDM_TEST_MODEL``, else default) exported to INT8 ONNX by the export package, as
    'qdm serve' does on its first start: once for all the page tests."""
    import shutil

    from quickdraw_mobile.serve import browser_model_for
    from quickdraw_mobile.serve.app import STATIC

    if not all((STATIC / "vendor" / name).is_file() for name in ("ort.wasm.bundle.min.mjs",
                                                                  "ort-wasm-simd-threaded.wasm")):
        if shutil.which("npm") is None:
            pytest.skip("onnxruntime-web is not in serve/static/vendor and npm is missing to fetch it")
        pytest.fail("onnxruntime-web is missing from serve/static/vendor: run scripts/setup.sh")
    path = browser_model_for(os.environ.get("QDM_TEST_MODEL", "default"), cache_dir=tmp_path_factory.mktemp("serve-cache"))
    assert path is not None and path.is_file()
    return path


@pytest.fixture(scope="module")
def served_model():
    """The model the serve tests load: the bundled default (``QDM_TEST_MODEL`` may name another run folder)."""
    from quickdraw_mobile.errors import QDMError
    from quickdraw_mobile.modelref import load_model

    try:
        return load_model(os.environ.get("QDM_TEST_MODEL", "default"))
    except QDMError as exc:
        pytest.skip(f"no model to serve: {exc}")


# ------------------------------------------------------------------------------------- the C++ runtime (native/)
NATIVE_BUILD = REPO / "native" / "build"


@pytest.fixture(scope="session")
def native_bin() -> Path:
    """``qdm-native``, built by scripts/setup.sh (``QDM_NATIVE`` may name another build)."""
    import shutil

    path = Path(os.environ.get("QDM_NATIVE", NATIVE_BUILD / "qdm-native"))
    if not path.is_file():
        if shutil.which("c++") is None:
            pytest.skip("no C++ compiler: native/ is not built")
        pytest.fail(f"{path} is missing: 'bash scripts/setup.sh' builds it")
    return path


def artifact_with_bytes(export: Path, dst: Path, data: bytes) -> Path:
    """``data`` as ``dst``, beside copies of the sidecars of ``export`` whose name, size and sha256 match it."""
    import hashlib
    import json
    import shutil

    from quickdraw_mobile.export import sidecar_paths

    dst.write_bytes(data)
    meta_path, labels_path = sidecar_paths(export)
    meta = json.loads(meta_path.read_text())
    meta["artifact"].update(file=dst.name, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    sidecar_paths(dst)[0].write_text(json.dumps(meta))
    shutil.copyfile(labels_path, sidecar_paths(dst)[1])
    return dst


@pytest.fixture(scope="session")
def default_ptes(tmp_path_factory) -> dict[str, Path]:
    """The bundled default model exported once per session to FP32 and INT8 .pte (with sidecars): {quant: path}."""
    from quickdraw_mobile.export.pipeline import export_model

    out = tmp_path_factory.mktemp("default_pte")
    paths = {quant: out / f"default_{quant}.pte" for quant in ("none", "int8")}
    for quant, path in paths.items():
        export_model("default", "pte", quant, path, calib=512)
    return paths
