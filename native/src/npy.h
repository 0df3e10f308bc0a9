// .npy files of 28x28 uint8 bitmaps (NumPy format 1.0, 2.0 and 3.0 headers), like store.py reads and writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace qdm {

// uint8 bitmaps of shape (N, 784) or (N, 28, 28) (dtype '|u1' or '<u1'; Fortran order is read too) into
// N * 784 bytes, row-major. Anything else -> false with a one-line message naming the file and what was
// expected, e.g. "x.npy: expected uint8 bitmaps of shape (N, 784) or (N, 28, 28), got float32 (10, 784)";
// N = 0 is "x.npy: no drawings (0 rows)" (store.py's check_bitmap_array refuses it too).
bool read_bitmaps_npy(const std::string& path, std::vector<std::uint8_t>* pixels, std::size_t* count,
                      std::string* error);

// Write (count, 784) uint8, byte for byte what numpy's np.save writes, atomically: a temporary file in the
// same folder (created if missing) renamed over path, so nothing half-written ever has the final name.
// Errors read "<path>: could not write (<reason>)".
bool write_bitmaps_npy(const std::string& path, const std::uint8_t* pixels, std::size_t count, std::string* error);

// (rows, cols) little-endian float32 (logits), written the same way.
bool write_float_npy(const std::string& path, const float* values, std::size_t rows, std::size_t cols,
                     std::string* error);

// Any bytes, written the same way (temporary beside path, then rename).
bool write_file_atomic(const std::string& path, const std::string& data, std::string* error);

}  // namespace qdm
