"""Build the real subset shipped inside the package: 10 classes x the first 1,000 official drawings.

    python scripts/make_embedded.py [--source /path/to/quickdraw] [--out src/quickdraw_mobile/data/embedded]

``--source`` is a folder holding ``numpy_bitmap/<class>.npy`` (or the numpy_bitmap folder itself). Writes one
``<class>.npy.xz`` per class (the .npy bytes exactly as ``np.save`` writes them, xz-compressed), ``index.json``
(rows, sha256 of each decompressed .npy and of each .xz) and ``ATTRIBUTION.md``. Running it twice on the same
source gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = Path(os.environ.get("QDM_SHARED_DATA", REPO.parent / "shared" / "quickdraw"))
DEFAULT_OUT = REPO / "src" / "quickdraw_mobile" / "data" / "embedded"

NAME = "quickdraw10"
CLASSES = ("airplane", "apple", "banana", "bicycle", "cat", "clock", "fish", "house", "star", "tree")
ROWS = 1000
MAX_BYTES = 3_000_000  # the budget for everything shipped in the embedded folder
XZ_PRESET = 9 | lzma.PRESET_EXTREME

ATTRIBUTION = """\
# Embedded data: {name}

The files `*.npy.xz` in this folder are a small unmodified subset of the **Quick, Draw! dataset by Google**
(https://quickdraw.withgoogle.com/data), licensed under the **Creative Commons Attribution 4.0 International
License (CC BY 4.0)**, https://creativecommons.org/licenses/by/4.0/.

What the subset is:

- classes ({n_classes}): {classes}
- rows: the first {rows:,} drawings (rows 0 to {last}) of each official `numpy_bitmap/<class>.npy` file
- content: the official 28x28 bitmaps, uint8, ink 255 on background 0, shape ({rows}, 784), bytes unmodified;
  each file is the `.npy` of those rows, compressed with xz
- `index.json` records the row count and the sha256 of every file (compressed and decompressed)

Changes: none to the drawings; only the selection of classes and rows, and the compression.
Rebuild with `python scripts/make_embedded.py`.
"""


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=f"default {DEFAULT_SOURCE}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    args = parser.parse_args(argv)

    bitmaps = args.source / "numpy_bitmap" if (args.source / "numpy_bitmap").is_dir() else args.source
    args.out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in CLASSES:
        path = bitmaps / f"{name}.npy"
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != 784 or len(array) < ROWS:
            sys.exit(f"{path}: expected uint8 (N>={ROWS}, 784), got {array.dtype} {array.shape}")
        raw = npy_bytes(np.ascontiguousarray(array[:ROWS]))
        packed = lzma.compress(raw, format=lzma.FORMAT_XZ, preset=XZ_PRESET)
        file = f"{name}.npy.xz"
        (args.out / file).write_bytes(packed)
        entries.append({"name": name, "file": file, "count": ROWS, "sha256": hashlib.sha256(raw).hexdigest(),
                        "xz_sha256": hashlib.sha256(packed).hexdigest()})
        print(f"{file:<20} {len(packed):>9,} bytes (from {len(raw):,})")

    index = {"name": NAME, "source": "Quick, Draw! by Google, CC BY 4.0, https://quickdraw.withgoogle.com/data",
             "rows": f"first {ROWS} of each official numpy_bitmap file", "classes": entries}
    (args.out / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (args.out / "ATTRIBUTION.md").write_text(
        ATTRIBUTION.format(name=NAME, n_classes=len(CLASSES), classes=", ".join(CLASSES), rows=ROWS, last=ROWS - 1),
        encoding="utf-8")

    shipped = [p for p in args.out.iterdir() if p.is_file()]
    total = sum(p.stat().st_size for p in shipped)
    print(f"total {total:,} bytes in {len(shipped)} files (budget {MAX_BYTES:,})")
    if total > MAX_BYTES:
        sys.exit(f"{args.out}: {total:,} bytes is over the {MAX_BYTES:,} byte budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
