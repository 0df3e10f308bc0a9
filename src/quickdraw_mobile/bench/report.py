"""Bench results -> ``bench.json``, ``bench.md`` (a Markdown table) and ``bench.png``, each written atomically."""

from __future__ import annotations

from pathlib import Path

from ..fileio import write_json_atomic, write_text_atomic


def _threads(result: dict) -> list[str]:
    return [str(t) for t in result["settings"]["threads"]]


def summary_lines(result: dict) -> list[str]:
    """MACs and the machine's measured peak, the reference for every achieved GMAC/s in the table."""
    machine = result["machine"]
    peaks = ", ".join(f"{t} thread{'s' * (t != '1')}: {g:.1f} GMAC/s" for t, g in machine["peak_fp32_gmacs"].items())
    macs = sorted({row["macs"] for row in result["results"]})
    return [f"machine: {machine['cpu']}, {machine['cores']} cores; fp32 matmul peak {peaks}",
            f"model MACs per drawing: {', '.join(f'{m / 1e6:.2f} M' for m in macs)}",
            f"torch {machine['torch']}, executorch {machine['executorch']}, onnxruntime {machine['onnxruntime']}; "
            f"{result['settings']['runs']} timed runs after {result['settings']['warmup']} warm-up"]


def markdown_table(result: dict) -> str:
    threads = _threads(result)
    batch = result["settings"]["batch"]
    header = ["runtime", "size KB"]
    for t in threads:
        header += [f"p50 ms ({t}t)", f"p95 ms ({t}t)", f"b{batch} img/s ({t}t)", f"GMAC/s ({t}t)"]
    header += ["peak RSS MB", "top-1", "agree w/ eager"]
    rows = []
    for row in result["results"]:
        cells = [row["name"], f"{row['size_bytes'] / 1e3:,.1f}"]
        for t in threads:
            lat, thr = row["latency"][t], row["throughput"][t]
            cells += [f"{lat['p50_ms']:.3f}", f"{lat['p95_ms']:.3f}", f"{thr['images_per_s']:,.0f}",
                      f"{row['gmacs'][t]:.2f}"]
        cells.append(f"{row['memory']['peak_rss_mb']:.0f}" if "memory" in row else "-")
        cells.append(f"{100 * row['top1']:.2f}%" if "top1" in row else "-")
        cells.append(f"{100 * row['agreement_with_eager']:.2f}%" if "agreement_with_eager" in row else "-")
        rows.append(cells)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    notes = [f"- {line}" for line in summary_lines(result)]
    for row in result["results"]:
        if "carried_bytes" in row:
            notes.append(f"- {row['name']}: an app carries {row['carried_bytes'] / 1e6:.2f} MB of code besides the "
                         f"model and the system's C/C++ libraries (qdm-native {row['binary_bytes'] / 1e6:.2f} MB and "
                         "the ExecuTorch libraries it loads)")
    if result["settings"].get("accuracy_on"):
        notes.append(f"- top-1 on {result['settings']['accuracy_on']}")
    return "\n".join(["# Benchmark", "", *lines, "", *notes]) + "\n"


def write_plot(result: dict, out: str | Path) -> Path:
    """Single-image latency p50 with p95 whiskers per runtime and thread count, and size on disk, as PNG ``out``."""
    import numpy as np

    from ..figures import figure, save  # matplotlib only when a plot is drawn

    rows, threads = result["results"], _threads(result)
    names = [r["name"] for r in rows]
    y = np.arange(len(rows))
    fig = figure(figsize=(12, 1.2 + 0.6 * len(rows)))
    ax_lat, ax_size = fig.subplots(1, 2, sharey=True)
    height = 0.8 / len(threads)
    for i, t in enumerate(threads):
        p50 = np.array([r["latency"][t]["p50_ms"] for r in rows])
        p95 = np.array([r["latency"][t]["p95_ms"] for r in rows])
        ax_lat.barh(y + (i - (len(threads) - 1) / 2) * height, p50, height,
                    xerr=[np.zeros_like(p50), p95 - p50], capsize=3,
                    label=f"{t} thread{'s' * (t != '1')}")
    ax_lat.set_xscale("log")  # runtimes differ by orders of magnitude
    ax_lat.set_xlabel("single-drawing latency, ms, log scale (bar p50, whisker p95)")
    ax_lat.set_yticks(y, names)
    ax_lat.invert_yaxis()
    ax_lat.legend(loc="lower right")
    ax_size.barh(y, [r["size_bytes"] / 1e3 for r in rows], 0.6, color="tab:gray")
    ax_size.set_xlabel("size on disk, KB")
    for ax in (ax_lat, ax_size):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(summary_lines(result)[1], fontsize=10)
    fig.tight_layout()
    return save(fig, out, dpi=120)


def write_report(result: dict, out: str | Path) -> dict[str, Path]:
    out = Path(out)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "plot": out / "bench.png"}
    write_json_atomic(paths["json"], result)
    write_text_atomic(paths["markdown"], markdown_table(result))
    write_plot(result, paths["plot"])
    return paths
