"""Classification metrics from logits: top-k, MAP@3, confusion matrix, per-class precision/recall/F1.

Plain numpy, no model involved, so the numbers can be checked by hand (see tests/test_metrics.py).

Conventions, fixed once here so every number in a report means the same thing:

* Ranking ties are broken by class index, lower first (what a stable descending sort does and what
  ``np.argmax`` does). A sample whose true class ties with a higher-index class counts as ranked ahead of it,
  one that ties with a lower-index class counts as ranked behind it.
* A ratio whose denominator is 0 (precision of a class never predicted, recall of a class with no samples,
  F1 when precision and recall are both 0) is defined as 0, never NaN, so metrics.json stays valid JSON.
* Macro averages are over the classes that occur in the labels or the predictions (scikit-learn's default);
  a class absent from both says nothing about the model and is left out rather than counted as 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import QDMError

_ROWS_PER_CHUNK = 8192  # bounds the temporary (rows, C) boolean arrays to a few MB for 345 classes


# ------------------------------------------------------------------------------------------------ checks
def _check_scores(scores, name: str = "logits") -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise QDMError(f"{name}: expected a non-empty (N, C) array, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise QDMError(f"{name}: expected real numbers, got dtype {scores.dtype}")
    if np.issubdtype(scores.dtype, np.floating) and not np.isfinite(scores).all():
        bad = int(np.count_nonzero(~np.isfinite(scores).all(axis=1)))
        raise QDMError(f"{name}: {bad} of {len(scores)} rows contain NaN or infinite values")
    return scores


def _check_labels(labels, n: int | None, num_classes: int, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise QDMError(f"{name}: expected a 1-D array, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise QDMError(f"{name}: expected integer class indices, got dtype {labels.dtype}")
    if n is not None and len(labels) != n:
        raise QDMError(f"{name}: expected {n} entries (one per row of the scores), got {len(labels)}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise QDMError(f"{name}: class index {int(bad)} is outside 0..{num_classes - 1}")
    return labels.astype(np.int64, copy=False)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise QDMError(f"k: expected a positive integer, got {k!r}")
    return int(k)


# ---------------------------------------------------------------------------------------------- ranking
def softmax(logits) -> np.ndarray:
    """Row-wise softmax, stable for any finite logits (the row maximum is subtracted before ``exp``)."""
    logits = _check_scores(logits)
    x = logits.astype(np.result_type(logits.dtype, np.float32), copy=True)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def true_class_rank(scores, labels) -> np.ndarray:
    """0-based rank of the true class in each row of ``scores`` (0 = predicted first), ties by lower index.

    Counts the classes that beat the true one instead of sorting: O(N*C) and no (N, C) index array.
    """
    scores = _check_scores(scores)
    labels = _check_labels(labels, len(scores), scores.shape[1])
    ranks = np.empty(len(scores), dtype=np.int64)
    class_index = np.arange(scores.shape[1])
    for start in range(0, len(scores), _ROWS_PER_CHUNK):
        block = scores[start : start + _ROWS_PER_CHUNK]
        y = labels[start : start + _ROWS_PER_CHUNK]
        true_score = block[np.arange(len(block)), y][:, None]
        ahead = (block > true_score) | ((block == true_score) & (class_index < y[:, None]))
        ranks[start : start + len(block)] = ahead.sum(axis=1)
    return ranks


def topk_accuracy(scores, labels, k: int) -> float:
    """Fraction of rows whose true class is among the ``k`` highest scores (logits or probabilities).

    ``k >= C`` is allowed and gives 1.0, since every class is then among the top ``k``.
    """
    k = _check_k(k)
    return float(np.mean(true_class_rank(scores, labels) < k))


def map_at_k(scores, labels, k: int = 3) -> float:
    """Mean average precision at ``k``, the Kaggle "Quick, Draw! Doodle Recognition" metric for k=3.

    With one true class per drawing it is the mean of ``1 / (rank + 1)`` when the true class is among the top
    ``k`` predictions and 0 otherwise: 1 for a first guess, 1/2 for a second, 1/3 for a third.
    """
    k = _check_k(k)
    ranks = true_class_rank(scores, labels)
    return float(np.mean(np.where(ranks < k, 1.0 / (ranks + 1), 0.0)))


# -------------------------------------------------------------------------------------- per-class counts
def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise QDMError(f"num_classes: expected a positive integer, got {num_classes!r}")
    labels = _check_labels(labels, None, num_classes, "labels")
    preds = _check_labels(preds, len(labels), num_classes, "preds")
    counts = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den element-wise, with 0 where den is 0 (see the module docstring)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def per_class_metrics(confusion) -> dict[str, np.ndarray]:
    """Per-class ``accuracy`` (= recall), ``precision``, ``recall``, ``f1`` (float64), ``support`` (true count,
    int64) and ``predicted`` (how often the class was predicted, int64).

    ``accuracy`` is the share of a class's drawings classified as that class, the usual "per-class accuracy"
    of Quick, Draw! reports; it equals recall. 0/0 is 0 (a class never predicted has precision 0).
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] == 0:
        raise QDMError(f"confusion: expected a non-empty square (C, C) array, got shape {confusion.shape}")
    if not np.issubdtype(confusion.dtype, np.integer) or (confusion < 0).any():
        raise QDMError("confusion: expected non-negative integer counts")
    true_positive = np.diag(confusion)
    support = confusion.sum(axis=1).astype(np.int64)
    predicted = confusion.sum(axis=0)
    recall = _ratio(true_positive, support)
    precision = _ratio(true_positive, predicted)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"accuracy": recall.copy(), "precision": precision, "recall": recall, "f1": f1,
            "support": support, "predicted": predicted.astype(np.int64)}


# ------------------------------------------------------------------------------------------------ report
def compute_metrics(logits, labels, class_names: Sequence[str], max_mistakes: int = 100) -> dict:
    """Everything ``qdm evaluate`` reports, as a JSON-serializable dict.

    Keys: ``n``, ``num_classes``, ``top1``, ``top5`` (top-k with ``k = top5_k = min(5, C)``), ``map3``,
    ``macro_precision``, ``macro_recall``, ``macro_f1``, ``per_class`` (one dict per class, in class order:
    class, support, accuracy, precision, recall, f1), ``confusion`` (C lists of C ints, row = true class) and
    ``confident_mistakes``: up to ``max_mistakes`` wrongly classified rows, most confident first (ties by row
    index), each {index (row of ``logits``), true, predicted (class names), prob (softmax of the prediction),
    true_prob (softmax of the true class)}.
    """
    logits = _check_scores(logits)
    n, num_classes = logits.shape
    labels = _check_labels(labels, n, num_classes)
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes:
        raise QDMError(f"class_names: expected {num_classes} names (one per logit column), got {len(class_names)}")

    ranks = true_class_rank(logits, labels)
    preds = logits.argmax(axis=1)  # first maximum = lower class index on ties, consistent with the ranks
    confusion = confusion_matrix(labels, preds, num_classes)
    per_class = per_class_metrics(confusion)
    present = (per_class["support"] > 0) | (per_class["predicted"] > 0)
    top5_k = min(5, num_classes)

    probs = softmax(logits)
    wrong = np.nonzero(preds != labels)[0]
    confidence = probs[wrong, preds[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][: max(0, int(max_mistakes))]
    mistakes = [{"index": int(i), "true": class_names[labels[i]], "predicted": class_names[preds[i]],
                 "prob": float(probs[i, preds[i]]), "true_prob": float(probs[i, labels[i]])} for i in order]

    return {
        "n": int(n),
        "num_classes": int(num_classes),
        "top1": float(np.mean(ranks == 0)),
        "top5": float(np.mean(ranks < top5_k)),
        "top5_k": top5_k,
        "map3": float(np.mean(np.where(ranks < 3, 1.0 / (ranks + 1), 0.0))),
        "macro_precision": float(per_class["precision"][present].mean()),
        "macro_recall": float(per_class["recall"][present].mean()),
        "macro_f1": float(per_class["f1"][present].mean()),
        "per_class": [
            {"class": class_names[c], "support": int(per_class["support"][c]),
             "accuracy": float(per_class["accuracy"][c]), "precision": float(per_class["precision"][c]),
             "recall": float(per_class["recall"][c]), "f1": float(per_class["f1"][c])}
            for c in range(num_classes)
        ],
        "confusion": confusion.tolist(),
        "confident_mistakes": mistakes,
    }
