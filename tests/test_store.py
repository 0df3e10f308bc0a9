"""The store on real drawings: deterministic exact splits, class subsets, gather, and manifest damage."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from quickdraw_mobile.data.store import (
    MANIFEST,
    Split,
    SplitSpec,
    Store,
    balanced_picks,
    balanced_subset,
    class_row_order,
)
from quickdraw_mobile.errors import QDMError

# Odd counts, so rounding of the exact per-class fractions is exercised. A class name with spaces belongs in the
# test; the package holds no such class, so it stores real house drawings (the store never looks at them).
CLASS_ROWS = {"The Eiffel Tower": 333, "apple": 250, "cat": 999}
STAND_IN = {"The Eiffel Tower": "house"}


@pytest.fixture(scope="module")
def source(drawings) -> dict[str, np.ndarray]:
    return {n: drawings(STAND_IN.get(n, n), r) for n, r in CLASS_ROWS.items()}


@pytest.fixture(scope="module")
def store_root(source, tmp_path_factory):
    root = tmp_path_factory.mktemp("store") / "store"
    store = Store.create(root)
    for name in ["cat", "apple", "The Eiffel Tower"]:  # added out of order on purpose
        store.add_class(name, source[name], f"test:{name}")
    return root


@pytest.fixture
def damaged(store_root, tmp_path):
    """A private copy of the store that a test may break."""
    root = tmp_path / "copy"
    shutil.copytree(store_root, root)
    return root


def all_rows(splits, i: int) -> list[np.ndarray]:
    return [splits[s].rows[i] for s in ("train", "val", "test")]


def test_store_lists_classes_in_official_order(store_root):
    store = Store.open(store_root)
    assert store.classes == ["The Eiffel Tower", "apple", "cat"]
    assert store.counts == CLASS_ROWS


def test_same_spec_same_rows_across_opens(store_root):
    spec = SplitSpec(seed=7)
    a, b = Store.open(store_root).splits(spec), Store.open(store_root).splits(spec)
    for s in ("train", "val", "test"):
        for ra, rb in zip(a[s].rows, b[s].rows, strict=True):
            np.testing.assert_array_equal(ra, rb)


def test_different_seed_different_rows(store_root):
    store = Store.open(store_root)
    a, b = store.splits(SplitSpec(seed=0)), store.splits(SplitSpec(seed=1))
    for i in range(len(store.classes)):
        assert not np.array_equal(a["test"].rows[i], b["test"].rows[i])
        assert len(a["test"].rows[i]) == len(b["test"].rows[i])


def test_splits_are_disjoint_and_cover_every_row(store_root):
    store = Store.open(store_root)
    splits = store.splits(SplitSpec(seed=3))
    for i, name in enumerate(store.classes):
        parts = all_rows(splits, i)
        joined = np.concatenate(parts)
        assert len(np.unique(joined)) == len(joined)  # disjoint
        np.testing.assert_array_equal(np.sort(joined), np.arange(CLASS_ROWS[name]))  # covering
        for part in parts:
            assert np.all(np.diff(part) > 0)  # sorted ascending, for memory-map locality


def test_exact_per_class_fractions(store_root):
    splits = Store.open(store_root).splits(SplitSpec(val_fraction=0.2, test_fraction=0.1))
    # (train, val, test) per class: test = round(0.1 n), val = round(0.2 n), train = the rest
    expected = {"The Eiffel Tower": (233, 67, 33), "apple": (175, 50, 25), "cat": (699, 200, 100)}
    for i, name in enumerate(splits["train"].classes):
        assert tuple(len(r) for r in all_rows(splits, i)) == expected[name]
    assert len(splits["val"]) == 67 + 50 + 200


def test_zero_fractions_put_everything_in_train(store_root):
    splits = Store.open(store_root).splits(SplitSpec(val_fraction=0.0, test_fraction=0.0))
    assert len(splits["val"]) == len(splits["test"]) == 0
    assert len(splits["train"]) == sum(CLASS_ROWS.values())


def test_max_per_class_caps_the_pool_and_is_nested(store_root):
    store = Store.open(store_root)
    small = store.splits(SplitSpec(max_per_class=100, seed=5))
    large = store.splits(SplitSpec(max_per_class=300, seed=5))
    for i, name in enumerate(store.classes):
        pool_small = np.concatenate(all_rows(small, i))
        pool_large = np.concatenate(all_rows(large, i))
        assert len(pool_small) == 100
        assert len(pool_large) == min(300, CLASS_ROWS[name])
        assert set(pool_small) <= set(pool_large)  # raising the cap only adds rows
        np.testing.assert_array_equal(np.sort(pool_small), np.sort(class_row_order(name, CLASS_ROWS[name], 5)[:100]))
        assert tuple(len(r) for r in all_rows(small, i)) == (80, 10, 10)


def test_class_subset_follows_store_order(store_root):
    store = Store.open(store_root)
    splits = store.splits(classes=["CAT", "the eiffel tower"])
    assert splits["train"].classes == ["The Eiffel Tower", "cat"]
    full = store.splits()
    # the same rows as in the full split: a class's split does not depend on which other classes are chosen
    np.testing.assert_array_equal(splits["test"].rows[1], full["test"].rows[2])


def test_unknown_class_suggests(store_root):
    with pytest.raises(QDMError, match=r"unknown class 'catt'; did you mean 'cat'"):
        Store.open(store_root).splits(classes=["catt"])
    with pytest.raises(QDMError, match="class 'dog' is not in this store"):  # official, but not in this store
        Store.open(store_root).select(["dog"])


def test_gather_matches_np_load(store_root, source):
    store = Store.open(store_root)
    split = store.splits(SplitSpec(seed=2))["train"]
    flat = np.random.default_rng(0).permutation(len(split))[:500]
    pixels, labels = split.gather(flat)
    assert pixels.dtype == np.uint8 and pixels.shape == (500, 784)
    loaded = {n: np.load(store_root / f"{n}.npy") for n in CLASS_ROWS}
    bounds = np.cumsum([0, *split.counts])
    for k, f in enumerate(flat):
        label = int(np.searchsorted(bounds, f, side="right") - 1)
        row = split.rows[label][f - bounds[label]]
        assert labels[k] == label
        np.testing.assert_array_equal(pixels[k], loaded[split.classes[label]][row])
        np.testing.assert_array_equal(pixels[k], source[split.classes[label]][row])  # unchanged from the source
    np.testing.assert_array_equal(split.labels()[flat], labels)


def test_materialize_is_the_whole_split(store_root):
    split = Store.open(store_root).splits()["val"]
    pixels, labels = split.materialize()
    assert len(pixels) == len(labels) == len(split)
    assert np.bincount(labels).tolist() == split.counts


@pytest.mark.parametrize("bad", [dict(val_fraction=1.0), dict(test_fraction=-0.1),
                                 dict(val_fraction=0.5, test_fraction=0.5), dict(max_per_class=0)])
def test_bad_split_spec(bad):
    with pytest.raises(QDMError):
        SplitSpec(**bad)


# ------------------------------------------------------------------------------------------------ damage
def test_manifest_not_json(damaged):
    (damaged / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(QDMError, match=r"manifest\.json: not valid JSON"):
        Store.open(damaged)


def test_manifest_missing(damaged):
    (damaged / MANIFEST).unlink()
    with pytest.raises(QDMError, match="not a store"):
        Store.open(damaged)


def test_class_file_missing(damaged):
    (damaged / "apple.npy").unlink()
    with pytest.raises(QDMError, match=r"apple\.npy: listed in manifest\.json but missing"):
        Store.open(damaged)


def test_class_file_empty(damaged):
    (damaged / "apple.npy").write_bytes(b"")
    with pytest.raises(QDMError, match=r"apple\.npy: not a readable \.npy file"):
        Store.open(damaged)


def test_row_count_mismatch(damaged):
    manifest = json.loads((damaged / MANIFEST).read_text())
    manifest["classes"][1]["count"] += 1
    (damaged / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(QDMError, match=r"apple\.npy: manifest says 251 rows, file has 250"):
        Store.open(damaged)


def test_unofficial_class_name_in_manifest(damaged):
    manifest = json.loads((damaged / MANIFEST).read_text())
    manifest["classes"][1]["name"] = "apples"
    (damaged / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(QDMError, match="'apples' is not an official class"):
        Store.open(damaged)


def test_sha_mismatch_needs_verify(damaged):
    path = damaged / "cat.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one pixel of the last drawing: same shape, different content
    path.write_bytes(bytes(data))
    assert Store.open(damaged).counts["cat"] == 999  # the cheap open checks shapes only
    with pytest.raises(QDMError, match=r"cat\.npy: sha256 differs from manifest\.json"):
        Store.open(damaged, verify=True)


def test_verify_passes_on_intact_store(store_root):
    assert Store.open(store_root, verify=True).classes == list(CLASS_ROWS)


def test_balanced_indices_spread_over_classes(tmp_path, drawings):
    import numpy as np

    from quickdraw_mobile.data.store import SplitSpec, Store

    store = Store.create(tmp_path / "s")
    for name, rows in (("cat", 300), ("apple", 40), ("star", 200)):
        store.add_class(name, drawings(name, rows), "t")
    train = store.splits(SplitSpec())["train"]
    picks = train.balanced_indices(100, seed=1)
    labels = train.labels()[picks]
    assert len(set(picks.tolist())) == len(picks)
    assert np.bincount(labels).tolist() == [32, 34, 34]  # apple has only 32 training rows; the others make up
    assert np.array_equal(picks, train.balanced_indices(100, seed=1))
    assert not np.array_equal(picks, train.balanced_indices(100, seed=2))


def test_one_balanced_sampler_for_splits_and_label_arrays():
    # Pinned: calibration sets (and so INT8 artifacts) are made of these picks; a change here changes exports.
    assert balanced_picks([5, 1, 5, 5], 7, seed=0).tolist() == [0, 3, 4, 5, 8, 9, 14]
    counts = [7, 0, 3, 12]
    split = Split("train", ["a", "b", "c", "d"], [np.arange(c) for c in counts], arrays=[])
    assert np.array_equal(split.balanced_indices(9, seed=4), balanced_picks(counts, 9, seed=4))
    # A label array in any row order gets the same picks within each class as the class-by-class layout.
    labels = np.repeat(np.arange(4), counts)
    shuffled = np.random.default_rng(0).permutation(len(labels))
    rows = balanced_subset(labels[shuffled], 9, seed=4)
    assert np.array_equal(rows, np.sort(rows)) and len(set(rows.tolist())) == 9
    by_class = np.argsort(labels[shuffled], kind="stable")
    assert np.array_equal(np.sort(by_class[balanced_picks(counts, 9, seed=4)]), rows)
    assert np.bincount(labels[shuffled][rows], minlength=4).tolist() == [3, 0, 3, 3]
    assert balanced_subset(labels, 100).tolist() == list(range(len(labels)))  # n past the end: every row, in order


def test_model_splits_check_the_models_classes(tmp_path):
    store = Store.create(tmp_path / "s")
    for i, name in enumerate(("apple", "cat", "star")):
        store.add_class(name, np.random.default_rng(i).integers(0, 256, (20, 784), dtype=np.uint8), "test")
    splits = store.model_splits(SplitSpec(), ["apple", "star"], "use other data")
    assert splits["train"].classes == ["apple", "star"] and splits["test"].nonempty("s") is splits["test"]
    with pytest.raises(QDMError, match=r"lacks 1 of the model's classes \(e\.g\. 'fish'\); use other data"):
        store.model_splits(SplitSpec(), ["apple", "fish"], "use other data")
    # in the model's order (an extended model lists its new classes last), each class split as in store order
    reordered = store.model_splits(SplitSpec(), ["star", "apple"], "use other data")
    assert reordered["train"].classes == ["star", "apple"]
    for name in ("train", "val", "test"):
        assert [r.tolist() for r in reordered[name].rows] == [r.tolist() for r in splits[name].rows[::-1]]
    empty = store.model_splits(SplitSpec(test_fraction=0.0), ["cat"], "x")["test"]
    with pytest.raises(QDMError, match="^s: the test split is empty$"):
        empty.nonempty("s")
