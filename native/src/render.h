// Strokes -> 28x28 uint8 bitmaps, byte-identical to the Python renderer (quickdraw_mobile/data/render.py,
// whose docstring explains every step and constant) and to its browser port (serve/static/render.mjs).
//
// The arithmetic follows the Python code operation by operation: the same sub-pixel pieces and windows, the
// same order of sums and products, numpy's interp, round-half-to-even, and two hypot functions that round
// like the ones Python calls. It must be compiled with -ffp-contract=off (a fused multiply-add rounds once
// where Python rounds twice) and without -ffast-math; then x86-64 and aarch64 give the same bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "json.h"

namespace qdm {

inline constexpr int kSide = 28, kPixels = 784;
inline constexpr const char* kRendererVersion = "qdm-render-1";  // must equal RENDERER_VERSION in render.py

enum class StrokeFormat { Auto, Simplified, Raw };

// "auto", "simplified" or "raw" -> the format; else false and a message like Python's.
bool parse_stroke_format(std::string_view name, StrokeFormat* format, std::string* error);

struct Stroke {
  std::vector<double> x, y, t;  // t empty when the stroke has no time list
};
using Drawing = std::vector<Stroke>;

// Validate + (for raw) simplify: the simplified strokes ready to rasterize (integers for raw input; simplified
// input is passed through as given, within 0..255). Empty strokes are dropped; strokes keep their numbers
// (from 1, counting empty ones) in messages. false + message on bad input, without a location prefix (the
// caller adds "<where>: "), worded like render.py's parse_drawing, e.g. "stroke 3 has lists of unequal
// length (2, 3)".
bool prepare_drawing(const Drawing& in, StrokeFormat format, Drawing* simplified, std::string* error);

// Steps 1-5 on prepared simplified strokes: out gets kPixels bytes, row-major, ink 255 on 0.
void rasterize(const Drawing& simplified, std::uint8_t* out) noexcept;

// JSON value of a "drawing" field -> Drawing: a list of strokes of 2 or 3 equal-length lists of numbers.
// Checks what render.py checks before the numbers' values, in the same order and with the same messages
// (no location prefix); bools count as 0/1 where numpy would accept them. Empty strokes are kept.
bool drawing_from_json(const json::Value& value, Drawing* out, std::string* error);

}  // namespace qdm
