// File and text helpers of the qdm-native command: atomic writes, and JSON written the way Python's json.dumps
// writes it, so that `qdm-native classify` and `qdm predict` produce the same JSONL.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace qdm::cli {

// Write `data` to a temporary file beside `path`, then rename it into place: never half-written.
bool write_file_atomic(const std::string& path, const std::string& data, std::string* error);

// (rows, cols) float32 as an .npy (for logits), atomically.
bool write_float_npy(const std::string& path, const std::vector<float>& values, std::size_t rows, std::size_t cols,
                     std::string* error);

// Python's repr(round(value, 6)): "0.123457", "1e-06", "0.0", "1.0".
std::string python_probability(double value);

// A JSON string literal as json.dumps writes it (ASCII only: other characters as \uXXXX escapes).
std::string json_string(const std::string& utf8);

// A file's contents; false with "PATH: cannot read (...)" on failure.
bool read_file(const std::string& path, std::string* data, std::string* error);

}  // namespace qdm::cli
