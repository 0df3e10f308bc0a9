"""N-way K-shot: how well ``qdm extend``'s methods teach the bundled ``default`` the 293 classes it never saw.

The drawings: the shared ``simplified/`` and ``raw/`` stroke files (the same key_id once, simplified first; about
26 a class), rendered with ``data.render``. Per class, 6 drawings are held out once (seed 0) and are the queries
of every episode; each episode (seed e) draws K shots per class from the rest (all of them when a class has fewer).
Scores: top-1 / top-5 among the 293 new classes (as the issue's probe), top-1 among all 345 logits, and the
52 old classes' top-1 on default's bundled test sample (``verification_set("default")``) among all 345 logits
against the 52-way model before the extension. Mean and standard deviation over the episodes.

Methods: ``prototype-plain`` (the issue's probe: means of the L2-normalised features, no centring, no
augmentation, no fitted scale; 293-way scores only), and ``prototype`` / ``probe`` / ``finetune`` exactly as
``qdm extend`` runs them (``quickdraw_mobile.extend``), and ``probe-ms``: the probe on the multi-scale features
(``qdm extend --method probe --features multiscale``). Features of every drawing and of its augmented views are
computed once and shared by the episodes; the fine-tune runs the model itself (``--finetune-episodes`` of them).

    PYTHONPATH=src python benchmarks/bench_fewshot.py --out runs/fewshot
    PYTHONPATH=src python benchmarks/bench_fewshot.py --methods probe,probe-ms --shots 20 --episodes 2 --out ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from quickdraw_mobile.data.classes import all_classes
from quickdraw_mobile.data.loader import normalize
from quickdraw_mobile.data.strokefiles import distinct_strokes, hold_out
from quickdraw_mobile.export.calibration import calibration_set, verification_set
from quickdraw_mobile.extend import (
    REPLAY_SIZE,
    Extension,
    FitData,
    augmentation,
    extend_finetune,
    fit_probe,
    fit_prototype,
    fresh_views,
    multiscale_scale,
    unit,
    views_of,
)
from quickdraw_mobile.fileio import write_json_atomic, write_text_atomic
from quickdraw_mobile.modelref import load_model

METHODS = ("prototype-plain", "prototype", "probe", "probe-ms", "finetune")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "quickdraw"


def novel_drawings(root: Path, known: list[str]) -> dict[str, np.ndarray]:
    """Every distinct drawing of each class ``known`` lacks, from simplified/ then raw/ (deduplicated by key_id)."""
    return {name: distinct_strokes(root, name).render() for name in all_classes() if name not in known}


@torch.inference_mode()
def features(model: torch.nn.Module, x: torch.Tensor, batch: int = 2048, multiscale: bool = False) -> torch.Tensor:
    """The pooled features of ``x``, followed (``multiscale``) by its multi-scale ones (unit blocks, not rescaled)
    from the same pass."""
    model.eval()
    if not multiscale:
        return torch.cat([model.features(x[i: i + batch]) for i in range(0, len(x), batch)])
    return torch.cat([torch.cat(model.outputs(x[i: i + batch])[1:], 1) for i in range(0, len(x), batch)])


def view_features(model, pixels: np.ndarray, views: int, aug, seed: int, multiscale: bool = False) -> torch.Tensor:
    """(N, 1 + views, d): each drawing's features and its augmented views' (``extend.views_of``'s order)."""
    x = views_of(pixels, views, aug, seed)
    return features(model, x, multiscale=multiscale).reshape(1 + views, len(pixels), -1).transpose(0, 1)


def fit_data(model, feats: torch.Tensor, labels: np.ndarray, replay_feats, replay_labels) -> FitData:
    """``extend.FitData`` of cached features: (N, V, d) shot views -> rows in ``views_of``'s order."""
    shots = feats.transpose(0, 1).reshape(-1, feats.shape[-1])
    views = feats.shape[1]
    with torch.no_grad():
        return FitData(shots, model.head(shots), torch.from_numpy(labels).repeat(views),
                       torch.arange(len(labels)).repeat(views), replay_feats, model.head(replay_feats),
                       torch.from_numpy(replay_labels))


def scores(new_logits: torch.Tensor, old_logits: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    y = torch.from_numpy(labels)
    top5 = new_logits.topk(5, dim=1).indices
    full = torch.cat([old_logits, new_logits], 1).argmax(1) - old_logits.shape[1]
    return {"top1": float((new_logits.argmax(1) == y).float().mean()),
            "top5": float((top5 == y[:, None]).any(1).float().mean()), "top1_345": float((full == y).float().mean())}


def old_kept(new_logits: torch.Tensor, old_logits: torch.Tensor, labels: np.ndarray) -> float:
    """The old classes' top-1 among all logits after the extension."""
    return float((torch.cat([old_logits, new_logits], 1).argmax(1) == torch.from_numpy(labels)).float().mean())


class Bench:
    """The cached features of the novel drawings (two sets of augmented views), the queries, the replay and the
    old classes' sample, and one episode of each method on them."""

    def __init__(self, loaded, drawings: dict[str, np.ndarray], views: int, held_out: int, multiscale: bool = False):
        """``multiscale``: cache the multi-scale features too (``probe-ms``), as ``qdm extend`` rescales them."""
        self.loaded, self.model, self.classes = loaded, loaded.model, list(drawings)
        aug = augmentation(loaded)
        self.pixels = drawings
        self.held, self.pool = {}, {}
        for c, name in enumerate(self.classes):
            self.held[name], self.pool[name] = hold_out(len(drawings[name]), c, held_out, seed=0)
        both = {name: view_features(self.model, px, views, aug, 2 * c, multiscale) for c, (name, px) in
                enumerate(drawings.items())}
        width = self.model.head.in_features
        self.feats = {name: f[..., :width] for name, f in both.items()}
        self.fresh = {name: view_features(self.model, px, fresh_views(views), aug, 2 * c + 1) for c, (name, px) in
                      enumerate(drawings.items())}
        self.query = torch.cat([self.feats[n][self.held[n], 0] for n in self.classes])
        self.query_labels = np.repeat(np.arange(len(self.classes)), [len(self.held[n]) for n in self.classes])
        self.replay = calibration_set("default", n=REPLAY_SIZE)
        replay = features(self.model, normalize(self.replay.pixels), multiscale=multiscale)
        self.replay_feats = replay[:, :width]
        self.sample = verification_set("default")
        sample = features(self.model, normalize(self.sample.pixels), multiscale=multiscale)
        self.sample_feats = sample[:, :width]
        with torch.no_grad():
            self.query_old, self.sample_old = self.model.head(self.query), self.model.head(self.sample_feats)
        if multiscale:  # rescaled once, as extend.fit_data does
            scale = multiscale_scale(self.model, self.replay_feats, replay[:, width:])
            self.wide = {name: f[..., width:] * scale for name, f in both.items()}
            self.replay_wide, self.sample_wide = replay[:, width:] * scale, sample[:, width:] * scale
            self.query_wide = torch.cat([self.wide[n][self.held[n], 0] for n in self.classes])

    def shots(self, k: int, episode: int) -> dict[str, np.ndarray]:
        return {name: np.sort(np.random.default_rng([episode, c]).permutation(self.pool[name])[:k])
                for c, name in enumerate(self.classes)}

    def _data(self, cache: dict, picks: dict[str, np.ndarray]) -> FitData:
        feats = torch.cat([cache[n][picks[n]] for n in self.classes])
        labels = np.repeat(np.arange(len(self.classes)), [len(picks[n]) for n in self.classes])
        return fit_data(self.model, feats, labels, self.replay_feats, self.replay.labels)

    def _wide_data(self, picks: dict[str, np.ndarray]) -> FitData:
        """``_data`` with the multi-scale features in place of the pooled ones (the old logits as before)."""
        pooled = self._data(self.feats, picks)
        wide = torch.cat([self.wide[n][picks[n]] for n in self.classes])
        rows = wide.transpose(0, 1).reshape(-1, wide.shape[-1])
        return FitData(rows, pooled.shot_logits, pooled.shot_labels, pooled.shot_drawing, self.replay_wide,
                       pooled.replay_logits, pooled.replay_labels)

    def run(self, method: str, k: int, episode: int, finetune_steps: int) -> dict[str, float]:
        picks = self.shots(k, episode)
        if method == "finetune":
            return self._finetune(picks, episode, finetune_steps)
        n = len(self.classes)
        if method == "prototype-plain":
            data = self._data(self.feats, picks)
            first = torch.cat([self.feats[name][picks[name], 0] for name in self.classes])
            protos = unit(torch.zeros(n, first.shape[1]).index_add_(0, data.shot_labels[: len(first)], unit(first)))
            result = scores(unit(self.query) @ protos.T, self.query_old, self.query_labels)
            return {"top1": result["top1"], "top5": result["top5"], "top1_345": None, "old52": None}
        wide = method == "probe-ms"
        data = self._wide_data(picks) if wide else self._data(self.feats, picks)
        if method == "prototype":
            fitted = fit_prototype(data, self._data(self.fresh, picks), n)
            head = lambda f: unit(f - fitted["feature_mean"]) @ fitted["weight"].T + fitted["bias"]  # noqa: E731
        else:
            fitted = fit_probe(self.model, data, n, episode)
            head = lambda f: f @ fitted["weight"].T + fitted["bias"]  # noqa: E731
        query, sample = (self.query_wide, self.sample_wide) if wide else (self.query, self.sample_feats)
        with torch.no_grad():
            result = scores(head(query), self.query_old, self.query_labels)
            result["old52"] = old_kept(head(sample), self.sample_old, self.sample.labels)
        return result

    def _finetune(self, picks: dict[str, np.ndarray], episode: int, steps: int) -> dict[str, float]:
        ext = Extension(self.classes, [self.pixels[n][picks[n]] for n in self.classes], "bench")
        views = self.feats[self.classes[0]].shape[1] - 1
        model, _, _ = extend_finetune(self.loaded, ext, self.replay, views, episode, steps)
        model.eval()
        queries = np.concatenate([self.pixels[n][self.held[n]] for n in self.classes])
        with torch.no_grad():
            logits = torch.cat([model(normalize(queries[i: i + 2048])) for i in range(0, len(queries), 2048)])
            sample = model(normalize(self.sample.pixels))
        old = len(self.loaded.labels)
        result = scores(logits[:, old:], logits[:, :old], self.query_labels)
        result["old52"] = old_kept(sample[:, old:], sample[:, :old], self.sample.labels)
        return result


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over the episodes of each (method, K)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["shots"]), []).append(row)
    out = []
    for (method, k), group in groups.items():
        entry = {"method": method, "shots": k, "episodes": len(group)}
        for key in ("top1", "top5", "top1_345", "old52"):  # None: not measured (293-way only)
            values = None if group[0][key] is None else np.array([r[key] for r in group], dtype=float)
            entry[key] = None if values is None else float(values.mean())
            entry[f"{key}_std"] = None if values is None else float(values.std())
        out.append(entry)
    return out


def markdown(summary: list[dict], old52_before: float) -> str:
    def cell(row, key):
        return "–" if row[key] is None else f"{100 * row[key]:.1f} ± {100 * row[f'{key}_std']:.1f}"

    lines = ["| method | K | episodes | 293-way top-1 % | 293-way top-5 % | 345-way top-1 % (new) | "
             f"52 old top-1 % (before: {100 * old52_before:.1f}) |", "|---|---|---|---|---|---|---|"]
    for row in sorted(summary, key=lambda r: (r["shots"], r["method"])):
        lines.append(f"| {row['method']} | {row['shots']} | {row['episodes']} | {cell(row, 'top1')} | "
                     f"{cell(row, 'top5')} | {cell(row, 'top1_345')} | {cell(row, 'old52')} |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], out: Path) -> None:
    from quickdraw_mobile.figures import figure, save

    fig = figure(figsize=(10, 4), layout="constrained")
    for ax, key, title in zip(fig.subplots(1, 2), ("top1", "top5"), ("293-way top-1", "293-way top-5"),
                              strict=True):
        for method in sorted({r["method"] for r in summary}):
            rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r["shots"])
            ax.errorbar([r["shots"] for r in rows], [100 * r[key] for r in rows],
                        yerr=[100 * r[f"{key}_std"] for r in rows], marker="o", capsize=3, label=method)
        ax.set(xlabel="shots per class (K)", ylabel="%", title=title, xscale="log")
        ax.set_xticks([1, 5, 10, 20], labels=["1", "5", "10", "20"])
        ax.grid(alpha=0.3)
    fig.axes[0].legend()
    save(fig, out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED, help="the folder with simplified/ and raw/")
    p.add_argument("--out", type=Path, default=Path("runs/fewshot"))
    p.add_argument("--shots", default="1,5,10,20")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--held-out", type=int, default=6)
    p.add_argument("--views", type=int, default=8, help="augmented views per shot (qdm extend's default)")
    p.add_argument("--methods", default="prototype-plain,prototype,probe,probe-ms,finetune",
                   help="comma-separated: prototype-plain, prototype, probe, probe-ms, finetune")
    p.add_argument("--finetune-episodes", type=int, default=1, help="episodes of the (slow) fine-tune per K")
    p.add_argument("--finetune-shots", default="20", help="the K the (slow) fine-tune runs at")
    p.add_argument("--finetune-steps", type=int, default=200)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    start = time.time()
    loaded = load_model("default")
    drawings = novel_drawings(args.data, loaded.labels)
    print(f"{len(drawings)} new classes, {sum(map(len, drawings.values()))} drawings "
          f"({min(map(len, drawings.values()))}..{max(map(len, drawings.values()))} a class)", file=sys.stderr)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {', '.join(unknown)} (expected some of {', '.join(METHODS)})")
    bench = Bench(loaded, drawings, args.views, args.held_out, multiscale="probe-ms" in methods)
    print(f"features cached in {time.time() - start:.0f} s", file=sys.stderr)
    rows = []
    for k in (int(s) for s in args.shots.split(",")):
        for method in methods:
            episodes = args.finetune_episodes if method == "finetune" else args.episodes
            if method == "finetune" and str(k) not in args.finetune_shots.split(","):
                continue
            for episode in range(episodes):
                result = bench.run(method, k, episode, args.finetune_steps)
                rows.append({"method": method, "shots": k, "episode": episode, **result})
                print(json.dumps(rows[-1]), f"{time.time() - start:.0f} s", file=sys.stderr)
    summary = summarize(rows)
    old52_before = float((bench.sample_old.argmax(1) == torch.from_numpy(bench.sample.labels)).float().mean())
    table = markdown(summary, old52_before)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "fewshot.json", {"args": {k: str(v) for k, v in vars(args).items()},
                                                  "classes": len(drawings), "old52_before": old52_before,
                                                  "summary": summary, "episodes": rows})
    write_text_atomic(args.out / "fewshot.md", table)
    plot(summary, args.out / "fewshot.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
