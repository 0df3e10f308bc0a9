"""``qdm quantize``: every method on one model, each measured the same way, side by side.

Fairness is the point of the table, so everything a method does not choose is shared (``inputs.MethodInputs``,
which ``qdm export --quant METHOD`` uses too, so an exported artifact is its row's):
- one calibration set for every method: ``calib`` class-balanced drawings of the run's training split, picked
  with ``seed`` (``export.calibration.calibration_set``); its labels go to methods that measure accuracy;
- one test set: the run's test split (or the bundled sample of ``default`` without ``--data``);
- one seed: torch's global RNG is reset to ``seed`` before each method, and methods that fine-tune get it too;
- one measurement: the method's deployable artifact is written (``artifact.save_pte``, or the method's own
  ``weight_file`` for a result XNNPACK cannot run), loaded in its own runtime
  (``export.load_artifact``), and scored there: top-1 / top-5 on the test set, size on disk, single-drawing
  latency p50 on ``threads`` threads (``bench.latency``) and the peak memory of a fresh process that loads and
  runs it (``bench.memory``).

Outputs in ``out``: ``comparison.json`` (a list of rows), ``comparison.md``, ``accuracy_vs_size.png``,
``accuracy_vs_latency.png`` and ``artifacts/<method>.pte`` (+ sidecars). Non-finite logits (NaN weights, a method
that overflows) are an error: the model's on the calibration drawings before any method runs, each method's on
the test drawings. The artifacts are made in a staging folder and moved into ``artifacts/`` only when every
method succeeded, so a failed comparison changes nothing an earlier one wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.loader import normalize
from ..errors import QDMError
from ..export.calibration import verification_set
from ..export.metadata import sidecar_paths
from ..export.selfcheck import check_finite
from ..fileio import ensure_dir, os_error_reason, write_json_atomic, write_text_atomic
from ..inference import logits_for_pixels
from ..modelref import describe_model, load_model
from ..options import CALIBRATION_SIZE
from .artifact import save_pte
from .inputs import MethodInputs, check_training_data, method_inputs
from .registry import get_method, make_config

COLUMNS = ("method", "bits", "top1", "top5", "delta_top1", "delta_top5", "size_bytes", "latency_ms_p50",
           "peak_mem_mb", "artifact")


def _scores(logits: np.ndarray, labels: np.ndarray, what: str) -> tuple[float, float]:
    """Top-1 and top-5 (%) of a method's logits on the test drawings; non-finite logits are an error naming ``what``."""
    check_finite(logits, what, "test drawings")
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return 100.0 * float((top5[:, 0] == labels).mean()), 100.0 * float((top5 == labels[:, None]).any(1).mean())


def _measure(path: Path, test, threads: int, runs: int, memory: bool, what: str) -> dict:
    from ..bench.latency import latency
    from ..bench.memory import peak_memory
    from ..export import load_artifact

    artifact = load_artifact(path, threads=threads, probe=False)  # written by this process's method just now
    top1, top5 = _scores(artifact.run_pixels(test.pixels), test.labels, what)
    one = np.ascontiguousarray(normalize(test.pixels[:1]).numpy())
    row = {"top1": top1, "top5": top5, "size_bytes": path.stat().st_size,
           "latency_ms_p50": latency(artifact.run, one, runs=runs, warmup=max(1, runs // 10))["p50_ms"]}
    row["peak_mem_mb"] = peak_memory(path)["peak_rss_mb"] if memory else None
    return row


def compare(model_ref: str | Path, methods: list[str], out: str | Path, data_dir: str | Path | None = None,
            calib: int = CALIBRATION_SIZE, seed: int = 0, options: dict[str, dict] | None = None, threads: int = 1,
            runs: int = 100, memory: bool = True, device: str = "cpu") -> list[dict]:
    """Quantize ``model_ref`` with each method, write and measure every artifact; returns the rows written. The
    fine-tunes (QAT, pruning) run on ``device``; everything else, the artifacts included, on the CPU."""
    options = options or {}
    for name, values in options.items():
        if name not in methods:
            raise QDMError(f"--set: options given for {name!r}, which is not among the methods compared")
        make_config(name, **values)  # a misspelled option fails now, not after the methods before it ran
    check_training_data(methods, data_dir)
    out = Path(out)
    loaded = load_model(model_ref)
    inputs = method_inputs(model_ref, loaded, methods, data_dir, calib, seed, always_calibration=True,
                           device=device)
    calibration = inputs.calibration
    test = verification_set(model_ref, data_dir)
    # NaN weights and the like: refused before any method runs (INT8 calibration fails obscurely on NaN)
    check_finite(logits_for_pixels(loaded.model, calibration.pixels), f"{model_ref}: the model",
                 "calibration drawings")
    model_info = describe_model(loaded)
    calib_info = {"drawings": len(calibration.pixels), "seed": seed, "source": calibration.source}

    # Artifacts are written and measured in a staging folder inside ``out`` and moved into ``out/artifacts``
    # only when every method succeeded: a failed comparison leaves an earlier one exactly as it was.
    created = not out.exists()
    ensure_dir(out)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".quantize-", dir=out))
    except OSError as exc:
        raise QDMError(f"{out}: cannot create the staging folder ({os_error_reason(exc, out)})") from exc
    committed = False
    try:
        rows = _run_methods(loaded, methods, out, staging, inputs, test, options, threads, runs, memory,
                            model_info, calib_info)
        (out / "artifacts").mkdir(exist_ok=True)
        sidecars = {p.name for row in rows for p in sidecar_paths(staging / Path(row["artifact"]).name)}
        for staged in sorted(staging.iterdir(), key=lambda p: p.name not in sidecars):
            os.replace(staged, out / "artifacts" / staged.name)  # sidecars first, each artifact last
        committed = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not committed:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty: a comparison that failed leaves no folder it made
    reference = next((r for r in rows if r["method"] == "fp32"), None)
    for row in rows:
        row["delta_top1"] = row["top1"] - reference["top1"] if reference else None
        row["delta_top5"] = row["top5"] - reference["top5"] if reference else None
    rows = [{**{k: row[k] for k in COLUMNS}, **{k: v for k, v in row.items() if k not in COLUMNS}} for row in rows]
    context = {"model": model_info, "calibration": calib_info, "test": {"drawings": len(test.pixels),
               "source": test.source}, "seed": seed, "threads": threads, "latency_runs": runs}
    write_json_atomic(out / "comparison.json", json.loads(json.dumps(rows, default=str)))
    write_text_atomic(out / "comparison.md", markdown(rows, context))
    write_plots(rows, out)
    return rows


def _run_methods(loaded, methods: list[str], out: Path, staging: Path, inputs: MethodInputs, test,
                 options: dict[str, dict], threads: int, runs: int, memory: bool, model_info: dict,
                 calib_info: dict) -> list[dict]:
    """Quantize with each method, write its artifact into ``staging`` and measure it there: the rows."""
    rows = []
    for method in tqdm(methods, desc="quantize", unit="method"):
        started = time.perf_counter()
        qm = inputs.apply(loaded.model, method, options.get(method))
        seconds = time.perf_counter() - started
        weight_file = get_method(method).weight_file
        if qm.no_pte and weight_file is None:
            raise QDMError(f"method {method!r}: {qm.no_pte}, and the method declares no weight_file to save instead")
        name = f"{method}{weight_file.suffix}" if qm.no_pte else f"{method}.pte"
        what = f"{out / 'artifacts' / name}: method {method!r}"
        path = staging / name
        if qm.no_pte:  # a deployable form XNNPACK cannot run: its real bytes, scored eagerly
            weight_file.write(qm.model, path)
            top1, top5 = _scores(qm.logits(normalize(test.pixels)).numpy(), test.labels, what)
            measured = {"top1": top1, "top5": top5, "size_bytes": path.stat().st_size, "latency_ms_p50": None,
                        "peak_mem_mb": None}
        else:
            save_pte(qm, path, loaded.labels, model_info, calib_info)
            measured = _measure(path, test, threads, runs, memory, what)
        rows.append({"method": method, "bits": qm.bits, **measured, "artifact": f"artifacts/{name}",
                     "scheme": qm.scheme, "quantize_seconds": seconds, "notes": qm.notes})
    return rows


def parse_options(items: list[str]) -> dict[str, dict]:
    """``["int8-qat.steps=500", "int8-smoothquant.alphas=[0.5, 0.8]"]`` -> per-method option dicts (YAML values)."""
    import yaml

    options: dict[str, dict] = {}
    for item in items:
        key, sep, text = item.partition("=")
        method, dot, option = key.rpartition(".")
        if not sep or not dot or not method or not option:
            raise QDMError(f"--set: expected METHOD.OPTION=VALUE (e.g. int8-qat.steps=500), got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise QDMError(f"--set {item}: the value is not valid YAML ({exc})") from exc
        options.setdefault(method, {})[option] = tuple(value) if isinstance(value, list) else value
    return options


def markdown(rows: list[dict], context: dict) -> str:
    def num(value, fmt, unit=""):
        return "n/a" if value is None else format(value, fmt) + unit

    lines = [f"# Quantization comparison: {context['model']['name']} ({context['model']['source']})", "",
             f"Calibration: {context['calibration']['source']}, seed {context['seed']}. "
             f"Test: {context['test']['source']}. Latency: single drawing, p50 of {context['latency_runs']} runs "
             f"on {context['threads']} thread(s), in the artifact's runtime.", "",
             "| method | bits | top-1 | Δ top-1 | top-5 | size | latency p50 | peak memory | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        summary = get_method(r["method"]).summary(r["notes"])  # the method's key choice, in a few words
        lines.append(f"| {r['method']} | {r['bits']} | {r['top1']:.2f} | {num(r['delta_top1'], '+.2f')} | "
                     f"{r['top5']:.2f} | {r['size_bytes'] / 1e3:,.1f} KB | {num(r['latency_ms_p50'], '.3f', ' ms')} | "
                     f"{num(r['peak_mem_mb'], '.1f', ' MB')} | {summary} |")
    lines += ["", "Schemes:", ""] + [f"- {r['method']}: {r['scheme']}" for r in rows]
    return "\n".join(lines) + "\n"


def _label_groups(points: list[dict], key: str, scale: float, log_x: bool) -> dict[tuple, list[str]]:
    """Method names by point, points closer than a few % of the axis ranges sharing one label (no overprinting)."""
    if not points:  # e.g. only weight-only int4 rows, which have no latency
        return {}
    xs = np.array([r[key] / scale for r in points], dtype=float)
    xs_axis = np.log10(xs) if log_x else xs
    ys = np.array([r["top1"] for r in points], dtype=float)
    span_x, span_y = max(np.ptp(xs_axis), 1e-9), max(np.ptp(ys), 1e-9)
    groups: dict[tuple, list[str]] = {}
    anchors: list[tuple[int, tuple]] = []
    for i, r in enumerate(points):
        for j, anchor in anchors:
            if abs(xs_axis[i] - xs_axis[j]) < 0.05 * span_x and abs(ys[i] - ys[j]) < 0.03 * span_y:
                groups[anchor].append(r["method"])
                break
        else:
            anchor = (xs[i], ys[i])
            anchors.append((i, anchor))
            groups[anchor] = [r["method"]]
    return groups


def write_plots(rows: list[dict], out: Path) -> list[Path]:
    from ..figures import figure, save  # matplotlib only when plots are drawn

    paths = []
    for key, label, name in (("size_bytes", "size on disk (KB, log scale)", "accuracy_vs_size.png"),
                             ("latency_ms_p50", "single-drawing latency p50 (ms)", "accuracy_vs_latency.png")):
        points = [r for r in rows if r[key] is not None]
        fig = figure(figsize=(6.4, 4.4), dpi=110)
        ax = fig.add_subplot()
        scale = 1e3 if key == "size_bytes" else 1.0
        for r in points:
            ax.scatter(r[key] / scale, r["top1"], color="#0072B2" if r["bits"] < 32 else "#D55E00", zorder=3)
        for (x, y), names in _label_groups(points, key, scale, log_x=key == "size_bytes").items():
            ax.annotate("\n".join(names), (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8,
                        va="bottom")
        if key == "size_bytes":
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (%), test split (axis not from 0)")
        ax.grid(alpha=0.3)
        ax.set_title(f"Accuracy against {'size' if key == 'size_bytes' else 'latency'}")
        fig.tight_layout()
        paths.append(save(fig, out / name))
    return paths
