"""Which multi-scale features ``qdm extend --features multiscale`` reads: variants compared on the shots alone.

Episode 0's K = 20 shots a class (``bench_fewshot.py``'s, the 6 held-out queries never read here) are split once
more: 14 fitted, 6 checked (seed 1000 + class). Each variant is ``extend.fit_probe`` on the 14 (8 augmented views
each, against the fixed old logits, as ``bench_fewshot.py``'s ``probe-ms``), scored 293-way on the 6 and, for the
52 old classes, 345-way on ``default``'s bundled test sample. A variant is a set of blocks of the frozen
``default`` (each unit length), optionally averaged with the mirrored drawing's (``mirror``), optionally
standardised per feature on the replay drawings (``standardise``):

    s1avg, s1max    stage 1 (14x14) pooled globally by average / max
    pooled          the pooled features          s2max     stage 2 (7x7) max-pooled
    s1grid          stage 1 averaged on a 2x2 grid of 7x7 quarters
    s2grid, s2gridmax   stage 2 averaged / max-pooled on a 2x2 grid (4x4 windows, stride 3)

    PYTHONPATH=src python benchmarks/ablate_multiscale.py --out runs/ablate_multiscale
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_fewshot import SHARED, novel_drawings, old_kept, scores

from quickdraw_mobile.data.loader import normalize
from quickdraw_mobile.data.strokefiles import hold_out
from quickdraw_mobile.export.calibration import calibration_set, verification_set
from quickdraw_mobile.extend import (
    REPLAY_SIZE,
    VIEWS,
    FitData,
    augmentation,
    fit_probe,
    multiscale_scale,
    unit,
    views_of,
)
from quickdraw_mobile.fileio import write_json_atomic, write_text_atomic
from quickdraw_mobile.modelref import load_model
from quickdraw_mobile.models.cnn import global_max

MS = ["s1avg", "s1max", "pooled", "s2max"]  # the four blocks of the first --features multiscale
VARIANTS = [  # (blocks, mirror, standardise)
    (MS, False, False), (MS, True, False), (MS + ["s2grid"], True, False), (MS + ["s2gridmax"], True, False),
    (MS + ["s1grid"], True, False), (MS + ["s1grid"], False, False), (MS + ["s1grid", "s2grid"], True, False),
    (MS, True, True), (MS + ["s1grid"], True, True),
]
FIT, CHECK = 14, 6


def block_maps(early: torch.Tensor, late: torch.Tensor, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"s1avg": F.adaptive_avg_pool2d(early, 1).flatten(1), "s1max": global_max(early), "pooled": pooled,
            "s2max": global_max(late), "s1grid": F.avg_pool2d(early, 7).flatten(1),
            "s2grid": F.avg_pool2d(late, 4, 3).flatten(1), "s2gridmax": F.max_pool2d(late, 4, 3).flatten(1)}


@torch.inference_mode()
def blocks(model, x: torch.Tensor, batch: int = 2048) -> dict[str, torch.Tensor]:
    """Each block (unit rows) of ``x`` and of ``x`` mirrored: name -> (N, 2, d)."""
    out: dict[str, list] = {"raw_pooled": []}
    for i in range(0, len(x), batch):
        both = [block_maps(*model.maps(xx)) for xx in (x[i: i + batch], x[i: i + batch].flip(3))]
        for name in both[0]:
            out.setdefault(name, []).append(torch.stack([unit(b[name]) for b in both], 1))
        out["raw_pooled"].append(both[0]["pooled"])  # the old head's input, the drawing's own
    return {name: torch.cat(parts) for name, parts in out.items()}


def variant_features(cache: dict[str, torch.Tensor], names: list[str], mirror: bool) -> torch.Tensor:
    f = torch.cat([cache[n] for n in names], -1)
    return f.mean(-2) if mirror else f[..., 0, :]


def run_variant(model, data: dict, names, mirror: bool, standardise: bool) -> dict:
    feats = {k: variant_features(data[k], names, mirror) for k in ("fit", "check", "replay", "sample")}
    if standardise:
        mean, std = feats["replay"].mean(0), feats["replay"].std(0).clamp_min(1e-3)
        feats = {k: (f - mean) / std / np.sqrt(f.shape[-1]) for k, f in feats.items()}
    scale = multiscale_scale(model, data["replay"]["raw_pooled"], feats["replay"])
    views = feats["fit"].shape[1]
    shots = feats["fit"].transpose(0, 1).reshape(-1, feats["fit"].shape[-1]) * scale
    labels = data["fit_labels"]
    with torch.no_grad():
        fit = FitData(shots, model.head(data["fit_pooled"]), labels.repeat(views), torch.arange(len(labels)).repeat(views),
                      feats["replay"] * scale, model.head(data["replay"]["raw_pooled"]), data["replay_labels"])
    fitted = fit_probe(model, fit, int(labels.max()) + 1, 0)
    new_rows = lambda f: f * scale @ fitted["weight"].T + fitted["bias"]  # noqa: E731
    with torch.no_grad():  # bench_fewshot's scores: 293-way on the inner check, 345-way on the old sample
        inner = scores(new_rows(feats["check"]), model.head(data["check"]["raw_pooled"]), data["check_labels"])
        old52 = old_kept(new_rows(feats["sample"]), model.head(data["sample"]["raw_pooled"]), data["sample_labels"])
    return {"blocks": "+".join(names), "mirror": mirror, "standardise": standardise, "dims": feats["fit"].shape[-1],
            "top1": inner["top1"], "top5": inner["top5"], "old52": old52}


def prepare(model, loaded, drawings: dict[str, np.ndarray]) -> dict:
    """The blocks of the inner fit (with views) and check drawings, of the replay and of the old classes' sample."""
    aug, fit, check, fit_labels, check_labels = augmentation(loaded), [], [], [], []
    for c, pixels in enumerate(drawings.values()):
        _, pool = hold_out(len(pixels), c, 6, seed=0)
        shots = np.sort(np.random.default_rng([0, c]).permutation(pool)[:FIT + CHECK])
        order = np.random.default_rng([1000, c]).permutation(len(shots))
        fit.append(pixels[np.sort(shots[order[:FIT]])])
        check.append(pixels[np.sort(shots[order[FIT:]])])  # 5 where a class has only 19 shots
        fit_labels += [c] * len(fit[-1])
        check_labels += [c] * len(check[-1])
    fit_px = np.concatenate(fit)
    fit_x = views_of(fit_px, VIEWS, aug, 0)  # drawing i's views at rows i, N + i, ...
    fit_all = blocks(model, fit_x)
    fit_pooled = fit_all.pop("raw_pooled")  # rows in views_of's order, as the shots' rows below
    fit_blocks = {k: v.reshape(1 + VIEWS, len(fit_px), 2, -1).transpose(0, 1) for k, v in fit_all.items()}
    replay, sample = calibration_set("default", n=REPLAY_SIZE), verification_set("default")
    return {"fit": fit_blocks, "fit_labels": torch.tensor(fit_labels),
            "fit_pooled": fit_pooled,
            "check": blocks(model, normalize(np.concatenate(check))), "check_labels": np.array(check_labels),
            "replay": blocks(model, normalize(replay.pixels)), "replay_labels": torch.from_numpy(replay.labels),
            "sample": blocks(model, normalize(sample.pixels)), "sample_labels": sample.labels}


def markdown(rows: list[dict]) -> str:
    lines = ["| blocks | mirror | standardise | dims | inner top-1 % | inner top-5 % | 52 old top-1 % |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['blocks']} | {'yes' if r['mirror'] else 'no'} | {'yes' if r['standardise'] else 'no'} | "
                     f"{r['dims']} | {100 * r['top1']:.1f} | {100 * r['top5']:.1f} | {100 * r['old52']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path) -> None:
    from quickdraw_mobile.figures import figure, save

    fig = figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    names = [f"{r['blocks'].replace('s1avg+s1max+pooled+s2max', 'ms')}{' +mirror' if r['mirror'] else ''}"
             f"{' +std' if r['standardise'] else ''}" for r in rows]
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [100 * r["top5"] for r in rows], 0.4, label="293-way top-5 (inner check)")
    ax.barh(y + 0.2, [100 * r["old52"] for r in rows], 0.4, label="52 old top-1 (345-way)")
    ax.set_yticks(y, labels=names)
    ax.set(xlabel="%", xlim=(50, 100), title="multi-scale feature variants, K = 20 shots split 14 / 6")
    ax.legend(loc="lower right")
    save(fig, out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED, help="the folder with simplified/ and raw/")
    p.add_argument("--out", type=Path, default=Path("runs/ablate_multiscale"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    start = time.time()
    loaded = load_model("default")
    model = loaded.model.eval()
    data = prepare(model, loaded, novel_drawings(args.data, loaded.labels))
    print(f"features in {time.time() - start:.0f} s", file=sys.stderr)
    rows = []
    for names, mirror, standardise in VARIANTS:
        rows.append(run_variant(model, data, names, mirror, standardise))
        print(json.dumps(rows[-1]), f"{time.time() - start:.0f} s", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "ablate_multiscale.json", {"fit": FIT, "check": CHECK, "views": VIEWS, "rows": rows})
    write_text_atomic(args.out / "ablate_multiscale.md", markdown(rows))
    plot(rows, args.out / "ablate_multiscale.png")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
