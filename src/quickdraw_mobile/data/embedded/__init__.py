"""The real Quick, Draw! subset shipped inside the package: 10 classes x 1,000 drawings (see ATTRIBUTION.md).

The package holds one xz-compressed ``.npy`` per class and ``index.json`` (built by scripts/make_embedded.py).
``embedded_store()`` unpacks them once into an ordinary store in the user's cache, so every command that takes
a data folder also works offline, out of the box, on real drawings.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from ... import __version__
from ...errors import QDMError
from ...fileio import write_bytes_atomic
from ..store import MANIFEST, Store, class_file_name

CACHE_ENV = "QDM_CACHE_DIR"
SOURCE = "embedded:quickdraw10 (Quick, Draw! by Google, CC BY 4.0)"


def cache_dir() -> Path:
    """``$QDM_CACHE_DIR`` if set, else ``~/.cache/quickdraw_mobile``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "quickdraw_mobile")


def embedded_store() -> Path:
    """Path of the embedded subset as a store, unpacking and verifying it on first use."""
    package = resources.files(__name__)
    index_bytes = package.joinpath("index.json").read_bytes()
    # The index's digest is in the folder name, so a changed subset never reuses a stale cache.
    target = cache_dir() / f"embedded-{__version__}-{hashlib.sha256(index_bytes).hexdigest()[:8]}"
    if (target / MANIFEST).is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise QDMError(f"{target.parent}: cannot create the data cache ({exc.strerror or exc}); "
                       f"set {CACHE_ENV} to a writable folder") from exc
    try:
        _unpack(package, json.loads(index_bytes), staging)
        try:
            os.rename(staging, target)  # atomic: other processes see no store or a whole one
        except OSError:
            if not (target / MANIFEST).is_file():
                raise QDMError(f"{target}: exists but is not a store; delete it and retry") from None
            # another process finished first; its store is identical, so use it
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _unpack(package, index: dict, root: Path) -> None:
    store = Store.create(root)
    for item in index["classes"]:
        where = f"{package.joinpath(item['file'])}"
        try:
            data = lzma.decompress(package.joinpath(item["file"]).read_bytes())
        except (OSError, lzma.LZMAError) as exc:
            raise QDMError(f"{where}: cannot read the embedded data ({exc}); reinstall quickdraw-mobile") from exc
        if hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise QDMError(f"{where}: sha256 differs from index.json; reinstall quickdraw-mobile")
        file = class_file_name(item["name"])
        write_bytes_atomic(root / file, data)
        store.record_class({"name": item["name"], "file": file, "count": item["count"], "sha256": item["sha256"],
                            "source": SOURCE})
    Store.open(root)  # shapes and row counts agree with the index
