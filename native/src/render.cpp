#include "render.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <new>
#include <utility>

// Double arithmetic must round every operation to double: no x87 extended precision.
static_assert(FLT_EVAL_METHOD == 0, "the renderer needs plain double arithmetic (SSE2 / NEON)");

// Python rounds a * b + c twice; a fused multiply-add rounds once. The build passes -ffp-contract=off (GCC
// contracts by default on aarch64); clang (the Android NDK's compiler) also honours the standard pragma.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

namespace qdm {
namespace {

// ------------------------------------------------------------------------------------------------ constants
// The values and the order of operations are those of render.py, so constant folding rounds the same way.
constexpr double kFrame = 256.0;      // simplified coordinates 0..255 live in a 256-unit frame
constexpr double kLineWidth = 16.0;   // stroke width, in simplified units
constexpr double kPadding = 16.0;     // empty units on every side of the frame, beyond half a line width
constexpr double kScale = kSide / (kFrame + 2 * kPadding + kLineWidth);  // output pixels per unit: 28 / 304
constexpr int kSupersample = 2;       // sub-pixels per pixel along each axis
constexpr double kSimplifiedMax = 255;
constexpr double kRawSpacing = 1.0;   // resampling step of the official simplification
constexpr double kRdpEpsilon = 2.0;   // Ramer-Douglas-Peucker tolerance of the official simplification

// In sub-pixel units: the line radius, how far coverage reaches, the window a <= 1 px piece can touch.
constexpr double kRadius = kLineWidth / 2 * kScale * kSupersample;
constexpr double kPiece = kSupersample;  // longest piece a segment is cut into: 1 output pixel
constexpr double kReach = kRadius + 0.5 + kPiece / 2;
constexpr int kWindow = static_cast<int>(2 * kReach) + 1;  // floor: 2 * kReach > 0
constexpr int kGrid = kSide * kSupersample;              // sub-pixel grid side
static_assert(kWindow == 6, "render.py's window is 6x6 sub-pixels");

// ------------------------------------------------------------------------------------------------ numbers
// Round half to even, like numpy's rint and Python's round, whatever the FPU rounding mode is.
double round_half_even(double v) {
  const double floor = std::floor(v);
  const double diff = v - floor;
  if (diff > 0.5) return floor + 1.0;
  if (diff < 0.5) return floor;
  return std::fmod(floor, 2.0) == 0.0 ? floor : floor + 1.0;
}

// glibc's non-FMA hypot kernel (Borges' corrected hypot): ax >= ay >= 0, scaled so squares neither
// overflow nor underflow.
double hypot_kernel(double ax, double ay) {
  double h = std::sqrt(ax * ax + ay * ay);
  double t1 = 0.0, t2 = 0.0;
  if (h <= 2.0 * ay) {
    const double delta = h - ay;
    t1 = ax * (2.0 * delta - ax);
    t2 = (delta - 2.0 * (ax - ay)) * delta;
  } else {
    const double delta = h - ax;
    t1 = 2.0 * delta * (ax - 2.0 * ay);
    t2 = (4.0 * delta - ay) * ay + delta * delta;
  }
  h -= (t1 + t2) / (2.0 * h);
  return h;
}

// numpy's np.hypot as glibc >= 2.35 computes it on x86-64. Never std::hypot: aarch64 glibc (FMA kernel) and
// Android's bionic round differently. Finite inputs only.
double libm_hypot(double x, double y) {
  constexpr double kScaleDown = 0x1p-600, kLarge = 0x1p+511, kTiny = 0x1p-459, kEps = 0x1p-54;
  x = std::fabs(x);
  y = std::fabs(y);
  const double ax = x < y ? y : x;
  const double ay = x < y ? x : y;
  if (ax > kLarge) {
    if (ay <= ax * kEps) return ax + ay;
    return hypot_kernel(ax * kScaleDown, ay * kScaleDown) / kScaleDown;
  }
  if (ay < kTiny) {
    if (ax >= ay / kEps) return ax + ay;
    return hypot_kernel(ax / kScaleDown, ay / kScaleDown) * kScaleDown;
  }
  if (ay <= ax * kEps) return ax + ay;
  return hypot_kernel(ax, ay);
}

struct DoubleDouble {
  double high, low;
};

// a * b exactly, as high + low (Dekker: a split into two 26-bit halves needs no FMA).
DoubleDouble two_product(double a, double b) {
  constexpr double kSplitter = 134217729.0;  // 2^27 + 1
  const double product = a * b;
  const double ca = kSplitter * a;
  const double a_high = ca - (ca - a);
  const double a_low = a - a_high;
  const double cb = kSplitter * b;
  const double b_high = cb - (cb - b);
  const double b_low = b - b_high;
  return {product, a_high * b_high - product + a_high * b_low + a_low * b_high + a_low * b_low};
}

// Python's math.hypot (correctly rounded in practice): the sum of squares in double-double, one Newton step.
// Agrees with CPython 3.11's vector_norm on 16M test pairs.
double exact_hypot(double x, double y) {
  double ax = std::fabs(x), ay = std::fabs(y);
  if (ax < ay) std::swap(ax, ay);
  if (ay == 0) return ax;
  const double scale = ax > 0x1p500 ? 0x1p-600 : ay < 0x1p-500 ? 0x1p600 : 1.0;
  ax *= scale;
  ay *= scale;
  const DoubleDouble xx = two_product(ax, ax), yy = two_product(ay, ay);
  const double sum = xx.high + yy.high;
  const double back = sum - xx.high;
  const double low = xx.low + yy.low + (xx.high - (sum - back) + (yy.high - back));
  const double root = std::sqrt(sum);
  const DoubleDouble square = two_product(root, root);
  return (root + (sum - square.high - square.low + low) / (2 * root)) / scale;
}

// numpy's np.interp (compiled_base.c, arr_interp) for at[] non-decreasing and starting at xp[0], xp[]
// non-decreasing and non-empty (resample's arc lengths).
std::vector<double> interp(const std::vector<double>& at, const std::vector<double>& xp,
                           const std::vector<double>& fp) {
  std::vector<double> out(at.size());
  const std::size_t n = xp.size();
  std::size_t j = 0;  // the last index with xp[j] <= v, as numpy's binary search finds it; at[] only grows
  for (std::size_t i = 0; i < at.size(); ++i) {
    const double v = at[i];
    while (j + 1 < n && xp[j + 1] <= v) ++j;
    if (n == 1 || j == n - 1 || xp[j] == v || v < xp[j]) {  // v < xp[0]: numpy's left value, never here
      out[i] = fp[j];
    } else {
      out[i] = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]) * (v - xp[j]) + fp[j];
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------- raw simplification
struct Polyline {
  std::vector<double> x, y;
};

// Step c: points every kRawSpacing units of arc length (0, 1, 2, ... below the length L), plus the end (L).
Polyline resample(const Polyline& in) {
  const std::size_t n = in.x.size();
  std::vector<double> arc(n, 0.0);
  for (std::size_t i = 1; i < n; ++i) {
    arc[i] = arc[i - 1] + libm_hypot(in.x[i] - in.x[i - 1], in.y[i] - in.y[i - 1]);  // numpy's cumsum order
  }
  const double length = arc[n - 1];
  std::vector<double> at;
  const double count = std::ceil(length / kRawSpacing);  // np.arange(0.0, L, 1.0) has ceil(L) values
  for (double i = 0; i < count; ++i) at.push_back(i * kRawSpacing);
  at.push_back(length);
  return {interp(at, arc, in.x), interp(at, arc, in.y)};
}

// Step d: Ramer-Douglas-Peucker, kRdpEpsilon; a mask of kept points (the first and last always).
std::vector<bool> rdp_keep(const Polyline& points) {
  const std::size_t n = points.x.size();
  std::vector<bool> keep(n, false);
  keep[0] = keep[n - 1] = true;
  std::vector<std::pair<std::size_t, std::size_t>> todo{{0, n - 1}};
  while (!todo.empty()) {
    const auto [first, last] = todo.back();
    todo.pop_back();
    if (last - first < 2) continue;
    const double sx = points.x[first], sy = points.y[first];
    const double dx = points.x[last] - sx, dy = points.y[last] - sy;
    const double length = exact_hypot(dx, dy);  // Python's math.hypot
    std::size_t far = first + 1;
    double far_distance = -INFINITY;
    for (std::size_t i = first + 1; i < last; ++i) {
      const double ix = points.x[i] - sx, iy = points.y[i] - sy;
      // the distance to the line through both ends, or to the start when they coincide (np.hypot)
      const double distance = length > 0 ? std::fabs(dx * iy - dy * ix) / length : libm_hypot(ix, iy);
      if (distance > far_distance) {  // strictly greater: the first maximum wins, like np.argmax
        far_distance = distance;
        far = i;
      }
    }
    if (far_distance > kRdpEpsilon) {
      keep[far] = true;
      todo.emplace_back(first, far);
      todo.emplace_back(far, last);
    }
  }
  return keep;
}

// Steps a-e on non-empty strokes of finite numbers.
Drawing simplify_raw(const std::vector<const Stroke*>& strokes) {
  double low_x = INFINITY, low_y = INFINITY;
  for (const Stroke* stroke : strokes) {
    for (double v : stroke->x) low_x = std::min(low_x, v);
    for (double v : stroke->y) low_y = std::min(low_y, v);
  }
  double extent = -INFINITY;
  for (const Stroke* stroke : strokes) {
    for (double v : stroke->x) extent = std::max(extent, v - low_x);
    for (double v : stroke->y) extent = std::max(extent, v - low_y);
  }
  const double scale = extent > 0 ? kSimplifiedMax / extent : 1.0;
  Drawing out;
  for (const Stroke* stroke : strokes) {
    Polyline aligned;
    for (double v : stroke->x) aligned.x.push_back((v - low_x) * scale);
    for (double v : stroke->y) aligned.y.push_back((v - low_y) * scale);
    const Polyline points = resample(aligned);
    const std::vector<bool> keep = rdp_keep(points);
    Stroke kept;
    for (std::size_t i = 0; i < keep.size(); ++i) {
      if (!keep[i]) continue;
      kept.x.push_back(round_half_even(points.x[i]));
      kept.y.push_back(round_half_even(points.y[i]));
    }
    if (kept.x.size() == 1) {  // a dot: its first point is also its last, and both are kept
      kept.x.push_back(kept.x[0]);
      kept.y.push_back(kept.y[0]);
    }
    out.push_back(std::move(kept));
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ checks
std::string lengths_text(const Stroke& stroke) {
  std::string text = "(" + std::to_string(stroke.x.size()) + ", " + std::to_string(stroke.y.size());
  if (!stroke.t.empty()) text += ", " + std::to_string(stroke.t.size());
  return text + ")";
}

bool all_finite(const std::vector<double>& values) {
  return std::all_of(values.begin(), values.end(), [](double v) { return std::isfinite(v); });
}

bool within_simplified_range(const Stroke& stroke) {
  const auto in_range = [](double v) { return v >= 0 && v <= kSimplifiedMax; };
  return std::all_of(stroke.x.begin(), stroke.x.end(), in_range) &&
         std::all_of(stroke.y.begin(), stroke.y.end(), in_range);
}

bool fits_simplified(const std::vector<const Stroke*>& strokes) {
  const auto integral = [](double v) { return v == round_half_even(v); };
  for (const Stroke* stroke : strokes) {
    if (!within_simplified_range(*stroke)) return false;
    if (!std::all_of(stroke->x.begin(), stroke->x.end(), integral)) return false;
    if (!std::all_of(stroke->y.begin(), stroke->y.end(), integral)) return false;
  }
  return true;
}

std::string stroke_error(std::size_t number, const std::string& problem) {
  return "stroke " + std::to_string(number) + " " + problem;
}

// The non-empty strokes (with their numbers, from 1), after the checks render.py makes before the format.
bool checked_strokes(const Drawing& in, std::vector<const Stroke*>* strokes, std::vector<std::size_t>* numbers,
                     std::string* error) {
  for (std::size_t i = 0; i < in.size(); ++i) {
    const Stroke& stroke = in[i];
    if (stroke.y.size() != stroke.x.size() || (!stroke.t.empty() && stroke.t.size() != stroke.x.size())) {
      *error = stroke_error(i + 1, "has lists of unequal length " + lengths_text(stroke));
      return false;
    }
    if (stroke.x.empty()) continue;
    strokes->push_back(&stroke);
    numbers->push_back(i + 1);
  }
  if (strokes->empty()) {
    *error = "drawing has no points";
    return false;
  }
  for (std::size_t k = 0; k < strokes->size(); ++k) {
    const Stroke& stroke = *(*strokes)[k];
    if (!all_finite(stroke.x) || !all_finite(stroke.y) || !all_finite(stroke.t)) {
      *error = stroke_error((*numbers)[k], "has a NaN or infinite value");
      return false;
    }
  }
  return true;
}

// Simplified strokes pass through as they are (t dropped), once they are known to be in range.
bool pass_simplified(const std::vector<const Stroke*>& strokes, const std::vector<std::size_t>& numbers,
                     Drawing* out, std::string* error) {
  for (std::size_t k = 0; k < strokes.size(); ++k) {
    if (!strokes[k]->t.empty()) {
      *error = stroke_error(numbers[k], "has 3 lists; simplified strokes are [[x...], [y...]]");
      return false;
    }
  }
  for (std::size_t k = 0; k < strokes.size(); ++k) {
    if (!within_simplified_range(*strokes[k])) {
      *error = stroke_error(numbers[k], "has coordinates outside 0..255 (simplified format)");
      return false;
    }
  }
  out->clear();
  for (const Stroke* stroke : strokes) out->push_back(Stroke{stroke->x, stroke->y, {}});
  return true;
}

bool simplify_checked_raw(const std::vector<const Stroke*>& strokes, Drawing* out, std::string* error) {
  // Python would go on with NaN (an infinite extent, or a subnormal one, gives inf * 0) and fail obscurely
  // or draw garbage; a clear error is better.
  const auto span = [&strokes](std::vector<double> Stroke::*axis) {
    double low = INFINITY, high = -INFINITY;
    for (const Stroke* stroke : strokes) {
      const auto [min, max] = std::minmax_element((stroke->*axis).begin(), (stroke->*axis).end());
      low = std::min(low, *min);
      high = std::max(high, *max);
    }
    return high - low;
  };
  const double extent = std::max(span(&Stroke::x), span(&Stroke::y));
  if (!std::isfinite(extent) || (extent > 0 && !std::isfinite(kSimplifiedMax / extent))) {
    *error = "raw coordinates cannot be scaled to 0..255 (their span overflows or underflows a double)";
    return false;
  }
  *out = simplify_raw(strokes);
  return true;
}

// ------------------------------------------------------------------------------------------------ raster
using SubpixelGrid = std::array<double, kGrid * kGrid>;

// Steps 2-3 for one segment from (ax, ay) by (dx, dy), in sub-pixel units: cut into pieces of at most 1 px,
// each piece visits its 6x6 window and keeps, per sub-pixel, the best coverage (render.py's scatter-max).
void cover_segment(double ax, double ay, double dx, double dy, SubpixelGrid* subpixels) {
  // valid strokes stay far below this; the cap only keeps hostile input from looping for ages
  const double pieces = std::min(std::max(std::ceil(libm_hypot(dx, dy) / kPiece), 1.0), 1e6);
  const double squared = std::max(dx * dx + dy * dy, 1e-12);
  const auto corner_of = [](double middle) {
    const double corner = std::ceil(middle - kReach - 0.5);
    // the clip keeps odd input inside the grid (and a NaN out of the integer conversion)
    return corner >= 0 ? static_cast<int>(std::min(corner, double{kGrid - kWindow})) : 0;
  };
  for (double piece = 0; piece < pieces; ++piece) {
    const double f = (piece + 0.5) / pieces;
    const int corner_x = corner_of(ax + dx * f);
    const int corner_y = corner_of(ay + dy * f);
    const double offset_x = corner_x + 0.5 - ax;  // centre of the window's first sub-pixel, from the start
    const double offset_y = corner_y + 0.5 - ay;
    for (int wy = 0; wy < kWindow; ++wy) {
      const double qy = offset_y + wy;
      for (int wx = 0; wx < kWindow; ++wx) {
        const double qx = offset_x + wx;
        const double t = std::min(std::max((qx * dx + qy * dy) / squared, 0.0), 1.0);
        const double coverage = std::min(std::max(kRadius + 0.5 - libm_hypot(qx - t * dx, qy - t * dy), 0.0), 1.0);
        double& cell = (*subpixels)[static_cast<std::size_t>((corner_y + wy) * kGrid + corner_x + wx)];
        if (coverage > cell) cell = coverage;
      }
    }
  }
}

struct Framing {
  double shift_x, shift_y;  // simplified units added before scaling (step 1)
};

// Step 1: centre [0, max] of each axis on its own, with the fixed scale.
Framing framing_of(const Drawing& drawing) {
  double max_x = -INFINITY, max_y = -INFINITY;
  for (const Stroke& stroke : drawing) {
    for (double v : stroke.x) max_x = std::max(max_x, v);
    for (double v : stroke.y) max_y = std::max(max_y, v);
  }
  return {(kFrame - max_x) / 2 + kPadding + kLineWidth / 2, (kFrame - max_y) / 2 + kPadding + kLineWidth / 2};
}

// Steps 2-3 for one stroke: its sub-pixel coverage.
void cover_stroke(const Stroke& stroke, const Framing& framing, SubpixelGrid* subpixels) {
  constexpr double kUnit = kScale * kSupersample;
  subpixels->fill(0.0);
  const std::size_t n = stroke.x.size();
  const std::size_t last = n == 1 ? 1 : n - 1;  // a dot is a zero-length segment, drawn as a round cap
  for (std::size_t k = 0; k < last; ++k) {
    const std::size_t next = n == 1 ? 0 : k + 1;
    const double ax = (stroke.x[k] + framing.shift_x) * kUnit;
    const double ay = (stroke.y[k] + framing.shift_y) * kUnit;
    const double dx = (stroke.x[next] + framing.shift_x) * kUnit - ax;
    const double dy = (stroke.y[next] + framing.shift_y) * kUnit - ay;
    cover_segment(ax, ay, dx, dy, subpixels);
  }
}

// Step 4: "over" compositing; blank holds the product of (1 - coverage) of the strokes so far.
void composite(const SubpixelGrid& subpixels, bool first, std::array<double, kPixels>* blank) {
  for (int row = 0; row < kSide; ++row) {
    for (int col = 0; col < kSide; ++col) {
      double sum = 0;  // the mean of the pixel's sub-pixels, summed in numpy's order
      for (int i = 0; i < kSupersample; ++i) {
        for (int j = 0; j < kSupersample; ++j) {
          sum += subpixels[static_cast<std::size_t>((row * kSupersample + i) * kGrid + col * kSupersample + j)];
        }
      }
      const double coverage = sum / (kSupersample * kSupersample);
      double& pixel = (*blank)[static_cast<std::size_t>(row * kSide + col)];
      pixel = first ? 1.0 - coverage : pixel * (1.0 - coverage);
    }
  }
}

// ------------------------------------------------------------------------------------------ JSON drawings
// drawing_from_json: the structure and number checks of parse_drawing, on a parsed JSON value.

using json::Type;
using json::Value;
using Rows = std::vector<const std::vector<Value>*>;

// type(obj).__name__ of what Python's json module would have made of the value.
const char* python_type_name(const Value& value) {
  switch (value.type) {
    case Type::Null: return "NoneType";
    case Type::Bool: return "bool";
    case Type::Number: return value.integral_literal ? "int" : "float";
    case Type::String: return "str";
    case Type::Array: return "list";
    case Type::Object: return "dict";
  }
  return "object";
}

// Structure of stroke `number`: 2 or 3 equal-length lists (the numbers are checked per drawing).
bool check_stroke(const Value& stroke, std::size_t number, std::string* error) {
  if (!stroke.is_array() || (stroke.items.size() != 2 && stroke.items.size() != 3)) {
    *error = stroke_error(number, "must be a list of 2 or 3 lists ([x...], [y...][, [t...]])");
    return false;
  }
  for (const Value& row : stroke.items) {
    if (!row.is_array()) {
      *error = stroke_error(number, std::string("must hold lists of numbers, got ") + python_type_name(row));
      return false;
    }
  }
  bool equal = true;
  std::string lengths;
  for (const Value& row : stroke.items) {
    equal = equal && row.items.size() == stroke.items[0].items.size();
    lengths += (lengths.empty() ? "(" : ", ") + std::to_string(row.items.size());
  }
  if (!equal) *error = stroke_error(number, "has lists of unequal length " + lengths + ")");
  return equal;
}

// Whether np.asarray would make an int, uint or float array of these rows: numbers and bools only, not bools
// only (a bool array), and integers within int64 or uint64 (else an object array).
bool numpy_takes_as_numbers(const Rows& rows) {
  bool any = false, only_bools = true;
  for (const std::vector<Value>* row : rows) {
    for (const Value& value : *row) {
      any = true;
      if (value.type == Type::Bool) continue;
      if (value.type != Type::Number) return false;
      only_bools = false;
      if (value.integral_literal && !(value.number >= -0x1p63 && value.number < 0x1p64)) return false;
    }
  }
  return !(any && only_bools);
}

bool is_empty_stroke(const Value& stroke) { return stroke.items[0].items.empty(); }

// render.py checks all coordinates at once, all times at once, then (on failure) stroke by stroke to name one.
bool check_numbers(const std::vector<Value>& strokes, std::string* error) {
  Rows coordinates, times;
  for (const Value& stroke : strokes) {
    if (is_empty_stroke(stroke)) continue;
    coordinates.push_back(&stroke.items[0].items);
    coordinates.push_back(&stroke.items[1].items);
    if (stroke.items.size() == 3) times.push_back(&stroke.items[2].items);
  }
  if (numpy_takes_as_numbers(coordinates) && numpy_takes_as_numbers(times)) return true;
  for (std::size_t i = 0; i < strokes.size(); ++i) {
    if (is_empty_stroke(strokes[i])) continue;
    Rows rows;
    for (const Value& row : strokes[i].items) rows.push_back(&row.items);
    if (!numpy_takes_as_numbers(rows)) {
      *error = stroke_error(i + 1, "must hold plain numbers");
      return false;
    }
  }
  *error = "strokes must hold plain numbers";
  return false;
}

std::vector<double> numbers_of(const Value& row) {
  std::vector<double> numbers;
  numbers.reserve(row.items.size());
  for (const Value& value : row.items) {
    numbers.push_back(value.type == Type::Bool ? (value.boolean ? 1.0 : 0.0) : value.number);
  }
  return numbers;
}

bool convert(const Value& value, Drawing* out, std::string* error) {
  if (!value.is_array()) {
    *error = std::string("drawing must be a list of strokes, got ") + python_type_name(value);
    return false;
  }
  for (std::size_t i = 0; i < value.items.size(); ++i) {
    if (!check_stroke(value.items[i], i + 1, error)) return false;
  }
  if (!check_numbers(value.items, error)) return false;
  Drawing drawing;
  for (const Value& stroke : value.items) {
    const auto& rows = stroke.items;
    drawing.push_back(Stroke{numbers_of(rows[0]), numbers_of(rows[1]), {}});
    if (rows.size() == 3) drawing.back().t = numbers_of(rows[2]);
  }
  *out = std::move(drawing);
  return true;
}

}  // namespace

// ------------------------------------------------------------------------------------------------ public
bool parse_stroke_format(std::string_view name, StrokeFormat* format, std::string* error) {
  if (name == "auto") {
    *format = StrokeFormat::Auto;
  } else if (name == "simplified") {
    *format = StrokeFormat::Simplified;
  } else if (name == "raw") {
    *format = StrokeFormat::Raw;
  } else {
    try {
      *error = "unknown stroke format '" + std::string(name) + "' (expected one of auto, simplified, raw)";
    } catch (const std::bad_alloc&) {
      error->clear();
    }
    return false;
  }
  return true;
}

bool prepare_drawing(const Drawing& in, StrokeFormat format, Drawing* simplified, std::string* error) {
  try {
    std::vector<const Stroke*> strokes;
    std::vector<std::size_t> numbers;
    if (!checked_strokes(in, &strokes, &numbers, error)) return false;
    const bool timed = std::any_of(strokes.begin(), strokes.end(), [](const Stroke* s) { return !s->t.empty(); });
    if (format == StrokeFormat::Auto) {
      format = timed || !fits_simplified(strokes) ? StrokeFormat::Raw : StrokeFormat::Simplified;
    }
    if (format == StrokeFormat::Raw) return simplify_checked_raw(strokes, simplified, error);
    return pass_simplified(strokes, numbers, simplified, error);
  } catch (const std::bad_alloc&) {
    *error = "out of memory";
    return false;
  }
}

void rasterize(const Drawing& simplified, std::uint8_t* out) noexcept {
  const Framing framing = framing_of(simplified);
  SubpixelGrid subpixels{};
  std::array<double, kPixels> blank;
  blank.fill(1.0);
  bool first = true;
  for (const Stroke& stroke : simplified) {
    if (stroke.x.empty() || stroke.y.size() != stroke.x.size()) continue;  // prepared drawings have none
    cover_stroke(stroke, framing, &subpixels);
    composite(subpixels, first, &blank);
    first = false;
  }
  for (std::size_t p = 0; p < blank.size(); ++p) {  // step 5: 8-bit ink
    out[p] = static_cast<std::uint8_t>(round_half_even((1.0 - blank[p]) * 255));
  }
}

bool drawing_from_json(const json::Value& value, Drawing* out, std::string* error) {
  try {
    return convert(value, out, error);
  } catch (const std::bad_alloc&) {
    *error = "out of memory";
    return false;
  }
}

}  // namespace qdm
