"""Reading a ``.npy`` header from its first bytes, so a remote file can be checked before its rows are fetched.

The format (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html)::

    \\x93NUMPY  major minor  header_len (uint16 LE for 1.0, uint32 LE for 2.0 / 3.0)  {'descr': ..., ...}\\n

The data starts right after the header dict; for a C-order array its bytes are the rows, one after another.
This module only parses (``ast.literal_eval``, never ``eval``) and checks; it does no I/O.
"""

from __future__ import annotations

import ast
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import QDMError

MAGIC = b"\x93NUMPY"
# Bytes before the header dict: magic, version, and the dict's length field (2 bytes in 1.0, 4 bytes after).
_PREAMBLE = {1: (struct.Struct("<H"), 10, "latin1"), 2: (struct.Struct("<I"), 12, "latin1"),
             3: (struct.Struct("<I"), 12, "utf8")}
PREAMBLE_MAX = 12
MAX_HEADER_BYTES = 1 << 16  # a real header is ~128 bytes; anything huge is not an array we asked for


@dataclass(frozen=True)
class NpyHeader:
    version: tuple[int, int]
    data_offset: int  # the array's first byte; equals the full header length
    dtype: np.dtype
    fortran_order: bool
    shape: tuple[int, ...]


def header_length(prefix: bytes, where: str) -> int:
    """Length of the whole header (where the data starts), read from its first ``PREAMBLE_MAX`` bytes."""
    if not prefix.startswith(MAGIC):
        if len(prefix) < len(MAGIC) and MAGIC.startswith(prefix):
            raise QDMError(f"{where}: truncated .npy header ({len(prefix)} bytes)")
        raise QDMError(f"{where}: not a .npy file (starts with {prefix[:16]!r}, expected {MAGIC!r})")
    if len(prefix) < 8:
        raise QDMError(f"{where}: truncated .npy header ({len(prefix)} bytes)")
    major, minor = prefix[6], prefix[7]
    if major not in _PREAMBLE or minor != 0:
        raise QDMError(f"{where}: unsupported .npy format version {major}.{minor} (expected 1.0, 2.0 or 3.0)")
    length_field, start, _ = _PREAMBLE[major]
    if len(prefix) < start:
        raise QDMError(f"{where}: truncated .npy header ({len(prefix)} bytes)")
    total = start + length_field.unpack_from(prefix, 8)[0]
    if total > MAX_HEADER_BYTES:
        raise QDMError(f"{where}: .npy header claims {total} bytes (expected at most {MAX_HEADER_BYTES})")
    return total


def parse_header(data: bytes, where: str) -> NpyHeader:
    """Parse a complete header (``data`` holds at least ``header_length`` bytes)."""
    total = header_length(data[:PREAMBLE_MAX], where)
    if len(data) < total:
        raise QDMError(f"{where}: truncated .npy header ({len(data)} of {total} bytes)")
    major = data[6]
    _, start, encoding = _PREAMBLE[major]
    try:
        fields = ast.literal_eval(data[start:total].decode(encoding))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        raise QDMError(f"{where}: corrupt .npy header (not a Python literal: {exc.__class__.__name__})") from exc
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise QDMError(f"{where}: corrupt .npy header (expected a dict with descr, fortran_order, shape)")
    shape = fields["shape"]
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise QDMError(f"{where}: corrupt .npy header (shape {shape!r} is not a tuple of sizes)")
    if not isinstance(fields["fortran_order"], bool):
        raise QDMError(f"{where}: corrupt .npy header (fortran_order {fields['fortran_order']!r} is not a bool)")
    try:
        dtype = np.dtype(fields["descr"])
    except (TypeError, ValueError) as exc:
        raise QDMError(f"{where}: corrupt .npy header (descr {fields['descr']!r} is not a dtype)") from exc
    return NpyHeader((major, data[7]), total, dtype, fields["fortran_order"], shape)


def bitmap_rows(header: NpyHeader, where: str, pixels: int = 784) -> int:
    """Rows of a Quick, Draw! bitmap file: uint8, C order, shape (N, 784) (or (N, 28, 28)); else raise."""
    if header.dtype != np.uint8:
        raise QDMError(f"{where}: expected dtype uint8 ('|u1'), got {header.dtype.str!r}")
    if header.fortran_order:
        raise QDMError(f"{where}: expected C order, got fortran_order=True")
    side = int(round(pixels**0.5))
    if len(header.shape) < 2 or header.shape[1:] not in ((pixels,), (side, side)):
        raise QDMError(f"{where}: expected shape (N, {pixels}), got {header.shape}")
    return header.shape[0]
