"""Training batches straight from the memory-mapped store: uint8 rows -> normalized float tensors.

No dataset object per sample and no worker processes: rows are read in chunks of several batches with
``Split.gather`` (numpy copies out of the memory maps, which release the GIL), each batch is converted to float
once in torch and augmented as a whole with one ``grid_sample`` call, and a background thread keeps a few
batches ready. Pixels are only read when a batch is made, so the full dataset
(about 50M drawings) never has to fit in RAM. What is held per sample is the epoch's index order: 4 bytes a
sample (int32) while it is made, then 4 / world_size bytes for this rank's shard (plus the split's own row
arrays, 4 bytes a sample, kept by ``Split``).

Determinism: the order of epoch ``e`` depends only on ``(seed, e)``; the augmentation of a batch only on
``(seed, e, global batch index)``. So ``batches(start=k)`` yields exactly the tensors that skipping ``k``
batches of ``batches(0)`` would, which is what lets training resume mid-epoch bit-exactly.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..device import to_device
from ..errors import QDMError
from ..options import option
from .store import Split

MEAN = 0.5
STD = 0.5  # x = (pixels / 255 - MEAN) / STD lies in [-1, 1], ink positive: a symmetric range suits INT8
BACKGROUND = (0.0 - MEAN) / STD  # an empty pixel after normalization (-1.0)
SIDE = 28

# Rows are read this many samples at a time (rounded to whole batches): the gather loop costs a step per
# class present, so bigger reads amortize it (about 2.5x faster than per-batch reads at batch 256, 52 classes).
GATHER_SAMPLES = 8192
BALANCED_DRAW_CHUNK = 1 << 20  # balanced sampling draws in fixed chunks: bounded temporaries, same stream


def _ink(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 bitmaps -> float32 (B, 1, 28, 28) ink above background: ``normalize(pixels) - BACKGROUND``."""
    if isinstance(pixels, np.ndarray):
        if not pixels.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. memory maps)
            pixels = np.array(pixels)
        pixels = torch.from_numpy(pixels)
    if not isinstance(pixels, torch.Tensor):
        raise QDMError(f"pixels: expected a numpy array or torch tensor, got {type(pixels).__name__}")
    if pixels.dtype != torch.uint8:
        raise QDMError(f"pixels: expected dtype uint8, got {pixels.dtype}")
    shape = tuple(pixels.shape)
    if shape[1:] not in ((SIDE * SIDE,), (SIDE, SIDE), (1, SIDE, SIDE)):
        raise QDMError(f"pixels: expected shape (B, 784) or (B, 28, 28), got {shape}")
    # One kernel converts and divides (by 127.5, not times its inverse: 0 and 255 map to exactly 0 and 2).
    return torch.div(pixels.reshape(shape[0], 1, SIDE, SIDE), 255.0 * STD).to(torch.float32)


def normalize(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 bitmaps (B, 784) or (B, 28, 28), numpy or torch -> float32 (B, 1, 28, 28) in [-1, 1]."""
    return _ink(pixels).add_(BACKGROUND)


# ------------------------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class AugmentConfig:
    """Small random affine per sample. Translation is a fraction of the image side.

    ``stretch`` changes the aspect ratio by up to that fraction either way (area kept). ``reframe`` puts each
    warped drawing back into the framing of the official bitmaps (see ``_reframe``): the shift and zoom then
    cancel out, and what varies is rotation, aspect ratio and mirroring, as between real drawings.
    """

    rotation_deg: float = option(10.0, "augmentation: random rotation up to this many degrees either way")
    translate: float = option(0.1, "augmentation: random shift up to this fraction of the side")
    scale: tuple[float, float] = option((0.9, 1.1), "augmentation: random zoom between LOW and HIGH")
    # off by default: some classes are not mirror-symmetric in how people draw them
    hflip: bool = option(False, "augmentation: mirror half the drawings")
    stretch: float = option(0.0, "augmentation: change the aspect ratio by up to this fraction either way")
    reframe: bool = option(False, "augmentation: refit each warped drawing to the official bitmaps' framing")
    # last, so that positional construction keeps its meaning; a loader given a disabled config does not augment
    enabled: bool = option(True, "the light affine augmentation of the training batches", flat="augment")

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise QDMError(f"rotation_deg: expected 0..180 degrees, got {self.rotation_deg}")
        if not 0.0 <= self.translate < 1.0:
            raise QDMError(f"translate: expected a fraction in [0, 1), got {self.translate}")
        low, high = self.scale
        if not 0.0 < low <= high:
            raise QDMError(f"scale: expected (low, high) with 0 < low <= high, got {self.scale}")
        if not 0.0 <= self.stretch < 1.0:
            raise QDMError(f"stretch: expected a fraction in [0, 1), got {self.stretch}")


def _random_affines(batch: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(B, 2, 3) output->input maps in the [-1, 1] coordinates of ``affine_grid``."""
    # Draws come from the torch generator (one fixed draw, whatever cfg is); the arithmetic on 256-element
    # vectors is done in numpy, where each step costs a fraction of a torch op's dispatch.
    u = torch.rand(batch, 5, generator=generator, dtype=torch.float64).numpy()
    angle = (2 * u[:, 0] - 1) * math.radians(cfg.rotation_deg)
    scale = cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * u[:, 1]
    sx, sy = ((2 * u[:, 2:4] - 1) * (2 * cfg.translate)).T  # the image spans 2 units: a fraction f is 2f
    flip = np.where(u[:, 4] < 0.5, -1.0, 1.0) if cfg.hflip else np.ones(batch)
    # The drawing is flipped, scaled, rotated, then shifted; the grid needs the inverse map.
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.empty((batch, 2, 3))
    theta[:, 0] = np.stack([flip * cos, flip * sin, -flip * (cos * sx + sin * sy)], axis=1)
    theta[:, 1] = np.stack([-sin, cos, sin * sx - cos * sy], axis=1)
    if cfg.stretch > 0:  # drawn after the fixed five, so runs without stretch keep their exact draws
        v = torch.rand(batch, generator=generator, dtype=torch.float64).numpy()
        root_aspect = np.exp((2 * v - 1) * math.log1p(cfg.stretch) / 2)  # x grows by it, y shrinks by it
        theta[:, 0] /= root_aspect[:, None]
        theta[:, 1] *= root_aspect[:, None]
    return torch.from_numpy(theta.astype(np.float32))


_BASE_GRID = torch.nn.functional.affine_grid(torch.eye(2, 3)[None], [1, 1, SIDE, SIDE], align_corners=False)
_BASE_POINTS = torch.cat([_BASE_GRID.reshape(-1, 2), torch.ones(SIDE * SIDE, 1)], dim=1).T.contiguous()  # (3, 784)


def _affine_grid(theta: torch.Tensor) -> torch.Tensor:
    """The grid of ``F.affine_grid(theta, (B, 1, 28, 28), align_corners=False)``, as one GEMM.

    affine_grid's batched matmul over 3-element rows costs ~2 ms for a batch of 256; this ~0.1 ms.
    """
    batch = theta.shape[0]
    points = _BASE_POINTS.to(theta.device)
    return (theta.reshape(2 * batch, 3) @ points).view(batch, 2, SIDE, SIDE).permute(0, 2, 3, 1)


def _ink_box(xs: torch.Tensor, ys: torch.Tensor, blank: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-sample extent (x_low, x_high, y_low, y_high), each (B,), of the points (xs, ys) not ``blank``."""
    # masked_fill: torch.where with a Python scalar costs ~10x as much here
    return (xs.masked_fill(blank, math.inf).amin(dim=1), xs.masked_fill(blank, -math.inf).amax(dim=1),
            ys.masked_fill(blank, math.inf).amin(dim=1), ys.masked_fill(blank, -math.inf).amax(dim=1))


def _reframe(theta: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
    """``theta`` (output->input maps) composed with the fit that frames each warped drawing as it was framed.

    Official bitmaps scale a drawing's bounding box into the frame (the longer side from pixel 1 to 26) and
    centre it; a shift or zoom moves a drawing off that framing, which no test drawing has. Here the ink pixels
    are mapped forward, and the box around where they land is scaled (aspect kept) and moved so that its longer
    side and centre are those of the drawing's own box before the warp. Drawings with fewer than two distinct
    ink positions keep ``theta``.
    """
    batch = len(theta)
    blank = ink.reshape(batch, SIDE * SIDE) <= 0
    xs, ys = _BASE_POINTS[0].to(theta.device), _BASE_POINTS[1].to(theta.device)  # pixel centres, (784,) each
    a, b, c, d = (theta[:, i, j, None] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))  # input = [[a b] [c d]] out + t
    det = a * d - b * c
    dx, dy = xs - theta[:, 0, 2, None], ys - theta[:, 1, 2, None]
    x0, x1, y0, y1 = _ink_box(xs.expand(batch, -1), ys.expand(batch, -1), blank)
    u0, u1, v0, v1 = _ink_box((d * dx - b * dy) / det, (a * dy - c * dx) / det, blank)  # where the ink lands
    side, new_side = torch.maximum(x1 - x0, y1 - y0), torch.maximum(u1 - u0, v1 - v0)
    # output = ratio * (landed - new_centre) + centre, so input = linear @ (output - centre) / ratio + ...
    ratio = side / new_side
    centre = torch.stack([x0 + x1, y0 + y1], dim=1)[..., None] / 2
    new_centre = torch.stack([u0 + u1, v0 + v1], dim=1)[..., None] / 2
    linear = theta[:, :, :2]
    framed = torch.cat([linear / ratio[:, None, None],
                        theta[:, :, 2:] + linear @ (new_centre - centre / ratio[:, None, None])], dim=2)
    keep = ~((side > 0) & (new_side > 0) & torch.isfinite(side))
    return torch.where(keep[:, None, None], theta, framed)


def _warp_ink(ink: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    # On ink above background, grid_sample's zero padding is exactly "background moves in from outside".
    theta = _random_affines(len(ink), cfg, generator).to(ink.device)  # drawn on the host, applied where ink is
    grid = _affine_grid(_reframe(theta, ink) if cfg.reframe else theta)
    return torch.nn.functional.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """One random affine per sample of normalized ``x`` (B, 1, 28, 28), all samples in one grid_sample.

    Bilinear; what moves in from outside the frame is background (the normalized value of pixel 0).
    """
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, SIDE, SIDE) or x.dtype != torch.float32:
        raise QDMError(f"x: expected float32 (B, 1, 28, 28), got {x.dtype} {tuple(x.shape)}")
    return _warp_ink(x - BACKGROUND, cfg, generator).add_(BACKGROUND)


def _generator_for(seed: int, epoch: int, global_batch: int) -> torch.Generator:
    # The trailing 1 keeps these streams apart from the epoch-order stream (seed, epoch, 0).
    state = np.random.SeedSequence([seed, epoch, 1, global_batch]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ------------------------------------------------------------------------------------------------- loader
class BatchLoader:
    """Deterministic, resumable, optionally distributed batches of one split.

    Each epoch is ``len(split)`` samples: a seeded permutation of the split (or the split in order, with
    ``shuffle=False``), or with ``balanced`` a seeded draw with replacement in which every class is equally
    likely (``shuffle`` is then moot). Rank ``r`` of ``world_size`` takes every
    ``world_size``-th sample of that order from position ``r`` (as torch's DistributedSampler does); the order
    is padded by wrapping around (or cut, with ``drop_last``) so every rank has the same number of batches.
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool = True,
                 augment: AugmentConfig | None = None, balanced: bool = False, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, prefetch: int = 2,
                 channels_last: bool = False, device: torch.device | None = None):
        if batch_size < 1:
            raise QDMError(f"batch_size: expected a positive count, got {batch_size}")
        if seed < 0:
            raise QDMError(f"seed: expected a non-negative integer, got {seed}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise QDMError(f"rank/world_size: expected 0 <= rank < world_size, got {rank}/{world_size}")
        if prefetch < 0:
            raise QDMError(f"prefetch: expected a count >= 0 (0 = no background thread), got {prefetch}")
        total = len(split)
        if total == 0:
            raise QDMError(f"split {split.name!r}: no samples to load")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.enabled else None
        self.balanced = balanced
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.channels_last = channels_last
        # Off the CPU, the uint8 rows go to the device (pinned, non-blocking on CUDA: a quarter of the float
        # bytes) and are normalized and augmented there; the random draws stay on the host, the same as here.
        self.device = device if device is not None and device.type != "cpu" else None
        self.epoch = 0
        self.samples_per_rank = total // world_size if drop_last else -(-total // world_size)
        self._num_batches = (self.samples_per_rank // batch_size if drop_last
                             else -(-self.samples_per_rank // batch_size))
        if self._num_batches == 0:
            raise QDMError(f"split {split.name!r}: {total} samples give no full batch of {batch_size} per rank "
                           f"over {world_size} rank(s) with drop_last")
        self._index_dtype = np.int32 if total < 2**31 else np.int64
        self._cached: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise QDMError(f"epoch: expected a non-negative integer, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._num_batches

    # -- which samples
    def epoch_order(self, epoch: int) -> np.ndarray:
        """All ``len(split)`` flat indices of ``epoch`` in order (the same on every rank)."""
        total = len(self.split)
        rng = np.random.default_rng([self.seed, epoch, 0])
        if self.balanced:
            return self._balanced_draw(rng, total)
        order = np.arange(total, dtype=self._index_dtype)
        if self.shuffle:
            rng.shuffle(order)  # in place: no int64 copy of a 50M-sample permutation
        return order

    def _balanced_draw(self, rng: np.random.Generator, total: int) -> np.ndarray:
        # Weighting each sample 1/count(class) is the same as: pick a class uniformly, then a sample in it.
        counts = np.asarray(self.split.counts, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        present = np.flatnonzero(counts)
        order = np.empty(total, dtype=self._index_dtype)
        for lo in range(0, total, BALANCED_DRAW_CHUNK):
            n = min(BALANCED_DRAW_CHUNK, total - lo)
            cls = present[rng.integers(0, len(present), size=n)]
            order[lo : lo + n] = starts[cls] + rng.integers(0, counts[cls])
        return order

    def rank_indices(self) -> np.ndarray:
        """This rank's flat indices for the current epoch, in batch order (cached per epoch)."""
        if self._cached is None or self._cached[0] != self.epoch:
            order = self.epoch_order(self.epoch)
            span = self.samples_per_rank * self.world_size
            if self.world_size == 1:
                shard = order[:span]
            elif span <= len(order):
                shard = order[self.rank : span : self.world_size].copy()
            else:  # pad by wrapping around to the start of the order
                shard = order[np.arange(self.rank, span, self.world_size) % len(order)]
            self._cached = (self.epoch, shard)
        return self._cached[1]

    def batch_indices(self, batch: int) -> np.ndarray:
        """The flat split indices of batch ``batch`` of the current epoch on this rank (what ``batches`` gathers)."""
        return self.rank_indices()[batch * self.batch_size : (batch + 1) * self.batch_size]

    # -- the batches
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x float32 (B, 1, 28, 28), y int64 (B,)) of the current epoch, from batch ``start`` on.

        The epoch is fixed when this is called, so a later ``set_epoch`` does not change a running iterator.
        """
        if not 0 <= start <= self._num_batches:
            raise QDMError(f"start: expected a batch index in 0..{self._num_batches}, got {start}")
        produced = self._produce(self.epoch, self.rank_indices(), start)
        return produced if self.prefetch == 0 else self._prefetched(produced)

    def _produce(self, epoch: int, indices: np.ndarray, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = self.batch_size
        per_read = max(1, GATHER_SAMPLES // size)
        batch = start
        while batch < self._num_batches:
            # Reads are aligned to whole groups of batches counted from 0, whatever ``start`` is.
            last = min(self._num_batches, (batch // per_read + 1) * per_read)
            pixels, labels = self.split.gather(indices[batch * size : last * size])
            labels = torch.from_numpy(labels)
            for k in range(batch, last):
                lo, hi = (k - batch) * size, (k - batch + 1) * size
                rows = pixels[lo:hi]
                if self.device is not None:
                    rows = to_device(torch.from_numpy(rows), self.device)
                ink = _ink(rows)  # per batch, so the floats stay in cache
                if self.augment is not None:  # = augment_batch(normalize(...)), two passes fewer
                    global_batch = k * self.world_size + self.rank
                    ink = _warp_ink(ink, self.augment, _generator_for(self.seed, epoch, global_batch))
                x, y = ink.add_(BACKGROUND), labels[lo:hi]
                if self.device is not None:
                    y = to_device(y, self.device)
                if self.channels_last:  # one channel: both layouts hold the same bytes, only strides differ
                    x = x.contiguous().as_strided(x.shape, (SIDE * SIDE, 1, SIDE, 1))
                yield x, y
            batch = last

    def _prefetched(self, produced: Iterator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Run ``produced`` in a background thread, ``prefetch`` batches ahead; the thread ends with us."""
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stopping = threading.Event()
        done = object()

        def offer(item) -> bool:
            while not stopping.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for item in produced:
                    if not offer(item):
                        return
                offer(done)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                offer(exc)
            finally:
                produced.close()

        def consume() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            thread = threading.Thread(target=work, name="qdm-batch-prefetch", daemon=True)
            thread.start()
            try:
                while (item := ready.get()) is not done:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:  # normal end, break, close() or an exception: stop the producer and wait for it
                stopping.set()
                thread.join()

        return consume()
