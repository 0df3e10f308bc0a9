// Classes taught in the browser: prototype classes, the same kind as `qdm extend --method prototype` and the
// server's POST /classes. A drawing's logit for taught class c is
//     scale * cos(unit(f - feature_mean), proto_c) + offset,
// f = the browser model's "features" output, proto_c = unit(mean of unit(f_i - feature_mean) over c's drawings);
// scale, offset and feature_mean are the model's ("teach" of GET /model). These logits follow the model's own.
// The page keeps its taught classes in localStorage, keyed by the browser model's sha256.

const NAME_CHARS = /^[\p{L}\p{N} _'-]+$/u; // letters, digits, space, - _ ' (the server's rule)
export const MAX_NAME_LENGTH = 40;

/** v / |v| (a zero vector stays zero). */
export function unit(v) {
  let norm = 0;
  for (const x of v) norm += x * x;
  norm = Math.sqrt(norm);
  return Float64Array.from(v, (x) => (norm > 0 ? x / norm : 0));
}

/** unit(f - mean). */
function centredUnit(features, mean) {
  return unit(Array.from(features, (x, i) => x - mean[i]));
}

/** The prototype of a class from the features of its drawings: unit(mean of unit(f_i - mean)). */
export function prototypeOf(featureRows, mean) {
  const sum = new Float64Array(mean.length);
  for (const f of featureRows) {
    const u = centredUnit(f, mean);
    for (let i = 0; i < sum.length; i++) sum[i] += u[i];
  }
  return Array.from(unit(sum));
}

/** The logits of the taught classes (in their order) for one drawing's features. */
export function taughtLogits(features, teach, classes) {
  const u = centredUnit(features, teach.feature_mean);
  return classes.map(({ prototype }) => {
    let cos = 0;
    for (let i = 0; i < u.length; i++) cos += u[i] * prototype[i];
    return teach.scale * cos + teach.offset;
  });
}

/** The name as it will be kept (spaces trimmed), or an Error saying what is wrong with it. */
export function checkName(raw, known, maxClasses, taughtCount) {
  const name = raw.trim();
  if (!name) return new Error("name: type a name for the doodle first");
  if (name.length > MAX_NAME_LENGTH) return new Error(`name: at most ${MAX_NAME_LENGTH} characters`);
  if (!NAME_CHARS.test(name)) return new Error("name: letters, digits, spaces, - _ and ' only");
  const lower = name.toLowerCase();
  if (known.some((k) => k.toLowerCase() === lower)) return new Error(`name: the model already knows "${name}"`);
  if (taughtCount >= maxClasses) return new Error(`at most ${maxClasses} taught classes: forget one first`);
  return name;
}

// --------------------------------------------------------------------------------------------- storage
const storageKey = (sha256) => `qdm-taught:${sha256}`;

/** The classes taught in this browser to the model of this sha256: [{name, drawings, prototype}]. */
export function loadTaught(sha256) {
  try {
    const list = JSON.parse(localStorage.getItem(storageKey(sha256)) || "[]");
    return Array.isArray(list) ? list.filter((c) => typeof c.name === "string" && Array.isArray(c.prototype)) : [];
  } catch {
    return []; // unreadable (edited by hand): start afresh rather than fail the page
  }
}

export function saveTaught(sha256, classes) {
  localStorage.setItem(storageKey(sha256), JSON.stringify(classes));
}
