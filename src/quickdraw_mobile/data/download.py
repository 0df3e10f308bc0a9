"""Fetch the first N drawings of official Quick, Draw! classes without downloading whole files.

Each official ``numpy_bitmap`` file is one class, uint8 (rows, 784), about 100 MB. A prefix is all we need: one
small HTTP Range request reads the .npy header (rows, dtype, shape), a second asks for exactly the bytes of the
first ``min(rows, per_class)`` drawings. A server that ignores Range (200 instead of 206) is read as a stream and
closed as soon as those bytes have arrived, so the rest of the body is never transferred.

Resumable: the bytes go, in order, to ``<out>/.partial/<class>.npy.part``, which is therefore always a prefix of
the remote file, header included. A re-run (or a retry after a reset connection) checks that prefix's header
against the server's and asks only for ``bytes=<have>-<end>``. When complete, the rows go into the store
(temporary file + rename, manifest under a lock) and the partial is deleted: no half-written file ever carries
a class's final name.

One version of the file: a resumed partial must not mix the rows of a file that changed on the server. Beside
the partial, ``<class>.npy.part.json`` keeps the validators (``ETag``, ``Last-Modified``) of the version its
bytes came from. Every request after the header probe carries ``If-Range`` with them (a strong ETag, else the
date), so a server that changed the file answers 200 with the whole new file instead of 206; the validators of
every answer are compared too (for a server that ignores If-Range). A re-run compares the stored validators with
the server's before resuming. A change, however seen, discards the partial and starts the class over (at most
``MAX_RESTARTS`` times in one run). When there is nothing to compare (a server without validators, or a
partial left by an older version), the last ``VERIFY_BYTES`` bytes held are fetched again and compared before
resuming; within one run, a retry against such a server trusts the bytes it has.

Already in the store: a class with at least ``per_class`` rows (or all the rows the file has) whose sha256
still matches the manifest is skipped. A class with fewer rows than asked is fetched again from the start and
replaced; ``download`` never cuts down a class that has more rows than asked.

Standard library only (urllib), so the same code runs against Google's bucket, a mirror, or a test server.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import re
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..errors import QDMError
from ..fileio import read_versioned_json, sha256_file, write_json_atomic
from .classes import resolve_class
from .npyformat import PREAMBLE_MAX, NpyHeader, bitmap_rows, header_length, parse_header
from .store import PIXELS, Store

OFFICIAL_BASE_URL = "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/"
PARTIAL_DIR = ".partial"
HEADER_PROBE = 128  # the official headers are exactly 128 bytes; a longer one costs one more request
CHUNK = 1 << 16
RETRY_BACKOFF = 0.5  # seconds before the first retry, doubled for each next one
MAX_RESTARTS = 2  # times one run starts a class over because the file changed on the server
VERIFY_BYTES = 1 << 16  # bytes held that are fetched again before resuming a partial without validators
PARTIAL_FORMAT, PARTIAL_VERSION = "qdm-partial-download", 1
USER_AGENT = f"quickdraw-mobile/{__version__} (python-urllib)"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def class_url(name: str, base_url: str = OFFICIAL_BASE_URL) -> str:
    """URL of a class file: ``base/<quoted name>.npy`` (spaces become %20, as the bucket expects)."""
    return f"{base_url.rstrip('/')}/{urllib.parse.quote(name)}.npy"


def partial_path(out: str | Path, name: str) -> Path:
    """Where the bytes of an unfinished download of ``name`` are kept (hidden, never the final name)."""
    return Path(out) / PARTIAL_DIR / f"{name}.npy.part"


def validator_path(out: str | Path, name: str) -> Path:
    """The partial's sidecar: which version of the remote file (ETag, Last-Modified) its bytes came from."""
    return _sidecar(partial_path(out, name))


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


@dataclass(frozen=True)
class _Validator:
    """What tells one version of a remote file from another: its ETag and Last-Modified, as the server sent them."""

    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def of(cls, response) -> _Validator:
        return cls(response.headers.get("ETag") or None, response.headers.get("Last-Modified") or None)

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)

    def if_range(self) -> str | None:
        """The ``If-Range`` value: a strong ETag, else the date (HTTP forbids a weak ETag there)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def comparable(self, other: _Validator) -> bool:
        return bool(self.etag and other.etag) or bool(self.last_modified and other.last_modified)

    def change(self, other: _Validator) -> str | None:
        """How ``other`` shows another version (``ETag "a" -> "b"``), or None: the same, or nothing to compare."""
        if self.etag and other.etag:
            return None if self.etag == other.etag else f"ETag {self.etag} -> {other.etag}"
        if self.last_modified and other.last_modified and self.last_modified != other.last_modified:
            return f"Last-Modified {self.last_modified} -> {other.last_modified}"
        return None


class _Transient(Exception):
    """A failure worth retrying: connection refused or reset, timeout, early close, HTTP 5xx."""


class _Changed(Exception):
    """The remote file is not the version the partial's bytes came from: the class starts over."""


class _Interrupted(Exception):
    """The run was interrupted (Ctrl-C); workers stop between chunks and keep their partial files."""


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}" if isinstance(exc, http.client.HTTPException) else text


def _content_range(value: str | None, url: str) -> tuple[int, int, int | None]:
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        raise QDMError(f"{url}: answer 206 with Content-Range {value!r}, expected 'bytes FIRST-LAST/SIZE'")
    first, last, size = match.groups()
    return int(first), int(last), None if size == "*" else int(size)


@contextlib.contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    """Turn a failed write into one clear line; a full disk is the usual cause on a big download."""
    try:
        yield
    except OSError as exc:
        reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise QDMError(f"{path}: could not write the download ({reason})") from exc


@dataclass
class _Session:
    """What the worker threads share: HTTP settings, the progress bar, and the stop flag."""

    timeout: float
    retries: int
    progress: bool
    bar: tqdm
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- progress
    def note(self, message: str) -> None:
        if self.progress:
            tqdm.write(message, file=sys.stderr)

    def expect(self, nbytes: int) -> None:
        with self.lock:
            self.bar.total += nbytes
            self.bar.refresh()

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.bar.update(nbytes)

    # -- HTTP
    def retrying(self, action):
        """Run ``action`` with a bounded number of retries (exponential backoff) for transient failures."""
        attempt = 0
        while True:
            try:
                return action()
            except _Transient as exc:
                if attempt >= self.retries:
                    tries = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise QDMError(f"{exc}{tries}") from exc
                delay = RETRY_BACKOFF * 2**attempt
                self.note(f"{exc}; retry {attempt + 1} of {self.retries} in {delay:g} s")
                if self.stop.wait(delay):
                    raise _Interrupted from exc
                attempt += 1

    def open_range(self, url: str, start: int, stop: int, version: _Validator | None = None,
                   ) -> tuple[http.client.HTTPResponse, int, int | None]:
        """GET bytes [start, stop) of ``url``, of the file's ``version`` if given (``If-Range``).

        Returns the response positioned at ``start``, the offset it will deliver up to (``stop``, or the file's
        end if that comes first) and the file size if the server says it. A 206 must carry exactly the range
        asked for; a 200 (Range ignored) is read forward to ``start`` and the caller stops reading at ``stop``.
        An answer from another version than ``version`` raises ``_Changed``.
        """
        headers = {"Range": f"bytes={start}-{stop - 1}", "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if version and version.if_range():
            headers["If-Range"] = version.if_range()
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise QDMError(f"no such class file at {url} (HTTP 404)") from None
            if exc.code >= 500 or exc.code in (408, 429):
                raise _Transient(f"{url}: server error HTTP {exc.code} {exc.reason}") from None
            raise QDMError(f"{url}: HTTP {exc.code} {exc.reason}, expected 206 or 200") from None
        except urllib.error.URLError as exc:
            raise _Transient(f"could not connect to {url} ({_reason(exc.reason, self.timeout)})") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"{url}: {_reason(exc, self.timeout)} waiting for the answer") from exc
        try:
            self._check_version(response, url, version)
            return (response, *self._check_answer(response, url, start, stop))
        except BaseException:
            response.close()
            raise

    @staticmethod
    def _check_version(response: http.client.HTTPResponse, url: str, version: _Validator | None) -> None:
        """Raise ``_Changed`` if the answer comes from another version of the file than ``version``."""
        if not version:
            return
        got = _Validator.of(response)
        change = version.change(got)
        if change is not None:
            raise _Changed(f"{url} changed on the server ({change})")
        if response.status == 200 and version.if_range() and not version.comparable(got):
            # Asked If-Range, got the whole file and nothing to tell its version by: it may be another one.
            raise _Changed(f"{url}: answered 200 without ETag or Last-Modified to a resumed request (If-Range)")

    def _check_answer(self, response: http.client.HTTPResponse, url: str, start: int, stop: int):
        content_type = response.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
            raise QDMError(f"{url}: server answered an HTML page (Content-Type {content_type}), expected a .npy file")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise QDMError(f"{url}: body is {encoding}-encoded, expected the raw .npy bytes")
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        if response.status == 206:
            first, last, size = _content_range(response.headers.get("Content-Range"), url)
            end = stop if size is None else min(stop, size)
            if first != start or last + 1 != end:
                raise QDMError(f"{url}: asked for bytes {start}-{end - 1}, server sent {first}-{last} (Content-Range)")
            if length is not None and length != end - start:
                raise QDMError(f"{url}: Content-Length {length} does not match Content-Range {first}-{last}")
            return end, size
        if response.status == 200:  # the server ignores Range: the body is the whole file from byte 0
            end = stop if length is None else min(stop, length)
            self._skip(response, url, start)
            return end, length
        raise QDMError(f"{url}: unexpected HTTP {response.status}, expected 206 or 200")

    def read(self, response: http.client.HTTPResponse, url: str, nbytes: int, offset: int, end: int) -> bytes:
        """The next ``nbytes`` (or fewer) of the body; an early close or reset is a transient failure."""
        if self.stop.is_set():
            raise _Interrupted
        try:
            chunk = response.read(nbytes)
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"{url}: {_reason(exc, self.timeout)} while reading bytes {offset}-{end - 1}") from exc
        if not chunk:
            raise _Transient(f"{url}: connection closed at byte {offset} of {end}")
        return chunk

    def _skip(self, response: http.client.HTTPResponse, url: str, nbytes: int) -> None:
        done = 0
        while done < nbytes:
            done += len(self.read(response, url, min(CHUNK, nbytes - done), done, nbytes))

    def read_span(self, url: str, start: int, stop: int, version: _Validator | None = None,
                  ) -> tuple[bytes, int | None, _Validator]:
        """Bytes [start, stop) of ``url`` (fewer if the file ends first), the file size if known, and the
        validators of the version they come from (which must be ``version`` if given)."""

        def attempt() -> tuple[bytes, int | None, _Validator]:
            response, end, size = self.open_range(url, start, stop, version)
            with response:
                parts, offset = [], start
                while offset < end:
                    parts.append(self.read(response, url, end - offset, offset, end))
                    offset += len(parts[-1])
            return b"".join(parts), size, _Validator.of(response)

        return self.retrying(attempt)

    # -- one class
    def read_header(self, url: str) -> tuple[bytes, NpyHeader, int | None, _Validator]:
        head, size, version = self.read_span(url, 0, HEADER_PROBE)
        length = header_length(head[:PREAMBLE_MAX], url)
        if length > len(head) and (size is None or size > len(head)):
            more, _, _ = self.read_span(url, len(head), length, version)
            head += more
        return head[:length], parse_header(head, url), size, version

    def fetch_class(self, name: str, url: str, per_class: int, store: Store) -> None:
        """Fetch one class into ``store``, starting over (a bounded number of times) if the file changes."""
        for restart in range(MAX_RESTARTS + 1):
            try:
                return self._fetch_class(name, url, per_class, store, fresh=restart > 0)
            except _Changed as exc:
                if restart == MAX_RESTARTS:
                    raise QDMError(f"{exc}; it changed {restart + 1} times during this download, "
                                   "expected one version (try again later)") from exc
                self.note(f"{name}: {exc}; starting the class over")
        return None

    def _fetch_class(self, name: str, url: str, per_class: int, store: Store, fresh: bool) -> None:
        entry = next((e for e in store.entries if e["name"] == name), None)
        if entry is not None and entry["count"] >= per_class and _intact(store, entry):
            self.note(f"{name}: already in the store with {entry['count']} drawings, skipped")
            return
        header_bytes, header, size, version = self.read_header(url)
        file_rows = bitmap_rows(header, url, PIXELS)
        expected_size = header.data_offset + file_rows * PIXELS
        if size is not None and size != expected_size:
            raise QDMError(f"{url}: server has {size} bytes, but a {header.shape} uint8 .npy has "
                           f"{expected_size} (truncated or corrupt file)")
        rows = min(per_class, file_rows)
        if rows == 0:
            raise QDMError(f"{url}: the file has no drawings (shape {header.shape})")
        if entry is not None and entry["count"] >= rows and _intact(store, entry):
            self.note(f"{name}: already in the store with all {entry['count']} drawings of the file, skipped")
            return
        if entry is not None:
            self.note(f"{name}: the store has {entry['count']} drawings, fetching {rows} again")

        need = header.data_offset + rows * PIXELS
        part = partial_path(store.root, name)
        have = self._prepare_partial(part, url, header_bytes, need, version, fresh)
        self.expect(need - have)
        self.retrying(lambda: self._fill(url, part, need, version))
        with _disk_errors(part):
            if part.stat().st_size != need:  # _fill stops exactly at need; a mismatch means a foreign writer
                raise QDMError(f"{part}: has {part.stat().st_size} bytes after the download, expected {need}")
            pixels = np.memmap(part, dtype=np.uint8, mode="r", offset=header.data_offset, shape=(rows, PIXELS))
        store.add_class(name, pixels, source=url)
        del pixels
        part.unlink()
        _sidecar(part).unlink(missing_ok=True)
        if rows < per_class:
            self.note(f"{name}: the file has only {file_rows} drawings; kept all of them (asked for {per_class})")

    def _prepare_partial(self, part: Path, url: str, header_bytes: bytes, need: int, version: _Validator,
                         fresh: bool = False) -> int:
        """Keep a partial that starts with this very header and comes from this ``version`` of the file (cut to
        ``need``), else (or when ``fresh``) start it over. The sidecar then names ``version``."""
        sidecar = _sidecar(part)
        with _disk_errors(part):
            part.parent.mkdir(parents=True, exist_ok=True)
            if part.exists() and not fresh:
                with open(part, "rb") as fh:
                    prefix = fh.read(len(header_bytes))
                if prefix == header_bytes:
                    if part.stat().st_size > need:  # an earlier run wanted more rows
                        with open(part, "rb+") as fh:
                            fh.truncate(need)
                    have = part.stat().st_size
                    if have > len(header_bytes):
                        self._check_held(part, sidecar, url, len(header_bytes), have, version)
                        self.note(f"{part.name}: resuming at byte {have} of {need}")
                    _write_validator(sidecar, url, version)
                    return have
                if len(prefix) == len(header_bytes):
                    self.note(f"{part.name}: does not match the server's header, starting over")
            _write_validator(sidecar, url, version)
            with open(part, "wb") as fh:
                fh.write(header_bytes)
        return len(header_bytes)

    def _check_held(self, part: Path, sidecar: Path, url: str, start: int, have: int, version: _Validator) -> None:
        """Raise ``_Changed`` unless the bytes [start, have) of ``part`` are those of ``version`` of ``url``: by
        the validators its sidecar kept, or, with nothing to compare, by fetching its last bytes again."""
        held = _read_validator(sidecar, url)
        if held.comparable(version):
            change = held.change(version)
            if change is not None:
                raise _Changed(f"{url} changed on the server since {part.name} was started ({change})")
            return
        first = max(start, have - VERIFY_BYTES)
        theirs, _, _ = self.read_span(url, first, have, version)
        with open(part, "rb") as fh:
            fh.seek(first)
            mine = fh.read(have - first)
        if theirs != mine:
            raise _Changed(f"{url}: bytes {first}-{have - 1} on the server differ from those in {part.name} "
                           "(the file changed, and the server sends no ETag or Last-Modified to tell)")

    def _fill(self, url: str, part: Path, need: int, version: _Validator | None = None) -> None:
        """Append bytes [len(part), need) of ``version`` of ``url`` to ``part`` (one attempt; resumes where it
        stands)."""
        have = part.stat().st_size
        if have >= need:
            return
        response, end, _ = self.open_range(url, have, need, version)
        with response, _disk_errors(part), open(part, "ab") as fh:
            if end != need:
                raise QDMError(f"{url}: server has only {end} bytes, expected at least {need}")
            while have < need:
                chunk = self.read(response, url, min(CHUNK, need - have), have, need)
                fh.write(chunk)
                have += len(chunk)
                self.advance(len(chunk))


def _write_validator(sidecar: Path, url: str, version: _Validator) -> None:
    write_json_atomic(sidecar, {"format": PARTIAL_FORMAT, "version": PARTIAL_VERSION, "url": url,
                                "etag": version.etag, "last_modified": version.last_modified})


def _read_validator(sidecar: Path, url: str) -> _Validator:
    """The validators a partial's bytes came with; empty when unknown (no sidecar, a broken one, another URL)."""
    try:
        kept = read_versioned_json(sidecar, PARTIAL_FORMAT, PARTIAL_VERSION)
    except (OSError, QDMError):
        return _Validator()
    if kept.get("url") != url:
        return _Validator()
    etag, last_modified = kept.get("etag"), kept.get("last_modified")
    return _Validator(etag if isinstance(etag, str) else None,
                      last_modified if isinstance(last_modified, str) else None)


def _intact(store: Store, entry: dict) -> bool:
    try:
        return sha256_file(store.root / entry["file"]) == entry["sha256"]
    except OSError:
        return False


def download(
    classes: Sequence[str],
    per_class: int,
    out: Path,
    base_url: str = OFFICIAL_BASE_URL,
    workers: int = 4,
    progress: bool = True,
    *,
    timeout: float = 30.0,
    retries: int = 3,
) -> Store:
    """Fetch the first ``per_class`` drawings of each class into the store at ``out`` (created if needed).

    ``workers`` classes download at once. Classes that succeed are saved even when others fail; the error then
    names every failed class, and a re-run resumes the interrupted ones. ``timeout`` (seconds) bounds each
    connect and read; transient failures are retried ``retries`` times with backoff, a 404 never.
    """
    names = list(dict.fromkeys(resolve_class(c) for c in classes))
    if not names:
        raise QDMError("download: expected at least one class name")
    if per_class < 1:
        raise QDMError(f"--per-class: expected a positive count, got {per_class}")
    if workers < 1:
        raise QDMError(f"--workers: expected a positive count, got {workers}")
    if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
        raise QDMError(f"--base-url: expected an http(s) URL of a folder of <class>.npy files, got {base_url!r}")
    store = Store.create(out)
    failures: dict[str, str] = {}
    with tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {len(names)} classes",
              disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        session = _Session(timeout=timeout, retries=retries, progress=progress, bar=bar)
        with ThreadPoolExecutor(max_workers=min(workers, len(names)), thread_name_prefix="qdm-download") as pool:
            jobs = {pool.submit(session.fetch_class, n, class_url(n, base_url), per_class, store): n for n in names}
            try:
                for done, job in enumerate(as_completed(jobs), start=1):
                    try:
                        job.result()
                    except QDMError as exc:
                        failures[jobs[job]] = str(exc)
                    bar.set_postfix_str(f"{done}/{len(names)} classes", refresh=True)
            except KeyboardInterrupt:
                session.stop.set()  # workers stop at their next chunk; partial files stay for a re-run
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    with contextlib.suppress(OSError):
        (store.root / PARTIAL_DIR).rmdir()  # only if empty
    if failures:
        details = []
        for name in (n for n in names if n in failures):
            part = partial_path(store.root, name)
            kept = f" ({part.stat().st_size} bytes kept in {part}; re-run to resume)" if part.exists() else ""
            details.append(f"{name}: {failures[name]}{kept}")
        saved = len(names) - len(failures)
        raise QDMError(f"download failed for {len(failures)} of {len(names)} classes "
                       f"({', '.join(n for n in names if n in failures)}; {saved} saved in {store.root}): "
                       + "; ".join(details))
    return store
