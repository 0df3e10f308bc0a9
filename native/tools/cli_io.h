// Text helpers of the qdm-native command: JSON written the way Python's json.dumps writes it, so that
// `qdm-native classify` and `qdm predict` produce the same JSONL.
#pragma once

#include <string>

namespace qdm::cli {

// Python's repr(round(value, 6)): "0.123457", "1e-06", "0.0", "1.0".
std::string python_probability(double value);

// A JSON string literal as json.dumps writes it (ASCII only: other characters as \uXXXX escapes).
std::string json_string(const std::string& utf8);

}  // namespace qdm::cli
