#include "cli_io.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace qdm::cli {
namespace {

// Python's float repr from the shortest round-trip digits: fixed notation for exponents -4..15, else scientific
// with at least two exponent digits.
std::string python_repr(double value) {
  if (value == 0.0) return std::signbit(value) ? "-0.0" : "0.0";
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  std::string text(buffer, result.ptr);  // "-d.ddde+XX"
  const std::size_t e = text.find('e');
  const int exponent = std::atoi(text.c_str() + e + 1);
  std::string sign = text[0] == '-' ? "-" : "";
  std::string digits;
  for (std::size_t i = sign.size(); i < e; ++i)
    if (text[i] != '.') digits += text[i];
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) return sign + "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    const auto point = static_cast<std::size_t>(exponent) + 1;
    if (digits.size() <= point) return sign + digits + std::string(point - digits.size(), '0') + ".0";
    return sign + digits.substr(0, point) + "." + digits.substr(point);
  }
  std::string mantissa = digits.size() == 1 ? digits : digits.substr(0, 1) + "." + digits.substr(1);
  char exp_text[16];
  std::snprintf(exp_text, sizeof exp_text, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return sign + mantissa + exp_text;
}

// One code point from UTF-8 at text[i] (advancing i); U+FFFD for a malformed sequence.
unsigned decode_utf8(const std::string& text, std::size_t* i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned first = byte(*i);
  const int extra = first < 0x80 ? 0 : (first >> 5) == 6 ? 1 : (first >> 4) == 14 ? 2 : (first >> 3) == 30 ? 3 : -1;
  if (extra < 0 || *i + static_cast<std::size_t>(extra) >= text.size()) {
    ++*i;
    return 0xFFFD;
  }
  unsigned code = extra == 0 ? first : first & (0x3Fu >> extra);
  for (int k = 1; k <= extra; ++k) code = (code << 6) | (byte(*i + static_cast<std::size_t>(k)) & 0x3Fu);
  *i += static_cast<std::size_t>(extra) + 1;
  return code;
}

void append_escape(unsigned code, std::string* out) {
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "\\u%04x", code);
  *out += buffer;
}

}  // namespace

std::string python_probability(double value) {
  char rounded[64];
  std::snprintf(rounded, sizeof rounded, "%.6f", value);  // correctly rounded, as Python's round(value, 6)
  return python_repr(std::strtod(rounded, nullptr));
}

std::string json_string(const std::string& utf8) {
  std::string out = "\"";
  for (std::size_t i = 0; i < utf8.size();) {
    const unsigned code = decode_utf8(utf8, &i);
    switch (code) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (code >= 0x20 && code < 0x7f) {
          out += static_cast<char>(code);
        } else if (code > 0xFFFF) {
          append_escape(0xD800 + ((code - 0x10000) >> 10), &out);
          append_escape(0xDC00 + ((code - 0x10000) & 0x3FF), &out);
        } else {
          append_escape(code, &out);
        }
    }
  }
  return out + "\"";
}

}  // namespace qdm::cli
