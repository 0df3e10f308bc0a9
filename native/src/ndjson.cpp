#include "ndjson.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <system_error>

#include "json.h"

namespace qdm {
namespace {

// Lines of a file split like Python's universal newlines: "\n", "\r\n" and "\r" all end a line.
class LineReader {
 public:
  explicit LineReader(std::FILE* file) : file_(file) {}

  // The next line without its terminator; false at the end of the file or on a read error (see error()).
  bool next(std::string* line, bool* terminated) {
    for (;;) {
      const std::size_t at = buffer_.find_first_of("\r\n", scan_);
      // a '\r' at the end of the buffer may be the first half of "\r\n": read on before deciding
      const bool undecided = at != std::string::npos && at + 1 == buffer_.size() && buffer_[at] == '\r' && !at_eof_;
      if (at != std::string::npos && !undecided) {
        line->assign(buffer_, start_, at - start_);
        const bool crlf = buffer_[at] == '\r' && at + 1 < buffer_.size() && buffer_[at + 1] == '\n';
        start_ = scan_ = at + (crlf ? 2 : 1);
        *terminated = true;
        return true;
      }
      scan_ = at == std::string::npos ? buffer_.size() : at;
      if (at_eof_) return last_line(line, terminated);
      if (!read_more()) return false;
    }
  }

  int error() const { return errno_; }

 private:
  bool last_line(std::string* line, bool* terminated) {
    if (start_ >= buffer_.size()) return false;
    line->assign(buffer_, start_, std::string::npos);
    start_ = scan_ = buffer_.size();
    *terminated = false;
    return true;
  }

  bool read_more() {
    buffer_.erase(0, start_);  // drop the lines already handed out
    scan_ -= start_;
    start_ = 0;
    constexpr std::size_t kChunk = 1 << 16;
    const std::size_t old_size = buffer_.size();
    buffer_.resize(old_size + kChunk);
    errno = 0;
    const std::size_t got = std::fread(&buffer_[old_size], 1, kChunk, file_);
    buffer_.resize(old_size + got);
    if (got < kChunk) {
      if (std::ferror(file_)) {
        errno_ = errno != 0 ? errno : EIO;
        return false;
      }
      at_eof_ = true;
    }
    return true;
  }

  std::FILE* file_;
  std::string buffer_;
  std::size_t start_ = 0;  // first byte not yet handed out
  std::size_t scan_ = 0;   // searched up to here for a line end
  bool at_eof_ = false;
  int errno_ = 0;
};

// The code point of the well-formed UTF-8 sequence at text[*at]; *at moves past it.
std::uint32_t decode_utf8(const std::string& text, std::size_t* at) {
  const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(text[i])); };
  const std::uint32_t lead = byte(*at);
  std::size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  std::uint32_t code_point = length == 1 ? lead : lead & (0x7F >> length);
  for (std::size_t i = 1; i < length; ++i) code_point = (code_point << 6) | (byte(*at + i) & 0x3F);
  *at += length;
  return code_point;
}

// Python's str.isspace for one character.
bool is_python_space(std::uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// not line.strip(), for valid UTF-8.
bool is_blank(const std::string& line) {
  for (std::size_t at = 0; at < line.size();) {
    if (!is_python_space(decode_utf8(line, &at))) return false;
  }
  return true;
}

// The checks of iter_ndjson on one non-blank line; the drawing comes out prepared, the word as given.
bool read_record(const std::string& text, StrokeFormat format, Drawing* drawing, std::string* word,
                 std::string* error) {
  json::Value record;
  json::ParseError parse_error;
  if (!json::parse(text, &record, &parse_error)) {
    *error = "not valid JSON (" + parse_error.message + " at column " + std::to_string(parse_error.column) + ")";
    return false;
  }
  if (!record.is_object()) {
    *error = "expected a JSON object with a 'drawing' field";
    return false;
  }
  const json::Value* strokes = record.find("drawing");
  if (strokes == nullptr) {
    *error = "missing the 'drawing' field";
    return false;
  }
  const json::Value* word_value = record.find("word");
  if (word_value != nullptr && !word_value->is_string()) {
    *error = "'word' must be a string";
    return false;
  }
  Drawing parsed;
  if (!drawing_from_json(*strokes, &parsed, error) || !prepare_drawing(parsed, format, drawing, error)) return false;
  *word = word_value != nullptr ? word_value->string : std::string();
  return true;
}

class NdjsonRenderer {
 public:
  NdjsonRenderer(const std::string& path, StrokeFormat format) : path_(path), format_(format) {}

  bool run(std::vector<std::uint8_t>* pixels, std::vector<std::string>* words, std::string* error) {
    std::error_code ignored;
    if (!std::filesystem::is_regular_file(path_, ignored)) return fail(path_ + ": no such file", error);
    std::FILE* file = std::fopen(path_.c_str(), "rb");
    if (file == nullptr) return fail(path_ + ": cannot read (" + std::strerror(errno) + ")", error);
    const bool ok = render_lines(file, pixels, words, error);
    std::fclose(file);
    if (ok && words->empty()) return fail(path_ + ": no drawings (the file is empty)", error);
    return ok;
  }

 private:
  static bool fail(const std::string& message, std::string* error) {
    *error = message;
    return false;
  }

  bool render_lines(std::FILE* file, std::vector<std::uint8_t>* pixels, std::vector<std::string>* words,
                    std::string* error) {
    LineReader reader(file);
    std::string line, word, problem;
    bool terminated = false;
    Drawing drawing;
    for (std::size_t line_no = 1; reader.next(&line, &terminated); ++line_no) {
      const std::string where = path_ + ":" + std::to_string(line_no) + ": ";
      if (!json::is_valid_utf8(line)) return fail(where + "not UTF-8 text", error);
      if (is_blank(line)) continue;
      if (terminated) line += '\n';  // Python's line keeps its (translated) end: JSON columns count with it
      if (!read_record(line, format_, &drawing, &word, &problem)) return fail(where + problem, error);
      pixels->resize(pixels->size() + kPixels);
      rasterize(drawing, pixels->data() + pixels->size() - kPixels);
      words->push_back(std::move(word));
    }
    if (reader.error() != 0) return fail(path_ + ": cannot read (" + std::strerror(reader.error()) + ")", error);
    return true;
  }

  const std::string& path_;
  StrokeFormat format_;
};

}  // namespace

bool render_ndjson(const std::string& path, StrokeFormat format, std::vector<std::uint8_t>* pixels,
                   std::vector<std::string>* words, std::string* error) {
  try {
    std::vector<std::uint8_t> rendered;
    std::vector<std::string> rendered_words;
    if (!NdjsonRenderer(path, format).run(&rendered, &rendered_words, error)) return false;
    *pixels = std::move(rendered);
    *words = std::move(rendered_words);
    return true;
  } catch (const std::bad_alloc&) {
    *error = path + ": out of memory";
    return false;
  }
}

}  // namespace qdm
