// The drawing page: record strokes with pointer events (mouse, touch, pen), guess while drawing, and either
// ask the server (POST /predict with raw strokes) or run the INT8 ONNX model here with onnxruntime-web.
// Both paths see the same 28x28 bitmap: the server simplifies and renders raw strokes with the training
// renderer, and render.mjs is a byte-exact port of it.

import { PIXELS, SIDE, renderRaw } from "./render.mjs";

const TOP_K = 5;
const MIN_INTERVAL_MS = 150; // at most one guess this often while drawing; the last state is always guessed
const ORT_MODULE = "/static/vendor/ort.wasm.bundle.min.mjs";

const pad = document.getElementById("pad");
const seen = document.getElementById("seen");
const topList = document.getElementById("top");
const statusLine = document.getElementById("status");
const modelLine = document.getElementById("model");
const inBrowser = document.getElementById("in-browser");
const ctx = pad.getContext("2d");

let strokes = []; // [{x: [], y: [], t: []}] in CSS pixels of the canvas and milliseconds
let active = null; // {pointerId, stroke} while a stroke is drawn
let startTime = null; // t = 0 at the drawing's first point, as in the official raw data
let version = 0; // bumped on every change of the drawing
let info = null; // GET /model
let labels = null; // GET /classes
let session = null; // onnxruntime-web session, made on first use
let ort = null;
let modeNote = ""; // what the status line says about the mode when all is well

// ----------------------------------------------------------------------------------------------- drawing
function resizePad() {
  const rect = pad.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const old = pad.dataset.cssWidth ? Number(pad.dataset.cssWidth) : rect.width;
  if (old !== rect.width && old > 0) {
    const k = rect.width / old; // keep the drawing where it was on a resized canvas
    for (const s of strokes) {
      s.x = s.x.map((v) => v * k);
      s.y = s.y.map((v) => v * k);
    }
  }
  pad.dataset.cssWidth = String(rect.width);
  pad.width = Math.round(rect.width * dpr);
  pad.height = Math.round(rect.height * dpr);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#20232a";
  ctx.fillStyle = "#20232a";
  ctx.lineWidth = Math.max(3, rect.width / 90);
  redraw();
}

function redraw() {
  ctx.clearRect(0, 0, pad.width, pad.height);
  for (const s of strokes) {
    ctx.beginPath();
    ctx.moveTo(s.x[0], s.y[0]);
    for (let i = 1; i < s.x.length; i++) ctx.lineTo(s.x[i], s.y[i]);
    if (s.x.length === 1) ctx.lineTo(s.x[0] + 0.01, s.y[0]); // a dot
    ctx.stroke();
  }
}

function localPoint(event) {
  const rect = pad.getBoundingClientRect();
  return [event.clientX - rect.left, event.clientY - rect.top];
}

function addPoint(stroke, event) {
  const [x, y] = localPoint(event);
  const last = stroke.x.length - 1;
  if (last >= 0 && stroke.x[last] === x && stroke.y[last] === y) return;
  startTime ??= event.timeStamp;
  stroke.x.push(x);
  stroke.y.push(y);
  stroke.t.push(Math.round(event.timeStamp - startTime));
  if (last >= 0) {
    ctx.beginPath();
    ctx.moveTo(stroke.x[last], stroke.y[last]);
    ctx.lineTo(x, y);
    ctx.stroke();
  } else {
    ctx.beginPath();
    ctx.arc(x, y, ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
  }
}

pad.addEventListener("pointerdown", (event) => {
  if (active || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  const stroke = { x: [], y: [], t: [] };
  strokes.push(stroke);
  active = { pointerId: event.pointerId, stroke };
  addPoint(stroke, event);
  changed();
});

pad.addEventListener("pointermove", (event) => {
  if (!active || event.pointerId !== active.pointerId) return;
  event.preventDefault();
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of events.length ? events : [event]) addPoint(active.stroke, e);
  changed();
});

function endStroke(event) {
  if (!active || event.pointerId !== active.pointerId) return;
  active = null;
  changed();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
// Older mobile browsers scroll on touchmove unless told not to, whatever touch-action says.
pad.addEventListener("touchmove", (event) => event.preventDefault(), { passive: false });

function undo() {
  if (active || !strokes.length) return;
  strokes.pop();
  if (!strokes.length) startTime = null;
  redraw();
  changed();
}

function clear() {
  if (active) return;
  strokes = [];
  startTime = null;
  redraw();
  changed();
}

document.getElementById("undo").addEventListener("click", undo);
document.getElementById("clear").addEventListener("click", clear);
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "z") undo();
  else if (event.key === "Escape") clear();
});

/** The drawing in the official raw format: [[x...], [y...], [t...]] per stroke. */
function rawDrawing() {
  return strokes.filter((s) => s.x.length).map((s) => [s.x.slice(), s.y.slice(), s.t.slice()]);
}

// ------------------------------------------------------------------------------------------ guessing
let inFlight = false;
let pending = false;
let timer = null;
let lastStart = -Infinity;

function changed() {
  version += 1;
  document.body.dataset.version = String(version);
  schedule();
}

function schedule() {
  pending = true;
  if (inFlight || timer) return;
  timer = setTimeout(guess, Math.max(0, lastStart + MIN_INTERVAL_MS - performance.now()));
}

async function guess() {
  timer = null;
  if (!pending) return;
  pending = false;
  inFlight = true;
  lastStart = performance.now();
  const asked = version;
  const drawing = rawDrawing();
  try {
    const answer = drawing.length ? await classify(drawing) : null;
    show(answer, asked);
    statusLine.textContent = modeNote; // clears an earlier error
  } catch (error) {
    statusLine.textContent = `error: ${error.message}`;
    document.body.dataset.shown = String(asked);
  } finally {
    inFlight = false;
    if (pending) schedule();
  }
}

async function classify(drawing) {
  if (document.body.dataset.mode === "browser") return classifyHere(drawing);
  let response;
  try {
    response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ drawing, format: "raw", top_k: TOP_K, return_bitmap: true }),
    });
  } catch (error) {
    if (!info?.browser_model) throw new Error("the server cannot be reached");
    await setMode("browser", "the server cannot be reached: guessing in the browser");
    return classifyHere(drawing);
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return { top: body.top, bitmap: Uint8Array.from(body.bitmap.flat()) };
}

async function loadSession() {
  if (session) return session;
  ort ??= await import(ORT_MODULE);
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one core is plenty for this model
  const response = await fetch(info.browser_model.url);
  if (!response.ok) throw new Error(`the model cannot be loaded (HTTP ${response.status})`);
  const bytes = await response.arrayBuffer();
  session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"] });
  return session;
}

async function classifyHere(drawing) {
  const bitmap = renderRaw(drawing);
  const model = await loadSession();
  const spec = info.browser_model;
  const x = new Float32Array(PIXELS);
  for (let i = 0; i < PIXELS; i++) x[i] = bitmap[i] / 127.5 - 1.0; // (p/255 - 0.5) / 0.5, as in training
  const outputs = await model.run({ [spec.input]: new ort.Tensor("float32", x, [1, 1, SIDE, SIDE]) });
  return { top: topK(outputs[spec.output].data, TOP_K), bitmap };
}

/** Softmax, then the k best classes; ties go to the lower class index, as on the server. */
function topK(logits, k) {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const exp = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exp.reduce((a, b) => a + b, 0);
  const order = exp.map((_, i) => i).sort((a, b) => exp[b] - exp[a] || a - b);
  return order.slice(0, k).map((i) => ({ class: labels[i], prob: exp[i] / sum }));
}

function show(answer, asked) {
  if (asked < Number(document.body.dataset.shown || 0)) return; // an older answer came back late
  document.body.dataset.shown = String(asked);
  topList.replaceChildren();
  if (!answer) {
    topList.innerHTML = '<li class="hint">Draw something: a cat, a house, a star…</li>';
    seen.getContext("2d").clearRect(0, 0, SIDE, SIDE);
    return;
  }
  for (const { class: name, prob } of answer.top) {
    const item = document.createElement("li");
    item.dataset.class = name;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${(100 * prob).toFixed(1)}%`;
    const label = document.createElement("span");
    label.textContent = name;
    const value = document.createElement("span");
    value.textContent = `${(100 * prob).toFixed(1)}%`;
    item.append(bar, label, value);
    topList.append(item);
  }
  const image = new ImageData(SIDE, SIDE);
  for (let i = 0; i < PIXELS; i++) {
    const grey = 255 - answer.bitmap[i];
    image.data.set([grey, grey, grey, 255], 4 * i);
  }
  seen.getContext("2d").putImageData(image, 0, 0);
}

// ----------------------------------------------------------------------------------------------- modes
async function setMode(mode, note) {
  document.body.dataset.mode = mode;
  inBrowser.checked = mode === "browser";
  localStorage.setItem("qdm-mode", mode);
  if (mode === "browser") {
    statusLine.textContent = "loading the model into the browser…";
    await loadSession();
    const kb = Math.round(info.browser_model.bytes / 1024);
    modeNote = note || `guessing in the browser (INT8 ONNX, ${kb} kB, WASM)`;
  } else {
    modeNote = note || "guessing on the server";
  }
  statusLine.textContent = modeNote;
  document.body.dataset.ready = "true";
}

inBrowser.addEventListener("change", async () => {
  inBrowser.disabled = true;
  try {
    await setMode(inBrowser.checked ? "browser" : "server");
  } catch (error) {
    statusLine.textContent = `cannot run in the browser: ${error.message}`;
    document.body.dataset.mode = "server";
    inBrowser.checked = false;
  } finally {
    inBrowser.disabled = !info?.browser_model;
  }
  changed();
});

async function start() {
  new ResizeObserver(resizePad).observe(pad);
  [info, labels] = await Promise.all([
    fetch("/model").then((r) => r.json()),
    fetch("/classes").then((r) => r.json()).then((body) => body.classes),
  ]);
  const millions = (info.params / 1e6).toFixed(2);
  modelLine.textContent = `${info.name}: ${info.classes} classes, ${millions}M parameters (${info.renderer})`;
  inBrowser.disabled = !info.browser_model;
  const wanted = info.browser_model && localStorage.getItem("qdm-mode") === "browser" ? "browser" : "server";
  await setMode(wanted).catch(() => setMode("server"));
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js").then(async () => {
      await navigator.serviceWorker.ready;
      document.body.dataset.offline = "ready";
    });
  }
}

window.qdm = { rawDrawing, setMode }; // for tests and the curious: the strokes as sent to /predict
start().catch((error) => {
  statusLine.textContent = `cannot start: ${error.message}`;
});
