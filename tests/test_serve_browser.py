"""The drawing page in a real browser: Debian's Chromium, headless, driven by Playwright.

A real drawing from simplified/ is replayed as mouse strokes (and, on a phone-sized page, as touch strokes);
the class the page shows must be the API's answer for the very strokes the page recorded, both when the page
asks the server and when it runs the INT8 ONNX model itself (onnxruntime-web, WASM). Screenshots go to the
test's tmp folder (printed with -s). Skipped only where Chromium or Playwright is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from quickdraw_mobile.data.render import render_strokes
from quickdraw_mobile.inference import logits_for_pixels
from quickdraw_mobile.serve import browser_model_for, create_app

MODEL = os.environ.get("QDM_TEST_MODEL", "default")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SETTLED = "document.body.dataset.shown === document.body.dataset.version"

if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (scripts/setup.sh installs Debian's 'chromium' when run as root with apt)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


# ---------------------------------------------------------------------------------------------- fixtures
@contextmanager
def serving(app):
    """``app`` served by uvicorn on a free loopback port, in a thread of this process: its URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uvicorn_server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(served_model, browser_model):
    """The app (teaching off) served by uvicorn on a free loopback port, in a thread of this process."""
    with serving(create_app(served_model, browser_model=browser_model)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def drawing(shared_data, served_model):
    """A real drawing from simplified/ that the model recognises with a clear margin: (word, strokes)."""
    for word in served_model.labels:
        path = shared_data / "simplified" / f"{word}.ndjson"
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[:5]:
            strokes = json.loads(line)["drawing"]
            if sum(len(s[0]) for s in strokes) > 60:
                continue  # keep the replay short
            logits = logits_for_pixels(served_model.model, render_strokes(strokes)[None])
            probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()[0]
            first, second = np.sort(probs)[::-1][:2]
            if served_model.labels[int(probs.argmax())] == word and first - second > 0.5:
                return word, strokes
    pytest.skip("no real drawing the model recognises clearly")


# ----------------------------------------------------------------------------------------------- helpers
def _api(server: str, strokes: list) -> dict:
    import httpx

    response = httpx.post(f"{server}/predict", json={"drawing": strokes, "format": "raw", "return_bitmap": True})
    assert response.status_code == 200, response.text
    return response.json()


def _canvas_points(page, strokes: list, margin: float = 0.1) -> list[list[tuple[float, float]]]:
    """Simplified coordinates (0..255) -> page coordinates inside the drawing canvas."""
    box = page.locator("#pad").bounding_box()
    side = min(box["width"], box["height"]) * (1 - 2 * margin) / 255
    left, top = box["x"] + box["width"] * margin, box["y"] + box["height"] * margin
    return [[(left + x * side, top + y * side) for x, y in zip(xs, ys, strict=True)] for xs, ys in strokes]


def _draw_with_mouse(page, strokes: list) -> None:
    for points in _canvas_points(page, strokes):
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=3)
        page.mouse.up()


def _swipe(page, points: list[tuple[float, float]]) -> None:
    """One finger along ``points``, through the DevTools protocol (Playwright's touchscreen only taps)."""
    cdp = page.context.new_cdp_session(page)
    for kind, (x, y) in [("touchStart", points[0]), *[("touchMove", p) for p in points[1:]]]:
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def _draw_with_finger(page, strokes: list) -> None:
    for points in _canvas_points(page, strokes):
        _swipe(page, points)


def _shown(page) -> tuple[str, list[int]]:
    """The page's top-1 class and the 28x28 bitmap it shows (ink 255 on 0), once its guess is up to date."""
    page.wait_for_function(SETTLED, timeout=20_000)
    top1 = page.locator("#top li").first.get_attribute("data-class")
    greys = page.evaluate("""() => {
        const data = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
        return Array.from({length: 784}, (_, i) => 255 - data[4 * i]);
    }""")
    return top1, greys


def _open(browser, server: str, **context_options):
    context = browser.new_context(**context_options)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server)
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=20_000)
    return context, page, errors


# ------------------------------------------------------------------------------------------------- tests
def test_browser_model_is_exported_once_and_served(browser_model, server):
    import hashlib

    import httpx

    before = browser_model.stat().st_mtime_ns
    assert browser_model_for(MODEL, cache_dir=browser_model.parents[2]) == browser_model
    assert browser_model.stat().st_mtime_ns == before  # found in the cache, not exported again
    info = httpx.get(f"{server}/model").json()["browser_model"]
    assert info["quant"] == "int8" and info["input"] == "pixels"
    served = httpx.get(f"{server}{info['url']}").content
    assert len(served) == info["bytes"] and hashlib.sha256(served).hexdigest() == info["sha256"]


def test_server_mode_shows_the_api_answer(browser, server, drawing, tmp_path):
    word, strokes = drawing
    context, page, errors = _open(browser, server, viewport={"width": 1100, "height": 760})
    _draw_with_mouse(page, strokes)
    top1, greys = _shown(page)
    recorded = page.evaluate("window.qdm.rawDrawing()")
    assert len(recorded) == len(strokes)
    answer = _api(server, recorded)
    assert top1 == answer["top"][0]["class"] == word
    assert greys == np.array(answer["bitmap"]).reshape(-1).tolist()
    page.screenshot(path=tmp_path / "server-mode.png")
    print(f"\nscreenshot: {tmp_path / 'server-mode.png'} ({word} -> {top1})")
    assert errors == []
    context.close()


def test_browser_mode_runs_the_int8_model_in_wasm(browser, server, drawing, tmp_path):
    word, strokes = drawing
    context, page, errors = _open(browser, server, viewport={"width": 1100, "height": 760})
    predict_calls: list[str] = []
    page.on("request", lambda request: predict_calls.append(request.url) if "/predict" in request.url else None)
    page.locator("#in-browser").check()
    page.wait_for_function("document.body.dataset.mode === 'browser'")
    page.wait_for_function("document.body.dataset.ready === 'true'")
    _draw_with_mouse(page, strokes)
    top1, greys = _shown(page)
    assert predict_calls == []  # the guess was made in the page
    answer = _api(server, page.evaluate("window.qdm.rawDrawing()"))
    assert top1 == answer["top"][0]["class"] == word
    assert greys == np.array(answer["bitmap"]).reshape(-1).tolist()  # the JS renderer's bitmap is the server's
    assert "in the browser" in page.locator("#status").inner_text()
    page.screenshot(path=tmp_path / "browser-mode.png")
    print(f"\nscreenshot: {tmp_path / 'browser-mode.png'} ({word} -> {top1})")

    # Offline: once the service worker has cached everything, a reload without network still guesses.
    page.wait_for_function("document.body.dataset.offline === 'ready'", timeout=20_000)
    context.set_offline(True)
    page.reload()
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=20_000)
    assert page.evaluate("document.body.dataset.mode") == "browser"
    _draw_with_mouse(page, strokes)
    offline_top1, _ = _shown(page)
    assert offline_top1 == top1
    assert errors == []
    context.close()


def test_phone_touch_drawing_does_not_scroll(browser, server, drawing, tmp_path):
    word, strokes = drawing
    context, page, errors = _open(browser, server, viewport={"width": 390, "height": 700}, device_scale_factor=3,
                                  is_mobile=True, has_touch=True)
    _draw_with_finger(page, strokes)
    top1, _ = _shown(page)
    page.screenshot(path=tmp_path / "phone.png")
    assert page.evaluate("window.scrollY") == 0  # the page is taller than the screen, yet did not move
    recorded = page.evaluate("window.qdm.rawDrawing()")
    assert len(recorded) == len(strokes)
    assert top1 == _api(server, recorded)["top"][0]["class"] == word
    # The same swipe outside the canvas does scroll: the zero above is the canvas's doing.
    box = page.locator("#top").bounding_box()
    _swipe(page, [(box["x"] + 20, box["y"] + box["height"] - 5 * k) for k in range(20)])
    page.wait_for_function("window.scrollY > 0")
    page.locator("#undo").tap()
    page.wait_for_function(SETTLED)
    assert len(page.evaluate("window.qdm.rawDrawing()")) == len(strokes) - 1
    print(f"\nscreenshot: {tmp_path / 'phone.png'} ({word} -> {top1})")
    assert errors == []
    context.close()
