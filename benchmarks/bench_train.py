"""Training throughput of the default model: `qdm train`'s loop against a plain PyTorch loop.

Both train the same `cnn` on the same real drawings with batch 256 and a small random affine per sample:
- ours: the real training loop (`train.loop.train`): batches gathered from the memory maps, batch-level
  augmentation, channels_last, bfloat16 autocast (the default model's config), foreach AdamW;
- plain: a `Dataset` that indexes one drawing at a time, torchvision per-sample `RandomAffine` + normalize, a
  `DataLoader` (batch 256, num_workers 0), fp32, AdamW with default settings.
Prints samples/s of each and their ratio, measured in one run; then, to show where the ceiling is, the model's
training step alone on one fixed batch (no data loading) in fp32, in bf16 autocast, and in bf16 under
torch.compile: the plain loop runs at about the fp32 step's speed, so no data pipeline can beat it by more than
the bf16/fp32 step ratio. Last, the compute those steps achieve (multiply-accumulates of a training step, counted,
times samples/s) against the most the machine showed in fp32 and bf16 (a large matmul, a dense 3x3 convolution),
and what 5x the plain loop would take.

    python benchmarks/bench_train.py [--store DIR] [--per-class 300] [--plain-batches 30] [--model-kwargs JSON]
                                     [--no-step]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torchvision.transforms import v2

from quickdraw_mobile.bench.latency import peak_gmacs
from quickdraw_mobile.data.ingest import ingest
from quickdraw_mobile.data.store import SplitSpec, Store
from quickdraw_mobile.device import conv_peak_gmacs
from quickdraw_mobile.models import count_macs, count_train_macs, create_model
from quickdraw_mobile.train.config import TrainConfig
from quickdraw_mobile.train.loop import train

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "quickdraw" / "numpy_bitmap"
GOAL = 5  # the speed-up over the plain loop that this benchmark tracks


class OneAtATime(torch.utils.data.Dataset):
    def __init__(self, split):
        self.split = split
        self.transform = v2.Compose([v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
                                     v2.Normalize([0.5], [0.5])])

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        pixels, label = self.split.gather(np.array([i]))
        image = torch.from_numpy(pixels.reshape(1, 28, 28).astype(np.float32) / 255.0)
        return self.transform(image), int(label[0])


def load_recipe(model_kwargs: dict) -> dict:
    """The default model's training config, with ``model_kwargs`` laid over its model options."""
    recipe = yaml.safe_load((REPO / "configs" / "default_model.yaml").read_text())
    return {**recipe, "model_kwargs": {**recipe.get("model_kwargs", {}), **model_kwargs}}


def fresh_model(recipe: dict, num_classes: int) -> torch.nn.Module:
    """The recipe's architecture, freshly initialized (seeded), as both loops train it."""
    torch.manual_seed(0)
    return create_model(recipe["model"], num_classes=num_classes, **recipe["model_kwargs"])


def plain_loop(recipe: dict, split, batches: int) -> float:
    model = fresh_model(recipe, len(split.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(OneAtATime(split), batch_size=256, shuffle=True, num_workers=0,
                                         drop_last=True)
    seen, started = 0, None
    for step, (x, y) in enumerate(loader):
        if step == 2:  # warm-up steps excluded, as for ours
            started, seen = time.perf_counter(), 0
        loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(y)
        if step + 1 >= batches + 2:
            break
    return seen / (time.perf_counter() - started)


def our_loop(recipe: dict, store_dir: Path, per_class: int, workdir: Path) -> float:
    cfg = TrainConfig(**{**recipe, "epochs": 2, "max_per_class": per_class, "warmup_epochs": 0.0})
    train(cfg, store_dir, workdir / "run", progress=False)
    with open(workdir / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["samples_per_s"])  # the second epoch: no first-call warm-up in it


def step_only(recipe: dict, num_classes: int, bf16: bool, compiled: bool, steps: int = 20) -> float:
    """Samples/s of forward + backward + AdamW on one fixed channels_last batch of 256: the compute alone."""
    model = fresh_model(recipe, num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    net = torch.compile(model) if compiled else model
    x = torch.randn(256, 1, 28, 28).to(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (256,))
    for step in range(steps + 3):
        if step == 3:  # compilation and first-call warm-up excluded
            started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return 256 * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None, help="a store (default: ingest ../shared's 52 classes)")
    parser.add_argument("--per-class", type=int, default=300, help="drawings per class for our loop's epochs")
    parser.add_argument("--plain-batches", type=int, default=30, help="timed batches of the plain loop")
    parser.add_argument("--model-kwargs", type=json.loads, default={},
                        help='JSON laid over the recipe\'s model options, e.g. \'{"pool": "learned"}\'')
    parser.add_argument("--no-step", action="store_true", help="skip the compute-only training-step timings")
    args = parser.parse_args()
    recipe = load_recipe(args.model_kwargs)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store_dir = args.store or ingest(SHARED, tmp / "store").root
        split = Store.open(store_dir).splits(SplitSpec())["train"]
        ours = our_loop(recipe, store_dir, args.per_class, tmp)
        plain = plain_loop(recipe, split, args.plain_batches)
    print(f"threads: {torch.get_num_threads()}, model: {recipe['model']} {json.dumps(recipe['model_kwargs'])} "
          f"({len(split.classes)} classes), batch 256")
    print(f"plain PyTorch loop (per-sample Dataset + transforms, fp32): {plain:8.0f} samples/s")
    print(f"qdm train loop (memmap batches, batch augment, channels_last, bf16): {ours:8.0f} samples/s")
    print(f"ratio: {ours / plain:.2f}x")
    if args.no_step:
        return
    fp32 = step_only(recipe, len(split.classes), bf16=False, compiled=False)
    bf16 = step_only(recipe, len(split.classes), bf16=True, compiled=False)
    compiled = step_only(recipe, len(split.classes), bf16=True, compiled=True)
    print("training step alone, one fixed batch of 256 (no data loading):")
    print(f"  fp32 eager {fp32:8.0f} samples/s | bf16 eager {bf16:8.0f} ({bf16 / fp32:.2f}x fp32) | "
          f"bf16 torch.compile {compiled:8.0f} ({compiled / bf16:.2f}x bf16 eager)")
    model = fresh_model(recipe, len(split.classes))
    step_macs, forward_macs = count_train_macs(model), count_macs(model)
    threads = torch.get_num_threads()
    matmul = {dtype: peak_gmacs(threads, dtype=dtype) for dtype in ("float32", "bfloat16")}
    conv = {dtype: conv_peak_gmacs(threads, dtype=dtype) for dtype in ("float32", "bfloat16")}
    peak = {dtype: max(matmul[dtype], conv[dtype]) for dtype in matmul}  # the most this machine showed

    def gmacs(samples_per_s: float) -> float:
        return samples_per_s * step_macs / 1e9

    print(f"compute: a training step is {step_macs / 1e6:.1f} M MACs a drawing ({step_macs / forward_macs:.2f}x the "
          f"forward). Peaks on {threads} threads, GMAC/s: matmul 1024 fp32 {matmul['float32']:.0f}, bf16 "
          f"{matmul['bfloat16']:.0f}; 3x3 conv 256 channels 7x7 fp32 {conv['float32']:.0f}, bf16 {conv['bfloat16']:.0f}")
    print(f"  fp32 step {gmacs(fp32):.0f} GMAC/s ({gmacs(fp32) / peak['float32']:.0%} of the fp32 peak) | bf16 step "
          f"{gmacs(bf16):.0f} ({gmacs(bf16) / peak['bfloat16']:.0%} of the bf16 peak) | our loop {gmacs(ours):.0f}")
    print(f"  {GOAL}x the plain loop = {GOAL * plain:.0f} samples/s = {gmacs(GOAL * plain):.0f} GMAC/s, "
          f"{gmacs(GOAL * plain) / peak['bfloat16']:.2f}x the bf16 peak")


if __name__ == "__main__":
    main()
