"""Evaluation metrics against hand-computed values, tie rules, bad input, and every plot written as a real PNG."""

from __future__ import annotations

import csv
import json
import math
import struct

import numpy as np
import pytest

from quickdraw_mobile.data.classes import all_classes
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.evaluate import (
    compute_metrics,
    confusion_matrix,
    map_at_k,
    per_class_metrics,
    plots,
    softmax,
    topk_accuracy,
    true_class_rank,
)

# ------------------------------------------------------------------------------------- hand-computed case
# 3 classes, 6 drawings. Row by row: true class, prediction, rank of the true class (0 = first guess).
LOGITS = np.array([
    [3.0, 1.0, 0.0],  # true 0, predicted 0, rank 0
    [1.0, 2.0, 0.0],  # true 0, predicted 1, rank 1
    [0.0, 4.0, 1.0],  # true 1, predicted 1, rank 0
    [2.0, 1.0, 4.0],  # true 1, predicted 2, rank 2 (class 2 and class 0 both beat it)
    [0.0, 1.0, 5.0],  # true 2, predicted 2, rank 0
    [2.0, 0.0, 4.0],  # true 2, predicted 2, rank 0
])
LABELS = np.array([0, 0, 1, 1, 2, 2])
NAMES = ["cat", "dog", "The Great Wall of China"]


def test_hand_computed_topk_and_map3():
    assert true_class_rank(LOGITS, LABELS).tolist() == [0, 1, 0, 2, 0, 0]
    assert topk_accuracy(LOGITS, LABELS, 1) == 4 / 6
    assert topk_accuracy(LOGITS, LABELS, 2) == 5 / 6
    assert topk_accuracy(LOGITS, LABELS, 3) == 1.0
    # MAP@3: 1/(rank+1) per drawing = 1, 1/2, 1, 1/3, 1, 1 -> 29/6 over 6 drawings.
    assert map_at_k(LOGITS, LABELS, 3) == pytest.approx(29 / 36, rel=1e-15)
    assert map_at_k(LOGITS, LABELS, 1) == 4 / 6  # MAP@1 is top-1
    # Softmax keeps the order, so probabilities rank exactly like logits.
    assert topk_accuracy(softmax(LOGITS), LABELS, 2) == 5 / 6


def test_hand_computed_confusion_and_per_class():
    confusion = confusion_matrix(LABELS, LOGITS.argmax(1), 3)
    assert confusion.dtype == np.int64
    assert confusion.tolist() == [[1, 1, 0],   # cat: once right, once called dog
                                  [0, 1, 1],   # dog: once right, once called the wall
                                  [0, 0, 2]]   # wall: always right
    per = per_class_metrics(confusion)
    # precision = right / times predicted (columns 1, 2, 3); recall = right / drawings of the class (2 each)
    assert per["precision"].tolist() == [1.0, 1 / 2, 2 / 3]
    assert per["recall"].tolist() == [1 / 2, 1 / 2, 1.0]
    assert per["accuracy"].tolist() == per["recall"].tolist()
    assert per["support"].tolist() == [2, 2, 2]
    assert per["predicted"].tolist() == [1, 2, 3]
    # F1 = 2PR/(P+R): cat 2*1*.5/1.5 = 2/3, dog 1/2, wall 2*(2/3)*1/(5/3) = 4/5
    assert per["f1"] == pytest.approx([2 / 3, 1 / 2, 4 / 5], rel=1e-15)


def test_hand_computed_report():
    m = compute_metrics(LOGITS, LABELS, NAMES)
    assert (m["n"], m["num_classes"], m["top5_k"]) == (6, 3, 3)
    assert m["top1"] == 4 / 6
    assert m["top5"] == 1.0  # top-5 with only 3 classes is top-3
    assert m["map3"] == pytest.approx(29 / 36, rel=1e-15)
    assert m["macro_precision"] == pytest.approx((1 + 1 / 2 + 2 / 3) / 3, rel=1e-15)
    assert m["macro_recall"] == pytest.approx(2 / 3, rel=1e-15)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3, rel=1e-15)
    assert [row["class"] for row in m["per_class"]] == NAMES
    assert m["per_class"][2] == {"class": "The Great Wall of China", "support": 2, "accuracy": 1.0,
                                 "precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(4 / 5)}
    assert m["confusion"] == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    # Two mistakes: row 3 (dog -> wall, p = e^4/(e^2+e+e^4) = 0.844) before row 1 (cat -> dog, 0.665).
    e = math.e
    mistakes = m["confident_mistakes"]
    assert [(x["index"], x["true"], x["predicted"]) for x in mistakes] == [
        (3, "dog", "The Great Wall of China"), (1, "cat", "dog")]
    assert mistakes[0]["prob"] == pytest.approx(e**4 / (e**2 + e + e**4), rel=1e-12)
    assert mistakes[0]["true_prob"] == pytest.approx(e / (e**2 + e + e**4), rel=1e-12)
    assert mistakes[1]["prob"] == pytest.approx(e**2 / (e + e**2 + 1), rel=1e-12)
    json.dumps(m, allow_nan=False)  # plain JSON, no numpy types, no NaN


def test_ties_go_to_the_lower_class_index():
    equal = np.zeros((3, 3))
    labels = np.array([0, 1, 2])
    assert true_class_rank(equal, labels).tolist() == [0, 1, 2]
    assert topk_accuracy(equal, labels, 1) == 1 / 3
    assert topk_accuracy(equal, labels, 2) == 2 / 3
    assert map_at_k(equal, labels) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    # Classes 1 and 2 tie above class 0: class 1 is predicted, class 2 ranks second.
    tied = np.array([[0.0, 5.0, 5.0], [0.0, 5.0, 5.0], [0.0, 5.0, 5.0]])
    assert true_class_rank(tied, labels).tolist() == [2, 0, 1]
    m = compute_metrics(tied, labels, NAMES)
    assert m["top1"] == 1 / 3
    assert m["confusion"] == [[0, 1, 0], [0, 1, 0], [0, 1, 0]]  # the reported argmax agrees with the ranks
    # Equal confidence among mistakes: listed by row index.
    assert [x["index"] for x in m["confident_mistakes"]] == [0, 2]


def test_zero_over_zero_is_zero_and_macro_skips_absent_classes():
    # Class 2 neither occurs nor is predicted; class 1 is predicted but never right.
    confusion = np.array([[3, 1, 0], [0, 0, 0], [0, 0, 0]])
    per = per_class_metrics(confusion)
    assert per["precision"].tolist() == [1.0, 0.0, 0.0]
    assert per["recall"].tolist() == [0.75, 0.0, 0.0]
    assert per["f1"].tolist() == pytest.approx([6 / 7, 0.0, 0.0])
    m = compute_metrics(np.array([[2.0, 0, 0]] * 3 + [[0, 2.0, 0]]), np.zeros(4, dtype=np.int64), NAMES)
    assert m["macro_recall"] == pytest.approx((0.75 + 0.0) / 2)  # class 2 left out, class 1 counted
    assert m["macro_f1"] == pytest.approx((6 / 7 + 0.0) / 2)


def test_softmax_is_stable_and_normalized():
    huge = np.array([[1000.0, 999.0, -1000.0], [-5e4, -5e4, -5e4]])
    p = softmax(huge)
    assert np.isfinite(p).all()
    assert p.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert p[0, 0] / p[0, 1] == pytest.approx(math.e)
    assert p[1].tolist() == pytest.approx([1 / 3] * 3)
    assert softmax(huge.astype(np.float32)).dtype == np.float32


def test_matches_scikit_learn_on_random_data():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 12)) + 2.0 * np.eye(12)[rng.integers(0, 12, 500)]
    labels = rng.integers(0, 12, 500)
    preds = logits.argmax(1)
    for k in (1, 3, 5):
        assert topk_accuracy(logits, labels, k) == pytest.approx(
            sklearn_metrics.top_k_accuracy_score(labels, logits, k=k, labels=np.arange(12)))
    assert (confusion_matrix(labels, preds, 12) == sklearn_metrics.confusion_matrix(labels, preds)).all()
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(labels, preds, zero_division=0)
    m = compute_metrics(logits, labels, [f"c{i}" for i in range(12)])
    assert [row["precision"] for row in m["per_class"]] == pytest.approx(precision.tolist())
    assert [row["recall"] for row in m["per_class"]] == pytest.approx(recall.tolist())
    assert [row["f1"] for row in m["per_class"]] == pytest.approx(f1.tolist())
    assert [row["support"] for row in m["per_class"]] == support.tolist()
    assert m["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(labels, preds, average="macro", zero_division=0))
    # MAP@3 from an explicit sort, as the Kaggle scorer does it.
    top3 = np.argsort(-logits, axis=1, kind="stable")[:, :3]
    expected = np.mean([1 / (list(row).index(y) + 1) if y in row else 0.0 for row, y in zip(top3, labels, strict=True)])
    assert m["map3"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: topk_accuracy(LOGITS, LABELS[:5], 1), "labels: expected 6 entries"),
        (lambda: topk_accuracy(LOGITS[0], LABELS, 1), "logits: expected a non-empty (N, C) array"),
        (lambda: topk_accuracy(np.zeros((0, 3)), [], 1), "logits: expected a non-empty (N, C) array"),
        (lambda: topk_accuracy(LOGITS, LABELS, 0), "k: expected a positive integer"),
        (lambda: map_at_k(LOGITS, [0, 1, 2, 3, 0, 0]), "labels: class index 3 is outside 0..2"),
        (lambda: map_at_k(LOGITS, [0, -1, 2, 1, 0, 0]), "labels: class index -1 is outside 0..2"),
        (lambda: map_at_k(LOGITS, LABELS.astype(float)), "labels: expected integer class indices"),
        (lambda: compute_metrics(np.where(np.eye(6, 3) > 0, np.nan, LOGITS), LABELS, NAMES),
         "logits: 3 of 6 rows contain NaN or infinite values"),
        (lambda: softmax(np.array([[0.0, np.inf]])), "logits: 1 of 1 rows contain NaN"),
        (lambda: compute_metrics(LOGITS, LABELS, NAMES[:2]), "class_names: expected 3 names"),
        (lambda: confusion_matrix([0, 1], [0, 5], 3), "preds: class index 5 is outside 0..2"),
        (lambda: confusion_matrix([0, 1], [0], 3), "preds: expected 2 entries"),
        (lambda: per_class_metrics(np.ones((2, 3), dtype=int)), "confusion: expected a non-empty square"),
        (lambda: per_class_metrics(-np.eye(2, dtype=int)), "confusion: expected non-negative integer counts"),
    ],
)
def test_bad_input_is_one_line_error(call, message):
    with pytest.raises(QDMError) as info:
        call()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# -------------------------------------------------------------------------------------------------- plots
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def synthetic_eval(num_classes: int, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random logits biased to the truth by a per-class margin, so accuracies spread from poor to perfect."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    margin = rng.uniform(0.5, 5.0, num_classes)
    logits = rng.normal(size=(len(labels), num_classes)).astype(np.float32)
    logits[np.arange(len(labels)), labels] += margin[labels]
    return logits, labels


@pytest.fixture(scope="module")
def real_eval(shared_data):
    """52 real classes, 12 real bitmaps each, with synthetic logits."""
    files = sorted((shared_data / "numpy_bitmap").glob("*.npy"))
    assert len(files) == 52
    images = np.concatenate([np.load(f, mmap_mode="r")[:12] for f in files])
    logits, labels = synthetic_eval(len(files), 12)
    return images, compute_metrics(logits, labels, [f.stem for f in files])


def test_write_all_plots_on_real_bitmaps(real_eval, tmp_path):
    images, metrics = real_eval
    assert 0.3 < metrics["top1"] < 0.95  # the synthetic model has good and bad classes
    rows = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 1 - 0.5 / e, "val_loss": 2.2 / e,
             "val_acc": 1 - 0.6 / e, "lr": 0.01 * 0.8**e} for e in range(1, 9)]
    written = plots.write_all_plots(metrics, images, tmp_path, training_rows=rows)
    assert set(written) == {"summary_dashboard", "per_class_accuracy", "accuracy_histogram", "top_bottom",
                            "precision_recall", "f1_vs_accuracy", "worst_confusion", "confident_mistakes",
                            "training_curves"}
    for name, path in written.items():
        assert path == tmp_path / f"{name}.png"
        width, height = png_size(path)
        assert 300 <= width <= 3000 and 300 <= height <= 3000, (name, width, height)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.png" for n in written)  # no temp files


def test_per_class_bars_for_345_classes_stay_a_reasonable_size(tmp_path):
    logits, labels = synthetic_eval(345, 4, seed=1)
    metrics = compute_metrics(logits, labels, list(all_classes()))
    path = plots.plot_per_class_accuracy(metrics, tmp_path / "per_class.png")
    width, height = png_size(path)
    assert width <= 1200 and height <= 1800, (width, height)
    # Same plot for 40 classes lists all of them, so it is shorter than the 60 shown extremes of 345.
    small = compute_metrics(*synthetic_eval(40, 4), list(all_classes())[:40])
    assert png_size(plots.plot_per_class_accuracy(small, tmp_path / "small.png"))[1] < height
    assert png_size(plots.plot_worst_confusion(metrics, tmp_path / "confusion.png"))[0] <= 2000


def test_training_curves_from_csv_with_missing_columns(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "train_loss", "val_acc"])
        writer.writerows([[1, 2.3, 0.41], [2, 1.7, ""], [3, 1.2, 0.66]])
    path = plots.plot_training_curves(csv_path, tmp_path / "curves.png")
    width, _ = png_size(path)
    one_panel = png_size(plots.plot_training_curves([{"train_loss": 1.0}, {"train_loss": 0.5}], tmp_path / "one.png"))
    assert one_panel[0] < width  # loss + accuracy panels are wider than loss alone
    with pytest.raises(QDMError, match="none of the columns"):
        plots.plot_training_curves([{"epoch": 1, "samples_per_s": 10.0}], tmp_path / "none.png")
    with pytest.raises(QDMError, match="not found"):
        plots.plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")


def test_bad_plot_input_leaves_earlier_file_untouched(real_eval, tmp_path):
    images, metrics = real_eval
    out = tmp_path / "gallery.png"
    plots.plot_confident_mistakes(images, metrics, out)
    before = out.read_bytes()
    with pytest.raises(QDMError, match=r"images: mistake index \d+ is outside 0\.\.9"):
        plots.plot_confident_mistakes(images[:10], metrics, out)
    with pytest.raises(QDMError, match="images: expected"):
        plots.plot_confident_mistakes(images.reshape(-1, 28, 28)[:, :27], metrics, out)
    with pytest.raises(QDMError, match="per_class"):
        plots.plot_per_class_accuracy({"top1": 0.5}, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.png"]


def test_gallery_when_there_are_no_mistakes(tmp_path):
    metrics = compute_metrics(LOGITS[[0, 2, 4]], LABELS[[0, 2, 4]], NAMES)
    assert metrics["top1"] == 1.0 and metrics["confident_mistakes"] == []
    png_size(plots.plot_confident_mistakes(np.zeros((3, 784), np.uint8), metrics, tmp_path / "g.png"))
