"""The batch loader on a small store of real drawings: coverage, determinism, resuming, sharding, balance,
augmentation and the prefetch thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_store

from quickdraw_mobile.data import loader as loader_module
from quickdraw_mobile.data.loader import (
    AugmentConfig,
    BatchLoader,
    augment_batch,
    normalize,
)
from quickdraw_mobile.data.store import SplitSpec, Store
from quickdraw_mobile.errors import QDMError

# Deliberately imbalanced, so balanced sampling has something to correct.
CLASS_ROWS = {"airplane": 90, "apple": 360, "banana": 180, "bicycle": 45}
SPEC = SplitSpec(val_fraction=0.1, test_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def store(drawings, tmp_path_factory) -> Store:
    return make_store(drawings, tmp_path_factory.mktemp("loader") / "store", CLASS_ROWS)


@pytest.fixture(scope="module")
def train(store):
    return store.splits(SPEC)["train"]


def collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ---------------------------------------------------------------------------------------------- normalize
def test_normalize_range_and_ink_polarity(train):
    pixels, _ = train.gather(np.arange(64))
    x = normalize(pixels)
    assert x.dtype == torch.float32 and x.shape == (64, 1, 28, 28)
    assert x.min().item() == -1.0 and x.max().item() == 1.0  # real drawings have empty and full-ink pixels
    flat = x.reshape(64, 784).numpy()
    np.testing.assert_array_equal(flat > -1.0, pixels > 0)  # ink is above the background
    np.testing.assert_allclose(flat, (pixels / 255.0 - 0.5) / 0.5, atol=1e-6)
    assert torch.equal(normalize(torch.from_numpy(pixels).reshape(64, 28, 28)), x)
    assert torch.equal(normalize(train.arrays[0][:3]), normalize(np.array(train.arrays[0][:3])))  # read-only memmap
    with pytest.raises(QDMError, match="uint8"):
        normalize(pixels.astype(np.float32))
    with pytest.raises(QDMError, match="shape"):
        normalize(pixels.reshape(64, 28, 28)[:, :27])


# ------------------------------------------------------------------------------------------------- loader
def test_shapes_dtypes_and_lengths(train):
    n = len(train)
    loader = BatchLoader(train, 64, augment=AugmentConfig())
    batches = list(loader)
    assert len(batches) == len(loader) == -(-n // 64)
    for x, y in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 28, 28) and x.shape[0] == y.shape[0]
        assert x.min().item() >= -1.0 - 1e-6 and x.max().item() <= 1.0 + 1e-6
    assert [len(y) for _, y in batches] == [64] * (len(batches) - 1) + [n - 64 * (len(batches) - 1)]

    dropped = BatchLoader(train, 64, drop_last=True)
    assert len(dropped) == n // 64 and all(len(y) == 64 for _, y in dropped)

    plain = list(BatchLoader(train, 64, shuffle=False))
    cl = list(BatchLoader(train, 64, shuffle=False, channels_last=True))
    for (x, _), (xc, _) in zip(plain, cl, strict=True):
        assert xc.stride() == (784, 1, 28, 1)  # what suggest_memory_format reads as channels_last
        assert torch.equal(x, xc)


def test_one_epoch_covers_every_sample_once(train):
    pixels, labels = train.materialize()
    loader = BatchLoader(train, 50, shuffle=True, seed=3)
    x, y = collect(loader)
    order = loader.rank_indices()
    assert np.array_equal(np.sort(order), np.arange(len(train)))  # a permutation...
    assert not np.array_equal(order, np.arange(len(train)))  # ...that is shuffled
    assert torch.equal(y, torch.from_numpy(labels[order]))
    assert torch.equal(x, normalize(pixels[order]))
    # Independent of the loader's own index bookkeeping: the multiset of (label, drawing) is the split's.
    got = sorted(zip(y.tolist(), [r.tobytes() for r in ((x.reshape(-1, 784) + 1) * 127.5).round().byte().numpy()],
                     strict=True))
    want = sorted(zip(labels.tolist(), [r.tobytes() for r in pixels], strict=True))
    assert got == want


def test_same_seed_same_batches_other_epoch_other_order(train):
    cfg = AugmentConfig()
    a = list(BatchLoader(train, 64, augment=cfg, seed=7))
    b = list(BatchLoader(train, 64, augment=cfg, seed=7, prefetch=0))
    assert_same_batches(a, b)

    loader = BatchLoader(train, 64, augment=cfg, seed=7)
    loader.set_epoch(1)
    c = list(loader)
    assert not np.array_equal(loader.rank_indices(), BatchLoader(train, 64, seed=7).rank_indices())
    assert not torch.equal(a[0][0], c[0][0])
    assert not np.array_equal(BatchLoader(train, 64, seed=8).rank_indices(),
                              BatchLoader(train, 64, seed=7).rank_indices())
    loader.set_epoch(0)
    assert_same_batches(list(loader), a)  # going back to epoch 0 gives epoch 0 again


def test_augmented_batches_are_augment_batch_of_the_normalized_rows(train):
    loader = BatchLoader(train, 32, augment=AugmentConfig(), seed=9, rank=1, world_size=2)
    loader.set_epoch(3)
    for k, (x, y) in enumerate(loader.batches(0)):
        if k in (0, 5, len(loader) - 1):  # the last one may be short
            pixels, labels = train.gather(loader.batch_indices(k))  # what distillation looks soft targets up by
            generator = loader_module._generator_for(9, 3, k * 2 + 1)  # global batch index of rank 1 of 2
            torch.testing.assert_close(x, augment_batch(normalize(pixels), AugmentConfig(), generator),
                                       atol=1e-6, rtol=0)
            assert torch.equal(y, torch.from_numpy(labels))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resume_mid_epoch_is_bit_exact(train, monkeypatch, prefetch):
    monkeypatch.setattr(loader_module, "GATHER_SAMPLES", 100)  # reads of 3 batches, so starts cut through them
    loader = BatchLoader(train, 32, augment=AugmentConfig(hflip=True), seed=5, prefetch=prefetch)
    loader.set_epoch(2)
    full = list(loader.batches(0))
    assert len(full) == len(loader) >= 8
    for start in (1, 2, 4, len(loader) - 1, len(loader)):
        assert_same_batches(list(loader.batches(start)), full[start:])
    with pytest.raises(QDMError, match="start"):
        loader.batches(len(loader) + 1)


@pytest.mark.parametrize("drop_last", [False, True])
def test_two_ranks_take_disjoint_shards_of_equal_length(train, drop_last):
    n, world = len(train), 2
    assert n % world == 1  # an odd split, so padding / dropping is exercised
    _, labels = train.materialize()
    ranks = [BatchLoader(train, 40, rank=r, world_size=world, drop_last=drop_last, seed=1) for r in range(world)]
    assert len(ranks[0]) == len(ranks[1])
    shards = [r.rank_indices() for r in ranks]
    assert len(shards[0]) == len(shards[1])
    epoch = BatchLoader(train, 40, seed=1).rank_indices()
    if drop_last:
        assert len(np.intersect1d(shards[0], shards[1])) == 0
        assert len(shards[0]) * world == n - 1
        assert set(np.concatenate(shards)) == set(epoch[: n - 1])
    else:  # padded by wrapping around: exactly one sample repeats, the first of the epoch order
        assert np.array_equal(np.intersect1d(shards[0], shards[1]), [epoch[0]])
        assert set(np.concatenate(shards)) == set(range(n))
    for loader, shard in zip(ranks, shards, strict=True):
        _, y = collect(loader)
        usable = len(loader) * 40 if drop_last else len(shard)
        assert torch.equal(y, torch.from_numpy(labels[shard[:usable]]))
    with pytest.raises(QDMError, match="rank"):
        BatchLoader(train, 40, rank=2, world_size=2)


def test_balanced_sampling_equalizes_classes(train):
    counts = np.array(train.counts)
    assert counts.max() >= 6 * counts.min()  # the store is really imbalanced
    loader = BatchLoader(train, 64, balanced=True, seed=11)
    ys = []
    for epoch in range(6):
        loader.set_epoch(epoch)
        _, y = collect(loader)
        assert len(y) == len(train)  # same number of samples per epoch as the split
        ys.append(y.numpy())
    freq = np.bincount(np.concatenate(ys), minlength=len(counts)) / sum(len(y) for y in ys)
    # ~4,600 draws: one class's share has a standard deviation under 0.007; the margin is 7 of them.
    np.testing.assert_allclose(freq, 1 / len(counts), atol=0.05)
    assert freq[counts.argmin()] > 3 * counts.min() / counts.sum()  # the rare class is boosted
    # Within a class it draws from the whole class, not a fixed few rows (the rarest class is the last).
    idx = loader.rank_indices()
    assert len(np.unique(idx[idx >= counts[:-1].sum()])) > 0.6 * counts[-1]


# ------------------------------------------------------------------------------------------- augmentation
def test_augmentation_keeps_ink_and_identity_is_exact(train):
    pixels, _ = train.gather(np.arange(0, len(train), 4))
    x = normalize(pixels)
    ink = lambda t: ((t + 1) / 2).sum(dim=(1, 2, 3))  # noqa: E731 - ink mass per sample
    moved = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and moved.dtype == torch.float32
    ratio = ink(moved).sum() / ink(x).sum()
    assert 0.7 <= ratio.item() <= 1.3
    assert (moved - x).abs().mean().item() > 0.02  # it did move the drawings
    assert torch.equal(moved, augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0)))

    identity = AugmentConfig(rotation_deg=0.0, translate=0.0, scale=(1.0, 1.0))
    torch.testing.assert_close(augment_batch(x, identity, torch.Generator().manual_seed(1)), x, atol=1e-5, rtol=0)


def test_flip_only_gives_the_input_or_its_mirror(train):
    x = normalize(train.gather(np.arange(64))[0])
    out = augment_batch(x, AugmentConfig(rotation_deg=0, translate=0, scale=(1, 1), hflip=True),
                        torch.Generator().manual_seed(2))
    same = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (out - x.flip(3)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54


def test_background_shifts_in_as_background(train):
    x = normalize(train.gather(np.arange(16))[0])
    # Shrinking to at most 0.5 leaves at least a quarter of the frame to be filled from outside it.
    out = augment_batch(x, AugmentConfig(rotation_deg=0, translate=0, scale=(0.3, 0.5)),
                        torch.Generator().manual_seed(3))
    assert torch.equal(out[:, :, :3], torch.full_like(out[:, :, :3], -1.0))


@pytest.mark.parametrize("hflip", [False, True])
def test_random_affines_stay_within_the_configured_ranges(hflip):
    cfg = AugmentConfig(rotation_deg=10.0, translate=0.1, scale=(0.9, 1.1), hflip=hflip)
    theta = loader_module._random_affines(512, cfg, torch.Generator().manual_seed(4)).double()
    forward = torch.linalg.inv(theta[:, :, :2])  # the map applied to the drawing (theta is its inverse)
    shift = -(forward @ theta[:, :, 2:]).squeeze(2)
    flip = torch.sign(torch.linalg.det(forward))
    unflipped = forward * torch.stack([flip, torch.ones_like(flip)], 1)[:, None, :]  # scale * rotation
    scale = unflipped[:, 0, 0].hypot(unflipped[:, 1, 0])
    angle = torch.rad2deg(torch.atan2(unflipped[:, 1, 0], unflipped[:, 0, 0]))
    # A similarity (rotation times scale, no shear): its Gram matrix is scale^2 times the identity.
    gram = unflipped @ unflipped.transpose(1, 2)
    torch.testing.assert_close(gram, scale[:, None, None] ** 2 * torch.eye(2, dtype=gram.dtype), atol=1e-5, rtol=0)
    assert scale.min() >= 0.9 - 1e-5 and scale.max() <= 1.1 + 1e-5 and scale.max() - scale.min() > 0.15
    assert angle.abs().max() <= 10.0 + 1e-4 and angle.abs().max() > 9.0
    assert shift.abs().max() <= 0.2 + 1e-5 and shift.abs().max() > 0.18  # 10% of a 2-unit-wide image
    assert (flip < 0).any() == hflip and (flip > 0).any()


def test_grid_matches_affine_grid():
    theta = loader_module._random_affines(32, AugmentConfig(hflip=True), torch.Generator().manual_seed(0))
    torch.testing.assert_close(loader_module._affine_grid(theta),
                               F.affine_grid(theta, [32, 1, 28, 28], align_corners=False), atol=1e-6, rtol=0)


def ink_boxes(x: torch.Tensor, level: float = -0.9) -> np.ndarray:
    """Per-drawing (first row, last row, first column, last column) with a pixel above ``level`` (faint ink)."""
    inked = (x[:, 0] > level).numpy()
    rows, cols = inked.any(axis=2), inked.any(axis=1)
    return np.stack([rows.argmax(1), 27 - rows[:, ::-1].argmax(1), cols.argmax(1), 27 - cols[:, ::-1].argmax(1)], 1)


def test_reframe_undoes_shift_and_zoom_exactly(train):
    x = normalize(train.gather(np.arange(0, len(train), 3))[0])
    cfg = AugmentConfig(rotation_deg=0.0, translate=0.2, scale=(0.6, 1.4), reframe=True)
    # The same draws without reframe do move the drawings: the fit is what brings them back.
    assert (augment_batch(x, AugmentConfig(0.0, 0.2, (0.6, 1.4)), torch.Generator().manual_seed(5)) - x
            ).abs().amax().item() > 1.0
    torch.testing.assert_close(augment_batch(x, cfg, torch.Generator().manual_seed(5)), x, atol=1e-4, rtol=0)


def test_reframed_drawings_keep_the_official_framing(train):
    x = normalize(train.gather(np.arange(0, len(train), 2))[0])
    before = ink_boxes(x)
    assert (np.maximum(before[:, 1] - before[:, 0], before[:, 3] - before[:, 2]) == 25).mean() > 0.95
    cfg = AugmentConfig(rotation_deg=15.0, translate=0.1, scale=(0.9, 1.1), hflip=True, stretch=0.2, reframe=True)
    out = augment_batch(x, cfg, torch.Generator().manual_seed(6))
    assert (out - x).abs().mean().item() > 0.05  # rotated, stretched, mirrored
    after = ink_boxes(out)
    longer = np.maximum(after[:, 1] - after[:, 0], after[:, 3] - after[:, 2])
    assert np.abs(longer - 25).max() <= 2 and (longer == 25).mean() > 0.95  # pixel 1 to 26, give or take bilinear
    # centred as before: the box centres move by at most a pixel
    centre = lambda box: np.stack([box[:, 0] + box[:, 1], box[:, 2] + box[:, 3]], 1) / 2  # noqa: E731
    assert np.abs(centre(after) - centre(before)).max() <= 1.0
    # without reframe the same draws leave many drawings off that framing
    moved = ink_boxes(augment_batch(x, AugmentConfig(15.0, 0.1, (0.9, 1.1), True, 0.2), torch.Generator().manual_seed(6)))
    assert (np.maximum(moved[:, 1] - moved[:, 0], moved[:, 3] - moved[:, 2]) == 25).mean() < 0.5


def test_reframe_leaves_blank_and_single_pixel_drawings_alone():
    x = torch.full((3, 1, 28, 28), -1.0)
    x[1, 0, 10, 12] = 1.0
    out = augment_batch(x, AugmentConfig(rotation_deg=0.0, translate=0.2, reframe=True),
                        torch.Generator().manual_seed(7))
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])


def test_stretch_changes_the_aspect_ratio_within_its_range():
    cfg = AugmentConfig(rotation_deg=0.0, translate=0.0, scale=(1.0, 1.0), stretch=0.25)
    theta = loader_module._random_affines(512, cfg, torch.Generator().manual_seed(8)).double()
    forward = torch.linalg.inv(theta[:, :, :2])
    sx, sy = forward[:, 0, 0], forward[:, 1, 1]
    torch.testing.assert_close(forward[:, 0, 1].abs().max().item(), 0.0)
    torch.testing.assert_close(sx * sy, torch.ones_like(sx))  # area kept
    aspect = sx / sy
    assert aspect.min() >= 1 / 1.25 - 1e-6 and aspect.max() <= 1.25 + 1e-6
    assert aspect.min() < 1 / 1.2 and aspect.max() > 1.2
    # the stretch is drawn after the other five draws: the rest of the affine is as without it
    plain = loader_module._random_affines(512, AugmentConfig(hflip=True), torch.Generator().manual_seed(9))
    stretched = loader_module._random_affines(512, AugmentConfig(hflip=True, stretch=0.25),
                                              torch.Generator().manual_seed(9))
    torch.testing.assert_close(torch.linalg.det(plain[:, :, :2]), torch.linalg.det(stretched[:, :, :2]))
    assert not torch.allclose(plain, stretched)


def test_bad_augment_config_is_rejected():
    with pytest.raises(QDMError, match="scale"):
        AugmentConfig(scale=(1.1, 0.9))
    with pytest.raises(QDMError, match="translate"):
        AugmentConfig(translate=1.5)
    with pytest.raises(QDMError, match="stretch"):
        AugmentConfig(stretch=1.0)


# ------------------------------------------------------------------------------------------------ threads
def test_early_stop_ends_the_prefetch_thread(train):
    before = threading.active_count()
    loader = BatchLoader(train, 16, augment=AugmentConfig(), prefetch=2)
    for i, _ in enumerate(loader):
        if i == 1:
            assert threading.active_count() == before + 1
            break
    assert threading.active_count() == before
    batches = loader.batches(3)
    next(batches)
    batches.close()
    assert threading.active_count() == before
    assert not any(t.name == "qdm-batch-prefetch" for t in threading.enumerate())


def test_errors_in_the_prefetch_thread_reach_the_consumer(train, monkeypatch):
    before = threading.active_count()
    loader = BatchLoader(train, 16, prefetch=2)
    real_gather, calls = train.gather, []

    def failing_gather(index):
        calls.append(len(index))
        if len(calls) == 2:
            raise OSError("disk went away")
        return real_gather(index)

    monkeypatch.setattr(loader_module, "GATHER_SAMPLES", 32)
    monkeypatch.setattr(train, "gather", failing_gather)
    with pytest.raises(OSError, match="disk went away"):
        list(loader)
    assert threading.active_count() == before


def test_gather_rejects_indices_outside_the_split(train):
    for bad in ([0, len(train)], [-1, 3]):
        with pytest.raises(QDMError, match="out of range"):
            train.gather(np.array(bad))
