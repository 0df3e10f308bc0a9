"""The classes a running server is taught (``qdm serve --teach``): prototypes of a few drawings each (``teach.py``),
kept in a folder the server owns, one JSON file per class, and read back when it starts.

Each file holds the class's name, its drawings as the client sent them and their stroke format; the prototypes are
computed again from them at start. Files are written atomically; a file that cannot be read stops the start with
an error naming it. Predictions read one immutable ``Snapshot`` (names and prototypes), which adding or deleting a
class replaces under a lock, so a prediction never sees a half-added class.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.render import FORMATS
from ..errors import QDMError
from ..fileio import ensure_dir, read_versioned_json, remove_stale_temporaries, write_json_atomic
from ..teach import (
    MAX_TAUGHT_CLASSES,
    MAX_TEACH_DRAWINGS,
    MIN_TEACH_DRAWINGS,
    NotTaught,
    TeachConflict,
    TeachParameters,
    clean_class_name,
    prototype_of,
)
from .preprocess import bitmap_from_drawing

TAUGHT_FORMAT = "qdm-taught-class"
TAUGHT_VERSION = 1


@dataclass(frozen=True)
class TaughtClass:
    name: str
    drawings: list  # the strokes as the client sent them
    stroke_format: str
    order: int  # classes are listed (and their logits appended) in the order they were taught
    prototype: torch.Tensor


@dataclass(frozen=True)
class Snapshot:
    """What a prediction reads: the taught names and their prototypes (T, D), in output order."""

    names: tuple[str, ...]
    prototypes: torch.Tensor
    drawings: tuple[int, ...]


def render_drawings(drawings: list, fmt: str, where: str = "drawings") -> np.ndarray:
    """The (K, 784) bitmaps of ``drawings`` (each a stroke list as POST /predict takes), K checked."""
    if not isinstance(drawings, list) or not MIN_TEACH_DRAWINGS <= len(drawings) <= MAX_TEACH_DRAWINGS:
        count = len(drawings) if isinstance(drawings, list) else "no list of"
        raise QDMError(f"{where}: {count} drawings; a class is taught from {MIN_TEACH_DRAWINGS} to "
                       f"{MAX_TEACH_DRAWINGS}")
    if fmt not in FORMATS:
        raise QDMError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    pixels = []
    for number, drawing in enumerate(drawings):
        try:
            pixels.append(bitmap_from_drawing(drawing, fmt))
        except QDMError as exc:  # "drawing: stroke 2 ...": which drawing it is
            raise QDMError(f"{where}[{number}]: {str(exc).removeprefix('drawing: ')}") from exc
    return np.stack(pixels)


def class_file_name(name: str) -> str:
    """A file name for ``name`` that any file system takes (names differ in case only are one class)."""
    return hashlib.sha256(name.casefold().encode()).hexdigest()[:16] + ".json"


class TaughtClasses:
    """The taught classes: add, delete, list; ``snapshot`` for predictions. ``features`` maps (N, 784) bitmaps
    to the model's (N, D) features (on the model's thread); ``known`` are the model's own class names."""

    def __init__(self, params: TeachParameters, known: list[str], folder: str | Path,
                 features: Callable[[np.ndarray], torch.Tensor]):
        self.params = params
        self.known = {name.casefold() for name in known}
        self.folder = ensure_dir(folder)
        self.features = features
        self._lock = threading.Lock()
        self._classes: dict[str, TaughtClass] = {}
        self.snapshot = self._snapshot()
        self._load()

    # ---------------------------------------------------------------------------------------- changes
    def add(self, name: str, drawings: list, fmt: str = "auto") -> TaughtClass:
        """Teach ``name`` from ``drawings``; written to the folder before it is predicted."""
        name = clean_class_name(name)
        pixels = render_drawings(drawings, fmt)
        self._check_room(name)  # before the model runs: a refused class costs nothing
        prototype = prototype_of(self.features(pixels), self.params)
        with self._lock:
            self._check_room(name)  # again: another request may have taught it meanwhile
            taught = TaughtClass(name, drawings, fmt, self._next_order(), prototype)
            write_json_atomic(self.folder / class_file_name(name), {
                "format": TAUGHT_FORMAT, "version": TAUGHT_VERSION, "name": name, "stroke_format": fmt,
                "order": taught.order, "drawings": drawings})
            self._classes[name.casefold()] = taught
            self.snapshot = self._snapshot()
        return taught

    def delete(self, name: str) -> str:
        """Forget the taught class ``name`` (any case); its file goes too. Returns its name as taught."""
        key = name.strip().casefold()
        with self._lock:
            if key in self.known:
                raise TeachConflict(f"name: {name.strip()!r} is one of the model's own classes; only taught "
                                    "classes can be deleted")
            if key not in self._classes:
                raise NotTaught(f"name: no taught class is called {name.strip()!r}")
            taught = self._classes.pop(key)
            (self.folder / class_file_name(taught.name)).unlink(missing_ok=True)
            self.snapshot = self._snapshot()
        return taught.name

    def _check_room(self, name: str) -> None:
        if name.casefold() in self.known or name.casefold() in self._classes:
            raise TeachConflict(f"name: the model knows {name!r} already")
        if len(self._classes) >= MAX_TAUGHT_CLASSES:
            raise TeachConflict(f"name: this server holds {MAX_TAUGHT_CLASSES} taught classes, the most it takes; "
                                "delete one first")

    def _next_order(self) -> int:
        return max((c.order for c in self._classes.values()), default=-1) + 1

    def _snapshot(self) -> Snapshot:
        ordered = sorted(self._classes.values(), key=lambda c: (c.order, c.name))
        prototypes = torch.stack([c.prototype for c in ordered]) if ordered else \
            torch.zeros(0, len(self.params.feature_mean))
        return Snapshot(tuple(c.name for c in ordered), prototypes, tuple(len(c.drawings) for c in ordered))

    # ---------------------------------------------------------------------------------------- the folder
    def _load(self) -> None:
        """The classes in the folder (prototypes computed again); a file that does not hold one is an error."""
        remove_stale_temporaries(self.folder)
        for path in sorted(self.folder.glob("*.json")):
            taught = self._read(path)
            if taught.name.casefold() in self.known or taught.name.casefold() in self._classes:
                raise QDMError(f"{path}: class {taught.name!r} is known already (the model's, or another file's)")
            self._classes[taught.name.casefold()] = taught
        if len(self._classes) > MAX_TAUGHT_CLASSES:
            raise QDMError(f"{self.folder}: {len(self._classes)} taught classes; at most {MAX_TAUGHT_CLASSES}")
        self.snapshot = self._snapshot()

    def _read(self, path: Path) -> TaughtClass:
        record = read_versioned_json(path, TAUGHT_FORMAT, TAUGHT_VERSION)
        try:
            name = clean_class_name(record.get("name") if isinstance(record.get("name"), str) else "")
            order = record.get("order")
            if isinstance(order, bool) or not isinstance(order, int):
                raise QDMError(f"order: expected an integer, got {order!r}")
            pixels = render_drawings(record.get("drawings"), record.get("stroke_format"))
        except QDMError as exc:
            raise QDMError(f"{path}: {exc}") from exc
        if path.name != class_file_name(name):
            raise QDMError(f"{path}: holds class {name!r}, whose file is {class_file_name(name)}")
        return TaughtClass(name, record["drawings"], record["stroke_format"], order,
                           prototype_of(self.features(pixels), self.params))
