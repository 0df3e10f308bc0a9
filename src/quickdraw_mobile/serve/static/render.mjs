// Strokes -> 28x28 bitmaps in the browser: a step-by-step port of quickdraw_mobile/data/render.py (its
// docstring explains every step and constant). The arithmetic follows the Python code operation by operation,
// so that the same strokes give the same bytes (tests/test_render_js.py checks it on the official pairs):
// the same sub-pixel pieces and windows, the same order of sums and products, numpy's interp, Python's
// round-half-to-even, and two hypot functions that round like the ones the Python side calls.

export const RENDERER_VERSION = "qdm-render-1";
export const SIDE = 28;
export const PIXELS = SIDE * SIDE;
export const SIMPLIFIED_MAX = 255;
const FRAME = 256.0;
const LINE_WIDTH = 16.0;
const PADDING = 16.0;
const SCALE = SIDE / (FRAME + 2 * PADDING + LINE_WIDTH);
const SUPERSAMPLE = 2;
const RAW_SPACING = 1.0;
const RDP_EPSILON = 2.0;

const RADIUS = (LINE_WIDTH / 2) * SCALE * SUPERSAMPLE; // in sub-pixels
const PIECE = SUPERSAMPLE; // segments are cut into pieces of at most 1 output pixel
const REACH = RADIUS + 0.5 + PIECE / 2;
const WINDOW = Math.floor(2 * REACH) + 1;
const GRID = SIDE * SUPERSAMPLE;

// ------------------------------------------------------------------------------------------------ numbers
/** Round half to even, like numpy's rint and Python's round (Math.round rounds halves up). */
export function roundHalfEven(v) {
  const floor = Math.floor(v);
  const diff = v - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** numpy's np.hypot as glibc computes it (Borges' corrected hypot, the non-FMA kernel of glibc >= 2.35). */
export function libmHypot(x, y) {
  let ax = Math.abs(x);
  let ay = Math.abs(y);
  if (ax < ay) [ax, ay] = [ay, ax];
  if (ay <= ax * 2 ** -54) return ax + ay; // includes ay == 0
  const scale = ax > 2 ** 511 ? 2 ** -600 : ay < 2 ** -511 ? 2 ** 600 : 1;
  ax *= scale;
  ay *= scale;
  let h = Math.sqrt(ax * ax + ay * ay);
  let t1;
  let t2;
  if (h <= 2.0 * ay) {
    const delta = h - ay;
    t1 = ax * (2.0 * delta - ax);
    t2 = (delta - 2.0 * (ax - ay)) * delta;
  } else {
    const delta = h - ax;
    t1 = 2.0 * delta * (ax - 2.0 * ay);
    t2 = (4.0 * delta - ay) * ay + delta * delta;
  }
  h -= (t1 + t2) / (2.0 * h);
  return h / scale;
}

const SPLITTER = 134217729; // 2^27 + 1: Dekker's split of a double into two 26-bit halves

function twoProduct(a, b) {
  const p = a * b;
  const ca = SPLITTER * a;
  const ahi = ca - (ca - a);
  const alo = a - ahi;
  const cb = SPLITTER * b;
  const bhi = cb - (cb - b);
  const blo = b - bhi;
  return [p, ahi * bhi - p + ahi * blo + alo * bhi + alo * blo];
}

/** Python's math.hypot, which is correctly rounded: the sum of squares in double-double, one Newton step. */
export function exactHypot(x, y) {
  let ax = Math.abs(x);
  let ay = Math.abs(y);
  if (ax < ay) [ax, ay] = [ay, ax];
  if (ay === 0) return ax;
  const scale = ax > 2 ** 500 ? 2 ** -600 : ay < 2 ** -500 ? 2 ** 600 : 1;
  ax *= scale;
  ay *= scale;
  const [p1, e1] = twoProduct(ax, ax);
  const [p2, e2] = twoProduct(ay, ay);
  const sum = p1 + p2;
  const back = sum - p1;
  const low = e1 + e2 + (p1 - (sum - back) + (p2 - back));
  const root = Math.sqrt(sum);
  const [square, squareError] = twoProduct(root, root);
  return (root + (sum - square - squareError + low) / (2 * root)) / scale;
}

/** numpy's np.interp for increasing x and non-decreasing xp (compiled_base.c, arr_interp). */
function interp(x, xp, fp) {
  const n = xp.length;
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (n === 1) {
      out[i] = fp[0];
      continue;
    }
    let lo = 0; // the last j with xp[j] <= v
    let hi = n;
    while (lo < hi) {
      const mid = lo + ((hi - lo) >> 1);
      if (v >= xp[mid]) lo = mid + 1;
      else hi = mid;
    }
    const j = lo - 1;
    if (j === n - 1 || xp[j] === v) out[i] = fp[j];
    else out[i] = ((fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])) * (v - xp[j]) + fp[j];
  }
  return out;
}

// -------------------------------------------------------------------------------------- raw simplification
function resample(xs, ys) {
  const n = xs.length;
  const arc = new Float64Array(n);
  for (let i = 1; i < n; i++) arc[i] = arc[i - 1] + libmHypot(xs[i] - xs[i - 1], ys[i] - ys[i - 1]);
  const length = arc[n - 1];
  const at = [];
  for (let i = 0, count = Math.ceil(length / RAW_SPACING); i < count; i++) at.push(i * RAW_SPACING);
  at.push(length);
  return [interp(at, arc, xs), interp(at, arc, ys)];
}

function rdpKeep(xs, ys) {
  const n = xs.length;
  const keep = new Uint8Array(n);
  keep[0] = keep[n - 1] = 1;
  const todo = [[0, n - 1]];
  while (todo.length) {
    const [first, last] = todo.pop();
    if (last - first < 2) continue;
    const sx = xs[first];
    const sy = ys[first];
    const dx = xs[last] - sx;
    const dy = ys[last] - sy;
    const length = exactHypot(dx, dy);
    let far = -1;
    let farDist = -Infinity;
    for (let i = first + 1; i < last; i++) {
      const ix = xs[i] - sx;
      const iy = ys[i] - sy;
      const dist = length > 0 ? Math.abs(dx * iy - dy * ix) / length : libmHypot(ix, iy);
      if (dist > farDist) {
        farDist = dist;
        far = i;
      }
    }
    if (farDist > RDP_EPSILON) {
      keep[far] = 1;
      todo.push([first, far], [far, last]);
    }
  }
  return keep;
}

/**
 * The official simplification of raw strokes [[x...], [y...](, [t...])] (finite numbers, any range):
 * align to the top-left, scale the long side to 0..255, resample every unit, Ramer-Douglas-Peucker, round.
 * Returns integer strokes [[x...], [y...]]; empty strokes are dropped.
 */
export function simplifyRaw(drawing) {
  const strokes = drawing.filter((stroke) => stroke[0].length > 0);
  if (!strokes.length) throw new Error("drawing has no points");
  let lowX = Infinity;
  let lowY = Infinity;
  for (const [xs, ys] of strokes) {
    for (let i = 0; i < xs.length; i++) {
      lowX = Math.min(lowX, xs[i]);
      lowY = Math.min(lowY, ys[i]);
    }
  }
  let extent = -Infinity;
  for (const [xs, ys] of strokes) {
    for (let i = 0; i < xs.length; i++) extent = Math.max(extent, xs[i] - lowX, ys[i] - lowY);
  }
  const scale = extent > 0 ? SIMPLIFIED_MAX / extent : 1.0;
  return strokes.map(([xs, ys]) => {
    const [rx, ry] = resample(
      xs.map((x) => (x - lowX) * scale),
      ys.map((y) => (y - lowY) * scale),
    );
    const keep = rdpKeep(rx, ry);
    const outX = [];
    const outY = [];
    for (let i = 0; i < rx.length; i++) {
      if (keep[i]) {
        outX.push(roundHalfEven(rx[i]));
        outY.push(roundHalfEven(ry[i]));
      }
    }
    if (outX.length === 1) {
      outX.push(outX[0]);
      outY.push(outY[0]);
    }
    return [outX, outY];
  });
}

// ------------------------------------------------------------------------------------------------ raster
/** Simplified strokes [[x...], [y...]] (integers 0..255) -> Uint8Array(784), ink 255 on 0, row-major. */
export function renderStrokes(drawing) {
  const strokes = drawing.filter((stroke) => stroke[0].length > 0);
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (const [xs, ys] of strokes) {
    for (let i = 0; i < xs.length; i++) {
      maxX = Math.max(maxX, xs[i]);
      maxY = Math.max(maxY, ys[i]);
    }
  }
  // Step 1: framing, straight to sub-pixel units.
  const shiftX = (FRAME - maxX) / 2 + PADDING + LINE_WIDTH / 2;
  const shiftY = (FRAME - maxY) / 2 + PADDING + LINE_WIDTH / 2;
  const unit = SCALE * SUPERSAMPLE;
  const blank = new Float64Array(PIXELS).fill(1.0); // product of (1 - coverage) over the strokes
  const subpixels = new Float64Array(GRID * GRID);
  let first = true;
  for (const [xs, ys] of strokes) {
    const px = xs.length === 1 ? [xs[0], xs[0]] : xs; // a dot: a zero-length segment, drawn as a round cap
    const py = ys.length === 1 ? [ys[0], ys[0]] : ys;
    subpixels.fill(0);
    for (let k = 0; k + 1 < px.length; k++) {
      const ax = (px[k] + shiftX) * unit;
      const ay = (py[k] + shiftY) * unit;
      const dx = (px[k + 1] + shiftX) * unit - ax;
      const dy = (py[k + 1] + shiftY) * unit - ay;
      const pieces = Math.max(Math.ceil(libmHypot(dx, dy) / PIECE), 1);
      const squared = Math.max(dx * dx + dy * dy, 1e-12);
      for (let piece = 0; piece < pieces; piece++) {
        // Steps 2-3: every sub-pixel in the piece's window, its distance to the whole segment, its coverage.
        const f = (piece + 0.5) / pieces;
        const cornerX = Math.min(Math.max(Math.ceil(ax + dx * f - REACH - 0.5), 0), GRID - WINDOW);
        const cornerY = Math.min(Math.max(Math.ceil(ay + dy * f - REACH - 0.5), 0), GRID - WINDOW);
        const offX = cornerX + 0.5 - ax;
        const offY = cornerY + 0.5 - ay;
        for (let wy = 0; wy < WINDOW; wy++) {
          const qy = offY + wy;
          for (let wx = 0; wx < WINDOW; wx++) {
            const qx = offX + wx;
            const t = Math.min(Math.max((qx * dx + qy * dy) / squared, 0.0), 1.0);
            const coverage = Math.min(Math.max(RADIUS + 0.5 - libmHypot(qx - t * dx, qy - t * dy), 0.0), 1.0);
            const cell = (cornerY + wy) * GRID + cornerX + wx;
            if (coverage > subpixels[cell]) subpixels[cell] = coverage;
          }
        }
      }
    }
    // Mean of each pixel's sub-pixels, summed in numpy's order; step 4: "over" compositing.
    for (let row = 0; row < SIDE; row++) {
      for (let col = 0; col < SIDE; col++) {
        let sum = 0;
        for (let i = 0; i < SUPERSAMPLE; i++) {
          for (let j = 0; j < SUPERSAMPLE; j++) sum += subpixels[(row * SUPERSAMPLE + i) * GRID + col * SUPERSAMPLE + j];
        }
        const coverage = sum / (SUPERSAMPLE * SUPERSAMPLE);
        const p = row * SIDE + col;
        blank[p] = first ? 1.0 - coverage : blank[p] * (1.0 - coverage);
      }
    }
    first = false;
  }
  // Step 5: 8-bit ink.
  const out = new Uint8Array(PIXELS);
  for (let p = 0; p < PIXELS; p++) out[p] = roundHalfEven((1.0 - blank[p]) * 255);
  return out;
}

/** Raw strokes (screen pixels, as a canvas records them) -> the bitmap the server would render. */
export function renderRaw(drawing) {
  return renderStrokes(simplifyRaw(drawing));
}
