"""Soak test of ``qdm serve`` on loopback: the server's memory (RSS) over many requests, sent in bursts.

Starts ``qdm serve`` in its own process on a free 127.0.0.1 port (bench_serve's helpers), then sends
``--requests`` POST /predict (default 20,000; raw strokes, simplified strokes and PNGs of real drawings, mixed)
in rounds of ``--every`` from ``--clients`` concurrent keep-alive clients, and reads the server's RSS and thread
count from /proc after each round. Between rounds the clients stay idle for ``--pause`` seconds (default 11:
AnyIO retires a server worker thread after 10 s idle, so every round runs on fresh worker threads, as a drawing
page used now and then does; 0 gives one steady stream). Prints a table, then the growth of RSS per 1,000
requests after ``--warmup`` rounds (least-squares slope), and writes soak.json and soak.png (RSS against
requests) to OUT. Bounded: at most ``--requests`` requests and no new round after ``--max-seconds``. Nothing
but the server on 127.0.0.1 is contacted; it is stopped at the end. Linux only (/proc).

    .venv/bin/python benchmarks/bench_serve_soak.py [--requests 20000] [--every 1000] [--pause 11] [--out DIR]

``--src OTHER/src`` runs the server from another checkout's package (e.g. ``git worktree add /tmp/old HEAD~1``)
to compare before and after a change on the same machine. Exit status 1 on any failed request, or when
``--limit`` (MB per 1,000 requests) is given and the growth exceeds it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_serve import DEFAULT_SHARED, free_port, request_bodies, run_load, start_server

from quickdraw_mobile.fileio import write_json_atomic


def proc_status(pid: int) -> tuple[float, int]:
    """(RSS in MB, threads) of process ``pid``."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def growth_per_1000(rows: list[dict], warmup: int) -> float | None:
    """Least-squares slope of RSS (MB) against requests, per 1,000 requests, over the rounds after ``warmup``."""
    kept = [r for r in rows if r["round"] > warmup]
    if len(kept) < 2:
        return None
    slope = np.polyfit([r["requests"] for r in kept], [r["rss_mb"] for r in kept], 1)[0]
    return float(slope * 1000)


def write_plot(rows: list[dict], warmup: int, growth: float | None, title: str, out: Path) -> Path:
    from quickdraw_mobile.figures import figure, save

    fig = figure(figsize=(8, 4.2))
    ax = fig.subplots()
    requests = [r["requests"] for r in rows]
    ax.plot(requests, [r["rss_mb"] for r in rows], marker="o", color="#0072B2", label="server RSS")
    warm = [r["requests"] for r in rows if r["round"] <= warmup]
    if warm:
        ax.axvspan(0, max(warm), color="#7F7F7F", alpha=0.15, label=f"warm-up ({warmup} rounds)")
    if growth is not None:
        kept = [r for r in rows if r["round"] > warmup]
        x = np.array([kept[0]["requests"], kept[-1]["requests"]], dtype=float)
        intercept = np.mean([r["rss_mb"] for r in kept]) - growth / 1000 * np.mean([r["requests"] for r in kept])
        ax.plot(x, intercept + growth / 1000 * x, linestyle="--", color="#D55E00",
                label=f"fit: {growth:+.3f} MB per 1,000 requests")
    ax.set_xlabel("requests answered")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save(fig, out, dpi=110)


OPTIONS = [  # flag, type, default, help
    ("--model", str, "default", "run folder or 'default'"),
    ("--shared", Path, DEFAULT_SHARED, "the real data folder"),
    ("--requests", int, 20_000, "requests in all (default 20,000)"),
    ("--every", int, 1_000, "requests per round, one RSS sample each (default 1,000)"),
    ("--clients", int, 8, "concurrent clients (default 8)"),
    ("--pause", float, 11.0, "idle seconds between rounds (default 11)"),
    ("--warmup", int, 2, "rounds left out of the growth fit (default 2)"),
    ("--per-class", int, 3, "real drawings per class (default 3)"),
    ("--max-seconds", float, 1200.0, "no new round after this many seconds (default 1200)"),
    ("--limit", float, None, "fail above this growth, MB per 1,000 requests"),
    ("--src", Path, None, "run the server from this src/ folder instead of the installed package"),
    ("--out", str, None, "output folder (default: a new temporary folder)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, kind, default, text in OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=text)
    args = parser.parse_args()
    if min(args.requests, args.every, args.clients) < 1 or args.pause < 0:
        parser.error("--requests, --every and --clients must be positive, --pause at least 0")
    out = Path(args.out or tempfile.mkdtemp(prefix="qdm-bench-soak-"))
    if args.src is not None:  # the subprocess imports the package from there (ahead of the installed one)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(args.src.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])])

    from quickdraw_mobile.modelref import load_model

    classes = load_model(args.model).labels
    bodies = [body for kind in request_bodies(args.shared, classes, args.per_class).values() for body in kind]
    if not bodies:
        raise SystemExit(f"{args.shared}: no drawings of the model's classes (raw/, simplified/)")
    port = free_port()
    server = start_server(args.model, port)
    url = f"http://127.0.0.1:{port}/predict"
    rss, threads = proc_status(server.pid)
    rows = [{"round": 0, "requests": 0, "rss_mb": rss, "threads": threads, "rps": None, "p99_ms": None, "errors": 0}]
    started = time.monotonic()
    try:
        print(f"qdm serve --model {args.model} on 127.0.0.1:{port} (pid {server.pid}); {len(bodies)} request bodies, "
              f"{args.clients} clients, rounds of {args.every}, {args.pause:g} s idle between rounds\n")
        print(f"{'round':>5}{'requests':>10}{'RSS MB':>10}{'change':>9}{'threads':>9}{'req/s':>8}{'p99 ms':>9}"
              f"{'errors':>8}")
        print(f"{0:>5}{0:>10}{rss:>10.1f}{'':>9}{threads:>9}{'':>8}{'':>9}{0:>8}", flush=True)
        done, number = 0, 0
        while done < args.requests:
            if time.monotonic() - started > args.max_seconds:
                print(f"stopped after {args.max_seconds:g} s (--max-seconds): {done} requests sent")
                break
            if number and args.pause:
                time.sleep(args.pause)
            count = min(args.every, args.requests - done)
            result = run_load(url, bodies, args.clients, count)
            done, number = done + count, number + 1
            rss, threads = proc_status(server.pid)
            change = rss - rows[-1]["rss_mb"]
            rows.append({"round": number, "requests": done, "rss_mb": rss, "threads": threads,
                         "rps": result["rps"], "p99_ms": result["p99"], "errors": len(result["errors"])})
            print(f"{number:>5}{done:>10}{rss:>10.1f}{change:>+9.1f}{threads:>9}{result['rps']:>8.0f}"
                  f"{result['p99']:>9.1f}{len(result['errors']):>8}", flush=True)
            if result["errors"]:
                print(f"    e.g. {'; '.join(sorted(set(result['errors']))[:3])}")
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=10)
        server.kill()  # nothing to do if it has exited
        server.wait()

    growth = growth_per_1000(rows, args.warmup)
    errors = sum(r["errors"] for r in rows)
    first, last = rows[0]["rss_mb"], rows[-1]["rss_mb"]
    after_warmup = next((r["rss_mb"] for r in rows if r["round"] == args.warmup), None)
    summary = (f"RSS {first:.1f} MB idle -> {last:.1f} MB after {rows[-1]['requests']} requests"
               + (f" ({after_warmup:.1f} MB after the {args.warmup} warm-up rounds)" if after_warmup else ""))
    growth_text = "n/a (too few rounds)" if growth is None else f"{growth:+.3f} MB per 1,000 requests"
    print(f"\n{summary}\ngrowth after warm-up: {growth_text}; failed requests: {errors}")
    title = (f"qdm serve --model {args.model}: RSS over {rows[-1]['requests']} requests "
             f"({args.clients} clients, {args.pause:g} s idle between rounds)")
    write_json_atomic(out / "soak.json", {"model": args.model, "src": str(args.src) if args.src else None,
                                          "clients": args.clients, "every": args.every, "pause_s": args.pause,
                                          "warmup_rounds": args.warmup, "growth_mb_per_1000": growth,
                                          "rounds": rows})
    write_plot(rows, args.warmup, growth, title, out / "soak.png")
    print(f"wrote {out}/soak.json, soak.png")
    if errors or (args.limit is not None and growth is not None and growth > args.limit):
        sys.exit(1)


if __name__ == "__main__":
    main()
