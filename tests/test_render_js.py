"""The browser's stroke renderer (serve/static/render.mjs) against the Python one, run under node.

Every official pair of render_pairs.npz, and raw drawings of several classes (through the JavaScript port of
the official simplification), must give byte-identical 28x28 bitmaps, and identical simplified strokes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from quickdraw_mobile.data.render import render_many, simplify_raw

HARNESS = Path(__file__).with_name("render_harness.mjs")
RAW_CLASSES = ["cat", "apple", "house", "bicycle", "The Eiffel Tower", "zigzag", "yoga", "sun", "spider", "octopus"]

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def run_js(render: str, drawings: list) -> tuple[np.ndarray, list]:
    request = json.dumps({"render": render, "drawings": drawings})
    done = subprocess.run(["node", str(HARNESS)], input=request, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    bitmaps = np.array([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in answer["bitmaps"]])
    return bitmaps, answer["simplified"]


def test_js_renderer_is_byte_identical_on_the_official_pairs(shared_data):
    pairs = np.load(shared_data / "render_pairs.npz")
    drawings = [json.loads(str(text)) for text in pairs["drawing"]]
    js, _ = run_js("simplified", drawings)
    python = render_many(drawings)
    diff = np.abs(js.astype(np.int16) - python)
    identical = int((diff.max(axis=1) == 0).sum())
    print(f"\nJS vs Python renderer: {identical}/{len(drawings)} bitmaps byte-identical, max |diff| {diff.max()}")
    assert js.shape == python.shape
    assert identical == len(drawings)


def test_js_simplification_of_raw_strokes_matches_python(shared_data):
    drawings = []
    for name in RAW_CLASSES:
        lines = (shared_data / "raw" / f"{name}.ndjson").read_text().splitlines()
        drawings += [json.loads(line)["drawing"] for line in lines]
    js, js_simplified = run_js("raw", drawings)
    same_strokes = sum(a == simplify_raw(d) for a, d in zip(js_simplified, drawings, strict=True))
    python = render_many(drawings, fmt="raw")
    identical = int((js == python).all(axis=1).sum())
    print(f"\nraw drawings: {same_strokes}/{len(drawings)} simplified identically, "
          f"{identical}/{len(drawings)} bitmaps byte-identical")
    assert same_strokes == len(drawings)
    assert identical == len(drawings)


def test_js_handles_dots_and_single_strokes():
    drawings = [[[[100], [100]]], [[[0, 255], [0, 0]]], [[[5, 5], [9, 9]], [[200], [30]]]]
    js, _ = run_js("simplified", drawings)
    assert np.array_equal(js, render_many(drawings))
    raw = [[[[12.5], [40.25], [0]]], [[[3.0, 3.0, 3.0], [7.0, 7.0, 7.0]]]]  # one point; one place, thrice
    js, js_simplified = run_js("raw", raw)
    assert js_simplified == [simplify_raw(d) for d in raw]
    assert np.array_equal(js, render_many(raw, fmt="raw"))
