"""The C++ renderer of qdm-native (native/src/render.cpp) against the Python one, through the command line.

``qdm-native render --input FILE.ndjson --out FILE.npy [--format auto|simplified|raw]`` must write exactly the
(N, 784) uint8 array that ``render_ndjson`` gives, on every official pair and every raw drawing of the shared
data, and must refuse what ``render_ndjson`` refuses: exit status 2, one line ``error: <the same message>`` on
stderr, and no output file. The binary is ``native/build/qdm-native`` (``bash scripts/setup.sh`` builds it), or
the one named by the QDM_NATIVE environment variable.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from quickdraw_mobile.data.render import render_many, render_ndjson
from quickdraw_mobile.errors import QDMError

REPO = Path(__file__).resolve().parents[1]


def qdm_native() -> Path:
    """The binary under test; a missing one fails the test (CI builds it, so it must not be skipped)."""
    binary = Path(os.environ.get("QDM_NATIVE", REPO / "native" / "build" / "qdm-native"))
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"qdm-native not found at {binary}: build it with `bash scripts/setup.sh` "
                    "(or cmake -S native -B native/build && cmake --build native/build), or set QDM_NATIVE")
    return binary


def render_command(src: Path, out: Path, fmt: str | None) -> list[str]:
    return [str(qdm_native()), "render", "--input", str(src), "--out", str(out), *(["--format", fmt] if fmt else [])]


def native_render(src: Path, out: Path, fmt: str | None = None) -> np.ndarray:
    done = subprocess.run(render_command(src, out, fmt), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return np.load(out)


def write_ndjson(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def assert_identical(native: np.ndarray, python: np.ndarray, what: str) -> None:
    assert native.dtype == np.uint8 and native.shape == python.shape, (native.dtype, native.shape, python.shape)
    differ = np.flatnonzero((native != python).any(axis=1))
    print(f"\n{what}: {len(python) - len(differ)}/{len(python)} bitmaps byte-identical")
    assert len(differ) == 0, f"{what}: rows {differ[:10].tolist()} differ (of {len(differ)})"


# ---------------------------------------------------------------------------------------------- real data
def test_official_pairs_are_byte_identical(shared_data, tmp_path):
    pairs = np.load(shared_data / "render_pairs.npz")
    drawings = [json.loads(str(text)) for text in pairs["drawing"]]
    src = write_ndjson(tmp_path / "pairs.ndjson",
                       [{"word": str(word), "drawing": d} for word, d in zip(pairs["word"], drawings, strict=True)])
    python = render_many(drawings)
    for fmt in ("simplified", "auto"):
        out = tmp_path / f"pairs-{fmt}.npy"
        assert_identical(native_render(src, out, fmt), python, f"official pairs, --format {fmt}")
    assert out.read_bytes() == npy_bytes(python)  # the very bytes np.save writes


def _python_reference(files: list[str]) -> np.ndarray:
    return np.concatenate([render_ndjson(Path(name), "auto")[0] for name in files])


def test_every_raw_file_is_byte_identical(shared_data, tmp_path):
    """All raw drawings (about 9,600, with timestamps): the official simplification, then the raster."""
    files = sorted((shared_data / "raw").glob("*.ndjson"))
    assert len(files) == 345
    src = tmp_path / "all_raw.ndjson"
    with open(src, "wb") as fh:
        for path in files:
            data = path.read_bytes()
            fh.write(data if data.endswith(b"\n") else data + b"\n")
    out = tmp_path / "all_raw.npy"
    # Python needs ~1 ms a drawing: render it on every core while the native command runs.
    native = subprocess.Popen(render_command(src, out, None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = max(1, min(os.cpu_count() or 1, 8))
    groups = [[str(files[i]) for i in chunk] for chunk in np.array_split(np.arange(len(files)), workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        python = np.concatenate(list(pool.map(_python_reference, groups)))  # in file order
    _, stderr = native.communicate(timeout=300)
    assert native.returncode == 0, stderr
    assert_identical(np.load(out), python, f"{len(files)} raw files")


# --------------------------------------------------------------------------------------------- edge cases
EDGE_CASES = [
    {"word": "dot", "drawing": [[[100], [100]]]},
    {"word": "two equal points", "drawing": [[[37, 37], [200, 200]]]},
    {"word": "corners", "drawing": [[[0, 255], [0, 255]], [[255, 0], [0, 255]]]},
    {"word": "long side only", "drawing": [[[0, 255, 255, 0], [0, 0, 3, 3]]]},
    {"drawing": [[[], []], [[5, 5], [9, 9]], [[200], [30]]]},  # an empty stroke, no word
    {"word": "caf\u00e9 \u2603", "drawing": [[[10, 20, 30, 20, 10], [10, 40, 10, 40, 10]]]},  # crosses itself
    {"word": "float within 0..255", "drawing": [[[1.5, 100.25], [3.0, 254.5]]]},
    {"word": "raw dot", "drawing": [[[12.5], [40.25], [0]]]},
    {"word": "raw, one place thrice", "drawing": [[[3.0, 3.0, 3.0], [7.0, 7.0, 7.0]]]},
    {"word": "raw, outside 0..255", "drawing": [[[-40, 900, 300.5], [12, -7, 1e4]], [[0], [0]]]},
    {"word": "raw, tiny", "drawing": [[[0, 1e-9, 2e-9], [0, 3e-9, 0], [0, 16, 33]]]},
]


def test_dots_single_points_and_edge_cases(tmp_path):
    lines = [json.dumps(record) for record in EDGE_CASES]
    src = tmp_path / "edge.ndjson"  # CRLF and blank lines too: only the drawings count
    src.write_bytes(("\r\n".join(lines[:4]) + "\r\n\r\n   \n" + "\n".join(lines[4:])).encode("utf-8"))
    assert_identical(native_render(src, tmp_path / "edge.npy"), render_ndjson(src, "auto")[0], "edge cases, auto")
    simplified = write_ndjson(tmp_path / "simplified.ndjson", EDGE_CASES[:7])
    for fmt in ("simplified", "raw"):
        python = render_ndjson(simplified, fmt)[0]
        assert_identical(native_render(simplified, tmp_path / f"{fmt}.npy", fmt), python, f"edge cases, {fmt}")


# -------------------------------------------------------------------------------------------- bad input
GOOD = json.dumps({"word": "cat", "drawing": [[[0, 100, 255], [0, 200, 30]]]})
BAD_INPUT = {
    "malformed JSON": (GOOD + "\n" + '{"drawing": [[[1, 2], [3, 4]]\n', None),
    "not an object": (GOOD + "\n[1, 2]\n", None),
    "missing drawing": (GOOD + '\n{"word": "cat"}\n', None),
    "word not a string": ('{"word": 3, "drawing": [[[1], [2]]]}\n', None),
    "unequal lists": (GOOD + '\n{"drawing": [[[1, 2], [3]]]}\n', None),
    "strings for numbers": ('{"drawing": [[[1, 2], [3, 4]], [["a"], [1]]]}\n', None),
    "no points": ('{"drawing": [[[], []]]}\n', None),
    "out of range, simplified": (GOOD + '\n{"drawing": [[[0, 300], [0, 10]]]}\n', "simplified"),
    "time list, simplified": ('{"drawing": [[[0, 1], [0, 1], [0, 5]]]}\n', "simplified"),
    "not UTF-8": (GOOD + "\n", None),  # a bad byte is appended below
    "empty file": ("", None),
    "blank lines only": ("\n  \n\n", None),
    "missing file": (None, None),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_error_line_and_no_output(case, tmp_path):
    content, fmt = BAD_INPUT[case]
    src = tmp_path / "input.ndjson"
    if content is not None:
        src.write_bytes(content.encode("utf-8") + (b'{"drawing": "\xff"}\n' if case == "not UTF-8" else b""))
    out = tmp_path / "out.npy"
    done = subprocess.run(render_command(src, out, fmt), capture_output=True, text=True, timeout=60)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(src) in lines[0], lines
    assert not out.exists() and list(tmp_path.iterdir()) == ([src] if content is not None else [])
    with pytest.raises(QDMError) as python:
        render_ndjson(src, fmt or "auto")
    if case == "not UTF-8":  # Python decodes ahead in blocks and names the first line of the block
        assert lines[0] == f"error: {src}:2: not UTF-8 text" and str(python.value) == f"{src}:1: not UTF-8 text"
    else:
        assert lines[0] == f"error: {python.value}"  # the same words as the Python package
