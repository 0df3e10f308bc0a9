"""Loader throughput: QuickDraw Mobile's BatchLoader against PNG-in-Parquet decoded one sample at a time.

The baseline is the common recipe: bitmaps stored as PNG bytes in a Parquet column, a torch Dataset that
decodes one sample per __getitem__ (PIL -> ToTensor -> Normalize), and a DataLoader (batch 256, no workers).
Both sides start from data already in memory or page cache and produce the same normalized float batches;
they are timed in interleaved rounds, the baseline on a few thousand samples a round (it is that slow).

    /work/venv/bin/python benchmarks/bench_loader.py [--store DIR] [--source DIR] [--baseline-samples N]
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torchvision import transforms
from tqdm import tqdm

from quickdraw_mobile.data.loader import AugmentConfig, BatchLoader
from quickdraw_mobile.data.store import MANIFEST, Split, Store

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = Path(os.environ.get("QDM_SHARED_DATA", REPO.parent / "shared" / "quickdraw")) / "numpy_bitmap"


def build_store(root: Path, source: Path) -> Store:
    if (root / MANIFEST).exists():
        return Store.open(root)
    files = sorted(source.glob("*.npy"))
    if not files:
        sys.exit(f"error: {source}: no <class>.npy files (pass --source)")
    store = Store.create(root)
    for path in tqdm(files, desc="building store", unit="class"):
        store.add_class(path.stem, np.load(path), str(path))
    return store


def write_png_parquet(split: Split, path: Path) -> None:
    """Every sample of ``split`` as a PNG in a binary column, with its label."""
    pixels, labels = split.materialize()
    pngs = []
    for row in tqdm(pixels, desc="encoding PNGs for the baseline", unit="img", mininterval=1.0):
        buffer = io.BytesIO()
        Image.fromarray(row.reshape(28, 28), mode="L").save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    pq.write_table(pa.table({"png": pa.array(pngs, pa.binary()), "label": pa.array(labels)}), path)


class PngParquetDataset(torch.utils.data.Dataset):
    """The peer recipe: whole Parquet table in memory, one PNG decoded per item."""

    def __init__(self, path: Path):
        table = pq.read_table(path)
        self.pngs = table.column("png").to_pylist()
        self.labels = table.column("label").to_pylist()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    def __len__(self) -> int:
        return len(self.pngs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.open(io.BytesIO(self.pngs[i]))), self.labels[i]


def rate(batches, samples: int) -> float:
    """Samples per second drawn from the iterator ``batches`` until ``samples`` have come out."""
    count, start = 0, time.perf_counter()
    while count < samples:
        x, _ = next(batches)
        count += len(x)
    return count / (time.perf_counter() - start)


def endless(loader: BatchLoader | torch.utils.data.DataLoader):
    for epoch in itertools.count():
        if isinstance(loader, BatchLoader):
            loader.set_epoch(epoch)
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, help="store folder to use or build (default: a temporary one)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of <class>.npy bitmaps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--baseline-samples", type=int, default=2048, help="baseline samples timed per round")
    parser.add_argument("--loader-samples", type=int, default=100_000, help="loader samples timed per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the medians are reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qdm-bench-loader-") as tmp:
        store = build_store(args.store or Path(tmp) / "store", args.source)
        train = store.splits()["train"]
        parquet = Path(tmp) / "train_png.parquet"
        write_png_parquet(train, parquet)

        baseline = endless(torch.utils.data.DataLoader(PngParquetDataset(parquet), batch_size=args.batch_size,
                                                       shuffle=True, num_workers=0,
                                                       generator=torch.Generator().manual_seed(0)))
        plain_loader = BatchLoader(train, args.batch_size)
        contenders = {"PNG in Parquet + Dataset/DataLoader": (baseline, args.baseline_samples),
                      "BatchLoader, no augmentation": (endless(plain_loader), args.loader_samples),
                      "BatchLoader, random affine": (endless(BatchLoader(train, args.batch_size,
                                                                         augment=AugmentConfig())),
                                                     args.loader_samples)}
        print(f"train split: {len(train):,} drawings, {len(train.classes)} classes; batch {args.batch_size}; "
              f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
        for batches, _ in contenders.values():
            next(batches)  # warm-up: page cache, torch kernels, the prefetch thread
        # Interleaved rounds: a machine shared with other work slows every contender alike.
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in tqdm(range(args.rounds), desc="timing rounds", unit="round"):
            for name, (batches, samples) in contenders.items():
                rates[name].append(rate(batches, samples))
        for batches, _ in contenders.values():
            batches.close()  # ends the loaders' prefetch threads

    medians = {name: statistics.median(r) for name, r in rates.items()}
    base = medians["PNG in Parquet + Dataset/DataLoader"]
    for name, value in medians.items():
        spread = f"(rounds {min(rates[name]):,.0f}..{max(rates[name]):,.0f})"
        print(f"{name:<38}{value:>12,.0f} samples/s {spread:<30}{value / base:7.1f}x")
    order_bytes = plain_loader.rank_indices().nbytes / len(train)
    row_bytes = sum(r.nbytes for r in train.rows) / len(train)
    print(f"per-sample index memory: epoch order {order_bytes:.0f} B + split rows {row_bytes:.0f} B "
          f"-> {(order_bytes + row_bytes) * 50e6 / 1e6:,.0f} MB at 50M drawings")


if __name__ == "__main__":
    main()
