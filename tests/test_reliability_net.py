"""The network side of issue 26: a resumed download never mixes two versions of a file, and ``qdm serve`` keeps
its memory and its error messages in check.

Downloads run against test_download's server on 127.0.0.1, here speaking ETag / Last-Modified / If-Range like a
real server (``versioned``): it can change a file between two runs or between two requests of one run, send
only some validators or none, or ignore If-Range. The serve tests use conftest's served model.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import threading
import urllib.parse
import zlib
from email.utils import formatdate

import numpy as np
import pytest
import test_download
from fastapi.testclient import TestClient
from test_download import ROW, rows_range
from test_download import bucket as plain_bucket  # noqa: F401 (a fixture: the server that ``versioned`` extends)
from test_download import fast_retries as _fast_retries  # noqa: F401 (an autouse fixture: quick retries)
from test_serve_api import _png

from quickdraw_mobile.data import download as dl
from quickdraw_mobile.data.download import download, partial_path, validator_path
from quickdraw_mobile.data.npyformat import parse_header
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.serve import create_app

CLASS = "bee"  # 391 rows in the test bucket
PER_CLASS = 300
DROP = 128 + 120 * ROW + 50  # the first run's connection drops mid-row, after 120 rows
_plain_handler = test_download._handler


# ------------------------------------------------------------------------------------------------ the server
def replace_file(server, name: str, data: bytes) -> None:
    """Publish a new version of ``name``: new bytes, and a Last-Modified one hour later (dates have 1 s steps)."""
    path = server.root / f"{name}.npy"
    mtime = path.stat().st_mtime + 3600
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def _versioned_handler(bucket):  # noqa: F811 (the server's state, as test_download names it)
    """test_download's handler, plus validators and If-Range as a real server does them: ETag (a hash of the
    bytes) and Last-Modified (the file's mtime), whichever ``bucket.validators`` names; a Range request whose
    If-Range is not the current ETag or date gets 200 and the whole file (unless ``honour_if_range`` is off).
    ``change_after[name] = (n, data)`` publishes ``data`` once ``n`` requests for ``name`` were answered;
    ``alternate[name] = (a, b)`` serves a and b by turns, a new version at every request."""

    class Handler(_plain_handler(bucket)):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).removeprefix("/qd/").removesuffix(".npy")
            path = bucket.root / f"{name}.npy"
            answered = len(bucket.ranges(name))
            if name in bucket.change_after and answered >= bucket.change_after[name][0]:
                replace_file(bucket, name, bucket.change_after.pop(name)[1])
            if name in bucket.alternate:
                replace_file(bucket, name, bucket.alternate[name][answered % 2])
            if not path.is_file():
                return super().do_GET()
            data = path.read_bytes()
            current = {"ETag": f'"{hashlib.sha256(data).hexdigest()[:20]}"',
                       "Last-Modified": formatdate(path.stat().st_mtime, usegmt=True)}
            sent = {key: value for key, value in current.items() if key in bucket.validators}
            range_header, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            bucket.if_ranges.append(if_range)
            asked = None
            if range_header:
                first, last = (int(x) for x in range_header.removeprefix("bytes=").split("-"))
                asked = (first, min(last, len(data) - 1))
            same = if_range is None or not bucket.honour_if_range or if_range in current.values()
            if asked and same and not bucket.ignore_range:
                bucket.log(name, range_header, 206)
                headers = {"Content-Range": f"bytes {asked[0]}-{asked[1]}/{len(data)}", **sent}
                return self._send(206, data[asked[0] : asked[1] + 1], headers, asked[0], name, asked)
            bucket.log(name, range_header, 200)
            return self._send(200, data, sent, 0, name, asked)

    return Handler


@pytest.fixture
def versioned(monkeypatch, request):
    """test_download's ``bucket`` with the handler above; by default both validators and If-Range honoured."""
    monkeypatch.setattr(test_download, "_handler", _versioned_handler)
    server = request.getfixturevalue("plain_bucket")
    server.validators = ("ETag", "Last-Modified")
    server.honour_if_range = True
    server.change_after, server.alternate, server.if_ranges = {}, {}, []
    return server


def other_version(server, name: str) -> bytes:
    """The same .npy header with other rows (the drawings in reverse order), as a republished file might be."""
    data = (server.root / f"{name}.npy").read_bytes()
    offset = parse_header(data, name).data_offset
    rows = np.frombuffer(data[offset:], dtype=np.uint8).reshape(-1, ROW)
    return data[:offset] + rows[::-1].tobytes()


def first_rows(data: bytes, rows: int) -> np.ndarray:
    offset = parse_header(data, "x").data_offset
    return np.frombuffer(data[offset:], dtype=np.uint8).reshape(-1, ROW)[:rows]


def interrupted_download(server, out) -> None:
    """A first run whose connection drops at DROP: it leaves a partial of the current version."""
    server.drop_once[CLASS] = DROP
    with pytest.raises(QDMError, match="re-run to resume"):
        download([CLASS], per_class=PER_CLASS, out=out, base_url=server.url, progress=False, retries=0)
    assert partial_path(out, CLASS).stat().st_size == DROP


# ------------------------------------------------------------------------------------------------ item 9: downloads
@pytest.mark.parametrize("validators", [("ETag", "Last-Modified"), ("Last-Modified",), ()],
                         ids=["etag-and-date", "date-only", "no-validators"])
def test_resume_never_mixes_two_versions_of_a_changed_file(versioned, tmp_path, validators):
    """The file changes between two runs (same header, other rows): the re-run starts the class over and stores
    exactly the new file's first rows, whatever validators the server sends (issue 26: 836 old + 3,152 new)."""
    versioned.validators = validators
    out = tmp_path / "s"
    original = (versioned.root / f"{CLASS}.npy").read_bytes()
    interrupted_download(versioned, out)
    new = other_version(versioned, CLASS)
    replace_file(versioned, CLASS, new)
    store = download([CLASS], per_class=PER_CLASS, out=out, base_url=versioned.url, progress=False)
    assert np.array_equal(store.array(CLASS), first_rows(new, PER_CLASS))
    assert not np.array_equal(store.array(CLASS)[:120], first_rows(original, 120))  # no old row survived
    assert versioned.ranges(CLASS)[-1] == rows_range(128, PER_CLASS)  # the rows were fetched again from the start
    assert not partial_path(out, CLASS).parent.exists()  # partial and its sidecar are gone


@pytest.mark.parametrize("ignore_range", [False, True], ids=["range", "range-ignored"])
def test_resume_of_an_unchanged_file_sends_if_range_and_goes_on_where_it_stopped(versioned, tmp_path, ignore_range):
    """The partial's sidecar keeps the ETag it came with; the resume asks for the rest with If-Range: that ETag,
    and a server that ignores Range (200, same ETag) is still read from where the partial stopped."""
    versioned.ignore_range = ignore_range
    out = tmp_path / "s"
    interrupted_download(versioned, out)
    etag = f'"{hashlib.sha256((versioned.root / f"{CLASS}.npy").read_bytes()).hexdigest()[:20]}"'
    kept = json.loads(validator_path(out, CLASS).read_text())
    assert kept["etag"] == etag and kept["url"] == dl.class_url(CLASS, versioned.url)
    versioned.requests.clear()
    versioned.if_ranges.clear()
    store = download([CLASS], per_class=PER_CLASS, out=out, base_url=versioned.url, progress=False)
    assert versioned.ranges(CLASS) == ["bytes=0-127", rows_range(DROP, PER_CLASS)]
    assert versioned.if_ranges == [None, etag]
    assert np.array_equal(store.array(CLASS), first_rows((versioned.root / f"{CLASS}.npy").read_bytes(), PER_CLASS))


def test_resume_without_validators_checks_the_last_bytes_held_before_going_on(versioned, tmp_path):
    """A server without ETag or Last-Modified: the last VERIFY_BYTES held are fetched again and compared, then
    the download goes on from the partial's end (a changed file starts over: see the no-validators case above)."""
    versioned.validators = ()
    out = tmp_path / "s"
    interrupted_download(versioned, out)
    versioned.requests.clear()
    store = download([CLASS], per_class=PER_CLASS, out=out, base_url=versioned.url, progress=False)
    assert versioned.ranges(CLASS) == ["bytes=0-127", f"bytes={DROP - dl.VERIFY_BYTES}-{DROP - 1}",
                                       rows_range(DROP, PER_CLASS)]
    assert np.array_equal(store.array(CLASS), first_rows((versioned.root / f"{CLASS}.npy").read_bytes(), PER_CLASS))


@pytest.mark.parametrize("honour_if_range", [True, False], ids=["if-range", "if-range-ignored"])
def test_file_changing_between_two_requests_of_one_run_starts_the_class_over(versioned, tmp_path, capsys,
                                                                               honour_if_range):
    """The connection drops and the file changes before the retry: If-Range gets a 200 with the new file (or, from
    a server ignoring If-Range, a 206 with a new ETag); either way the class starts over on the new version."""
    versioned.honour_if_range = honour_if_range
    versioned.drop_once[CLASS] = DROP
    new = other_version(versioned, CLASS)
    versioned.change_after[CLASS] = (2, new)  # after the header probe and the request that drops
    store = download([CLASS], per_class=PER_CLASS, out=tmp_path / "s", base_url=versioned.url, retries=2)
    assert np.array_equal(store.array(CLASS), first_rows(new, PER_CLASS))
    statuses = [status for name, _, status in versioned.requests if name == CLASS]
    assert statuses == [206, 206, 200 if honour_if_range else 206, 206, 206]
    err = capsys.readouterr().err
    assert "bee.npy changed on the server (ETag" in err and "bee: " in err and "starting the class over" in err


def test_file_that_keeps_changing_fails_after_a_bounded_number_of_restarts(versioned, tmp_path):
    """A file that changes at every request cannot be downloaded as one version: a clear error, after
    MAX_RESTARTS restarts, nothing stored."""
    old = (versioned.root / f"{CLASS}.npy").read_bytes()
    versioned.alternate[CLASS] = (old, other_version(versioned, CLASS))
    out = tmp_path / "s"
    with pytest.raises(QDMError, match=rf"bee\.npy changed on the server \(ETag .*\); it changed "
                                       rf"{dl.MAX_RESTARTS + 1} times during this download, expected one version"):
        download([CLASS], per_class=PER_CLASS, out=out, base_url=versioned.url, progress=False)
    assert len(versioned.ranges(CLASS)) == 2 * (dl.MAX_RESTARTS + 1)  # a probe and one range request each time
    assert not (out / f"{CLASS}.npy").exists()


# ------------------------------------------------------------------------------------------------ item 10: serve
@pytest.fixture(scope="module")
def api(served_model):
    """The app on the served model, as test_serve_api's ``client``."""
    return TestClient(create_app(served_model))


def test_model_runs_on_one_long_lived_thread_whatever_thread_serves_the_request(api):
    """Every forward pass runs on the predictor's own thread. The server's worker threads come and go (the test
    client even starts a new event loop per request) and each new thread that ran the model left PyTorch's
    per-thread memory behind: the RSS growth of issue 26 (benchmarks/bench_serve_soak.py measures it)."""
    model = api.app.state.predictor.model
    ran_on: list[threading.Thread] = []
    handle = model.register_forward_pre_hook(lambda *_: ran_on.append(threading.current_thread()))
    body = {"drawing": [[[10, 120, 250], [20, 240, 30]]], "format": "simplified"}
    callers = [threading.Thread(target=lambda: api.post("/predict", json=body)) for _ in range(4)]
    try:
        for _ in range(30):
            assert api.post("/predict", json=body).status_code == 200
        for thread in callers:  # and a few at once, from other threads
            thread.start()
        for thread in callers:
            thread.join(30)
    finally:
        handle.remove()
    assert len(ran_on) == 34
    assert len(set(ran_on)) == 1 and ran_on[0] is not threading.main_thread() and ran_on[0] not in callers


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _broken_pngs() -> list[tuple[str, bytes, str]]:
    from PIL import Image

    good = base64.b64decode(_png(Image.new("L", (8, 8), 255)))
    signature, header = good[:8], _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    return [
        ("signature then zeros", signature + bytes(40),
         "image: not a valid PNG: its first chunk is 0x00000000 of 0 bytes, expected the 13-byte 'IHDR' header"),
        ("signature only", signature, "image: truncated PNG: 8 bytes, less than the 33 of its signature and header"),
        ("cut after the header", good[:33], "image: truncated PNG: it ends at byte 33, before its 'IEND' chunk"),
        ("zeros after the header", good[:33] + bytes(len(good) - 33),
         "image: corrupt PNG: no valid chunk type at byte 33 (0x00000000)"),
        ("header checksum", signature + header[:-4] + b"XXXX" + _chunk(b"IEND", b""),
         "image: corrupt PNG: the checksum (CRC) of its 'IHDR' header chunk does not match"),
        ("impossible bit depth", signature + _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 3, 2, 0, 0, 0)),
         "image: not a valid PNG: colour type 2 with bit depth 3 does not exist"),
        ("no image data", signature + header + _chunk(b"IEND", b""),
         "image: not a valid PNG: it has no image data ('IDAT' chunk)"),
    ]


@pytest.mark.parametrize("data, message", [c[1:] for c in _broken_pngs()], ids=[c[0] for c in _broken_pngs()])
def test_broken_png_gets_a_422_naming_what_is_wrong_not_an_object_address(api, data, message):
    """Pillow's "cannot identify image file <_io.BytesIO object at 0x...>" is replaced by what is wrong."""
    response = api.post("/predict", json={"image": base64.b64encode(data).decode()})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith(message) and " at 0x" not in detail and "\n" not in detail, detail
