"""Evaluation plots: each function draws one PNG from the dict of ``compute_metrics`` (or a loaded metrics.json).

Figures come from ``figures.figure`` (the object API on an Agg canvas, no pyplot) and are written by
``figures.save`` (to a temporary name, then renamed).
Colours are the Okabe-Ito palette, which stays distinguishable with the common colour-vision deficiencies;
accuracy axes start at 0 (bars) or say where they start, so no plot exaggerates a difference.
"""

from __future__ import annotations

import csv
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter
from tqdm import tqdm

from ..errors import QDMError
from ..figures import figure, save

DPI = 110
BLUE, SKY, ORANGE, VERMILLION, GREEN, GREY = "#0072B2", "#56B4E9", "#E69F00", "#D55E00", "#009E73", "#7F7F7F"
# (lower bound, legend label, colour), best tier first.
TIERS = ((0.95, "≥ 95%", BLUE), (0.90, "90–95%", SKY), (0.80, "80–90%", ORANGE), (-math.inf, "< 80%", VERMILLION))
MAX_BARS = 60  # past this many classes the per-class bar chart shows only the lowest and highest 30
PERCENT = PercentFormatter(xmax=1, decimals=0)


# ---------------------------------------------------------------------------------------------- helpers
def _tier_color(value: float) -> str:
    return next(color for low, _, color in TIERS if value >= low)


def _tier_legend(ax, accuracy: np.ndarray, **where) -> None:
    """Legend of the accuracy tiers, with how many classes fall in each; ``where``: legend placement."""
    tier_of = [_tier_color(a) for a in accuracy]
    handles = [Patch(color=color, label=f"{label} ({tier_of.count(color)})") for _, label, color in TIERS]
    ax.legend(handles=handles, title="accuracy (classes)", fontsize=8, title_fontsize=8, framealpha=0.9, **where)


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _class_table(metrics: dict) -> dict[str, np.ndarray]:
    """The per-class rows of ``metrics`` as arrays (names, accuracy, precision, recall, f1, support)."""
    rows = metrics.get("per_class") if isinstance(metrics, dict) else None
    if not rows:
        raise QDMError("metrics: missing or empty 'per_class' (expected the dict returned by compute_metrics)")
    try:
        table = {key: np.array([row[key] for row in rows], dtype=np.float64)
                 for key in ("accuracy", "precision", "recall", "f1", "support")}
        table["names"] = np.array([str(row["class"]) for row in rows], dtype=object)
    except (KeyError, TypeError, ValueError) as exc:
        raise QDMError(f"metrics: per_class rows need class, support, accuracy, precision, recall, f1 ({exc})") from exc
    return table


def _headline(metrics: dict, key: str) -> float:
    value = metrics.get(key)
    if not isinstance(value, int | float):
        raise QDMError(f"metrics: missing number {key!r} (expected the dict returned by compute_metrics)")
    return float(value)


def _ascending(values: np.ndarray) -> np.ndarray:
    """Indices sorting ``values`` ascending, ties by class index (stable)."""
    return np.argsort(values, kind="stable")


def _descending(values: np.ndarray) -> np.ndarray:
    """Indices sorting ``values`` descending, ties by class index (stable)."""
    return np.argsort(-values, kind="stable")


def _accuracy_x_axis(ax, right: float, ticks: int, xlabel: str, title: str, title_size: float) -> None:
    """A 0..100% x axis for bar charts, with room past 100% (up to `right`) for the value labels."""
    ax.set_xlim(0, right)
    ax.set_xticks(np.linspace(0, 1, ticks))
    ax.xaxis.set_major_formatter(PERCENT)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=title_size)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)


def _draw_bars(ax, names: Sequence[str], values: Sequence[float], title: str, fontsize: float = 8) -> None:
    """Horizontal accuracy bars, first item at the top, each labelled with its value."""
    y = np.arange(len(values))[::-1]
    ax.barh(y, values, color=[_tier_color(v) for v in values], height=0.75)
    ax.set_yticks(y, [_short(n) for n in names], fontsize=fontsize)
    for yi, v in zip(y, values, strict=True):
        ax.text(min(v, 1.0) + 0.01, yi, f"{v:.1%}", va="center", fontsize=fontsize - 1)
    _accuracy_x_axis(ax, 1.12, 6, "accuracy", title, 10)


def _tie_note(values: np.ndarray, chosen: np.ndarray) -> str:
    """Say so when classes outside a top/bottom-n list score exactly like its last entry (the cut is by index)."""
    edge = values[chosen[-1]]
    tied = int(np.sum(values == edge))
    inside = int(np.sum(values[chosen] == edge))
    return f" ({tied} tie at {edge:.1%})" if tied > inside else ""


def _draw_histogram(ax, accuracy: np.ndarray, top1: float) -> None:
    edges = np.linspace(0, 1, 41)  # 2.5% bins; the tier bounds 80/90/95% fall on edges
    counts, _ = np.histogram(accuracy, bins=edges)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=[_tier_color(e + 1e-9) for e in edges[:-1]],
           edgecolor="white", linewidth=0.5)
    low = min(0.5, math.floor(accuracy.min() * 10) / 10)
    ax.set_xlim(low, 1.0)
    ax.xaxis.set_major_formatter(PERCENT)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axvline(accuracy.mean(), color="black", linestyle="--", linewidth=1,
               label=f"mean per-class accuracy {accuracy.mean():.1%}")
    ax.axvline(top1, color=GREY, linestyle=":", linewidth=1.5, label=f"overall top-1 {top1:.1%}")
    ax.set_xlabel(f"per-class accuracy (2.5% bins; axis starts at {low:.0%})")
    ax.set_ylabel("number of classes")
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _annotate(ax, x: np.ndarray, y: np.ndarray, names: np.ndarray, which: np.ndarray,
              limits: tuple[float, float]) -> None:
    """Name the points ``which``; classes on the same spot share one label, placed toward the axes' inside."""
    spots: dict[tuple[float, float], list[str]] = {}
    for idx in which:
        spots.setdefault((float(x[idx]), float(y[idx])), []).append(_short(names[idx], 22))
    low, high = limits
    middle, margin = (low + high) / 2, 0.06 * (high - low)
    for i, ((px, py), group) in enumerate(spots.items()):
        label = ", ".join(group[:3]) + (f" +{len(group) - 3} more" if len(group) > 3 else "")
        dx = 10 if px < middle else -10
        dy = 8 if py < low + margin else -12 if py > high - margin else (8 if i % 2 == 0 else -12)
        ax.annotate(label, (px, py), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                    ha="left" if dx > 0 else "right", arrowprops={"arrowstyle": "-", "color": GREY, "linewidth": 0.6})


def _unit_limits(*arrays: np.ndarray) -> tuple[float, float]:
    """Axis range for values in [0, 1]: from a round number below the smallest value up to 1."""
    low = min(float(a.min()) for a in arrays)
    return max(0.0, math.floor((low - 0.02) * 10) / 10), 1.01


def _square_unit_axes(ax, limits: tuple[float, float], xlabel: str, ylabel: str, title: str) -> None:
    """Equal percent axes over the same range, so the diagonal means x = y; the title says where they start."""
    low, high = limits
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    ax.xaxis.set_major_formatter(PERCENT)
    ax.yaxis.set_major_formatter(PERCENT)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f" (axes start at {low:.0%})" if low > 0 else ""), fontsize=11)
    ax.grid(alpha=0.3)


# ------------------------------------------------------------------------------------------------ plots
def plot_per_class_accuracy(metrics: dict, out: str | os.PathLike, max_bars: int = MAX_BARS) -> Path:
    """Per-class accuracy as sorted horizontal bars in tier colours; beyond ``max_bars`` classes, the extremes."""
    table = _class_table(metrics)
    top1 = _headline(metrics, "top1")
    accuracy, names = table["accuracy"], table["names"]
    order = _descending(accuracy)  # best first (at the top)
    num_classes = len(order)
    if num_classes <= max_bars:
        shown, hidden = order, 0
        title = f"Per-class accuracy, all {num_classes} classes, best to worst"
    else:
        half = max_bars // 2
        shown, hidden = np.concatenate([order[:half], order[-half:]]), num_classes - 2 * half
        title = f"Per-class accuracy: the {half} highest and {half} lowest of {num_classes} classes"
    # One slot per bar, plus an empty slot marking where the hidden middle of the ranking was cut out.
    slots = len(shown) + (1 if hidden else 0)
    fig = figure(figsize=(8.5, 1.6 + 0.2 * slots), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(slots)[::-1].astype(float)
    if hidden:
        half = len(shown) // 2
        y = np.concatenate([y[:half], y[half + 1 :]])
        ax.text(0.5, slots - half - 1, f"⋯ {hidden} classes in between not shown (see the accuracy histogram) ⋯",
                ha="center", va="center", fontsize=8, style="italic", color=GREY,
                bbox={"facecolor": "white", "edgecolor": "none"})
    values = accuracy[shown]
    ax.barh(y, values, color=[_tier_color(v) for v in values], height=0.75)
    ax.set_yticks(y, [_short(n) for n in names[shown]], fontsize=7)
    for yi, v in zip(y, values, strict=True):
        ax.text(v + 0.005, yi, f"{v:.1%}", va="center", fontsize=6)
    ax.axvline(top1, color="black", linestyle="--", linewidth=1)
    ax.text(top1, slots - 0.3, f" overall top-1 {top1:.1%}", fontsize=7, va="bottom")
    ax.set_ylim(-0.7, slots + 0.4)
    _accuracy_x_axis(ax, 1.08, 11, "accuracy (share of the class's drawings classified correctly)", title, 11)
    _tier_legend(ax, accuracy, loc="lower right")
    return save(fig, out, dpi=DPI)


def plot_accuracy_histogram(metrics: dict, out: str | os.PathLike) -> Path:
    """How many classes reach each level of accuracy."""
    table = _class_table(metrics)
    fig = figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    _draw_histogram(ax, table["accuracy"], _headline(metrics, "top1"))
    ax.set_title(f"Distribution of per-class accuracy over {len(table['accuracy'])} classes", fontsize=11)
    return save(fig, out, dpi=DPI)


def plot_summary_dashboard(metrics: dict, out: str | os.PathLike, n: int = 10) -> Path:
    """One page: headline numbers, the accuracy histogram, the best and the worst classes."""
    table = _class_table(metrics)
    top1, top5, map3 = (_headline(metrics, key) for key in ("top1", "top5", "map3"))
    accuracy, names = table["accuracy"], table["names"]
    order = _ascending(accuracy)
    n = max(1, min(n, len(order) // 2 or 1))

    fig = figure(figsize=(13, 8.5), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[0.55, 1, 1], width_ratios=[1.25, 1])
    head = fig.add_subplot(grid[0, :])
    head.axis("off")
    k = int(metrics.get("top5_k", 5))
    numbers = [("top-1 accuracy", top1), (f"top-{k} accuracy", top5), ("MAP@3", map3)]
    if "macro_f1" in metrics:
        numbers.append(("macro F1", _headline(metrics, "macro_f1")))
    for i, (label, value) in enumerate(numbers):
        x = (i + 0.5) / len(numbers)
        head.text(x, 0.62, f"{value:.1%}" if "MAP" not in label else f"{value:.4f}", ha="center",
                  fontsize=26, weight="bold", color=BLUE)
        head.text(x, 0.22, label, ha="center", fontsize=11)
    count = metrics.get("n")
    split = metrics.get("split")
    subtitle = f"{len(accuracy)} classes" + (f", {count:,} drawings" if isinstance(count, int) else "")
    subtitle += f", {split} split" if isinstance(split, str) else ""
    head.set_title(f"QuickDraw Mobile evaluation: {subtitle}", fontsize=13)

    hist = fig.add_subplot(grid[1:, 0])
    _draw_histogram(hist, accuracy, top1)
    hist.set_title("Per-class accuracy", fontsize=10)
    best = _descending(accuracy)[:n]
    worst = order[:n]
    _draw_bars(fig.add_subplot(grid[1, 1]), names[best], accuracy[best],
               f"Best {n} classes" + _tie_note(accuracy, best))
    _draw_bars(fig.add_subplot(grid[2, 1]), names[worst], accuracy[worst],
               f"Worst {n} classes, worst first" + _tie_note(accuracy, worst))
    return save(fig, out, dpi=DPI)


def plot_precision_recall_scatter(metrics: dict, out: str | os.PathLike, annotate: int = 6) -> Path:
    """Each class a point (recall, precision); the classes with the lowest F1 are named."""
    table = _class_table(metrics)
    recall, precision, f1, names = table["recall"], table["precision"], table["f1"], table["names"]
    worst = _ascending(f1)[: min(annotate, len(f1))]
    fig = figure(figsize=(7.5, 7), layout="constrained")
    ax = fig.add_subplot()
    low, high = _unit_limits(recall, precision)
    ax.plot([low, high], [low, high], color=GREY, linestyle=":", linewidth=1, label="precision = recall")
    ax.scatter(recall, precision, s=22, color=BLUE, alpha=0.7, edgecolors="white", linewidths=0.5,
               label=f"class ({len(names)})")
    ax.scatter(recall[worst], precision[worst], s=34, color=VERMILLION, edgecolors="black", linewidths=0.5,
               label=f"{len(worst)} lowest F1")
    _annotate(ax, recall, precision, names, worst, (low, high))
    _square_unit_axes(ax, (low, high), "recall (= per-class accuracy)",
                      "precision (share of predictions of the class that are right)", "Precision vs recall per class")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=3)
    return save(fig, out, dpi=DPI)


def plot_f1_vs_accuracy(metrics: dict, out: str | os.PathLike, annotate: int = 6) -> Path:
    """F1 against accuracy per class; far below the diagonal = a class other drawings are mistaken for."""
    table = _class_table(metrics)
    accuracy, f1, names = table["accuracy"], table["f1"], table["names"]
    gap = np.abs(accuracy - f1)
    farthest = _descending(gap)[: min(annotate, len(gap))]
    farthest = farthest[gap[farthest] > 0]
    fig = figure(figsize=(7.5, 7), layout="constrained")
    ax = fig.add_subplot()
    low, high = _unit_limits(accuracy, f1)
    ax.plot([low, high], [low, high], color=GREY, linestyle=":", linewidth=1, label="F1 = accuracy")
    ax.scatter(accuracy, f1, s=22, c=[_tier_color(a) for a in accuracy], alpha=0.85, edgecolors="white",
               linewidths=0.5)
    _annotate(ax, accuracy, f1, names, farthest, (low, high))
    _square_unit_axes(ax, (low, high), "accuracy (= recall)", "F1", "F1 vs accuracy per class")
    ax.text(0.98, 0.03, "below the diagonal: precision < recall\n(other classes are often predicted as it)",
            transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color=GREY)
    _tier_legend(ax, accuracy, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=4)
    return save(fig, out, dpi=DPI)


def plot_top_bottom(metrics: dict, out: str | os.PathLike, n: int = 10) -> Path:
    """The ``n`` best and ``n`` worst classes by accuracy, side by side on the same 0-100% scale.

    Equal accuracies are listed by class index; a title says when a tie continues past the cut.
    """
    table = _class_table(metrics)
    accuracy, names = table["accuracy"], table["names"]
    order = _ascending(accuracy)
    n = max(1, min(n, len(order) // 2 or 1))
    fig = figure(figsize=(12, 1.4 + 0.32 * n), layout="constrained")
    left, right = fig.subplots(1, 2)
    best, worst = _descending(accuracy)[:n], order[:n]
    _draw_bars(left, names[best], accuracy[best], f"Top {n} classes" + _tie_note(accuracy, best), fontsize=9)
    _draw_bars(right, names[worst], accuracy[worst],
               f"Bottom {n} classes, worst first" + _tie_note(accuracy, worst), fontsize=9)
    fig.suptitle(f"Best and worst classes by accuracy (of {len(order)})", fontsize=12)
    return save(fig, out, dpi=DPI)


def plot_worst_confusion(metrics: dict, out: str | os.PathLike, n: int = 20) -> Path:
    """Confusion among the ``n`` least accurate classes, each row as shares of that class's drawings.

    The last column collects predictions of every other class, so each row sums to 100%.
    """
    table = _class_table(metrics)
    confusion = np.asarray(metrics.get("confusion"), dtype=np.float64)
    num_classes = len(table["names"])
    if confusion.shape != (num_classes, num_classes):
        raise QDMError(f"metrics: 'confusion' must be {num_classes}x{num_classes} (one row per class), "
                       f"got shape {confusion.shape}")
    worst = _ascending(table["accuracy"])[: min(n, num_classes)]
    rows = confusion[worst]
    support = rows.sum(axis=1, keepdims=True)
    shares = np.divide(rows, support, out=np.zeros_like(rows), where=support > 0)
    block = np.column_stack([shares[:, worst], shares.sum(axis=1) - shares[:, worst].sum(axis=1)])
    labels = [_short(name, 22) for name in table["names"][worst]]
    size = len(worst)
    fig = figure(figsize=(3.2 + 0.48 * (size + 1), 2.6 + 0.42 * size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(block, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    fontsize = 8 if size <= 12 else 6.5
    for r in range(size):
        for c in range(size + 1):
            value = block[r, c]
            if value >= 0.005:
                ax.text(c, r, f"{value * 100:.0f}", ha="center", va="center", fontsize=fontsize,
                        color="white" if value > 0.55 else "black")
    ax.set_xticks(np.arange(size + 1), [*labels, "all other classes"], rotation=50, ha="right",
                  rotation_mode="anchor", fontsize=8)
    ax.set_yticks(np.arange(size), [f"{name} ({a:.0%})" for name, a in zip(labels, table["accuracy"][worst], strict=True)],
                  fontsize=8)
    ax.axvline(size - 0.5, color="black", linewidth=1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (accuracy)")
    ax.set_title(f"Confusion among the {size} least accurate classes (% of each true class; blank < 0.5%)",
                 fontsize=11)
    fig.colorbar(image, ax=ax, format=PERCENT, shrink=0.6, label="share of the true class's drawings")
    return save(fig, out, dpi=DPI)


def plot_confident_mistakes(images, metrics: dict, out: str | os.PathLike, n: int = 24) -> Path:
    """Gallery of the most confident wrong predictions, dark ink on white, captioned "true → predicted (p)"."""
    mistakes = metrics.get("confident_mistakes") if isinstance(metrics, dict) else None
    if mistakes is None:
        raise QDMError("metrics: missing 'confident_mistakes' (expected the dict returned by compute_metrics)")
    images = np.asarray(images)
    if images.ndim == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 28, 28)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise QDMError(f"images: expected (N, 784) or (N, 28, 28) bitmaps, got shape {images.shape}")
    shown = mistakes[: max(0, n)]
    bad = [m["index"] for m in shown if not 0 <= int(m["index"]) < len(images)]
    if bad:
        raise QDMError(f"images: mistake index {bad[0]} is outside 0..{len(images) - 1} "
                       "(pass the images in the same order as the logits)")
    cols = min(6, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig = figure(figsize=(max(8.0, 2.1 * cols), 0.6 + 2.45 * rows), layout="constrained")
    errors = _error_count(metrics)
    of = f" of {errors:,} errors" if errors is not None else ""
    fig.suptitle(f"Most confident mistakes ({len(shown)}{of}): true → predicted (softmax probability)",
                 fontsize=11)
    if not shown:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no mistakes: every drawing was classified correctly", ha="center", fontsize=11)
    for i, mistake in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[int(mistake["index"])], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("#BBBBBB")
        caption = f"{mistake['true']} → {mistake['predicted']} ({float(mistake['prob']):.3f})"
        ax.set_title("\n".join(textwrap.wrap(caption, 26)[:3]), fontsize=7.5)
    return save(fig, out, dpi=DPI)


def _error_count(metrics: dict) -> int | None:
    confusion = metrics.get("confusion")
    if confusion is None:
        return None
    confusion = np.asarray(confusion)
    return int(confusion.sum() - np.trace(confusion))


# ------------------------------------------------------------------------------------------ training curves
CURVE_COLUMNS = ("train_loss", "val_loss", "train_acc", "val_acc", "lr")


def _read_training_rows(source) -> list[dict]:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise QDMError(f"{path}: training metrics CSV not found")
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    return list(source)


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan  # missing or blank cell: a gap in the curve


def plot_training_curves(rows_or_csv, out: str | os.PathLike) -> Path:
    """Loss, accuracy and learning rate of training and validation per epoch, from metrics.csv or its rows.

    Columns used: epoch, train_loss, train_acc, val_loss, val_acc, lr; any may be missing (no ``epoch``:
    rows are numbered 1, 2, ...). Panels without any data are left out.
    """
    rows = _read_training_rows(rows_or_csv)
    if not rows:
        raise QDMError("training metrics: no rows (expected one row per epoch)")
    if not all(isinstance(row, dict) for row in rows):
        raise QDMError("training metrics: expected a CSV path or a list of dicts (one per epoch)")
    series = {key: np.array([_as_float(row.get(key)) for row in rows]) for key in CURVE_COLUMNS}
    epochs = np.array([_as_float(row.get("epoch", i + 1)) for i, row in enumerate(rows)])
    has = {key: bool(np.isfinite(values).any()) for key, values in series.items()}
    panels = [p for p in (("loss", ("train_loss", "val_loss")), ("accuracy", ("train_acc", "val_acc")),
                          ("learning rate", ("lr",))) if any(has[key] for key in p[1])]
    if not panels:
        raise QDMError(f"training metrics: none of the columns {', '.join(CURVE_COLUMNS)} has a number")

    style = {"train": {"color": BLUE, "linestyle": "-"}, "val": {"color": VERMILLION, "linestyle": "--"},
             "lr": {"color": GREEN, "linestyle": "-"}}
    marker = "o" if len(rows) <= 40 else None
    fig = figure(figsize=(5 * len(panels), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    best_epoch = None
    if has["val_acc"]:
        best = int(np.nanargmax(series["val_acc"]))
        best_epoch = (epochs[best], series["val_acc"][best])
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            if has[key]:
                label = {"train": "train", "val": "validation", "lr": "learning rate"}[key.split("_")[0]]
                ax.plot(epochs, series[key], marker=marker, markersize=3, label=label, **style[key.split("_")[0]])
        if title == "accuracy":
            ax.yaxis.set_major_formatter(PERCENT)
            if best_epoch is not None:
                ax.axvline(best_epoch[0], color=GREY, linestyle=":", linewidth=1,
                           label=f"best validation {best_epoch[1]:.1%} (epoch {best_epoch[0]:g})")
        if title == "learning rate" and np.nanmin(series["lr"]) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.set_title(title.capitalize(), fontsize=11)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Training curves ({len(rows)} epochs)", fontsize=12)
    return save(fig, out, dpi=DPI)


# ------------------------------------------------------------------------------------------------- all
def write_all_plots(metrics: dict, images, out_dir: str | os.PathLike, training_rows=None) -> dict[str, Path]:
    """Every plot into ``out_dir`` as ``<name>.png``; returns name -> path.

    ``images`` (the evaluated bitmaps, in logit order) may be None to skip the mistakes gallery;
    ``training_rows`` (rows or the path of metrics.csv) may be None to skip the training curves.
    """
    out_dir = Path(out_dir)
    jobs = {
        "summary_dashboard": lambda path: plot_summary_dashboard(metrics, path),
        "per_class_accuracy": lambda path: plot_per_class_accuracy(metrics, path),
        "accuracy_histogram": lambda path: plot_accuracy_histogram(metrics, path),
        "top_bottom": lambda path: plot_top_bottom(metrics, path),
        "precision_recall": lambda path: plot_precision_recall_scatter(metrics, path),
        "f1_vs_accuracy": lambda path: plot_f1_vs_accuracy(metrics, path),
        "worst_confusion": lambda path: plot_worst_confusion(metrics, path),
    }
    if images is not None:
        jobs["confident_mistakes"] = lambda path: plot_confident_mistakes(images, metrics, path)
    if training_rows is not None:
        jobs["training_curves"] = lambda path: plot_training_curves(training_rows, path)
    written = {}
    for name, draw in tqdm(jobs.items(), desc="plots", unit="plot", leave=False):
        written[name] = draw(out_dir / f"{name}.png")
    return written
