// Runs the browser's stroke renderer under node for tests/test_render_js.py.
// stdin: {"render": "raw" | "simplified", "drawings": [drawing, ...]}
// stdout: {"bitmaps": [hex of 784 bytes, ...], "simplified": [strokes, ...] (raw only)}
import { readFileSync } from "node:fs";
import { renderStrokes, simplifyRaw } from "../src/quickdraw_mobile/serve/static/render.mjs";

const request = JSON.parse(readFileSync(0, "utf8"));
const simplified = request.render === "raw" ? request.drawings.map(simplifyRaw) : request.drawings;
const bitmaps = simplified.map((drawing) => Buffer.from(renderStrokes(drawing)).toString("hex"));
process.stdout.write(JSON.stringify({ bitmaps, simplified: request.render === "raw" ? simplified : [] }));
