"""The C++ runtime (native/: libqdm.so, qdm-native) against the Python package, on the default model's .pte files.

Same answers as Python's ExecuTorch on the bundled sample, the JSONL of ``qdm predict``, the device self-check, and
one-line errors for bad input, also on an AddressSanitizer + UBSan build.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import artifact_with_bytes, stroke_lines

from quickdraw_mobile.export import load_artifact
from quickdraw_mobile.modelref import default_model_dir
from quickdraw_mobile.predict import predict_file

REPO = Path(__file__).resolve().parents[1]
SAMPLE = default_model_dir() / "sample.npz"
ASAN_BUILD = REPO / "native" / "build-asan"
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


def run(binary: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """The default model's bundled test sample as an .npy: (path, pixels, labels)."""
    data = np.load(SAMPLE)
    path = tmp_path_factory.mktemp("sample") / "sample.npy"
    np.save(path, data["pixels"])
    return path, data["pixels"], data["labels"]


@pytest.mark.parametrize("quant", ["none", "int8"])
def test_classify_gives_python_executorchs_answers(quant, native_bin, default_ptes, sample, tmp_path):
    path, pixels, labels = sample
    pte = default_ptes[quant]
    run(native_bin, "classify", "--model", pte, "--input", path, "--out", tmp_path / "p.jsonl",
        "--logits", tmp_path / "logits.npy", "--top-k", 3)
    native = np.load(tmp_path / "logits.npy")
    python = load_artifact(pte).run_pixels(pixels)
    diff = float(np.abs(native - python).max())
    agree = int((native.argmax(1) == python.argmax(1)).sum())
    print(f"\n{quant}: C++ vs Python ExecuTorch: top-1 {agree}/{len(pixels)} agree, largest logit difference {diff:.3g}; "
          f"C++ top-1 accuracy {(native.argmax(1) == labels).mean():.4f}")
    assert native.shape == python.shape and native.dtype == np.float32
    assert agree == len(pixels)
    assert diff <= 1e-4  # the same XNNPACK kernels on the same input bytes
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["top"][0]["class"] for r in rows] == [load_artifact(pte).labels[i] for i in native.argmax(1)]
    assert all(len(r["top"]) == 3 for r in rows)


def _some_drawings(fmt: str, per_class: int) -> str:
    """Hand-drawn strokes (conftest.stroke_lines) under every fifth class name of the default model."""
    names = [line for line in (default_model_dir() / "labels.txt").read_text().splitlines() if line][::5]
    return "".join(f"{line}\n" for name in names for line in stroke_lines(name, per_class, fmt))


@pytest.mark.parametrize("folder", ["simplified", "raw"])
def test_ndjson_strokes_give_the_top5_of_qdm_predict(folder, native_bin, default_ptes, tmp_path):
    strokes = tmp_path / "drawings.ndjson"
    strokes.write_text(_some_drawings(folder, 5))
    pte = default_ptes["int8"]
    run(native_bin, "classify", "--model", pte, "--input", strokes, "--out", tmp_path / "native.jsonl")
    predict_file(str(pte), strokes, tmp_path / "python.jsonl", k=5)
    native = [json.loads(line)["top"] for line in (tmp_path / "native.jsonl").read_text().splitlines()]
    python = [json.loads(line)["top"] for line in (tmp_path / "python.jsonl").read_text().splitlines()]
    assert len(native) == len(python) == strokes.read_text().count("\n")
    assert [[c["class"] for c in row] for row in native] == [[c["class"] for c in row] for row in python]
    largest = max(abs(a["prob"] - b["prob"]) for ra, rb in zip(native, python, strict=True)
                  for a, b in zip(ra, rb, strict=True))
    assert largest <= 2e-6  # both round to 6 decimals; softmax in double here, in float32 in torch


def test_jsonl_is_written_like_pythons_json(native_bin, default_ptes, sample, tmp_path):
    path, pixels, _ = sample
    np.save(tmp_path / "few.npy", pixels[:50])
    run(native_bin, "classify", "--model", default_ptes["none"], "--input", tmp_path / "few.npy",
        "--out", tmp_path / "p.jsonl")
    for line in (tmp_path / "p.jsonl").read_text().splitlines():
        assert line == json.dumps(json.loads(line))  # separators, float repr, escapes: byte for byte


@pytest.mark.parametrize("quant", ["none", "int8"])
def test_selfcheck_passes_here_and_fails_on_answers_that_are_off(quant, native_bin, default_ptes, tmp_path):
    pte = default_ptes[quant]
    done = run(native_bin, "selfcheck", "--model", pte)
    assert done.stdout.startswith("selfcheck passed") and "largest logit difference 0 " in done.stdout
    # A device whose kernels compute something else: here the recorded answers are moved instead.
    copy = _copy_artifact(pte, tmp_path)
    meta_path = Path(f"{copy}.metadata.json")
    meta = json.loads(meta_path.read_text())
    meta["selfcheck"]["expected_logits"][0][3] += 3 * meta["selfcheck"]["tolerance"] + 1e-3
    meta_path.write_text(json.dumps(meta))
    done = run(native_bin, "selfcheck", "--model", copy, check=False)
    assert done.returncode == 1 and done.stdout.startswith("selfcheck FAILED"), done.stdout + done.stderr


def test_bench_reports_latency_memory_and_size(native_bin, default_ptes, tmp_path):
    run(native_bin, "bench", "--model", default_ptes["int8"], "--runs", 5, "--warmup", 1, "--batch", 4,
        "--threads", "1,2", "--json", tmp_path / "bench.json")
    report = json.loads((tmp_path / "bench.json").read_text())
    assert set(report["threads"]) == {"1", "2"}
    for per in report["threads"].values():
        assert 0 < per["latency"]["p50_ms"] <= per["latency"]["p95_ms"] and per["throughput"]["batch"] == 4
    assert 0 < report["peak_rss_mb"] < 200
    names = [Path(lib["path"]).name for lib in report["libraries"] if not lib["system"]]
    assert "libexecutorch.so" in names and "libexecutorch_backend_xnnpack.so" in names
    assert report["carried_bytes"] == report["binary_bytes"] + sum(
        lib["bytes"] for lib in report["libraries"] if not lib["system"])


def test_qdm_bench_has_an_executorch_cpp_row_per_pte(default_ptes, tmp_path):
    from quickdraw_mobile.bench.report import markdown_table
    from quickdraw_mobile.bench.runner import run_bench

    result = run_bench([str(default_ptes["none"]), str(default_ptes["int8"])], tmp_path, runs=3, warmup=1, batch=4,
                       threads=[1])
    rows = {r["name"]: r for r in result["results"]}
    assert list(rows) == ["ExecuTorch FP32", "ExecuTorch C++ FP32", "ExecuTorch INT8", "ExecuTorch C++ INT8"]
    for quant in ("FP32", "INT8"):
        cpp, python = rows[f"ExecuTorch C++ {quant}"], rows[f"ExecuTorch {quant}"]
        assert cpp["path"] == python["path"] and cpp["size_bytes"] == python["size_bytes"]
        assert cpp["latency"]["1"]["p50_ms"] > 0 and cpp["throughput"]["1"]["batch"] == 4
        assert 0 < cpp["memory"]["peak_rss_mb"] < python["memory"]["peak_rss_mb"]
        assert cpp["carried_bytes"] > cpp["binary_bytes"] > 0
    table = markdown_table(result)
    assert "| ExecuTorch C++ INT8 |" in table and "an app carries" in table


def test_the_c_example_runs_on_libqdm(native_bin, default_ptes):
    done = run(native_bin.parent / "qdm-example-c", default_ptes["int8"])
    lines = done.stdout.splitlines()
    assert lines[0].startswith("selfcheck passed") and len(lines) == 4
    assert lines[1].startswith("1. ") and float(lines[1].split()[-1]) > 0


# ------------------------------------------------------------------------------------------------- bad input
def _copy_artifact(pte: Path, folder: Path, name: str = "copy.pte") -> Path:
    return artifact_with_bytes(pte, folder / name, pte.read_bytes())


def _edit_metadata(pte: Path, edit) -> None:
    path = Path(f"{pte}.metadata.json")
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _make_case(case: str, pte: Path, tmp: Path) -> tuple[list, str]:
    """(classify arguments, text the one-line error must contain) for one kind of bad input."""
    copy = _copy_artifact(pte, tmp)
    good = tmp / "good.npy"
    np.save(good, np.zeros((2, 784), np.uint8))
    model, data = copy, good
    if case == "missing model":
        model = tmp / "absent.pte"
    elif case == "random bytes":
        artifact_with_bytes(pte, copy, np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    elif case == "changed file":
        copy.write_bytes(copy.read_bytes()[:-1] + b"\0")
    elif case == "labels length":
        Path(f"{copy}.labels.txt").write_text("cat\ndog\n")
    elif case == "renderer mismatch":
        _edit_metadata(copy, lambda m: m["input"].update(renderer="qdm-render-2"))
    elif case == "metadata not json":
        Path(f"{copy}.metadata.json").write_text("{not json")
    elif case == "npy shape":
        data = tmp / "bad.npy"
        np.save(data, np.zeros((2, 28), np.uint8))
    elif case == "npy dtype":
        data = tmp / "bad.npy"
        np.save(data, np.zeros((2, 784), np.float32))
    elif case == "ndjson":
        data = tmp / "bad.ndjson"
        data.write_text('{"drawing": [[[1, 2], [3, 4]]]}\n{"drawing": [[[1, 2], [3]]]}\n')
    expected = {"missing model": "absent.pte", "random bytes": "cannot load", "changed file": "sha256",
                "labels length": "labels.txt", "renderer mismatch": "qdm-render-2",
                "metadata not json": "metadata.json", "npy shape": "bad.npy", "npy dtype": "float32",
                "ndjson": "bad.ndjson:2"}[case]
    return ["classify", "--model", model, "--input", data, "--out", tmp / "out.jsonl"], expected


BAD_CASES = ["missing model", "random bytes", "changed file", "labels length", "renderer mismatch",
             "metadata not json", "npy shape", "npy dtype", "ndjson"]


def _check_refused(binary: Path, args: list, expected: str, out: Path) -> None:
    done = run(binary, *args, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], done.stderr
    assert not out.exists()


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_writes_nothing(case, native_bin, default_ptes, tmp_path):
    args, expected = _make_case(case, default_ptes["int8"], tmp_path)
    _check_refused(native_bin, args, expected, tmp_path / "out.jsonl")


@pytest.fixture(scope="session")
def asan_bin(native_bin) -> Path:
    """qdm-native built with AddressSanitizer + UBSan (native/build-asan, rebuilt only when sources change)."""
    cmake = REPO / ".venv" / "bin" / "cmake"
    cmake = cmake if cmake.is_file() else Path(shutil.which("cmake") or "cmake")
    cache = (native_bin.parent / "CMakeCache.txt").read_text()
    prefix = next(line.split("=", 1)[1] for line in cache.splitlines() if line.startswith("CMAKE_PREFIX_PATH"))
    ninja = next(line.split("=", 1)[1] for line in cache.splitlines() if line.startswith("CMAKE_MAKE_PROGRAM"))
    for step in ([cmake, "-S", REPO / "native", "-B", ASAN_BUILD, "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
                  f"-DCMAKE_PREFIX_PATH={prefix}", "-DQDM_SANITIZE=ON", "-DQDM_WERROR=ON",
                  "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], [cmake, "--build", ASAN_BUILD, "--target", "qdm-native"]):
        done = subprocess.run(list(map(str, step)), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return ASAN_BUILD / "qdm-native"


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_under_asan_and_ubsan(case, asan_bin, default_ptes, tmp_path):
    args, expected = _make_case(case, default_ptes["int8"], tmp_path)
    done = run(asan_bin, *args, check=False)
    assert not any(report in done.stderr for report in SANITIZER_REPORTS), done.stderr
    _check_refused(asan_bin, args, expected, tmp_path / "out.jsonl")


def test_good_input_under_asan_and_ubsan(asan_bin, default_ptes, sample, tmp_path):
    strokes = tmp_path / "drawings.ndjson"
    strokes.write_text(_some_drawings("raw", 2))
    for args in (["classify", "--model", default_ptes["int8"], "--input", strokes, "--out", tmp_path / "a.jsonl"],
                 ["classify", "--model", default_ptes["none"], "--input", sample[0], "--out", tmp_path / "b.jsonl"],
                 ["selfcheck", "--model", default_ptes["int8"]],
                 ["render", "--input", strokes, "--out", tmp_path / "c.npy"]):
        done = run(asan_bin, *args, check=False)
        assert done.returncode == 0 and not any(r in done.stderr for r in SANITIZER_REPORTS), done.stderr


# ------------------------------------------------------------------------------------ the C API through an FFI
class QdmError(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("message", ctypes.c_char * 512)]


@pytest.fixture(scope="module")
def libqdm(native_bin) -> ctypes.CDLL:
    """libqdm.so loaded as a Dart, Swift or JNI bridge would: plain C calls, caller-owned buffers."""
    lib = ctypes.CDLL(str(native_bin.parent / "libqdm.so"))
    lib.qdm_renderer_version.restype = ctypes.c_char_p
    return lib


def test_c_api_renders_json_and_strokes_like_python(libqdm):
    from quickdraw_mobile.data.render import RENDERER_VERSION, render_strokes

    assert libqdm.qdm_renderer_version().decode() == RENDERER_VERSION
    simplified = [[[10, 80, 200], [20, 240, 30]], [[128], [128]]]
    raw = [[[103.5, 140.25, 190.0, 310.75], [40.0, 95.5, 20.25, 180.0], [0, 16, 33, 50]]]
    out, error = (ctypes.c_uint8 * 784)(), QdmError()
    assert libqdm.qdm_render_json(json.dumps(simplified).encode(), 0, out, ctypes.byref(error)) == 0
    assert bytes(out) == render_strokes(simplified).tobytes() and error.message == b""
    xs, ys, ts = ((ctypes.c_double * 4)(*values) for values in raw[0])
    lengths = (ctypes.c_size_t * 1)(4)
    assert libqdm.qdm_render_strokes(xs, ys, ts, lengths, 1, 0, out, ctypes.byref(error)) == 0
    assert bytes(out) == render_strokes(raw, fmt="raw").tobytes()


def test_c_api_errors_are_codes_and_one_line(libqdm, tmp_path):
    out, error = (ctypes.c_uint8 * 784)(), QdmError()
    assert libqdm.qdm_render_json(b"[[[1, 2], [3]]]", 1, out, ctypes.byref(error)) == 3  # QDM_ERROR_INPUT
    assert error.status == 3 and b"unequal length" in error.message and b"\n" not in error.message
    assert libqdm.qdm_render_json(None, 0, out, ctypes.byref(error)) == 1  # QDM_ERROR_ARGUMENT
    handle = ctypes.c_void_p()
    assert libqdm.qdm_classifier_open(str(tmp_path / "none.pte").encode(), None, ctypes.byref(handle),
                                      ctypes.byref(error)) == 2  # QDM_ERROR_IO
    assert handle.value is None and b"none.pte: no such exported model" in error.message
    assert libqdm.qdm_render_json(b"[[[1, 2], [3, 4]]]", 0, out, None) == 0  # a NULL error is allowed
