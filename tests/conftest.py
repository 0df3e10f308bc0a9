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


# ---------------------------------------------------------------------------------------------- tiny real data
TINY_CLASSES = ["apple", "cat", "star"]
# A cnn_small trained for a few seconds: the model that export, bench and the quantization tests work on.
TINY_TRAIN = dict(model="cnn_small", model_kwargs={"width": 8}, epochs=3, batch_size=32, max_per_class=200,
                  warmup_epochs=0.5, threads=1, seed=0)
# Small configurations of the registered models keep the suite fast; others are tested at their defaults.
SMALL_MODEL_OPTIONS = {
    "cnn": dict(width=8, blocks=(1, 1)),
    "cnn_small": dict(width=8),
    "sketchcnn": dict(width=8, hidden=32),
    "vit_tiny": dict(embed_dim=48, depth=2, num_heads=3),
    "vit_tiny_224": dict(depth=1),
}


def make_store(shared: Path, root: Path, classes: list[str], rows: int):
    """A store of the first ``rows`` real drawings of each of ``classes``."""
    import numpy as np

    from quickdraw_mobile.data.store import Store

    store = Store.create(root)
    for name in classes:
        pixels = np.load(shared / "numpy_bitmap" / f"{name}.npy", mmap_mode="r")[:rows]
        store.add_class(name, np.ascontiguousarray(pixels), source="test")
    return store


@pytest.fixture(scope="session")
def tiny_store(shared_data, tmp_path_factory) -> Path:
    """3 real classes x 200 drawings."""
    return make_store(shared_data, tmp_path_factory.mktemp("store"), TINY_CLASSES, 200).root


@pytest.fixture(scope="session")
def tiny_run(tiny_store, tmp_path_factory) -> Path:
    """A run folder of TINY_TRAIN on ``tiny_store`` (tests must not change it: copy it first)."""
    from quickdraw_mobile.train.config import TrainConfig
    from quickdraw_mobile.train.loop import train

    out = tmp_path_factory.mktemp("run") / "run"
    train(TrainConfig(**TINY_TRAIN), tiny_store, out, progress=False)
    return out


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
