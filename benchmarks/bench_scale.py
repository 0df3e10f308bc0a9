"""The data path and training at the official scale: 345 class files of N drawings each, phase by phase.

Builds a loopback mirror of the official ``numpy_bitmap`` layout (345 files ``<class>.npy``, uint8 (rows, 784),
the official class names) from the real bitmaps in ../shared/quickdraw/numpy_bitmap and serves it over HTTP on
127.0.0.1. Those hold 52 classes of a few hundred to a few thousand drawings, so the mirror is the official
*layout and size*, not 345 distinct classes: class i of the 345 takes the real rows of source file i mod 52,
cycled (from an offset that differs for each reuse) up to the rows it needs. The mirror is built once with the
largest N; smaller N read a prefix of each file, as a download from Google's bucket does.

Then, for each N, every phase runs as its own child process, so each peak is that phase's alone:

    download  qdm data download --num-classes 345 --per-class N --base-url <mirror>   (builds the store)
    ingest    qdm data ingest <mirror folder> --per-class N         (the local-files path to a second store)
    split     Store.open + Store.splits() with the default SplitSpec: the train/val/test rows of every class
    train     train() of ``--model cnn`` for K steps (the CLI has no step limit; ``stop_after_steps`` does it)

``qdm data download`` builds the store itself (there is no separate ingest step after a download), so the
ingest phase measures the other way in: a folder of local official files into a second store.

For each: wall time (the phase in the child: the package imports it needs, torch for train, and its work; not
the interpreter's start), drawings (or training samples) per second, the peak resident memory (``VmHWM`` of the
child's /proc/self/status, not ``ru_maxrss``, which Linux carries over from the parent: see
quickdraw_mobile/bench/memory.py) and how it splits into anonymous memory (``RssAnon``: heap, arrays, tensors)
and file-backed pages (``RssFile``: shared libraries, torch's among them, and memory-mapped data, which is the
page cache), sampled by this process every 10 ms at the child's largest RSS; the resident pages of the data files
the child maps (mirror, store) are summed from /proc/<pid>/smaps every 0.5 s. The growth of the page cache over
the phase (``Cached`` in /proc/meminfo) is recorded too; it is machine-wide, so other work shows in it, and so is
the CPU the rest of the machine kept busy meanwhile (/proc/stat less the child's own CPU time): how contended the
timings were. Training samples/s are timed over the steps after the first fifth, a warm-up (``first_step_s`` in
the JSON: the time to the end of the first step, which holds opening the store, the splits and the epoch order).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_scale.py --per-class 1000,5000,20000 --out bench_scale

Writes --out/bench_scale.{md,json,png}. The work folder (mirror, stores, run folders) is deleted afterwards
unless --keep; 20,000 per class needs about 16 GB of disk (mirror + two stores of 5.4 GB).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = Path(os.environ.get("QDM_SHARED_DATA", REPO.parent / "shared" / "quickdraw")) / "numpy_bitmap"
PHASES = ("download", "ingest", "split", "train")
PIXELS = 784
CHUNK_ROWS = 8192  # rows written per step while building the mirror (6.4 MB)
SEND_CHUNK = 1 << 20
SAMPLE_EVERY = 0.01  # seconds between the parent's looks at the child's /proc/<pid>/status
SMAPS_EVERY = 50  # looks between two reads of /proc/<pid>/smaps (12 ms for a process that has imported torch)
MB = 1e6


# ------------------------------------------------------------------------------------------------ the mirror
def mirror_plan(source: Path, classes: list[str]) -> list[tuple[str, Path, int]]:
    """(class, real source file, first row) for each official class: source files cycled, a new offset per reuse."""
    files = sorted(source.glob("*.npy"))
    if not files:
        sys.exit(f"error: {source}: no <class>.npy files of real bitmaps (pass --source)")
    return [(name, files[i % len(files)], 101 * (i // len(files))) for i, name in enumerate(classes)]


def build_mirror(folder: Path, rows: int, plan: list[tuple[str, Path, int]]) -> None:
    """Write ``<class>.npy`` of ``rows`` real bitmaps for each class of ``plan`` (kept if already that size)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source, offset in plan:
        path = folder / f"{name}.npy"
        if path.exists() and np.load(path, mmap_mode="r").shape == (rows, PIXELS):
            continue
        real = np.load(source, mmap_mode="r")
        out = np.lib.format.open_memmap(path.with_suffix(".tmp"), mode="w+", dtype=np.uint8, shape=(rows, PIXELS))
        for start in range(0, rows, CHUNK_ROWS):
            stop = min(rows, start + CHUNK_ROWS)
            out[start:stop] = real[(offset + np.arange(start, stop)) % len(real)]
        out.flush()
        del out
        os.replace(path.with_suffix(".tmp"), path)


def _range_handler(root: Path):
    class Handler(BaseHTTPRequestHandler):
        """GET with ``Range: bytes=A-B``, like the official bucket; reads only the asked bytes of the file."""

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 (http.server's naming)
            name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            file = root / name
            if "/" in name or not file.is_file():
                return self.send_error(404)
            size = file.stat().st_size
            first, last = 0, size - 1
            asked = self.headers.get("Range")
            if asked:
                low, high = asked.removeprefix("bytes=").split("-")
                first, last = int(low), min(int(high), size - 1)
            self.send_response(206 if asked else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(last + 1 - first))
            if asked:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            with open(file, "rb") as fh, contextlib.suppress(BrokenPipeError, ConnectionResetError):
                fh.seek(first)
                left = last + 1 - first
                while left > 0:
                    chunk = fh.read(min(SEND_CHUNK, left))
                    self.wfile.write(chunk)
                    left -= len(chunk)

    return Handler


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (an ephemeral port); yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _range_handler(folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ------------------------------------------------------------------------------------------------ in the child
def _status() -> dict[str, int]:
    return _read_status(Path("/proc/self/status"))


def _read_status(path: Path) -> dict[str, int]:
    """The memory fields of a /proc/<pid>/status, in KiB."""
    fields = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0])
    return fields


def _cli(argv: list[str]) -> dict:
    from quickdraw_mobile.cli import main

    code = main(argv)
    if code != 0:
        raise SystemExit(f"qdm {' '.join(argv)} failed with exit status {code}")
    return {}


def _split(store: str) -> dict:
    from quickdraw_mobile.data.store import Store

    splits = Store.open(store).splits()
    return {"rows": {name: len(split) for name, split in splits.items()}}


def _train(store: str, out: str, steps: int, batch_size: int) -> dict:
    from quickdraw_mobile.train import load_config
    from quickdraw_mobile.train import step as step_module
    from quickdraw_mobile.train.loop import train

    stamps: list[float] = []
    plain_step = step_module.TrainStep.step

    def timed_step(self, *args, **kwargs):  # the bench's own clock on each optimizer step; the step is unchanged
        result = plain_step(self, *args, **kwargs)
        stamps.append(time.perf_counter())
        return result

    step_module.TrainStep.step = timed_step
    started = time.perf_counter()
    summary = train(load_config(None, model="cnn", batch_size=batch_size), store, out, progress=False,
                    stop_after_steps=steps)
    warmup = warmup_steps(len(stamps))
    timed = (len(stamps) - warmup) * batch_size
    return {"steps": len(stamps), "warmup_steps": warmup, "train_samples": summary["train_samples"],
            "threads": summary["threads"], "first_step_s": stamps[0] - started,
            "samples_per_s": timed / (stamps[-1] - stamps[warmup - 1]) if timed else None}


def warmup_steps(steps: int) -> int:
    """Steps left out of samples/s: the first fifth (at least one); the first tens run slower (measured: ~750
    against ~950 samples/s on 2 cores), while the kernels and the touched pages of the store warm up."""
    return max(1, steps // 5)


def run_child(phase: str, params: dict, result: Path) -> None:
    """In the child: do one phase, then write its time, its own figures and the kernel's peak RSS as JSON."""
    actions = {"download": lambda: _cli(params["argv"]), "ingest": lambda: _cli(params["argv"]),
               "split": lambda: _split(params["store"]),
               "train": lambda: _train(params["store"], params["out"], params["steps"], params["batch_size"])}
    baseline = _status()
    started = time.perf_counter()
    figures = actions[phase]()
    wall = time.perf_counter() - started
    status = _status()
    result.write_text(json.dumps({**figures, "wall_s": wall, "peak_rss_mb": status["VmHWM"] * 1024 / MB,
                                  "start_rss_mb": baseline["VmRSS"] * 1024 / MB,
                                  "end_anon_mb": status["RssAnon"] * 1024 / MB,
                                  "end_file_mb": status["RssFile"] * 1024 / MB}))


# ------------------------------------------------------------------------------------------------ in the parent
def _page_cache_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Cached:"):
            return int(line.split()[1])
    return 0


def _mapped_data_kb(pid: int, folder: str) -> int:
    """Resident KiB of the child's mappings of files under ``folder`` (the mirror, the stores): the data's pages."""
    total, counting = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line: range perms offset dev inode [path]
            counting = line.split(maxsplit=5)[-1].startswith(folder)
        elif counting and first == "Rss:":
            total += int(line.split()[1])
    return total


def _machine_cpu_s() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _watch(pid: int, folder: str, done: threading.Event, samples: list[dict]) -> None:
    """Sample the child's memory until ``done``: status at every look, the costlier smaps at every SMAPS_EVERY-th."""
    path, looks = Path(f"/proc/{pid}/status"), 0
    while not done.is_set():
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            sample = _read_status(path)
            if looks % SMAPS_EVERY == 0:
                sample["Data"] = _mapped_data_kb(pid, folder)
            samples.append(sample)
        looks += 1
        done.wait(SAMPLE_EVERY)


def measure_phase(phase: str, params: dict, work: Path) -> dict:
    """Run one phase in a child process, sampling its memory; the child's figures plus the memory split."""
    result, log = work / f"{phase}.result.json", work / f"{phase}.log"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", phase, json.dumps(params), str(result)]
    cache_before, busy_before, samples, done = _page_cache_kb(), _machine_cpu_s(), [], threading.Event()
    started = time.perf_counter()
    with open(log, "w") as log_file:
        child = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        watcher = threading.Thread(target=_watch, args=(child.pid, str(work.resolve()) + "/", done, samples),
                                   daemon=True)
        watcher.start()
        _, status, usage = os.wait4(child.pid, 0)  # the child's CPU time, to tell it from other work's
        code = child.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        watcher.join()
    if code != 0 or not result.exists():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        sys.exit(f"error: phase {phase} failed (exit status {code}); the end of {log}:\n{tail}")
    figures = json.loads(result.read_text())
    at_peak = max(samples, key=lambda s: s.get("VmRSS", 0), default={})
    figures.update({
        "anon_at_peak_mb": at_peak.get("RssAnon", 0) * 1024 / MB,
        "file_at_peak_mb": at_peak.get("RssFile", 0) * 1024 / MB,
        "max_anon_mb": max((s.get("RssAnon", 0) for s in samples), default=0) * 1024 / MB,
        "max_file_mb": max((s.get("RssFile", 0) for s in samples), default=0) * 1024 / MB,
        "max_data_mapped_mb": max((s.get("Data", 0) for s in samples), default=0) * 1024 / MB,
        "samples_taken": len(samples),
        "page_cache_growth_mb": (_page_cache_kb() - cache_before) * 1024 / MB,
        # CPU the rest of the machine used meanwhile (this process's server and sampler included), in cores
        "other_cpu_cores": max(0.0, _machine_cpu_s() - busy_before - usage.ru_utime - usage.ru_stime)
        / (time.perf_counter() - started),
    })
    return figures


def measure_size(n: int, url: str, mirror: Path, work: Path, steps: int, batch_size: int, workers: int) -> dict:
    """Every phase for N drawings per class; the stores and run folder of this N are removed afterwards."""
    store, copy, run = work / f"store-{n}", work / f"ingested-{n}", work / f"run-{n}"
    params = {
        "download": {"argv": ["data", "download", "--num-classes", "345", "--per-class", str(n), "--base-url", url,
                              "--out", str(store), "--workers", str(workers)]},
        "ingest": {"argv": ["data", "ingest", str(mirror), "--per-class", str(n), "--out", str(copy)]},
        "split": {"store": str(store)},
        "train": {"store": str(store), "out": str(run), "steps": steps, "batch_size": batch_size},
    }
    phases = {}
    for phase in PHASES:
        print(f"N={n:,}: {phase} ...", flush=True)
        phases[phase] = measure_phase(phase, params[phase], work)
        if phase == "ingest":
            shutil.rmtree(copy)  # its disk is needed for the next N; the downloaded store serves split and train
    drawings = 345 * n
    for phase in ("download", "ingest", "split"):
        phases[phase]["drawings_per_s"] = drawings / phases[phase]["wall_s"]
    return {"per_class": n, "drawings": drawings, "phases": phases}


# ------------------------------------------------------------------------------------------------ reporting
def markdown(results: list[dict]) -> str:
    head = ("| N per class | drawings | phase | wall s | drawings/s (train: samples/s) | peak RSS MB "
            "| anon at peak MB | file-backed at peak MB | of it data files, max MB | max anon MB "
            "| page cache growth MB (machine-wide) | other work, cores |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for size in results:
        for phase, f in size["phases"].items():
            rate = f["samples_per_s"] if phase == "train" else f["drawings_per_s"]
            lines.append(f"| {size['per_class']:,} | {size['drawings']:,} | {phase} | {f['wall_s']:.1f} "
                         f"| {rate:,.0f} | {f['peak_rss_mb']:.0f} | {f['anon_at_peak_mb']:.0f} "
                         f"| {f['file_at_peak_mb']:.0f} | {f['max_data_mapped_mb']:.0f} | {f['max_anon_mb']:.0f} "
                         f"| {f['page_cache_growth_mb']:,.0f} | {f['other_cpu_cores']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], out: Path) -> Path:
    from quickdraw_mobile.figures import figure, save

    fig = figure(figsize=(11, 4), layout="constrained")
    memory, wall = fig.subplots(1, 2)
    sizes = [r["per_class"] for r in results]
    for phase in PHASES:
        line = memory.plot(sizes, [r["phases"][phase]["peak_rss_mb"] for r in results], marker="o",
                           label=f"{phase}: peak RSS")[0]
        memory.plot(sizes, [r["phases"][phase]["anon_at_peak_mb"] for r in results], marker="x", linestyle="--",
                    color=line.get_color(), label=f"{phase}: anonymous at peak")
        wall.plot(sizes, [r["phases"][phase]["wall_s"] for r in results], marker="o", label=phase)
    for axes, title, unit in ((memory, "memory per phase (child process)", "MB"), (wall, "wall time", "s")):
        axes.set_xscale("log")
        axes.set_xlabel("drawings per class (345 classes)")
        axes.set_ylabel(unit)
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    memory.set_yscale("log")
    wall.set_yscale("log")
    return save(fig, out, dpi=120)


def report(results: list[dict], meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    note = (f"Mirror: the official layout and size (345 files `<class>.npy`, official names), made of the real "
            f"bitmaps of {meta['source_classes']} classes reused in turn (not 345 distinct classes), served on "
            f"127.0.0.1. Training: cnn, batch {meta['batch_size']}, {meta['steps']} steps, samples/s over the steps "
            f"after the first {warmup_steps(meta['steps'])}. 'other work': CPU cores the rest of the machine kept "
            f"busy during the phase (the mirror's server among them), a measure of contention. Memory is the child process's: peak RSS = VmHWM; anon "
            f"(RssAnon) and file-backed (RssFile: shared libraries such as torch's, plus memory-mapped data) at the "
            f"largest sampled RSS; 'data files' = the resident pages of the mirror/store files it maps (from "
            f"/proc/<pid>/smaps). Load average at the start: {meta['load_average']:.1f} "
            f"on {meta['cpus']} CPUs.\n\n")
    (out / "bench_scale.md").write_text(note + markdown(results))
    (out / "bench_scale.json").write_text(json.dumps({"meta": meta, "sizes": results}, indent=2) + "\n")
    plot(results, out / "bench_scale.png")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_child(sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", default="1000,5000,20000", help="comma-separated N (drawings per class)")
    parser.add_argument("--steps", type=int, default=100,
                        help="training steps per N (default 100, the first fifth not timed; at least 2)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=4, help="qdm data download --workers (default 4)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of real <class>.npy bitmaps")
    parser.add_argument("--out", type=Path, default=Path("bench_scale"), help="where the table, JSON and plot go")
    parser.add_argument("--work", type=Path, help="work folder for the mirror and stores (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (mirror, stores, run folders)")
    args = parser.parse_args()
    sizes = sorted({int(n) for n in args.per_class.split(",")})
    if args.steps < 2 or sizes[0] < 1:
        sys.exit("error: --steps must be at least 2 and every N positive")
    work = args.work or Path(tempfile.mkdtemp(prefix="qdm-bench-scale-"))
    try:
        results, meta = run_all(args, sizes, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(results, meta, args.out)
    print(markdown(results), end="")
    print(f"wrote {args.out / 'bench_scale.md'}, .json, .png")


def run_all(args: argparse.Namespace, sizes: list[int], work: Path) -> tuple[list[dict], dict]:
    from quickdraw_mobile.data.classes import all_classes

    plan = mirror_plan(args.source, list(all_classes()))
    need = 3 * 345 * sizes[-1] * PIXELS  # mirror + downloaded store + ingested store
    work.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(work).free < need * 1.1:
        sys.exit(f"error: {work}: needs about {need / 1e9:.1f} GB free for N={sizes[-1]:,}")
    meta = {"classes": 345, "source_classes": len({source for _, source, _ in plan}), "steps": args.steps,
            "batch_size": args.batch_size, "workers": args.workers, "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0], "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    print(f"building the mirror: 345 files of {sizes[-1]:,} rows from {meta['source_classes']} real classes "
          f"(the official layout and size, not 345 distinct classes) ...", flush=True)
    started = time.perf_counter()
    build_mirror(work / "mirror", sizes[-1], plan)
    meta["mirror_build_s"] = time.perf_counter() - started
    results = []
    with serve(work / "mirror") as url:
        for n in sizes:
            results.append(measure_size(n, url, work / "mirror", work, args.steps, args.batch_size, args.workers))
            if not args.keep:
                shutil.rmtree(work / f"store-{n}")
                shutil.rmtree(work / f"run-{n}")
    meta["load_average_end"] = os.getloadavg()[0]
    return results, meta


if __name__ == "__main__":
    main()
