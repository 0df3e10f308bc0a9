"""Bounded load test of ``qdm serve`` on loopback: latency percentiles and errors under concurrent clients.

Starts ``qdm serve`` in its own process on a free 127.0.0.1 port, then, for each kind of request (raw strokes
as the drawing page sends them, official simplified strokes, and PNGs of the same drawings), runs a fixed
number of requests from 1 client and from N concurrent clients (threads with keep-alive connections), and
prints requests per second, p50 / p99 / max latency and the number of errors (anything but a 200). Real
drawings of the model's classes come from the shared raw/ and simplified/ folders. The server is stopped at
the end; nothing else is contacted. Client and server share the machine's cores, as they would on a laptop.

    /work/venv/bin/python benchmarks/bench_serve.py [--model default] [--clients 8] [--requests 400]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "quickdraw"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "quickdraw_mobile.cli", "serve", "--model", model, "--port", str(port),
               "--browser-model", "none"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"qdm serve exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("qdm serve did not answer /health within 120 s")


def png_of(drawing: list, side: int = 384) -> str:
    """A drawing as a person's canvas PNG: dark lines on white, 4x supersampled."""
    big, k = side * 4, side * 4 / 300
    image = Image.new("L", (big, big), 255)
    pen = ImageDraw.Draw(image)
    for xs, ys in drawing:
        points = [((x + 22) * k, (y + 22) * k) for x, y in zip(xs, ys, strict=True)]
        if len(points) > 1:
            pen.line(points, fill=0, width=round(16 * k), joint="curve")
    buffer = io.BytesIO()
    image.resize((side, side), Image.Resampling.BOX).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def request_bodies(shared: Path, classes: list[str], per_class: int) -> dict[str, list[bytes]]:
    raw, simplified, images = [], [], []
    for name in classes:
        for path, out in ((shared / "raw" / f"{name}.ndjson", raw), (shared / "simplified" / f"{name}.ndjson", simplified)):
            if path.is_file():
                for line in path.read_text().splitlines()[:per_class]:
                    out.append(json.loads(line)["drawing"])
    images = [png_of(d) for d in simplified[: max(1, len(simplified) // 2)]]
    return {
        "raw strokes": [json.dumps({"drawing": d, "format": "raw"}).encode() for d in raw],
        "simplified strokes": [json.dumps({"drawing": d, "format": "simplified"}).encode() for d in simplified],
        "PNG": [json.dumps({"image": image}).encode() for image in images],
    }


def run_load(url: str, bodies: list[bytes], clients: int, requests: int) -> dict:
    """``requests`` POSTs to ``url`` split over ``clients`` threads; latencies in ms and the error count."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(index: int, count: int) -> None:
        mine, failed = [], []
        with httpx.Client(timeout=30) as session:
            for i in range(count):
                body = bodies[(index * 7919 + i) % len(bodies)]
                start = time.perf_counter()
                try:
                    response = session.post(url, content=body, headers={"content-type": "application/json"})
                    if response.status_code != 200:
                        failed.append(f"HTTP {response.status_code}: {response.text[:100]}")
                except httpx.HTTPError as exc:
                    failed.append(type(exc).__name__)
                mine.append((time.perf_counter() - start) * 1000)
        with lock:
            latencies.extend(mine)
            errors.extend(failed)

    counts = [requests // clients + (i < requests % clients) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(i, n)) for i, n in enumerate(counts)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    ms = np.array(latencies)
    return {"n": len(ms), "rps": len(ms) / seconds, "p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99),
            "max": ms.max(), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="run folder or 'default'")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the real data folder")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--requests", type=int, default=400, help="requests per run (default 400)")
    parser.add_argument("--per-class", type=int, default=5, help="real drawings per class (default 5)")
    args = parser.parse_args()

    from quickdraw_mobile.modelref import load_model

    classes = load_model(args.model).labels
    bodies = request_bodies(args.shared, classes, args.per_class)
    port = free_port()
    server = start_server(args.model, port)
    url = f"http://127.0.0.1:{port}/predict"
    total_errors = 0
    try:
        run_load(url, bodies["raw strokes"], 2, 40)  # warm-up: imports, allocator, first forward passes
        print(f"qdm serve --model {args.model} on 127.0.0.1 ({len(classes)} classes); "
              f"{args.requests} requests per row\n")
        print(f"{'request':<20}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
        for kind, kind_bodies in bodies.items():
            for clients in (1, args.clients):
                r = run_load(url, kind_bodies, clients, args.requests)
                total_errors += len(r["errors"])
                print(f"{kind:<20}{clients:>8}{r['rps']:>9.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['max']:>9.1f}"
                      f"{len(r['errors']):>8}")
                for error in sorted(set(r["errors"]))[:3]:
                    print(f"    e.g. {error}")
        alive = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        print(f"\nserver alive after the load: {alive}; errors in all: {total_errors}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if total_errors or not alive:
        sys.exit(1)


if __name__ == "__main__":
    main()
