"""Build a store from local files: official ``numpy_bitmap`` .npy, raw .bin rows, or .ndjson strokes.

The class of a file is its name (``cat.npy``, ``The Eiffel Tower.bin``, ``the_eiffel_tower.ndjson``). An
invocation is all-or-nothing:

1. check   every chosen file cheaply (names, headers, sizes) before reading any pixels;
2. stage   each class as a finished ``.npy`` in a hidden folder inside the store (large files are copied from
           a memory map in chunks, so a 100 MB file is never held in RAM twice; strokes are rendered);
3. commit  only when every class staged: rename each file into place and record it in the manifest.

If anything fails before the commit, the staging folder is removed and the store is exactly as it was.
Classes already in the store are replaced only by a successful ingest of the same class. (The commit is
renames plus manifest writes, one class at a time: only a crash in that last instant can leave a mix.)
A class is never cut down to fewer drawings than the store holds (a smaller file, or ``--per-class``) unless
``allow_shrink`` (``--allow-shrink``) says so: like ``qdm data download``, which never cuts a class down, an
ingest refuses, before any pixel is copied when the counts are known from the headers.

Choices:
- Files with other extensions in a folder are skipped with a warning (folders often hold READMEs or
  listings); a single file with another extension is an error.
- Two files for the same class (``cat.npy`` and ``cat.ndjson``) are an error: the official formats hold the
  same drawings, so concatenating would silently duplicate drawings and leak them between train and test.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import QDMError
from . import npyformat
from .classes import resolve_class
from .store import MANIFEST, PIXELS, Store, class_file_name

log = logging.getLogger(__name__)

FORMATS = (".npy", ".bin", ".ndjson")
CHUNK_ROWS = 16384  # rows copied per step from a memory map (about 12.8 MB)


@dataclass
class _Input:
    path: Path
    name: str  # official class name
    rows: int | None = None  # known after the cheap check for .npy / .bin; .ndjson only once rendered


def ingest(path: Path, out: Path, classes: list[str] | None = None, max_per_class: int | None = None,
           allow_shrink: bool = False) -> Store:
    """Add the classes found at ``path`` (a folder of ``<class>.<ext>`` files, or one file) to the store ``out``.

    ``classes`` restricts which classes are ingested; ``max_per_class`` keeps the first N rows of each. A class
    the store holds with more drawings than would be kept is an error unless ``allow_shrink``.
    """
    path, out = Path(path), Path(out)
    if max_per_class is not None and max_per_class < 1:
        raise QDMError(f"--per-class: expected a positive count, got {max_per_class}")
    inputs = _choose(_find_inputs(path), path, classes)
    for item in inputs:
        _check(item)

    if out.exists() and not out.is_dir():
        raise QDMError(f"{out}: expected a folder for the store, found a file")
    held = Store.open(out).counts if (out / MANIFEST).exists() else {}  # a damaged store fails here, before work
    shrink_check = {} if allow_shrink else held
    for item in inputs:  # what the headers already tell (.npy, .bin; --per-class bounds an .ndjson too)
        _refuse_shrinking(shrink_check, item, min((n for n in (item.rows, max_per_class) if n is not None),
                                                  default=None), max_per_class, out)
    out_existed = out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ingest-", dir=out))
    except OSError as exc:
        raise QDMError(f"{out}: cannot create the store folder ({exc.strerror or exc})") from exc
    try:
        with tqdm(inputs, desc="ingest", unit="file") as bar:
            staged = [_stage(item, staging, max_per_class) for item in bar]
        for item, entry in zip(inputs, staged, strict=True):  # rendered .ndjson: its count is known only now
            _refuse_shrinking(shrink_check, item, entry["count"], max_per_class, out)
        store = Store.create(out)
        for entry in staged:
            os.replace(staging / entry["file"], out / entry["file"])
        store.record_classes(staged)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not out_existed:
            shutil.rmtree(out, ignore_errors=True)  # we created it, so nothing else is in it
        if isinstance(exc, OSError):
            raise QDMError(f"{out}: could not write the store ({exc.strerror or exc})") from exc
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return store


# ------------------------------------------------------------------------------------------------ finding
def _find_inputs(path: Path) -> list[_Input]:
    """Every input file at ``path`` with its class; unknown class names are errors."""
    if path.is_file():
        if path.suffix.lower() not in FORMATS:
            raise QDMError(f"{path}: unsupported file type {path.suffix!r}; expected .npy, .bin or .ndjson")
        files = [path]
    elif path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        files = [p for p in candidates if p.suffix.lower() in FORMATS]
        skipped = [p.name for p in candidates if p.suffix.lower() not in FORMATS]
        if skipped:
            log.warning("%s: skipped %d file(s) that are not .npy, .bin or .ndjson: %s",
                        path, len(skipped), ", ".join(skipped))
        if not files:
            raise QDMError(f"{path}: no .npy, .bin or .ndjson files to ingest")
    else:
        raise QDMError(f"{path}: no such file or folder")
    inputs = []
    for file in files:
        try:
            name = resolve_class(file.stem)
        except QDMError as exc:
            raise QDMError(f"{file}: the file name must be an official class name ({exc})") from None
        inputs.append(_Input(file, name))
    return inputs


def _choose(inputs: list[_Input], path: Path, classes: list[str] | None) -> list[_Input]:
    """Keep the requested classes; every requested class needs exactly one file."""
    if classes is not None:
        wanted = [resolve_class(c) for c in classes]
        present = {item.name for item in inputs}
        for name in wanted:
            if name not in present:
                raise QDMError(f"{path}: no file for class {name!r} (expected {name}.npy, .bin or .ndjson)")
        inputs = [item for item in inputs if item.name in set(wanted)]
    by_class: dict[str, list[str]] = {}
    for item in inputs:
        by_class.setdefault(item.name, []).append(item.path.name)
    for name, files in by_class.items():
        if len(files) > 1:
            raise QDMError(f"{path}: class {name!r} has {len(files)} files ({', '.join(files)}); keep one per "
                           "class (the formats hold the same drawings, so both would duplicate them)")
    return inputs


# ------------------------------------------------------------------------------------------------ checking
def _check(item: _Input) -> None:
    """Cheap checks that read no pixels: readable, size, .npy header, .bin row size."""
    try:
        with open(item.path, "rb"):
            size = item.path.stat().st_size
    except OSError as exc:
        raise QDMError(f"{item.path}: cannot read ({exc.strerror or exc})") from exc
    if size == 0:
        raise QDMError(f"{item.path}: empty file (0 bytes)")
    suffix = item.path.suffix.lower()
    if suffix == ".npy":
        item.rows = _check_npy(item.path, size)
    elif suffix == ".bin":
        if size % PIXELS:
            raise QDMError(f"{item.path}: size {size} bytes is not a multiple of {PIXELS} (rows of 28x28 uint8); "
                           f"{size % PIXELS} bytes left over")
        item.rows = size // PIXELS


def _check_npy(path: Path, size: int) -> int:
    """Row count of an official-layout .npy, from its header; the header must agree with the file size."""
    where = str(path)
    with open(path, "rb") as fh:
        length = npyformat.header_length(fh.read(npyformat.PREAMBLE_MAX), where)
        fh.seek(0)
        header = npyformat.parse_header(fh.read(length), where)
    rows = npyformat.bitmap_rows(header, where, PIXELS)
    if rows == 0:
        raise QDMError(f"{path}: no drawings (0 rows)")
    expected = header.data_offset + rows * PIXELS
    if size < expected:
        raise QDMError(f"{path}: truncated: header says {rows} rows ({expected} bytes), file has {size} bytes")
    return rows


def _refuse_shrinking(held: dict[str, int], item: _Input, keep: int | None, max_per_class: int | None,
                      out: Path) -> None:
    """An error when ingesting ``item`` would leave its class with fewer drawings (``keep``) than ``held``."""
    have = held.get(item.name)
    if keep is None or have is None or keep >= have:
        return
    why = f" (--per-class {max_per_class})" if keep == max_per_class else ""
    raise QDMError(f"{out}: class {item.name!r} has {have} drawings; ingesting {item.path.name} would cut it down "
                   f"to {keep}{why}; pass --allow-shrink to replace it with fewer")


# ------------------------------------------------------------------------------------------------ staging
def _stage(item: _Input, staging: Path, max_per_class: int | None) -> dict:
    """Write the class's finished .npy into ``staging``; return its manifest entry."""
    suffix = item.path.suffix.lower()
    if suffix == ".npy":
        rows = np.load(item.path, mmap_mode="r", allow_pickle=False)
    elif suffix == ".bin":
        rows = np.memmap(item.path, dtype=np.uint8, mode="r", shape=(item.rows, PIXELS))
    else:
        rows = _render(item)
    total = len(rows)
    keep = total if max_per_class is None else min(total, max_per_class)
    file = class_file_name(item.name)
    sha256 = _write_npy(rows, keep, staging / file)
    source = f"ingest:{item.path.resolve()}" + (f" (first {keep} of {total} rows)" if keep < total else "")
    return {"name": item.name, "file": file, "count": keep, "sha256": sha256, "source": source}


def _render(item: _Input) -> np.ndarray:
    from .render import render_ndjson  # imported here: only .ndjson inputs need the renderer

    pixels, words = render_ndjson(item.path)
    if len(pixels) == 0:
        raise QDMError(f"{item.path}: no drawings (0 lines)")
    for line, word in enumerate(words, start=1):
        if word and word.strip().lower() != item.name.lower():
            raise QDMError(f"{item.path}: drawing {line} has word {word!r} but the file name says {item.name!r}")
    return pixels


def _write_npy(rows: np.ndarray, keep: int, dest: Path) -> str:
    """Save the first ``keep`` rows as (keep, 784) uint8, copying in chunks; return the file's sha256."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (keep, PIXELS)})
    digest = hashlib.sha256(header.getvalue())
    with open(dest, "wb") as fh:
        fh.write(header.getvalue())
        for start in range(0, keep, CHUNK_ROWS):
            block = np.ascontiguousarray(rows[start : min(keep, start + CHUNK_ROWS)].reshape(-1, PIXELS))
            digest.update(block)
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return digest.hexdigest()


def source_classes(path: Path) -> list[str]:
    """The official class names of the files an ingest of ``path`` would read (a folder or one file)."""
    return [item.name for item in _find_inputs(Path(path))]
