// Service worker of the drawing page: once the page has loaded, it keeps working offline in browser mode.
// The page, its code, the class names, the model and onnxruntime-web are cached at install. Requests go to
// the network first (so a new model or page shows up at once) and fall back to the cache; the large, fixed
// vendor files come from the cache first. POST /predict is never cached.

const CACHE = "qdm-page-v1"; // bump when web/package-lock.json changes: the vendor files come from the cache first
const ASSETS = [
  "/",
  "/static/app.mjs",
  "/static/render.mjs",
  "/static/teach.mjs",
  "/static/style.css",
  "/model",
  "/classes",
  "/model.onnx",
  "/static/vendor/ort.wasm.bundle.min.mjs",
  "/static/vendor/ort-wasm-simd-threaded.wasm",
];

self.addEventListener("install", (event) => {
  // One by one: a server without a browser model (404) still gets the rest cached.
  event.waitUntil(
    caches.open(CACHE).then((cache) => Promise.all(ASSETS.map((url) => cache.add(url).catch(() => null)))),
  );
  self.skipWaiting();
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !ASSETS.includes(url.pathname)) {
    return;
  }
  if (url.pathname.startsWith("/static/vendor/")) {
    event.respondWith(caches.match(url.pathname).then((hit) => hit || fetch(event.request)));
    return;
  }
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(url.pathname, copy));
        }
        return response;
      })
      .catch(() => caches.match(url.pathname).then((hit) => hit || Response.error())),
  );
});
