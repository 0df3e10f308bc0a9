"""Ingesting local files into a store: every format on real drawings, every kind of bad input, and the rule
that a failed ingest leaves the store exactly as it was."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import stroke_lines

from quickdraw_mobile.cli import main
from quickdraw_mobile.data import ingest as ingest_module
from quickdraw_mobile.data.ingest import ingest
from quickdraw_mobile.data.store import MANIFEST, Store
from quickdraw_mobile.errors import QDMError

# Classes the package does not hold are stored with real drawings of one it does (ingest never looks at them).
STAND_IN = {"The Eiffel Tower": "house", "dog": "fish"}


def bitmaps(drawings, name: str, rows: int | None = None) -> np.ndarray:
    """The first ``rows`` real drawings filed under ``name`` (``drawings``: the fixture)."""
    return drawings(STAND_IN.get(name, name), rows)


def official_bitmaps(shared: Path, name: str, rows: int | None = None) -> np.ndarray:
    return np.array(np.load(shared / "numpy_bitmap" / f"{name}.npy", mmap_mode="r")[:rows])


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def src(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return folder


# ------------------------------------------------------------------------------------------------ formats
def test_official_npy_files_unchanged(shared_data, src, tmp_path):
    shutil.copy(shared_data / "numpy_bitmap" / "cat.npy", src / "cat.npy")
    shutil.copy(shared_data / "numpy_bitmap" / "The Eiffel Tower.npy", src / "The Eiffel Tower.npy")
    store = ingest(src, tmp_path / "store")
    assert store.classes == ["The Eiffel Tower", "cat"]
    reopened = Store.open(tmp_path / "store", verify=True)
    for name in store.classes:
        np.testing.assert_array_equal(reopened.array(name), official_bitmaps(shared_data, name))
        assert reopened.entries[store.classes.index(name)]["source"] == f"ingest:{(src / f'{name}.npy').resolve()}"


def test_max_per_class_keeps_first_rows(drawings, src, tmp_path):
    np.save(src / "cat.npy", bitmaps(drawings, "cat"))
    store = ingest(src, tmp_path / "store", max_per_class=123)
    np.testing.assert_array_equal(store.array("cat"), bitmaps(drawings, "cat", 123))
    assert "first 123 of 1000 rows" in store.entries[0]["source"]
    with pytest.raises(QDMError, match="--per-class: expected a positive count"):
        ingest(src, tmp_path / "other", max_per_class=0)


def test_large_npy_is_copied_in_chunks(drawings, src, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "CHUNK_ROWS", 150)  # 1000 rows of airplane: 7 chunks, the last partial
    np.save(src / "airplane.npy", bitmaps(drawings, "airplane"))
    store = ingest(src, tmp_path / "store")
    np.testing.assert_array_equal(store.array("airplane"), bitmaps(drawings, "airplane"))
    Store.open(tmp_path / "store", verify=True)  # the sha computed while copying is the file's


def test_npy_28x28_is_flattened(drawings, src, tmp_path):
    rows = bitmaps(drawings, "apple", 200)
    np.save(src / "apple.npy", rows.reshape(-1, 28, 28))
    store = ingest(src, tmp_path / "store")
    np.testing.assert_array_equal(store.array("apple"), rows)


@pytest.mark.parametrize("file_name", ["the eiffel tower.npy", "The_Eiffel_Tower.npy", "THE EIFFEL TOWER.NPY"])
def test_file_name_spelling_is_forgiven(drawings, src, tmp_path, file_name):
    with open(src / file_name, "wb") as fh:  # np.save(path) would append ".npy" to ".NPY"
        np.save(fh, bitmaps(drawings, "The Eiffel Tower", 50))
    assert ingest(src, tmp_path / "store").classes == ["The Eiffel Tower"]


def test_bin_rows(drawings, src, tmp_path):
    rows = bitmaps(drawings, "banana", 321)
    (src / "banana.bin").write_bytes(rows.tobytes())
    store = ingest(src / "banana.bin", tmp_path / "store")  # a single file, not a folder
    np.testing.assert_array_equal(store.array("banana"), rows)


def test_mixed_formats_in_one_folder(drawings, src, tmp_path):
    np.save(src / "cat.npy", bitmaps(drawings, "cat", 100))
    (src / "dog.bin").write_bytes(bitmaps(drawings, "dog", 70).tobytes())
    store = ingest(src, tmp_path / "store")
    assert store.counts == {"cat": 100, "dog": 70}


def test_classes_filter(drawings, src, tmp_path):
    for name in ("cat", "dog", "fish"):
        np.save(src / f"{name}.npy", bitmaps(drawings, name, 40))
    assert ingest(src, tmp_path / "store", classes=["fish", "Cat"]).classes == ["cat", "fish"]
    with pytest.raises(QDMError, match=r"no file for class 'tree' \(expected tree\.npy, \.bin or \.ndjson\)"):
        ingest(src, tmp_path / "other", classes=["cat", "tree"])
    assert not (tmp_path / "other").exists()


# ------------------------------------------------------------------------------------------------ ndjson
def test_simplified_ndjson_is_rendered(shared_data, src, tmp_path):
    from quickdraw_mobile.data.render import render_ndjson

    path = shared_data / "simplified" / "cat.ndjson"
    shutil.copy(path, src / "cat.ndjson")
    store = ingest(src, tmp_path / "store")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert store.counts == {"cat": len(lines)}
    expected, words = render_ndjson(path)
    np.testing.assert_array_equal(store.array("cat"), expected)
    assert set(words) == {"cat"}
    # Most lines are drawings of the official cat.npy (not all at the same row: the public copies differ), so
    # most renderings must have a near-identical official bitmap among the first rows.
    ours = store.array("cat").astype(np.int16)
    official = official_bitmaps(shared_data, "cat", 200).astype(np.int16)
    closest = np.abs(ours[:, None, :] - official[None, :, :]).mean(axis=2).min(axis=1)
    assert (closest < 3).sum() >= len(lines) // 2


def test_raw_ndjson_is_rendered(src, tmp_path):
    path = src / "The Eiffel Tower.ndjson"
    path.write_text("\n".join(stroke_lines("The Eiffel Tower", 12, fmt="raw")) + "\n", encoding="utf-8")
    store = ingest(src, tmp_path / "store", max_per_class=10)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert store.counts == {"The Eiffel Tower": min(10, len(lines))}
    ink = store.array("The Eiffel Tower").astype(bool).mean(axis=1)
    assert np.all(ink > 0.02) and np.all(ink < 0.6)  # every row is a real drawing, not blank or solid


def test_malformed_ndjson_names_the_line(src, tmp_path):
    lines = stroke_lines("fish", 2)
    (src / "fish.ndjson").write_text("\n".join([lines[0], lines[1], '{"word": "fish", "drawing": [[[1, 2]'])
                                     + "\n", encoding="utf-8")
    with pytest.raises(QDMError, match=r"fish\.ndjson:3"):
        ingest(src, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_ndjson_word_must_match_file_name(src, tmp_path):
    (src / "cat.ndjson").write_text("\n".join(stroke_lines("fish", 3)) + "\n", encoding="utf-8")
    with pytest.raises(QDMError, match=r"cat\.ndjson: drawing 1 has word 'fish' but the file name says 'cat'"):
        ingest(src, tmp_path / "store")


def test_empty_ndjson(src, tmp_path):
    (src / "cat.ndjson").write_text("\n", encoding="utf-8")
    with pytest.raises(QDMError, match=r"cat\.ndjson"):
        ingest(src, tmp_path / "store")


# ------------------------------------------------------------------------------------------------ bad input
def write_npy_header(path: Path, header: str, data: bytes = b"") -> None:
    """A .npy whose header says what we want, whatever the data."""
    text = header + " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1") + data)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p, rows: p.write_bytes(b""), r"cat\.npy: empty file \(0 bytes\)"),
        (lambda p, rows: np.save(p, rows[:0]), r"cat\.npy: no drawings \(0 rows\)"),
        (lambda p, rows: p.write_bytes(b"PK\x03\x04" + rows.tobytes()), r"cat\.npy: not a \.npy file"),
        (lambda p, rows: p.write_bytes(b"\x93NUM"), r"cat\.npy: truncated \.npy header"),
        (lambda p, rows: np.save(p, rows.astype(np.float32)), r"cat\.npy: expected dtype uint8.*'<f4'"),
        (lambda p, rows: np.save(p, rows.astype(np.int64)), r"cat\.npy: expected dtype uint8.*'<i8'"),
        (lambda p, rows: np.save(p, np.zeros((10, 785), np.uint8)), r"cat\.npy: expected shape \(N, 784\), got \(10, 785\)"),
        (lambda p, rows: np.save(p, rows.reshape(-1)), r"cat\.npy: expected shape \(N, 784\)"),
        (lambda p, rows: np.save(p, np.asfortranarray(rows)), r"cat\.npy: expected C order"),
        (lambda p, rows: write_npy_header(p, "{'descr': '|u1', 'fortran_order': False, 'shape': (1000, 784), }",
                                          rows.tobytes()), r"cat\.npy: truncated: header says 1000 rows"),
        (lambda p, rows: write_npy_header(p, "{'descr': '|u1', 'shape': (7, 784)"), r"cat\.npy: corrupt \.npy header"),
    ],
    ids=["zero-bytes", "zero-rows", "bad-magic", "short-magic", "float32", "int64", "785-wide", "1-d", "fortran",
         "header-lies", "header-garbage"],
)
def test_bad_npy(drawings, src, tmp_path, make, message):
    make(src / "cat.npy", bitmaps(drawings, "cat", 20))
    with pytest.raises(QDMError, match=message) as info:
        ingest(src, tmp_path / "store")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "store").exists()


def test_bin_size_not_multiple_of_784(drawings, src, tmp_path):
    (src / "cat.bin").write_bytes(bitmaps(drawings, "cat", 3).tobytes() + b"\x00" * 100)
    with pytest.raises(QDMError, match=r"cat\.bin: size 2452 bytes is not a multiple of 784 .* 100 bytes left over"):
        ingest(src, tmp_path / "store")
    (src / "cat.bin").write_bytes(b"")
    with pytest.raises(QDMError, match=r"cat\.bin: empty file"):
        ingest(src, tmp_path / "store")


def test_unknown_class_name_suggests(drawings, src, tmp_path):
    np.save(src / "catt.npy", bitmaps(drawings, "cat", 5))
    with pytest.raises(QDMError, match=r"catt\.npy: the file name must be an official class name .*did you mean 'cat'"):
        ingest(src, tmp_path / "store")


def test_two_files_for_one_class(drawings, src, tmp_path):
    rows = bitmaps(drawings, "cat", 5)
    np.save(src / "cat.npy", rows)
    (src / "Cat.bin").write_bytes(rows.tobytes())
    with pytest.raises(QDMError, match=r"class 'cat' has 2 files \(Cat\.bin, cat\.npy\)"):
        ingest(src, tmp_path / "store")


def test_unsupported_files_skipped_with_warning(drawings, src, tmp_path, caplog):
    np.save(src / "cat.npy", bitmaps(drawings, "cat", 5))
    (src / "README.txt").write_text("notes")
    np.savez(src / "dog.npz", x=bitmaps(drawings, "dog", 5))
    with caplog.at_level(logging.WARNING, logger=ingest_module.__name__):
        assert ingest(src, tmp_path / "store").classes == ["cat"]
    assert "skipped 2 file(s) that are not .npy, .bin or .ndjson: README.txt, dog.npz" in caplog.text


def test_unsupported_single_file(src, tmp_path):
    (src / "cat.png").write_bytes(b"\x89PNG")
    with pytest.raises(QDMError, match=r"cat\.png: unsupported file type '\.png'"):
        ingest(src / "cat.png", tmp_path / "store")


def test_folder_without_usable_files(src, tmp_path):
    with pytest.raises(QDMError, match="no .npy, .bin or .ndjson files to ingest"):
        ingest(src, tmp_path / "store")
    (src / "notes.txt").write_text("x")
    with pytest.raises(QDMError, match="no .npy, .bin or .ndjson files to ingest"):
        ingest(src, tmp_path / "store")
    with pytest.raises(QDMError, match="no such file or folder"):
        ingest(src / "missing", tmp_path / "store")


def test_out_must_be_a_folder(drawings, src, tmp_path):
    np.save(src / "cat.npy", bitmaps(drawings, "cat", 5))
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(QDMError, match="taken: expected a folder for the store, found a file"):
        ingest(src, tmp_path / "taken")


# ------------------------------------------------------------------------------------------------ all or nothing
@pytest.fixture
def existing(drawings, tmp_path) -> Path:
    """A store holding cat (first 100 rows) and apple (first 80 rows)."""
    first = tmp_path / "first"
    first.mkdir()
    np.save(first / "cat.npy", bitmaps(drawings, "cat", 100))
    np.save(first / "apple.npy", bitmaps(drawings, "apple", 80))
    ingest(first, tmp_path / "store")
    return tmp_path / "store"


def test_failed_check_leaves_store_untouched(drawings, src, existing):
    before = snapshot(existing)
    np.save(src / "cat.npy", bitmaps(drawings, "cat", 300))  # good: would replace cat
    np.save(src / "dog.npy", bitmaps(drawings, "dog", 30).astype(np.float32))  # bad
    with pytest.raises(QDMError, match=r"dog\.npy: expected dtype uint8"):
        ingest(src, existing)
    assert snapshot(existing) == before


def test_failure_while_staging_leaves_store_untouched(drawings, src, existing, monkeypatch):
    before = snapshot(existing)
    np.save(src / "cat.npy", bitmaps(drawings, "cat", 300))
    np.save(src / "dog.npy", bitmaps(drawings, "dog", 30))
    real_write = ingest_module._write_npy
    calls = []

    def write_then_fail(rows, keep, dest):
        calls.append(dest.name)
        if len(calls) == 2:  # cat is already staged when dog fails
            raise QDMError(f"{dest}: disk full (simulated)")
        return real_write(rows, keep, dest)

    monkeypatch.setattr(ingest_module, "_write_npy", write_then_fail)
    with pytest.raises(QDMError, match="disk full"):
        ingest(src, existing)
    assert calls == ["cat.npy", "dog.npy"]
    assert snapshot(existing) == before  # no staged files left behind either


def test_bad_ndjson_after_good_npy_leaves_store_untouched(drawings, src, existing):
    before = snapshot(existing)
    np.save(src / "cat.npy", bitmaps(drawings, "cat", 300))  # staged first ("cat" < "fish")
    (src / "fish.ndjson").write_text('{"word": "fish", "drawing": "not strokes"}\n', encoding="utf-8")
    with pytest.raises(QDMError, match=r"fish\.ndjson:1"):
        ingest(src, existing)
    assert snapshot(existing) == before


def test_success_replaces_only_ingested_classes(drawings, src, existing):
    apple_before = (existing / "apple.npy").read_bytes()
    np.save(src / "cat.npy", bitmaps(drawings, "cat", 300))
    store = ingest(src, existing)
    assert store.counts == {"apple": 80, "cat": 300}
    assert (existing / "apple.npy").read_bytes() == apple_before
    np.testing.assert_array_equal(Store.open(existing, verify=True).array("cat"), bitmaps(drawings, "cat", 300))
    assert not [p for p in existing.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_damaged_out_store_is_refused_before_work(drawings, src, existing):
    manifest = json.loads((existing / MANIFEST).read_text())
    manifest["classes"][0]["count"] = 1
    (existing / MANIFEST).write_text(json.dumps(manifest))
    before = snapshot(existing)
    np.save(src / "dog.npy", bitmaps(drawings, "dog", 30))
    with pytest.raises(QDMError, match="manifest says 1 rows"):
        ingest(src, existing)
    assert snapshot(existing) == before


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_ingest(drawings, src, tmp_path, capsys):
    np.save(src / "star.npy", bitmaps(drawings, "star", 64))
    np.save(src / "tree.npy", bitmaps(drawings, "tree", 32))
    out = tmp_path / "store"
    assert main(["data", "ingest", str(src), "--out", str(out), "--classes", "tree", "--per-class", "10"]) == 0
    assert f"{out}: 1 classes, 10 drawings" in capsys.readouterr().out
    (src / "star.npy").write_bytes(b"junk")
    assert main(["data", "ingest", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "star.npy: not a .npy file" in err[-1]
    assert Store.open(out).counts == {"tree": 10}

