"""Atomic file writes: a reader never sees a half-written file under its final name.

Every failure to write (a read-only or full disk, a missing permission, a path below a regular file) becomes a
``QDMError`` of one line that names the path and the reason; so does a JSON value that JSON cannot hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import QDMError

_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what a plain open() gives a new file
# The temporaries ``atomic_path`` makes: ".<final name>.<8 characters of tempfile's alphabet>.tmp".
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def blocking_file(folder: str | os.PathLike) -> Path | None:
    """The existing non-folder at or above ``folder`` that keeps it from being a folder, if there is one."""
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() or parent.is_symlink():
            return None if parent.is_dir() else parent
    return None


def os_error_reason(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """Why ``exc`` happened, in words: its strerror, or, for a path below a regular file, which file is in the way."""
    if isinstance(exc, NotADirectoryError | FileExistsError):
        blocker = blocking_file(path if path is not None else exc.filename or ".")
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    return exc.strerror or str(exc) or type(exc).__name__


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError`` that reached the command line: the path it concerns and the reason."""
    reason = os_error_reason(exc)
    if exc.filename is None:
        return reason
    target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
    return f"{target}: {reason}"


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) if needed; a clear error when that is impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QDMError(f"{path}: cannot create the folder ({os_error_reason(exc, path)})") from exc
    return path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only if the block succeeds.

    The file gets the mode a plain ``open()`` would give it (umask-based), whatever wrote it. An ``OSError``
    (here or in the block) becomes a ``QDMError`` naming ``final``; any other exception leaves the block as is.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
    except OSError as exc:
        raise QDMError(f"{final}: could not write ({os_error_reason(exc, final.parent)})") from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)  # by path: mkstemp makes 0600, and a writer may have replaced the file
        with open(tmp_path, "rb+") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise QDMError(f"{final}: could not write ({os_error_reason(exc, final)})") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that ``atomic_path`` left in ``folder`` when a process was killed mid-write.

    Only for folders that one process writes at a time (a run folder when its run starts or resumes)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TEMPORARY.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def _non_finite(obj, where: str = "") -> tuple[str, float] | None:
    """The first NaN or infinite float in ``obj`` (nested dicts and lists) as (field, value), else None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "(top level)", obj)
    if isinstance(obj, dict):
        items = ((f"{where}.{key}" if where else str(key), value) for key, value in obj.items())
    elif isinstance(obj, list | tuple):
        items = ((f"{where}[{i}]", value) for i, value in enumerate(obj))
    else:
        return None
    for field, value in items:
        found = _non_finite(value, field)
        if found is not None:
            return found
    return None


def json_text(obj, path: str | os.PathLike, indent: int | None = 2) -> str:
    """``obj`` as strict JSON (no NaN / Infinity tokens, which JSON does not have); a clear error naming
    ``path`` and the field otherwise."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError as exc:
        found = _non_finite(obj)
        if found is None:
            raise QDMError(f"{path}: cannot be written as JSON ({exc})") from exc
        field, value = found
        raise QDMError(f"{path}: {field} is {value}, expected a finite number (JSON has no NaN or Infinity); "
                       "nothing written") from exc


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json_text(obj, path) + "\n")


def read_versioned_json(path: str | os.PathLike, fmt: str, version: int) -> dict:
    """A JSON object written with ``{"format": fmt, "version": version, ...}``; anything else is a clear error."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QDMError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise QDMError(f"{path}: expected format {fmt!r}")
    if obj.get("version") != version:
        raise QDMError(f"{path}: unsupported version {obj.get('version')!r}, expected {version}")
    return obj


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
