"""Throughput and fidelity of the stroke renderer, on one core.

Renders the 754 official (strokes, bitmap) pairs of render_pairs.npz, repeated to about 10,000 drawings, and
prints drawings per second and the per-drawing Pearson correlation with the official bitmaps. For comparison
it also times the obvious alternative, Pillow lines drawn 8x larger and box-filtered down (same framing and
line width), and the raw-stroke path (official simplification + render) on the raw drawings of the same keys.

    /work/venv/bin/python benchmarks/bench_render.py [--shared PATH] [--repeat-to 10000]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, before numpy loads
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from quickdraw_mobile.data import render  # noqa: E402

DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "quickdraw"


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64) - a.mean(axis=1, keepdims=True)
    b = b.astype(np.float64) - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def best_rate(fn, items, runs: int = 3) -> tuple[float, np.ndarray]:
    """Best of ``runs`` timings, as items per second, and the last result."""
    best = 0.0
    for _ in range(runs):
        start = time.perf_counter()
        result = fn(items)
        best = max(best, len(items) / (time.perf_counter() - start))
    return best, result


def pil_render(drawings, factor: int = 8) -> np.ndarray:
    """The Pillow alternative: same framing and width, binary lines at 8x, then a box filter down to 28x28."""
    side = render.SIDE * factor
    radius = render.LINE_WIDTH / 2 * render.SCALE * factor
    out = np.empty((len(drawings), render.PIXELS), dtype=np.uint8)
    for i, drawing in enumerate(drawings):
        image = Image.new("L", (side, side))
        pen = ImageDraw.Draw(image)
        shift_x = (render.FRAME - max(max(s[0]) for s in drawing)) / 2 + render.PADDING + render.LINE_WIDTH / 2
        shift_y = (render.FRAME - max(max(s[1]) for s in drawing)) / 2 + render.PADDING + render.LINE_WIDTH / 2
        for xs, ys in drawing:
            points = [((x + shift_x) * render.SCALE * factor, (y + shift_y) * render.SCALE * factor)
                      for x, y in zip(xs, ys, strict=True)]
            if len(points) > 1:
                pen.line(points, fill=255, width=round(2 * radius))
            for x, y in points:  # round caps and joins
                pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
        out[i] = np.asarray(image.reduce(factor)).ravel()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("QDM_SHARED_DATA", DEFAULT_SHARED)))
    parser.add_argument("--repeat-to", type=int, default=10_000, help="drawings per timed run (default 10000)")
    args = parser.parse_args()

    pairs = np.load(args.shared / "render_pairs.npz")
    drawings = [json.loads(text) for text in pairs["drawing"]]
    official = pairs["bitmap"]
    copies = max(1, round(args.repeat_to / len(drawings)))
    many = drawings * copies
    print(f"{render.RENDERER_VERSION}: {len(drawings)} official pairs x {copies} = {len(many)} drawings, one thread")

    rate, pixels = best_rate(render.render_many, many)
    parsed = [render.parse_drawing(d, "bench") for d in many]
    raster_rate, _ = best_rate(render._rasterize, parsed)
    r = pearson(pixels[: len(drawings)], official)
    diff = np.abs(pixels[: len(drawings)].astype(int) - official).mean()
    print(f"qdm renderer   : {rate:8,.0f} drawings/s (validate + render; rendering alone {raster_rate:,.0f}/s)")
    print(f"  fidelity     : Pearson mean {r.mean():.4f}, median {np.median(r):.4f}, min {r.min():.3f}, "
          f"{(r < 0.98).sum()} pairs below 0.98; mean |diff| {diff:.2f} grey levels")

    pil_rate, pil_pixels = best_rate(pil_render, drawings, runs=2)
    r_pil = pearson(pil_pixels, official)
    print(f"Pillow 8x + box: {pil_rate:8,.0f} drawings/s, Pearson mean {r_pil.mean():.4f}, "
          f"median {np.median(r_pil):.4f}  (qdm: {rate / pil_rate:.1f}x the speed)")

    index = {str(key): i for i, key in enumerate(pairs["key_id"])}
    raw, rows = [], []
    for word in sorted({str(w) for w in pairs["word"]}):
        for line in (args.shared / "raw" / f"{word}.ndjson").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["key_id"] in index:
                raw.append(record["drawing"])
                rows.append(index[record["key_id"]])
    raw_rate, raw_pixels = best_rate(lambda d: render.render_many(d, fmt="raw"), raw, runs=1)
    r_raw = pearson(raw_pixels, official[rows])
    same = np.mean([render.simplify_raw(d) == drawings[i] for d, i in zip(raw, rows, strict=True)])
    print(f"raw strokes    : {raw_rate:8,.0f} drawings/s (simplify + render), {len(raw)} drawings with a pair: "
          f"Pearson mean {r_raw.mean():.4f}, median {np.median(r_raw):.4f}; "
          f"simplification identical to the official strokes for {same:.1%}")


if __name__ == "__main__":
    main()
