#include "npy.h"

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <utility>

namespace qdm {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kBitmapBytes = 784;
constexpr std::string_view kMagic = "\x93NUMPY";
constexpr std::size_t kMaxHeaderBytes = 10000;  // numpy's own default limit (np.load's max_header_size)
constexpr std::size_t kAlign = 64;              // np.save pads the header so the data starts 64-aligned
constexpr std::size_t kGrowthDigits = 21;       // np.save leaves room for the row count to grow to this

// ------------------------------------------------------------------------------------------ header literal
// The header is a Python dict literal: {'descr': '|u1', 'fortran_order': False, 'shape': (10, 784), }
struct PyValue {
  enum class Kind { String, Integer, Bool, None, Sequence, Dict } kind = Kind::None;
  std::string text;                                    // String
  std::uint64_t integer = 0;                           // Integer (non-negative)
  bool boolean = false;                                // Bool
  std::vector<PyValue> items;                          // Sequence (tuple or list)
  std::vector<std::pair<std::string, PyValue>> entries;  // Dict
};

class LiteralParser {
 public:
  explicit LiteralParser(std::string_view text) : text_(text) {}

  // The whole text is one value (surrounding whitespace allowed).
  bool parse(PyValue* out) {
    if (!value(out, 0)) return false;
    skip_space();
    return pos_ == text_.size();
  }

 private:
  static constexpr int kMaxDepth = 8;  // real headers nest 3 deep; hostile ones must not recurse for ever

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool take(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  bool take_word(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool value(PyValue* out, int depth) {
    skip_space();
    if (pos_ >= text_.size() || depth > kMaxDepth) return false;
    const char c = text_[pos_];
    if (c == '\'' || c == '"') return string(out);
    if (c >= '0' && c <= '9') return integer(out);
    if (c == '(') return sequence(out, ')', depth);
    if (c == '[') return sequence(out, ']', depth);
    if (c == '{') return dict(out, depth);
    out->kind = PyValue::Kind::Bool;
    out->boolean = true;
    if (take_word("True")) return true;
    out->boolean = false;
    if (take_word("False")) return true;
    out->kind = PyValue::Kind::None;
    return take_word("None");
  }

  bool string(PyValue* out) {
    const char quote = text_[pos_++];
    out->kind = PyValue::Kind::String;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\' && pos_ + 1 < text_.size()) ++pos_;  // an escaped character stands for itself
      out->text.push_back(text_[pos_++]);
    }
    if (pos_ >= text_.size()) return false;  // unterminated
    ++pos_;
    return true;
  }

  bool integer(PyValue* out) {
    out->kind = PyValue::Kind::Integer;
    for (; pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9'; ++pos_) {
      const auto digit = static_cast<std::uint64_t>(text_[pos_] - '0');
      if (out->integer > (UINT64_MAX - digit) / 10) return false;
      out->integer = out->integer * 10 + digit;
    }
    if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;  // Python 2 long, in files numpy still reads
    return true;
  }

  // Items separated by ',', a trailing ',' allowed.
  bool sequence(PyValue* out, char closing, int depth) {
    ++pos_;
    out->kind = PyValue::Kind::Sequence;
    while (!take(closing)) {
      out->items.emplace_back();
      if (!value(&out->items.back(), depth + 1)) return false;
      if (!take(',')) return take(closing);
    }
    return true;
  }

  bool dict(PyValue* out, int depth) {
    ++pos_;
    out->kind = PyValue::Kind::Dict;
    while (!take('}')) {
      PyValue key;
      if (!value(&key, depth + 1) || key.kind != PyValue::Kind::String || !take(':')) return false;
      out->entries.emplace_back(key.text, PyValue());
      if (!value(&out->entries.back().second, depth + 1)) return false;
      if (!take(',')) return take('}');
    }
    return true;
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

// ------------------------------------------------------------------------------------------ array header
struct ArrayHeader {
  bool structured = false;  // descr is a list of fields, not a string
  std::string descr;
  bool fortran_order = false;
  std::vector<std::uint64_t> shape;
};

const PyValue* entry(const PyValue& dict, std::string_view key) {
  for (const auto& [name, value] : dict.entries) {
    if (name == key) return &value;
  }
  return nullptr;
}

// numpy requires exactly these three keys with these kinds of values.
bool header_from_literal(const PyValue& dict, ArrayHeader* header) {
  if (dict.kind != PyValue::Kind::Dict || dict.entries.size() != 3) return false;
  const PyValue* descr = entry(dict, "descr");
  const PyValue* order = entry(dict, "fortran_order");
  const PyValue* shape = entry(dict, "shape");
  if (descr == nullptr || order == nullptr || shape == nullptr) return false;
  if (order->kind != PyValue::Kind::Bool || shape->kind != PyValue::Kind::Sequence) return false;
  if (descr->kind != PyValue::Kind::String && descr->kind != PyValue::Kind::Sequence) return false;
  header->structured = descr->kind == PyValue::Kind::Sequence;
  header->descr = descr->text;
  header->fortran_order = order->boolean;
  for (const PyValue& dim : shape->items) {
    if (dim.kind != PyValue::Kind::Integer) return false;
    header->shape.push_back(dim.integer);
  }
  return true;
}

bool is_uint8(const std::string& descr) {
  static constexpr std::array<std::string_view, 10> kNames = {"|u1", "<u1", ">u1", "=u1", "u1",
                                                              "|B",  "<B",  ">B",  "=B",  "B"};
  for (std::string_view name : kNames) {
    if (descr == name) return true;
  }
  return descr == "uint8";
}

// str(np.dtype(descr)) for the common dtypes ("float32", "bool", ">f4"); the descr itself otherwise.
std::string dtype_name(const ArrayHeader& header) {
  if (header.structured) return "a structured dtype";
  const std::string& descr = header.descr;
  std::size_t at = descr.empty() || std::string_view("<>|=").find(descr[0]) == std::string_view::npos ? 0 : 1;
  const bool big_endian = at == 1 && descr[0] == '>';
  if (at >= descr.size()) return descr;
  const char kind = descr[at];
  const std::string size = descr.substr(at + 1);
  const bool plain_size = size == "1" || size == "2" || size == "4" || size == "8" || size == "16";
  if (!plain_size || std::string_view("biufc").find(kind) == std::string_view::npos) return descr;
  if (big_endian && size != "1") return descr;  // numpy names big-endian dtypes by their descr
  if (kind == 'b') return size == "1" ? "bool" : descr;
  const int bits = (size == "16" ? 16 : size[0] - '0') * 8;
  switch (kind) {
    case 'i': return "int" + std::to_string(bits);
    case 'u': return "uint" + std::to_string(bits);
    case 'f': return "float" + std::to_string(bits);
    default: return "complex" + std::to_string(bits);
  }
}

// Python's repr of a tuple of ints: "()", "(5,)", "(5, 784)".
std::string shape_text(const std::vector<std::uint64_t>& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

bool is_bitmap_shape(const std::vector<std::uint64_t>& shape) {
  return (shape.size() == 2 && shape[1] == kBitmapBytes) ||
         (shape.size() == 3 && shape[1] == 28 && shape[2] == 28);
}

// ------------------------------------------------------------------------------------------------ reading
class NpyReader {
 public:
  NpyReader(const std::string& path, std::FILE* file, std::uintmax_t size) : path_(path), file_(file), size_(size) {}

  bool read(std::vector<std::uint8_t>* pixels, std::size_t* count, std::string* error) {
    ArrayHeader header;
    std::size_t data_offset = 0;
    if (!read_header(&header, &data_offset, error) || !check_header(header, error)) return false;
    const std::uint64_t rows = header.shape[0];
    const std::uintmax_t data_bytes = size_ - data_offset;
    if (rows > data_bytes / kBitmapBytes) {
      const std::string needed = rows <= UINT64_MAX / kBitmapBytes ? std::to_string(rows * kBitmapBytes) : "over 2^64";
      return fail("truncated (" + std::to_string(rows) + " rows need " + needed + " bytes of data, the file has " +
                      std::to_string(data_bytes) + ")",
                  error);
    }
    if (data_bytes != rows * kBitmapBytes) {
      return fail(std::to_string(data_bytes - rows * kBitmapBytes) + " unexpected bytes after the data", error);
    }
    std::vector<std::uint8_t> data(static_cast<std::size_t>(rows) * kBitmapBytes);
    if (!read_exactly(data.data(), data.size(), error)) return false;
    *pixels = header.fortran_order ? from_fortran_order(data, header.shape) : std::move(data);
    *count = static_cast<std::size_t>(rows);
    return true;
  }

 private:
  bool fail(const std::string& problem, std::string* error) const {
    *error = path_ + ": " + problem;
    return false;
  }

  bool read_exactly(void* into, std::size_t bytes, std::string* error) {
    errno = 0;
    if (std::fread(into, 1, bytes, file_) == bytes) return true;
    if (std::ferror(file_)) return fail(std::string("cannot read (") + std::strerror(errno != 0 ? errno : EIO) + ")", error);
    return fail("truncated (the file ended early)", error);  // it shrank while being read
  }

  std::uintmax_t left() const { return size_ - offset_; }

  // Magic, version, header length (2 bytes in format 1.0, 4 in 2.0 and 3.0), then the header literal.
  bool read_header(ArrayHeader* header, std::size_t* data_offset, std::string* error) {
    std::array<unsigned char, 8> prefix{};
    if (size_ < prefix.size()) return fail("not a .npy file (too short)", error);
    if (!read_exactly(prefix.data(), prefix.size(), error)) return false;
    offset_ = prefix.size();
    if (std::memcmp(prefix.data(), kMagic.data(), kMagic.size()) != 0) {
      return fail("not a .npy file (it does not start with \\x93NUMPY)", error);
    }
    const int major = prefix[6], minor = prefix[7];
    if (major < 1 || major > 3 || minor != 0) {
      return fail("unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor), error);
    }
    std::size_t length = 0;
    if (!read_header_length(major == 1 ? 2 : 4, &length, error)) return false;
    if (length > kMaxHeaderBytes) {
      return fail(".npy header too large (" + std::to_string(length) + " bytes, at most 10000)", error);
    }
    if (length > left()) return fail("truncated .npy header", error);
    std::string text(length, '\0');
    if (!read_exactly(text.data(), length, error)) return false;
    offset_ += length;
    *data_offset = offset_;
    PyValue literal;
    if (!LiteralParser(text).parse(&literal) || !header_from_literal(literal, header)) {
      return fail("malformed .npy header", error);
    }
    return true;
  }

  bool read_header_length(std::size_t bytes, std::size_t* length, std::string* error) {
    std::array<unsigned char, 4> little_endian{};
    if (bytes > left()) return fail("truncated .npy header", error);
    if (!read_exactly(little_endian.data(), bytes, error)) return false;
    offset_ += bytes;
    *length = 0;
    for (std::size_t i = bytes; i-- > 0;) *length = *length * 256 + little_endian[i];
    return true;
  }

  bool check_header(const ArrayHeader& header, std::string* error) const {
    if (header.structured || !is_uint8(header.descr) || !is_bitmap_shape(header.shape)) {
      return fail("expected uint8 bitmaps of shape (N, 784) or (N, 28, 28), got " + dtype_name(header) + " " +
                      shape_text(header.shape),
                  error);
    }
    if (header.shape[0] == 0) return fail("no drawings (0 rows)", error);
    return true;
  }

  // Column-major data of shape (N, 784) or (N, 28, 28) in row-major order.
  static std::vector<std::uint8_t> from_fortran_order(const std::vector<std::uint8_t>& data,
                                                      const std::vector<std::uint64_t>& shape) {
    const auto rows = static_cast<std::size_t>(shape[0]);
    std::vector<std::uint8_t> out(data.size());
    for (std::size_t i = 0; i < rows; ++i) {
      for (std::size_t r = 0; r < 28; ++r) {
        for (std::size_t c = 0; c < 28; ++c) {
          const std::size_t j = r * 28 + c;  // the (N, 784) column
          const std::size_t from = shape.size() == 2 ? i + rows * j : i + rows * (r + 28 * c);
          out[i * kBitmapBytes + j] = data[from];
        }
      }
    }
    return out;
  }

  const std::string& path_;
  std::FILE* file_;
  std::uintmax_t size_;
  std::uintmax_t offset_ = 0;
};

// ------------------------------------------------------------------------------------------------ writing
// np.save's header for a (rows, cols) array of dtype descr: the dict, room for the row count to grow, padding,
// '\n'.
std::string npy_header(const char* descr, std::size_t rows, std::size_t cols) {
  const std::string count = std::to_string(rows);
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + count + ", " +
                     std::to_string(cols) + "), }";
  if (count.size() < kGrowthDigits) dict.append(kGrowthDigits - count.size(), ' ');
  const std::size_t unpadded = kMagic.size() + 2 + 2 + dict.size() + 1;  // magic, version, length, '\n'
  dict.append((kAlign - unpadded % kAlign) % kAlign, ' ');
  dict += '\n';
  std::string header(kMagic);
  header += '\x01';  // format 1.0: the header length fits 2 bytes
  header += '\x00';
  header += static_cast<char>(dict.size() & 0xFF);
  header += static_cast<char>(dict.size() >> 8);
  return header + dict;
}

// A new file beside final (".<name>.<token>.tmp", like fileio.atomic_path), created exclusively.
std::FILE* create_temporary(const fs::path& final, fs::path* temporary, int* error_number) {
  const fs::path folder = final.has_parent_path() ? final.parent_path() : fs::path(".");
  // no global state for a random generator: the clock and an address make the name, exclusive creation
  // ("x") makes it safe, and a few retries make collisions harmless
  const auto ticks = static_cast<unsigned long long>(std::chrono::steady_clock::now().time_since_epoch().count());
  const auto seed = ticks ^ static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(temporary));
  for (unsigned attempt = 0; attempt < 100; ++attempt) {
    char token[24];
    std::snprintf(token, sizeof token, "%016llx", seed + attempt * 0x9E3779B97F4A7C15ULL);
    *temporary = folder / ("." + final.filename().string() + "." + token + ".tmp");
    errno = 0;
    if (std::FILE* file = std::fopen(temporary->c_str(), "wbx")) return file;
    if (errno != EEXIST) break;
  }
  *error_number = errno != 0 ? errno : EEXIST;
  return nullptr;
}

bool write_all(std::FILE* file, const std::string& head, const void* body, std::size_t bytes) {
  const bool written = std::fwrite(head.data(), 1, head.size(), file) == head.size() &&
                       (bytes == 0 || std::fwrite(body, 1, bytes, file) == bytes) && std::fflush(file) == 0;
  return std::fclose(file) == 0 && written;
}

bool write_atomically(const std::string& path, const std::string& head, const void* body, std::size_t bytes,
                      std::string* error) {
  const auto fail = [&](const std::string& reason) {
    *error = path + ": could not write (" + reason + ")";
    return false;
  };
  const fs::path final(path);
  std::error_code ignored;
  if (final.has_parent_path()) fs::create_directories(final.parent_path(), ignored);  // fopen reports failures
  fs::path temporary;
  int error_number = 0;
  std::FILE* file = create_temporary(final, &temporary, &error_number);
  if (file == nullptr) return fail(std::strerror(error_number));
  errno = 0;
  if (!write_all(file, head, body, bytes)) {
    const int saved = errno != 0 ? errno : EIO;
    fs::remove(temporary, ignored);
    return fail(std::strerror(saved));
  }
  std::error_code renamed;
  fs::rename(temporary, final, renamed);
  if (renamed) {
    fs::remove(temporary, ignored);
    return fail(renamed.message());
  }
  return true;
}

// write_atomically with nothing allowed to escape (std::bad_alloc, filesystem errors).
bool write_guarded(const std::string& path, const std::string& head, const void* body, std::size_t bytes,
                   std::string* error) {
  try {
    return write_atomically(path, head, body, bytes, error);
  } catch (const std::exception& e) {
    *error = path + ": could not write (" + e.what() + ")";
    return false;
  }
}

}  // namespace

bool read_bitmaps_npy(const std::string& path, std::vector<std::uint8_t>* pixels, std::size_t* count,
                      std::string* error) {
  try {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (file == nullptr) {
      *error = path + ": cannot read (" + std::strerror(errno) + ")";
      return false;
    }
    std::error_code size_error;
    const std::uintmax_t size = fs::file_size(path, size_error);  // fails for a folder, too
    bool ok = false;
    if (size_error) {
      *error = path + ": cannot read (" + size_error.message() + ")";
    } else {
      ok = NpyReader(path, file, size).read(pixels, count, error);
    }
    std::fclose(file);
    return ok;
  } catch (const std::exception& e) {  // std::bad_alloc, or a filesystem error; none may escape
    *error = path + ": cannot read (" + e.what() + ")";
    return false;
  }
}

bool write_bitmaps_npy(const std::string& path, const std::uint8_t* pixels, std::size_t count, std::string* error) {
  if (count > SIZE_MAX / kBitmapBytes) {
    *error = path + ": could not write (too many rows)";
    return false;
  }
  return write_guarded(path, npy_header("|u1", count, kBitmapBytes), pixels, count * kBitmapBytes, error);
}

bool write_float_npy(const std::string& path, const float* values, std::size_t rows, std::size_t cols,
                     std::string* error) {
  return write_guarded(path, npy_header("<f4", rows, cols), values, rows * cols * sizeof(float), error);
}

bool write_file_atomic(const std::string& path, const std::string& data, std::string* error) {
  return write_guarded(path, data, nullptr, 0, error);
}

}  // namespace qdm
