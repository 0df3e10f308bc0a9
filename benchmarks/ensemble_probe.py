"""Test top-1 of trained runs alone and averaged: how far a model-selection budget of N full runs would carry.

    python benchmarks/ensemble_probe.py RUN [RUN ...] --data STORE [--hflip]

Each run is evaluated on its own config's test split; the runs must share that split (same test_fraction,
split_seed, classes and store), so the averaged softmax is scored on the same drawings. An ensemble of N runs costs
N trainings and N forward passes, so it is a bound for what a single model of the same recipe family might reach,
not a candidate for the bundled model.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.export.calibration import run_splits
from quickdraw_mobile.inference import softmax_for_pixels
from quickdraw_mobile.modelref import load_model


def test_probabilities(run: str, data_dir: str, hflip: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax (N, C), labels (N,) and the drawings' store rows (N,) of the run's test split.

    With ``hflip`` the softmax is averaged over each drawing and its mirror (what ``qdm train --teacher-hflip``
    gives a student).
    """
    loaded = load_model(run)
    split = run_splits(loaded.run, data_dir)["test"]  # checks the store holds the run's classes, in order
    pixels, labels = split.gather(np.arange(len(split)))
    probs = softmax_for_pixels(loaded.model, pixels, mirror_average=hflip)
    return probs, labels, np.concatenate(split.rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders made by qdm train")
    parser.add_argument("--data", required=True, help="the store the runs were trained on")
    parser.add_argument("--hflip", action="store_true", help="average each run over the drawing and its mirror")
    args = parser.parse_args()
    total, reference, reference_rows = None, None, None
    for run in args.runs:
        probs, labels, rows = test_probabilities(run, args.data, args.hflip)
        if reference is not None and not (np.array_equal(labels, reference) and np.array_equal(rows, reference_rows)):
            raise QDMError(f"{run}: its test split differs from {args.runs[0]}'s (different split options)")
        reference, reference_rows = labels, rows
        total = probs if total is None else total + probs
        print(f"{run}: test top-1 {(probs.argmax(1) == labels).mean():.2%} ({len(labels):,} drawings)")
    if len(args.runs) > 1:
        print(f"average of the {len(args.runs)} softmaxes: test top-1 {(total.argmax(1) == reference).mean():.2%}")


if __name__ == "__main__":
    try:
        main()
    except QDMError as exc:
        sys.exit(f"error: {exc}")
