// The drawing page: record strokes with pointer events (mouse, touch, pen), guess while drawing, and either
// ask the server (POST /predict with raw strokes) or run the INT8 ONNX model here with onnxruntime-web.
// Both paths see the same 28x28 bitmap: the server simplifies and renders raw strokes with the training
// renderer, and render.mjs is a byte-exact port of it.
// Teach mode: name a doodle, draw it a few times, and it is guessed from then on: taught to the server
// (POST /classes) in server mode, or in browser mode kept in this browser (teach.mjs) and scored from the
// browser model's "features" output.

import { PIXELS, SIDE, renderRaw } from "./render.mjs";
import { checkName, loadTaught, prototypeOf, saveTaught, taughtLogits } from "./teach.mjs";

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
let labels = null; // GET /classes: classes
let origins = []; // GET /classes: [{name, origin: trained | extended | taught, drawings}]
let taughtHere = []; // classes taught in this browser: [{name, drawings, prototype}] (teach.mjs)
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
  if (teaching) teachSave.disabled = !strokes.length;
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

/** The browser model on one drawing: its bitmap, logits and (when the model has them) pooled features. */
async function runHere(drawing) {
  const bitmap = renderRaw(drawing);
  const model = await loadSession();
  const spec = info.browser_model;
  const x = new Float32Array(PIXELS);
  for (let i = 0; i < PIXELS; i++) x[i] = bitmap[i] / 127.5 - 1.0; // (p/255 - 0.5) / 0.5, as in training
  const outputs = await model.run({ [spec.input]: new ort.Tensor("float32", x, [1, 1, SIDE, SIDE]) });
  return { bitmap, logits: outputs[spec.output].data, features: spec.features && outputs[spec.features].data };
}

async function classifyHere(drawing) {
  const { bitmap, logits, features } = await runHere(drawing);
  // The model's own classes (the server's taught ones are not in the browser model), then this browser's.
  const names = labels.slice(0, logits.length);
  let all = Array.from(logits);
  if (features && taughtHere.length && info.teach?.feature_mean) {
    all = all.concat(taughtLogits(features, info.teach, taughtHere));
    names.push(...taughtHere.map((c) => c.name));
  }
  return { top: topK(all, names, TOP_K), bitmap };
}

/** Softmax, then the k best classes; ties go to the lower class index, as on the server. */
function topK(logits, names, k) {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const exp = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exp.reduce((a, b) => a + b, 0);
  const order = exp.map((_, i) => i).sort((a, b) => exp[b] - exp[a] || a - b);
  return order.slice(0, k).map((i) => ({ class: names[i], prob: exp[i] / sum }));
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

// ----------------------------------------------------------------------------------------------- teaching
const teachSection = document.querySelector("section.teach");
const teachForm = document.getElementById("teach-form");
const teachName = document.getElementById("teach-name");
const teachSteps = document.getElementById("teach-steps");
const teachStep = document.getElementById("teach-step");
const teachSave = document.getElementById("teach-save");
const teachNote = document.getElementById("teach-note");
const teachInBrowser = document.getElementById("teach-in-browser");
const knownCount = document.getElementById("known-count");
const knownList = document.getElementById("known-list");

let teaching = null; // {name, mode, drawings: [raw drawing, ...]} while a class is being drawn
let token = null; // Bearer token for POST/DELETE /classes, from the page's ?token= (kept for this tab only)

function setTeachState(state, note = "") {
  document.body.dataset.teach = state; // idle | drawing | sending | done | failed (tests wait on it)
  teachNote.textContent = note;
}

/** fetch() with the token, if the page was given one; a non-2xx answer throws the server's one-line detail. */
async function callServer(method, path, body) {
  const headers = body ? { "Content-Type": "application/json" } : {};
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.detail || `HTTP ${response.status}`);
  return answer;
}

/** Can this browser learn classes: a browser model with a features output, and the model's teach parameters? */
function canLearnHere() {
  return Boolean(info.browser_model?.features && info.teach.feature_mean);
}

/** Why teaching in ``mode`` cannot start, or "" when it can; the offer of browser mode goes with it. */
function teachBlocker(mode) {
  const canInBrowser = canLearnHere();
  teachInBrowser.hidden = true;
  let problem = "";
  if (mode === "browser" && !canInBrowser) {
    problem = `this browser cannot learn: ${info.teach.unavailable || "the browser model has no features output"}`;
  } else if (mode === "server" && !info.teach.enabled) {
    problem = "the server does not learn new classes (it was not started with qdm serve --teach)";
  } else if (mode === "server" && info.teach.token_required && !token) {
    problem = "the server needs a token to learn (open the page with ?token=…)";
  }
  if (problem && mode === "server" && canInBrowser) {
    teachInBrowser.hidden = false;
    problem += "; this browser can learn it instead";
  }
  return problem;
}

function knownNames() {
  return [...origins.map((o) => o.name), ...taughtHere.map((c) => c.name)];
}

function startTeaching() {
  if (active) return;
  const mode = document.body.dataset.mode;
  const problem = teachBlocker(mode);
  if (problem) return setTeachState("failed", problem);
  const taughtCount = mode === "server" ? origins.filter((o) => o.origin === "taught").length : taughtHere.length;
  const name = checkName(teachName.value, knownNames(), info.teach.max_classes, taughtCount);
  if (name instanceof Error) return setTeachState("failed", name.message);
  teaching = { name, mode, drawings: [] };
  teachForm.hidden = true;
  teachSteps.hidden = false;
  clear();
  showStep();
  pad.parentElement.scrollIntoView({ block: "nearest" }); // on a phone the form sits below the canvas
}

function showStep() {
  const k = info.teach.min_drawings;
  const where = teaching.mode === "server" ? "the server" : "this browser";
  setTeachState("drawing", `${where} learns it from ${k} drawings`);
  teachStep.textContent = `Draw “${teaching.name}”: drawing ${teaching.drawings.length + 1} of ${k}`;
  teachSave.textContent = teaching.drawings.length + 1 < k ? "Next drawing" : "Learn it";
  teachSave.disabled = !strokes.length;
}

function stopTeaching() {
  teaching = null;
  teachForm.hidden = false;
  teachSteps.hidden = true;
}

async function saveDrawing() {
  if (!teaching || active || !strokes.length) return;
  teaching.drawings.push(rawDrawing());
  clear();
  if (teaching.drawings.length < info.teach.min_drawings) return showStep();
  const { name, mode, drawings } = teaching;
  stopTeaching();
  setTeachState("sending", `learning “${name}”…`);
  try {
    if (mode === "server") await callServer("POST", "/classes", { name, drawings, format: "raw" });
    else await learnHere(name, drawings);
    await refreshClasses();
    teachName.value = "";
    setTeachState("done", `learnt “${name}” from ${drawings.length} drawings: draw it!`);
  } catch (error) {
    setTeachState("failed", `“${name}” was not learnt: ${error.message}`);
  }
}

async function learnHere(name, drawings) {
  const rows = [];
  for (const drawing of drawings) rows.push((await runHere(drawing)).features);
  taughtHere.push({ name, drawings: drawings.length, prototype: prototypeOf(rows, info.teach.feature_mean) });
  saveTaught(info.browser_model.sha256, taughtHere);
}

async function forget(name, where) {
  try {
    if (where === "server") await callServer("DELETE", `/classes/${encodeURIComponent(name)}`);
    else {
      taughtHere = taughtHere.filter((c) => c.name !== name);
      saveTaught(info.browser_model.sha256, taughtHere);
    }
    await refreshClasses();
    setTeachState("idle", `forgot “${name}”`);
  } catch (error) {
    setTeachState("failed", `“${name}” was not forgotten: ${error.message}`);
  }
}

/** GET /classes's answer: the class names, and where each came from (a server older than teaching: trained). */
function takeClasses(body) {
  labels = body.classes;
  origins = body.origins || labels.map((name) => ({ name, origin: "trained", drawings: null }));
}

/** GET /classes again, then the list of what the model knows, and a fresh guess that may use it. */
async function refreshClasses() {
  takeClasses(await fetch("/classes").then((r) => r.json()));
  showKnown();
  changed();
}

const ORIGIN_TEXT = { here: "taught in this browser", taught: "taught to the server", extended: "extended" };

function showKnown() {
  const here = taughtHere.map((c) => ({ name: c.name, origin: "here", drawings: c.drawings }));
  const rank = { here: 0, taught: 1, extended: 2, trained: 3 };
  const all = [...here, ...origins].sort((a, b) => rank[a.origin] - rank[b.origin]);
  knownCount.textContent = `${all.length} classes`;
  knownList.replaceChildren(...all.map(({ name, origin, drawings }) => {
    const item = document.createElement("li");
    item.dataset.class = name;
    item.dataset.origin = origin;
    const label = document.createElement("span");
    label.textContent = name;
    item.append(label);
    if (origin !== "trained") {
      const tag = document.createElement("small");
      tag.textContent = ORIGIN_TEXT[origin] + (drawings ? ` (${drawings} drawings)` : "");
      item.append(tag);
    }
    if (origin === "here" || (origin === "taught" && info.teach.enabled)) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Forget";
      button.setAttribute("aria-label", `forget ${name}`);
      button.addEventListener("click", () => forget(name, origin === "here" ? "here" : "server"));
      item.append(button);
    }
    return item;
  }));
}

teachForm.addEventListener("submit", (event) => {
  event.preventDefault();
  startTeaching();
});
teachSave.addEventListener("click", saveDrawing);
document.getElementById("teach-cancel").addEventListener("click", () => {
  stopTeaching();
  setTeachState("idle", "");
});

/** The token of ?token=, kept for this tab and taken out of the address (so it is not bookmarked or shared). */
function takeToken() {
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem("qdm-token", params.get("token"));
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
  return sessionStorage.getItem("qdm-token");
}

function startTeach() {
  token = takeToken();
  if (!info.teach) return; // a server older than teaching
  if (canLearnHere()) {
    const width = info.teach.feature_mean.length;
    taughtHere = loadTaught(info.browser_model.sha256).filter((c) => c.prototype.length === width);
  }
  teachSection.hidden = false;
  setTeachState("idle");
  showKnown();
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

/** Switch to browser mode (``toBrowser``) or server mode from the page's controls; false when it failed. */
async function chooseMode(toBrowser) {
  inBrowser.disabled = true;
  let switched = true;
  try {
    await setMode(toBrowser ? "browser" : "server");
  } catch (error) {
    statusLine.textContent = `cannot run in the browser: ${error.message}`;
    document.body.dataset.mode = "server";
    inBrowser.checked = false;
    switched = false;
  } finally {
    inBrowser.disabled = !info?.browser_model;
  }
  changed();
  return switched;
}

inBrowser.addEventListener("change", () => chooseMode(inBrowser.checked));
teachInBrowser.addEventListener("click", async () => {
  teachInBrowser.hidden = true;
  if (await chooseMode(true)) startTeaching();
});

async function start() {
  new ResizeObserver(resizePad).observe(pad);
  let classes;
  [info, classes] = await Promise.all([fetch("/model").then((r) => r.json()), fetch("/classes").then((r) => r.json())]);
  takeClasses(classes);
  const millions = (info.params / 1e6).toFixed(2);
  modelLine.textContent = `${info.name}: ${info.classes} classes, ${millions}M parameters (${info.renderer})`;
  inBrowser.disabled = !info.browser_model;
  const wanted = info.browser_model && localStorage.getItem("qdm-mode") === "browser" ? "browser" : "server";
  startTeach();
  await setMode(wanted).catch(() => setMode("server"));
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js").then(async () => {
      await navigator.serviceWorker.ready;
      document.body.dataset.offline = "ready";
    });
  }
}

// For tests and the curious: the strokes as sent to /predict, the mode, and what this browser was taught.
window.qdm = { rawDrawing, setMode, taughtHere: () => taughtHere, knownNames: () => knownNames() };
start().catch((error) => {
  statusLine.textContent = `cannot start: ${error.message}`;
});
