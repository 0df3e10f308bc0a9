"""The official-data downloader against a local HTTP server that serves numpy_bitmap files of real drawings.

The server (127.0.0.1, ephemeral port) speaks Range like Google's bucket, and can be told to ignore Range, drop
the connection once at a given byte, answer 500 once, answer an HTML page, or stall.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBEDDED_CLASSES

from quickdraw_mobile import cli
from quickdraw_mobile.data import download as dl
from quickdraw_mobile.data.classes import sample_classes
from quickdraw_mobile.data.download import class_url, download, partial_path
from quickdraw_mobile.data.npyformat import bitmap_rows, header_length, parse_header
from quickdraw_mobile.data.store import Store
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.fileio import sha256_file

SERVED = ["guitar", "bee", "The Eiffel Tower"]  # small files; one name with spaces
# The package holds none of these classes: each file is real drawings of one it holds (the downloader never looks
# at what a drawing shows), with its own row count, in the official .npy format.
STAND_IN = {"guitar": ("apple", 383), "bee": ("banana", 391), "The Eiffel Tower": ("house", 794)}
ROW = 784


class FakeBucket:
    """Per-test server state: which files exist, how to misbehave, and a log of every request."""

    def __init__(self, root: Path):
        self.root = root
        self.ignore_range = False
        self.html = False
        self.drop_once: dict[str, int] = {}  # class -> file offset at which to close the connection, once
        self.fail_once: dict[str, int] = {}  # class -> HTTP status to answer once
        self.stall_at: int | None = None  # with ignore_range: stop sending at this offset until released
        self.release = threading.Event()
        self.requests: list[tuple[str, str | None, int]] = []  # (class, Range header, status)
        self.lock = threading.Lock()

    def log(self, name: str, range_header: str | None, status: int) -> None:
        with self.lock:
            self.requests.append((name, range_header, status))

    def ranges(self, name: str) -> list[str | None]:
        return [r for n, r, _ in self.requests if n == name]


def _handler(bucket: FakeBucket):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):  # noqa: N802 (http.server's naming)
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            name = path.removeprefix("/qd/").removesuffix(".npy")
            range_header = self.headers.get("Range")
            file = bucket.root / f"{name}.npy"
            if name in bucket.fail_once:
                status = bucket.fail_once.pop(name)
                bucket.log(name, range_header, status)
                return self.send_error(status)
            if not path.startswith("/qd/") or not file.is_file():
                bucket.log(name, range_header, 404)
                return self.send_error(404)
            if bucket.html:
                body = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
                bucket.log(name, range_header, 200)
                return self._send(200, body, {"Content-Type": "text/html; charset=utf-8"}, 0)
            data = file.read_bytes()
            asked = None  # the byte range the client asked for, whether or not it is honoured
            if range_header:
                first, last = (int(x) for x in range_header.removeprefix("bytes=").split("-"))
                asked = (first, min(last, len(data) - 1))
            if asked and not bucket.ignore_range:
                first, last = asked
                bucket.log(name, range_header, 206)
                headers = {"Content-Range": f"bytes {first}-{last}/{len(data)}"}
                return self._send(206, data[first : last + 1], headers, first, name, asked)
            bucket.log(name, range_header, 200)
            return self._send(200, data, {}, 0, name, asked)

        def _send(self, status, body, headers, offset, name=None, asked=None):
            self.send_response(status)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(body)), **headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            drop = bucket.drop_once.get(name)
            if drop is not None and asked and asked[0] < drop <= asked[1]:  # only a request meant to cross it
                del bucket.drop_once[name]
                body = body[: drop - offset]  # Content-Length promised more: the client sees an early close
            try:
                if bucket.ignore_range and bucket.stall_at is not None and status == 200:
                    self.wfile.write(body[: bucket.stall_at])
                    self.wfile.flush()
                    bucket.release.wait(20)  # a client that reads past stall_at hangs here until its timeout
                    body = body[bucket.stall_at :]
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client closed early on purpose (it had what it needed)
            self.close_connection = True

    return Handler


@pytest.fixture
def bucket(drawings, tmp_path):
    root = tmp_path / "bucket"
    root.mkdir()
    for name in SERVED:
        np.save(root / f"{name}.npy", drawings(*STAND_IN[name]))
    state = FakeBucket(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/qd/"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_BACKOFF", 0.01)


def official(bucket: FakeBucket, name: str) -> np.ndarray:
    return np.load(bucket.root / f"{name}.npy")


def rows_range(first: int, rows: int) -> str:
    return f"bytes={first}-{128 + rows * ROW - 1}"


def final_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.npy"))


# ------------------------------------------------------------------------------------------------ .npy header
def test_header_parser_agrees_with_numpy_for_every_version():
    array = np.zeros((7, 784), dtype=np.uint8)
    for version in [(1, 0), (2, 0), (3, 0)]:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, version=version)
        data = buffer.getvalue()
        header = parse_header(data, "mem")
        assert header.version == version
        assert header.data_offset == len(data) - array.nbytes
        assert header_length(data[:12], "mem") == header.data_offset
        assert bitmap_rows(header, "mem") == 7
    # a header longer than the usual 128 bytes (padding is allowed): its length comes from the length field
    padded = b"{'descr': '|u1', 'fortran_order': False, 'shape': (3, 784), }" + b" " * 300 + b"\n"
    long_header = b"\x93NUMPY\x01\x00" + len(padded).to_bytes(2, "little") + padded
    assert parse_header(long_header, "mem").data_offset == 10 + len(padded) > 128


@pytest.mark.parametrize("data, message", [
    (b"<!DOCTYPE html><html>", "not a .npy file"),
    (b"\x93NUMPY\x04\x00\x10\x00", "unsupported .npy format version 4.0"),
    (b"\x93NUMPY\x01\x00\x20\x00{'descr': '|u1'", "truncated .npy header"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': nope}\n", "corrupt .npy header"),
])
def test_header_parser_rejects_broken_headers(data, message):
    with pytest.raises(QDMError, match=message):
        parse_header(data, "x.npy")


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 784), dtype="<f4"), "expected dtype uint8"),
    (np.zeros((2, 785), dtype=np.uint8), r"expected shape \(N, 784\)"),
    (np.asfortranarray(np.zeros((2, 784), dtype=np.uint8)), "expected C order"),
])
def test_bitmap_check_rejects_wrong_arrays(array, message):
    buffer = io.BytesIO()
    np.save(buffer, array)
    with pytest.raises(QDMError, match=message):
        bitmap_rows(parse_header(buffer.getvalue(), "x.npy"), "x.npy")


def test_class_url_quotes_spaces_and_accepts_either_base_form():
    assert class_url("The Eiffel Tower") == dl.OFFICIAL_BASE_URL + "The%20Eiffel%20Tower.npy"
    assert class_url("cat", "http://h/x") == class_url("cat", "http://h/x/") == "http://h/x/cat.npy"


# ------------------------------------------------------------------------------------------------ happy paths
def test_range_download_fetches_exactly_the_first_rows(bucket, tmp_path):
    out = tmp_path / "store"
    store = download(SERVED, per_class=100, out=out, base_url=bucket.url, workers=3, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["name"] for e in manifest["classes"]] == ["The Eiffel Tower", "bee", "guitar"]  # official order
    for entry in manifest["classes"]:
        name = entry["name"]
        assert np.array_equal(store.array(name), official(bucket, name)[:100])
        assert entry["count"] == 100
        assert entry["sha256"] == sha256_file(out / entry["file"])
        assert entry["source"] == class_url(name, bucket.url)
        # one 128-byte header probe, then exactly the bytes of 100 rows: nothing more is transferred
        assert bucket.ranges(name) == ["bytes=0-127", rows_range(128, 100)]
    assert "The%20Eiffel%20Tower" in class_url("The Eiffel Tower", bucket.url)
    assert not (out / dl.PARTIAL_DIR).exists()
    assert Store.open(out, verify=True).counts == {"The Eiffel Tower": 100, "bee": 100, "guitar": 100}


def test_server_ignoring_range_is_read_only_as_far_as_needed(bucket, tmp_path):
    per_class = 50
    bucket.ignore_range = True
    # the server sends the needed prefix and then hangs: a client reading the whole body would time out
    bucket.stall_at = 128 + per_class * ROW
    store = download(["The Eiffel Tower", "guitar"], per_class=per_class, out=tmp_path / "s",
                     base_url=bucket.url, workers=2, progress=False, timeout=3, retries=0)
    for name in ["The Eiffel Tower", "guitar"]:
        assert np.array_equal(store.array(name), official(bucket, name)[:per_class])
        assert {status for n, _, status in bucket.requests if n == name} == {200}


def test_per_class_beyond_the_file_keeps_all_rows_and_says_so(bucket, tmp_path, capsys):
    rows = len(official(bucket, "guitar"))
    store = download(["guitar"], per_class=rows + 1000, out=tmp_path / "s", base_url=bucket.url)
    assert np.array_equal(store.array("guitar"), official(bucket, "guitar"))
    assert bucket.ranges("guitar")[-1] == rows_range(128, rows)
    assert f"the file has only {rows} drawings" in capsys.readouterr().err


def test_header_longer_than_the_probe_takes_one_more_request(bucket, tmp_path):
    rows = official(bucket, "bee")
    padded = (b"{'descr': '|u1', 'fortran_order': False, 'shape': (%d, 784), }" % len(rows)).ljust(245) + b"\n"
    (bucket.root / "bee.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(padded).to_bytes(2, "little") + padded
                                          + rows.tobytes())
    store = download(["bee"], per_class=20, out=tmp_path / "s", base_url=bucket.url, progress=False)
    assert np.array_equal(store.array("bee"), rows[:20])
    assert bucket.ranges("bee") == ["bytes=0-127", "bytes=128-255", f"bytes=256-{256 + 20 * ROW - 1}"]


# ------------------------------------------------------------------------------------------------ resume, retry, skip
def test_dropped_connection_keeps_the_partial_and_a_rerun_resumes_from_it(bucket, tmp_path):
    out, per_class = tmp_path / "s", 300
    drop = 128 + 37 * ROW + 100  # mid-row
    bucket.drop_once["The Eiffel Tower"] = drop
    with pytest.raises(QDMError) as failure:
        download(["The Eiffel Tower", "bee"], per_class=per_class, out=out, base_url=bucket.url,
                 progress=False, retries=0)
    message = str(failure.value)
    assert "\n" not in message
    assert "failed for 1 of 2 classes (The Eiffel Tower; 1 saved" in message
    assert f"connection closed at byte {drop}" in message and "re-run to resume" in message
    part = partial_path(out, "The Eiffel Tower")
    assert part.stat().st_size == drop
    assert final_files(out) == ["bee.npy"]  # nothing under the failed class's final name
    assert Store.open(out).classes == ["bee"]

    bee_before = (out / "bee.npy").read_bytes()
    store = download(["The Eiffel Tower", "bee"], per_class=per_class, out=out, base_url=bucket.url, progress=False)
    assert bucket.ranges("The Eiffel Tower")[-1] == rows_range(drop, per_class)  # started at the partial's end
    assert np.array_equal(store.array("The Eiffel Tower"), official(bucket, "The Eiffel Tower")[:per_class])
    assert (out / "bee.npy").read_bytes() == bee_before and bucket.ranges("bee") == ["bytes=0-127",
                                                                                     rows_range(128, per_class)]
    assert not part.exists() and not part.parent.exists()


def test_transient_failures_are_retried_and_resumed_within_one_run(bucket, tmp_path):
    drop = 128 + 10 * ROW + 7
    bucket.drop_once["guitar"] = drop
    bucket.fail_once["bee"] = 503
    store = download(["guitar", "bee"], per_class=60, out=tmp_path / "s", base_url=bucket.url,
                     progress=False, retries=2)
    assert bucket.ranges("guitar") == ["bytes=0-127", rows_range(128, 60), rows_range(drop, 60)]
    assert [s for n, _, s in bucket.requests if n == "bee"] == [503, 206, 206]
    for name in ["guitar", "bee"]:
        assert np.array_equal(store.array(name), official(bucket, name)[:60])


def test_resume_against_a_server_ignoring_range_skips_the_bytes_it_has(bucket, tmp_path):
    bucket.ignore_range = True
    drop = 128 + 20 * ROW + 3
    bucket.drop_once["The Eiffel Tower"] = drop
    out = tmp_path / "s"
    with pytest.raises(QDMError, match=f"connection closed at byte {drop}"):
        download(["The Eiffel Tower"], per_class=50, out=out, base_url=bucket.url, progress=False, retries=0)
    assert partial_path(out, "The Eiffel Tower").stat().st_size == drop
    store = download(["The Eiffel Tower"], per_class=50, out=out, base_url=bucket.url, progress=False)
    assert np.array_equal(store.array("The Eiffel Tower"), official(bucket, "The Eiffel Tower")[:50])


def test_complete_classes_are_skipped_and_short_ones_fetched_again(bucket, tmp_path):
    out = tmp_path / "s"
    download(["bee", "guitar"], per_class=40, out=out, base_url=bucket.url, progress=False)
    bucket.requests.clear()
    download(["bee", "guitar"], per_class=40, out=out, base_url=bucket.url, progress=False)
    assert bucket.requests == []  # enough rows and a matching sha256: no network at all

    (out / "guitar.npy").write_bytes((out / "guitar.npy").read_bytes()[:-1] + b"\x01")  # sha256 no longer matches
    store = download(["bee", "guitar"], per_class=70, out=out, base_url=bucket.url, progress=False)
    assert store.counts == {"bee": 70, "guitar": 70}
    assert bucket.ranges("bee")[-1] == rows_range(128, 70)  # fewer rows than asked: fetched again from the start
    for name in ["bee", "guitar"]:
        assert np.array_equal(store.array(name), official(bucket, name)[:70])
    assert Store.open(out, verify=True).counts == {"bee": 70, "guitar": 70}

    bucket.requests.clear()
    download(["bee"], per_class=10, out=out, base_url=bucket.url, progress=False)
    assert bucket.requests == [] and Store.open(out).counts["bee"] == 70  # never cut down


def test_whole_file_already_stored_is_skipped_after_one_header_probe(bucket, tmp_path):
    out, rows = tmp_path / "s", len(official(bucket, "guitar"))
    download(["guitar"], per_class=rows + 5, out=out, base_url=bucket.url, progress=False)
    bucket.requests.clear()
    download(["guitar"], per_class=rows + 5, out=out, base_url=bucket.url, progress=False)
    assert bucket.ranges("guitar") == ["bytes=0-127"]


# ------------------------------------------------------------------------------------------------ bad answers
def _corrupt(bucket: FakeBucket, kind: str) -> None:
    path = bucket.root / "bee.npy"
    data = path.read_bytes()
    if kind == "bad magic":
        path.write_bytes(b"\x00NUMPX" + data[6:])
    elif kind == "float32":
        buffer = io.BytesIO()
        np.save(buffer, official(bucket, "bee")[:50].astype("<f4"))
        path.write_bytes(buffer.getvalue())
    elif kind == "shape":
        buffer = io.BytesIO()
        np.save(buffer, official(bucket, "bee")[:50].reshape(-1, 392))
        path.write_bytes(buffer.getvalue())
    elif kind == "truncated":
        path.write_bytes(data[: 128 + 10 * ROW + 5])


@pytest.mark.parametrize("kind, message", [
    ("bad magic", "not a .npy file"),
    ("float32", r"expected dtype uint8 \('\|u1'\), got '<f4'"),
    ("shape", r"expected shape \(N, 784\), got \(100, 392\)"),
    ("truncated", "truncated or corrupt file"),
])
def test_corrupt_files_are_rejected_and_nothing_is_written(bucket, tmp_path, kind, message):
    _corrupt(bucket, kind)
    out = tmp_path / "s"
    with pytest.raises(QDMError, match=message) as failure:
        download(["bee", "guitar"], per_class=5, out=out, base_url=bucket.url, progress=False)
    assert "failed for 1 of 2 classes (bee;" in str(failure.value)
    assert class_url("bee", bucket.url) in str(failure.value)
    assert final_files(out) == ["guitar.npy"] and Store.open(out).classes == ["guitar"]
    assert not partial_path(out, "bee").exists()


def test_missing_file_is_a_404_without_retries(bucket, tmp_path):
    out = tmp_path / "s"
    with pytest.raises(QDMError) as failure:
        download(["cat", "bee"], per_class=5, out=out, base_url=bucket.url, progress=False, retries=3)
    assert f"cat: no such class file at {class_url('cat', bucket.url)} (HTTP 404)" in str(failure.value)
    assert [s for n, _, s in bucket.requests if n == "cat"] == [404]  # no retry for a 404
    assert Store.open(out).classes == ["bee"]


def test_html_page_is_rejected(bucket, tmp_path):
    bucket.html = True
    with pytest.raises(QDMError, match=r"server answered an HTML page \(Content-Type text/html"):
        download(["bee"], per_class=5, out=tmp_path / "s", base_url=bucket.url, progress=False)
    assert final_files(tmp_path / "s") == []


def test_refused_connection_and_timeout_fail_with_clear_errors(bucket, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(QDMError, match=r"could not connect to .*bee\.npy \(connection refused\) \(after 2 attempts\)"):
        download(["bee"], per_class=5, out=tmp_path / "a", base_url=f"http://127.0.0.1:{port}/", progress=False,
                 retries=1)

    bucket.ignore_range = True
    bucket.stall_at = 64  # the header never completes
    with pytest.raises(QDMError, match=r"bee\.npy: timed out after 0.3 s while reading bytes 0-127"):
        download(["bee"], per_class=5, out=tmp_path / "b", base_url=bucket.url, progress=False, timeout=0.3,
                 retries=0)


def test_full_disk_keeps_earlier_data_and_says_so(bucket, tmp_path):
    out = tmp_path / "s"
    download(["bee"], per_class=30, out=out, base_url=bucket.url, progress=False)
    manifest_before, bee_before = (out / "manifest.json").read_bytes(), (out / "bee.npy").read_bytes()
    part = partial_path(out, "guitar")
    part.parent.mkdir()
    part.symlink_to("/dev/full")  # every write to the partial fails with ENOSPC, as on a full disk
    with pytest.raises(QDMError, match=r"guitar\.npy\.part: could not write the download \(no space left on device\)"):
        download(["guitar"], per_class=30, out=out, base_url=bucket.url, progress=False)
    assert (out / "manifest.json").read_bytes() == manifest_before
    assert (out / "bee.npy").read_bytes() == bee_before
    assert final_files(out) == ["bee.npy"]


def test_unknown_class_and_bad_arguments(tmp_path):
    with pytest.raises(QDMError, match="unknown class 'caat'; did you mean 'cat'"):
        download(["caat"], per_class=5, out=tmp_path / "s")
    with pytest.raises(QDMError, match="--per-class: expected a positive count"):
        download(["cat"], per_class=0, out=tmp_path / "s")
    with pytest.raises(QDMError, match="--base-url: expected an http"):
        download(["cat"], per_class=1, out=tmp_path / "s", base_url="/local/folder")
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_download_success_and_failure(bucket, tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["data", "download", "--classes", "guitar,the eiffel tower", "--per-class", "25", "--out", str(out),
            "--base-url", bucket.url.rstrip("/"), "--workers", "2"]
    assert cli.main(argv) == 0
    assert f"{out}: 2 classes, 50 drawings" in capsys.readouterr().out
    assert np.array_equal(Store.open(out).array("The Eiffel Tower"), official(bucket, "The Eiffel Tower")[:25])

    assert cli.main(["data", "download", "--classes", "caat", "--per-class", "5", "--out", str(out)]) == 2
    assert "error: unknown class 'caat'; did you mean 'cat'" in capsys.readouterr().err


def test_cli_num_classes_picks_deterministic_classes(bucket, drawings, tmp_path, capsys):
    picked = sample_classes(3, seed=1)
    served = [c for c in picked if c in EMBEDDED_CLASSES]
    for name in served:
        np.save(bucket.root / f"{name}.npy", drawings(name))
    missing = [c for c in picked if c not in served]
    out = tmp_path / "s"
    argv = ["data", "download", "--num-classes", "3", "--seed", "1", "--per-class", "5", "--out", str(out),
            "--base-url", bucket.url]
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert sorted({n for n, _, _ in bucket.requests}) == sorted(picked)  # exactly the seeded classes
    assert sorted(Store.open(out).classes) == sorted(served)
    if missing:  # the test bucket only has the classes of the package: the others are clear 404s
        last_line = err.splitlines()[-1]  # the lines before it are the progress bar
        assert status == 2 and last_line.startswith("error: download failed")
        assert f"failed for {len(missing)} of 3 classes ({', '.join(missing)};" in last_line
    else:
        assert status == 0
    bucket.requests.clear()
    cli.main(argv)
    assert sorted({n for n, _, _ in bucket.requests}) == sorted(missing)  # same picks; the saved ones are skipped
