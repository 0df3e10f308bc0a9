"""The one on-disk layout for Quick, Draw! bitmaps, and its deterministic splits.

A store is a folder::

    manifest.json          {"format": "quickdraw-mobile-store", "version": 1, "classes": [...]}
    <class name>.npy       uint8 (N, 784), ink 255 on 0, 28x28 row-major (the official numpy_bitmap layout)

Class arrays are read by memory map, so a store of the full dataset (about 50M drawings) never has to fit in
RAM. The manifest lists the classes in official order (which is also the label order), with each file's row
count, sha256 and source. Every write goes through a temporary file and a rename.

Splits are computed, not stored: within each class, rows are ordered by a keyed hash of (seed, class, row), an
optional per-class cap keeps the first ``max_per_class`` of that order, and the pool is cut into test,
validation and train by exact per-class fractions. Same store + same seed -> the same rows, on any machine.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import QDMError
from ..fileio import read_versioned_json, save_npy_atomic, sha256_file, write_json_atomic
from .classes import all_classes, resolve_class

STORE_FORMAT = "quickdraw-mobile-store"
STORE_VERSION = 1
MANIFEST = "manifest.json"
PIXELS = 784
SPLIT_NAMES = ("train", "val", "test")


def class_file_name(name: str) -> str:
    """File name of a class array: the official name, spaces kept (as in the official bucket)."""
    return f"{name}.npy"


def check_bitmap_array(array: np.ndarray, where: str) -> np.ndarray:
    """Return ``array`` as (N, 784) uint8, or raise naming ``where`` and what was expected."""
    if array.dtype != np.uint8:
        raise QDMError(f"{where}: expected dtype uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[1:] == (28, 28):
        array = array.reshape(len(array), PIXELS)
    if array.ndim != 2 or array.shape[1] != PIXELS:
        raise QDMError(f"{where}: expected shape (N, 784) or (N, 28, 28), got {tuple(array.shape)}")
    if len(array) == 0:
        raise QDMError(f"{where}: no drawings (0 rows)")
    return array


# ------------------------------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class SplitSpec:
    """How a store is cut into train / validation / test. The defaults are the project's."""

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    max_per_class: int | None = None

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise QDMError(f"{name}: expected a fraction in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise QDMError("val_fraction + test_fraction: must leave rows for training (sum < 1)")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise QDMError(f"max_per_class: expected a positive count, got {self.max_per_class}")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mixer: unlike a seeded RNG stream it cannot change between library versions."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def class_row_order(name: str, count: int, seed: int) -> np.ndarray:
    """Rows ``0..count-1`` of class ``name`` in the split order for ``seed``."""
    key = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")
    keys = _splitmix64(np.arange(count, dtype=np.uint64) ^ np.uint64(key))
    return np.argsort(keys, kind="stable")


def split_class_rows(name: str, count: int, spec: SplitSpec) -> dict[str, np.ndarray]:
    """Exact per-class train/val/test rows (each sorted ascending, for memory-map locality)."""
    pool = class_row_order(name, count, spec.seed)
    if spec.max_per_class is not None:
        pool = pool[: spec.max_per_class]
    n_test = int(round(len(pool) * spec.test_fraction))
    n_val = int(round(len(pool) * spec.val_fraction))
    parts = {"test": pool[:n_test], "val": pool[n_test : n_test + n_val], "train": pool[n_test + n_val :]}
    return {k: np.sort(v).astype(np.int32) for k, v in parts.items()}  # int32: 4 bytes a drawing at 50M


def balanced_picks(counts: Sequence[int], n: int, seed: int = 0) -> np.ndarray:
    """``min(n, sum(counts))`` distinct indices, sorted, into rows grouped class by class (``counts[c]`` rows of
    class c), spread as evenly over the classes as their sizes allow, seeded by ``(seed, n)``.

    The one class-balanced sampler (calibration sets, verification samples): a class with fewer rows than its share
    gives all it has and the others make up the difference; the first classes take the remainder.
    """
    counts = np.asarray(counts, dtype=np.int64)
    quota = np.zeros_like(counts)
    remaining = min(n, int(counts.sum()))
    while remaining > 0:  # water-filling: equal shares, capped by what each class has
        open_classes = np.nonzero(quota < counts)[0]
        share, extra = divmod(remaining, len(open_classes))
        for rank, c in enumerate(open_classes):
            take = min(share + (rank < extra), counts[c] - quota[c])
            quota[c] += take
            remaining -= take
    rng = np.random.default_rng([seed, n])
    bounds = np.cumsum([0, *counts])
    picks = [bounds[c] + np.sort(rng.permutation(count)[: quota[c]]) for c, count in enumerate(counts)]
    return np.concatenate([np.zeros(0, dtype=np.int64), *picks]).astype(np.int64)


def balanced_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of ``min(n, len(labels))`` rows of a label array (class indices), picked by
    ``balanced_picks`` among the rows of each class in row order."""
    labels = np.asarray(labels, dtype=np.int64)
    by_class = np.argsort(labels, kind="stable")  # rows grouped class by class, in row order within a class
    return np.sort(by_class[balanced_picks(np.bincount(labels), n, seed)])


@dataclass
class Split:
    """One split of a store: per class (in label order) the row indices into that class's array."""

    name: str
    classes: list[str]
    rows: list[np.ndarray]
    arrays: list[np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return int(sum(len(r) for r in self.rows))

    @property
    def counts(self) -> list[int]:
        return [len(r) for r in self.rows]

    def labels(self) -> np.ndarray:
        """Label of every sample, in the split's flat order (class by class)."""
        return np.repeat(np.arange(len(self.classes), dtype=np.int64), self.counts)

    def gather(self, flat_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (B, 784) uint8 and labels (B,) for flat sample indices, read from the memory maps.

        One sort of the batch groups the reads by class and orders them by row (rows are stored sorted),
        which keeps page-cache access sequential-ish and costs one small loop step per class present.
        """
        flat_index = np.asarray(flat_index, dtype=np.int64)
        bounds = np.cumsum([0, *self.counts])
        order = np.argsort(flat_index, kind="stable")
        sorted_index = flat_index[order]
        if len(sorted_index) and (sorted_index[0] < 0 or sorted_index[-1] >= bounds[-1]):
            raise QDMError(f"split {self.name!r}: sample index out of range 0..{bounds[-1] - 1}")
        cuts = np.searchsorted(sorted_index, bounds)  # the batch's slice of each class, in sorted order
        pixels = np.empty((len(flat_index), PIXELS), dtype=np.uint8)
        for label in np.flatnonzero(np.diff(cuts)).tolist():
            lo, hi = cuts[label], cuts[label + 1]
            rows = self.rows[label][sorted_index[lo:hi] - bounds[label]]
            pixels[order[lo:hi]] = self.arrays[label][rows]
        labels = np.searchsorted(bounds, flat_index, side="right") - 1
        return pixels, labels

    def nonempty(self, where: str | Path) -> Split:
        """This split, or an error naming ``where`` (the store) if it has no rows."""
        if len(self) == 0:
            raise QDMError(f"{where}: the {self.name} split is empty")
        return self

    def balanced_indices(self, n: int, seed: int = 0) -> np.ndarray:
        """``min(n, len(self))`` flat indices spread over the classes (``balanced_picks``): calibration sets and
        fixed evaluation samples."""
        return balanced_picks(self.counts, n, seed)

    def materialize(self) -> tuple[np.ndarray, np.ndarray]:
        """All pixels and labels of the split in memory (for small splits: evaluation, calibration)."""
        return self.gather(np.arange(len(self)))


# ------------------------------------------------------------------------------------------------- store
class Store:
    """A folder of per-class uint8 arrays plus ``manifest.json``."""

    def __init__(self, root: Path, entries: list[dict]):
        self.root = Path(root)
        self._entries = entries
        self._lock = threading.Lock()
        self._arrays: dict[str, np.ndarray] = {}

    # -- creating and extending
    @classmethod
    def create(cls, root: str | Path) -> Store:
        """Open ``root`` as a store, creating an empty one if it has no manifest yet."""
        root = Path(root)
        if (root / MANIFEST).exists():
            return cls.open(root)
        if root.exists() and not root.is_dir():
            raise QDMError(f"{root}: expected a folder for the store, found a file")
        root.mkdir(parents=True, exist_ok=True)
        store = cls(root, [])
        store._write_manifest()
        return store

    def add_class(self, name: str, array: np.ndarray, source: str) -> dict:
        """Write (or replace) one class's array and record it in the manifest, both atomically."""
        name = resolve_class(name)
        array = check_bitmap_array(np.asarray(array), f"{source} ({name})")
        path = self.root / class_file_name(name)
        save_npy_atomic(path, np.ascontiguousarray(array))
        entry = {"name": name, "file": path.name, "count": int(len(array)), "sha256": sha256_file(path),
                 "source": source}
        self.record_class(entry)
        return entry

    def record_class(self, entry: dict) -> None:
        """Record a class whose file is already in place (written by the caller, atomically)."""
        self.record_classes([entry])

    def record_classes(self, entries: list[dict]) -> None:
        """Record several classes whose files are in place, with a single manifest write."""
        names = {e["name"] for e in entries}
        with self._lock:
            self._entries = [e for e in self._entries if e["name"] not in names] + list(entries)
            order = {c: i for i, c in enumerate(all_classes())}
            self._entries.sort(key=lambda e: order[e["name"]])
            for name in names:
                self._arrays.pop(name, None)
            self._write_manifest()

    def _write_manifest(self) -> None:
        write_json_atomic(self.root / MANIFEST, {"format": STORE_FORMAT, "version": STORE_VERSION,
                                                 "classes": self._entries})

    # -- reading
    @classmethod
    def open(cls, root: str | Path, verify: bool = False) -> Store:
        """Open a store, checking the manifest and that every class file has the recorded shape."""
        root = Path(root)
        manifest_path = root / MANIFEST
        if not root.is_dir():
            raise QDMError(f"{root}: no such data folder (expected a store made by 'qdm data download/ingest')")
        if not manifest_path.exists():
            raise QDMError(f"{manifest_path}: missing; {root} is not a store (run 'qdm data ingest' on it)")
        manifest = read_versioned_json(manifest_path, STORE_FORMAT, STORE_VERSION)
        entries = manifest.get("classes")
        if not isinstance(entries, list):
            raise QDMError(f"{manifest_path}: field 'classes' must be a list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not {"name", "file", "count", "sha256", "source"} <= set(entry):
                raise QDMError(f"{manifest_path}: classes[{i}] must have name, file, count, sha256, source")
            if entry["name"] not in all_classes():  # record_class orders by official name
                raise QDMError(f"{manifest_path}: classes[{i}] name {entry['name']!r} is not an official class")
        store = cls(root, entries)
        for entry in entries:
            array = store.array(entry["name"])
            if len(array) != entry["count"]:
                raise QDMError(f"{root / entry['file']}: manifest says {entry['count']} rows, file has {len(array)}")
            if verify and sha256_file(root / entry["file"]) != entry["sha256"]:
                raise QDMError(f"{root / entry['file']}: sha256 differs from manifest.json (file changed or corrupt)")
        return store

    @property
    def classes(self) -> list[str]:
        return [e["name"] for e in self._entries]

    @property
    def counts(self) -> dict[str, int]:
        return {e["name"]: int(e["count"]) for e in self._entries}

    @property
    def entries(self) -> list[dict]:
        return [dict(e) for e in self._entries]

    def array(self, name: str) -> np.ndarray:
        """The class's (N, 784) uint8 array, memory-mapped read-only."""
        if name not in self._arrays:
            entry = next((e for e in self._entries if e["name"] == name), None)
            if entry is None:
                raise QDMError(f"{self.root}: class {name!r} is not in this store")
            path = self.root / entry["file"]
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError as exc:
                raise QDMError(f"{path}: listed in manifest.json but missing") from exc
            except (ValueError, OSError, EOFError) as exc:  # EOFError: a 0-byte file
                raise QDMError(f"{path}: not a readable .npy file ({exc})") from exc
            self._arrays[name] = check_bitmap_array(array, str(path))
        return self._arrays[name]

    def select(self, classes: Sequence[str] | None) -> list[str]:
        """Resolve a class subset against this store (label order = store order)."""
        if not self._entries:
            raise QDMError(f"{self.root}: the store has no classes")
        if classes is None:
            return self.classes
        wanted = set()
        for name in classes:
            official = resolve_class(name)  # an unknown name gets the did-you-mean of all 345
            if official not in self.classes:
                shown = ", ".join(self.classes[:12]) + (", ..." if len(self.classes) > 12 else "")
                raise QDMError(f"{self.root}: class {official!r} is not in this store (it has {shown})")
            wanted.add(official)
        return [c for c in self.classes if c in wanted]

    def splits(self, spec: SplitSpec | None = None, classes: Sequence[str] | None = None) -> dict[str, Split]:
        """The deterministic train / val / test splits of the chosen classes."""
        spec = spec or SplitSpec()
        names = self.select(classes)
        per_class = [split_class_rows(c, self.counts[c], spec) for c in names]
        arrays = [self.array(c) for c in names]
        return {s: Split(s, names, [p[s] for p in per_class], arrays) for s in SPLIT_NAMES}

    def model_splits(self, spec: SplitSpec, labels: Sequence[str], fix: str) -> dict[str, Split]:
        """The splits of exactly a model's classes (``labels``), in its order (a model extended with new classes
        lists them after the old ones, not in the store's order; a class's rows depend on its name, count and
        ``spec`` only, so the order changes no split). A store that lacks one of them is an error (``fix`` says
        what to do instead)."""
        missing = [c for c in labels if c not in self.classes]
        if missing:
            raise QDMError(f"{self.root}: lacks {len(missing)} of the model's classes (e.g. {missing[0]!r}); {fix}")
        names = list(labels)
        per_class = [split_class_rows(c, self.counts[c], spec) for c in names]
        arrays = [self.array(c) for c in names]
        return {s: Split(s, names, [p[s] for p in per_class], arrays) for s in SPLIT_NAMES}

    def describe(self, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> str:
        spec = SplitSpec(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        splits = self.splits(spec)
        lines = [f"store {self.root}: {len(self.classes)} classes, {sum(self.counts.values())} drawings",
                 f"split (seed {seed}): " + ", ".join(f"{s} {len(splits[s])}" for s in SPLIT_NAMES),
                 f"{'class':<24}{'count':>8}{'train':>8}{'val':>8}{'test':>8}  source"]
        for i, e in enumerate(self._entries):
            t, v, te = (splits[s].counts[i] for s in SPLIT_NAMES)
            lines.append(f"{e['name']:<24}{e['count']:>8}{t:>8}{v:>8}{te:>8}  {e['source']}")
        return "\n".join(lines)
