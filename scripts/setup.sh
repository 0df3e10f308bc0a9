#!/usr/bin/env bash
# Set up QuickDraw Mobile on a fresh machine: a virtual environment in .venv with the pinned stack.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/qdm --version

# The C++ runtime (native/: libqdm.so and qdm-native), built against the executorch package inside .venv when a
# C++ compiler is present. By hand: cmake -S native -B BUILD -G Ninja -DCMAKE_PREFIX_PATH=<executorch folder>.
if command -v c++ >/dev/null 2>&1; then
  EXECUTORCH_DIR=$(.venv/bin/python -c 'import importlib.util as u; print(u.find_spec("executorch").submodule_search_locations[0])')
  .venv/bin/cmake -S native -B native/build -G Ninja -DCMAKE_MAKE_PROGRAM="$PWD/.venv/bin/ninja" \
    -DCMAKE_PREFIX_PATH="$EXECUTORCH_DIR" >/dev/null
  .venv/bin/cmake --build native/build
else
  echo "note: no C++ compiler found: native/ (qdm-native) is not built" >&2
fi

# The drawing page of 'qdm serve' runs the model in the browser with onnxruntime-web (pinned in
# web/package-lock.json): its two files go into the package's static folder. Skipped when already in place.
VENDOR=src/quickdraw_mobile/serve/static/vendor
if command -v npm >/dev/null 2>&1; then
  if ! cmp -s web/package-lock.json "$VENDOR/package-lock.json"; then
    npm ci --prefix web --silent --no-audit --no-fund
    mkdir -p "$VENDOR"
    cp web/node_modules/onnxruntime-web/dist/ort.wasm.bundle.min.mjs \
       web/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm "$VENDOR"/
    cp web/package-lock.json "$VENDOR"/  # records which versions are in place
  fi
else
  echo "note: npm not found: the drawing page will guess through the server only" >&2
fi

# Debian's Chromium for the browser tests (tests/test_serve_browser.py); never a browser downloaded by playwright.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "note: could not install chromium: the browser tests will be skipped" >&2
  else
    echo "note: chromium not installed (needs root and apt): the browser tests will be skipped" >&2
  fi
fi
