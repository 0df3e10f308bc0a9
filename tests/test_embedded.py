"""The real subset shipped in the package: size budget, attribution, unpacking into a store, and its cache."""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from quickdraw_mobile.cli import main
from quickdraw_mobile.data import embedded as embedded_module
from quickdraw_mobile.data.embedded import SOURCE, embedded_store
from quickdraw_mobile.data.store import MANIFEST, Store
from quickdraw_mobile.errors import QDMError

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(embedded_module.__file__).parent
CLASSES = ["airplane", "apple", "banana", "bicycle", "cat", "clock", "fish", "house", "star", "tree"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("QDM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def shipped_files() -> list[Path]:
    return [p for p in PACKAGE.iterdir() if p.is_file() and p.suffix != ".pyc"]


def test_package_files_fit_the_budget():
    total = sum(p.stat().st_size for p in shipped_files())
    assert total < 3_000_000
    assert sorted(p.name for p in PACKAGE.glob("*.npy.xz")) == sorted(f"{c}.npy.xz" for c in CLASSES)


def test_attribution_names_source_license_and_subset():
    text = (PACKAGE / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for needle in ["Quick, Draw!", "Google", "CC BY 4.0", "https://quickdraw.withgoogle.com/data",
                   "https://creativecommons.org/licenses/by/4.0/", "first 1,000", "unmodified", *CLASSES]:
        assert needle in text


def test_index_hashes_match_the_package_files():
    index = json.loads((PACKAGE / "index.json").read_text(encoding="utf-8"))
    assert [e["name"] for e in index["classes"]] == CLASSES
    for entry in index["classes"]:
        packed = (PACKAGE / entry["file"]).read_bytes()
        assert hashlib.sha256(packed).hexdigest() == entry["xz_sha256"]
        assert hashlib.sha256(lzma.decompress(packed)).hexdigest() == entry["sha256"]


def test_embedded_store_is_the_official_first_rows(shared_data, cache):
    root = embedded_store()
    assert root.parent == cache and root.name.startswith("embedded-")
    store = Store.open(root, verify=True)
    assert store.classes == CLASSES
    assert store.counts == dict.fromkeys(CLASSES, 1000)
    assert {e["source"] for e in store.entries} == {SOURCE}
    for name in CLASSES:
        official = np.load(shared_data / "numpy_bitmap" / f"{name}.npy", mmap_mode="r")[:1000]
        np.testing.assert_array_equal(store.array(name), official)


def test_built_once_then_reused(cache):
    root = embedded_store()
    stamp = (root / MANIFEST).stat().st_mtime_ns
    assert embedded_store() == root
    assert (root / MANIFEST).stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir()] == [root.name]  # no staging folder left behind


def test_concurrent_first_use(cache):
    barrier = threading.Barrier(3)
    results, errors = [], []

    def use():
        barrier.wait()
        try:
            results.append(embedded_store())
        except Exception as exc:  # collected: an exception in a thread would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert [p.name for p in cache.iterdir()] == [results[0].name]
    Store.open(results[0], verify=True)


def test_losing_the_race_uses_the_winner(cache, monkeypatch):
    real_unpack = embedded_module._unpack
    winner = {}

    # Make the final folder appear (complete) just before our rename, as another process would.
    def unpack(package, index, root):
        real_unpack(package, index, root)
        target = cache / root.name[1:].rsplit(".", 1)[0]  # staging is ".<final name>.<random>"
        shutil.copytree(root, target)
        winner["path"] = target

    monkeypatch.setattr(embedded_module, "_unpack", unpack)
    assert embedded_store() == winner["path"]
    assert [p.name for p in cache.iterdir()] == [winner["path"].name]


def test_damaged_package_file_is_refused(tmp_path, cache, monkeypatch):
    fake = tmp_path / "package"
    shutil.copytree(PACKAGE, fake, ignore=shutil.ignore_patterns("__pycache__"))
    data = bytearray(lzma.decompress((fake / "cat.npy.xz").read_bytes()))
    data[-1] ^= 0xFF  # valid xz, valid .npy, one pixel changed
    (fake / "cat.npy.xz").write_bytes(lzma.compress(bytes(data)))
    monkeypatch.setattr(embedded_module.resources, "files", lambda _name: fake)
    with pytest.raises(QDMError, match=r"cat\.npy\.xz: sha256 differs from index\.json"):
        embedded_store()
    assert not cache.exists() or not list(cache.iterdir())  # nothing half-built


def test_unwritable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("QDM_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(QDMError, match="cannot create the data cache.*QDM_CACHE_DIR"):
        embedded_store()


def test_cli_info_embedded(capsys):
    assert main(["data", "info", "embedded"]) == 0
    out = capsys.readouterr().out
    assert ": 10 classes, 10000 drawings" in out
    assert "split (seed 0): train 8000, val 1000, test 1000" in out
    assert all(name in out for name in CLASSES)


@pytest.mark.slow
def test_builder_reproduces_the_package_files(shared_data, tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_embedded.py"), "--source", str(shared_data),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for path in shipped_files():
        if path.name != "__init__.py":
            assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
