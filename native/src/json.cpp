#include "json.h"

#include <charconv>
#include <cstdint>
#include <new>
#include <system_error>

namespace qdm::json {

const Value* Value::find(std::string_view key) const {
  if (type != Type::Object) return nullptr;
  for (auto it = members.rbegin(); it != members.rend(); ++it) {  // from the back: the last one wins
    if (it->first == key) return &it->second;
  }
  return nullptr;
}

// ------------------------------------------------------------------------------------------------ UTF-8
namespace {

// Length of the well-formed UTF-8 sequence at text[at], or 0 if it is not one (Unicode table 3-7).
std::size_t utf8_sequence_length(std::string_view text, std::size_t at) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(at);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // no overlong forms
    if (lead == 0xED) high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // no overlong forms
    if (lead == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (text.size() - at < length) return 0;
  if (byte(at + 1) < low || byte(at + 1) > high) return 0;
  for (std::size_t i = 2; i < length; ++i) {
    if (byte(at + i) < 0x80 || byte(at + i) > 0xBF) return 0;
  }
  return length;
}

void append_utf8(std::uint32_t code_point, std::string* out) {
  const auto put = [out](std::uint32_t bits) { out->push_back(static_cast<char>(bits)); };
  if (code_point < 0x80) {
    put(code_point);
  } else if (code_point < 0x800) {
    put(0xC0 | (code_point >> 6));
    put(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    put(0xE0 | (code_point >> 12));
    put(0x80 | ((code_point >> 6) & 0x3F));
    put(0x80 | (code_point & 0x3F));
  } else {
    put(0xF0 | (code_point >> 18));
    put(0x80 | ((code_point >> 12) & 0x3F));
    put(0x80 | ((code_point >> 6) & 0x3F));
    put(0x80 | (code_point & 0x3F));
  }
}

}  // namespace

bool is_valid_utf8(std::string_view text, std::size_t* bad_offset) {
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t length = utf8_sequence_length(text, at);
    if (length == 0) {
      if (bad_offset != nullptr) *bad_offset = at;
      return false;
    }
    at += length;
  }
  return true;
}

// ------------------------------------------------------------------------------------------------ parser
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_whitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int hex_digit_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Whether a decimal literal that std::from_chars found out of range is too large (else too small): the
// decimal exponent of its first significant digit decides. Saturates on absurd exponents.
bool literal_overflows(std::string_view literal) {
  bool found = false, after_point = false;
  long long integer_digits = 0, fraction_zeros = 0;
  std::size_t i = literal.front() == '-' ? 1 : 0;
  for (; i < literal.size() && literal[i] != 'e' && literal[i] != 'E'; ++i) {
    const char c = literal[i];
    if (c == '.') {
      after_point = true;
    } else if (!found && c == '0') {
      if (after_point) ++fraction_zeros;
    } else if (!found) {
      found = true;
      if (!after_point) integer_digits = 1;
    } else if (!after_point) {
      ++integer_digits;
    }
  }
  // 10^first_digit_exponent is the place of the first nonzero digit
  const long long first_digit_exponent = found && integer_digits > 0 ? integer_digits - 1 : -(fraction_zeros + 1);
  long long exponent = 0;
  if (i < literal.size()) {
    ++i;
    const bool negative = i < literal.size() && literal[i] == '-';
    if (i < literal.size() && (literal[i] == '-' || literal[i] == '+')) ++i;
    for (; i < literal.size(); ++i) {
      if (exponent < 1000000000) exponent = exponent * 10 + (literal[i] - '0');
    }
    if (negative) exponent = -exponent;
  }
  return first_digit_exponent + exponent >= 0;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  bool parse_document(Value* out) {
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") return fail("Unexpected UTF-8 BOM (decode using utf-8-sig)", 0);
    std::size_t bad = 0;
    if (!is_valid_utf8(text_, &bad)) return fail("Invalid UTF-8", bad);
    skip_whitespace();
    if (!parse_value(out, 0)) return false;
    skip_whitespace();
    if (pos_ != text_.size()) return fail("Extra data", pos_);
    return true;
  }

  ParseError error() const {
    ParseError error;
    error.message = message_;
    error.offset = error_at_;
    for (std::size_t i = 0; i < error_at_ && i < text_.size(); ++i) {
      const auto byte = static_cast<unsigned char>(text_[i]);
      if (byte == '\n') {
        ++error.line;
        error.column = 1;
      } else if ((byte & 0xC0) != 0x80) {  // count characters, not continuation bytes
        ++error.column;
      }
    }
    return error;
  }

 private:
  bool fail(const char* message, std::size_t at) {
    message_ = message;
    error_at_ = at;
    return false;
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }
  bool next_is(char c) const { return !at_end() && peek() == c; }

  void skip_whitespace() {
    while (!at_end() && is_whitespace(peek())) ++pos_;
  }

  bool starts_with(std::string_view word) const { return text_.substr(pos_, word.size()) == word; }

  // A value at pos_ (whitespace already skipped), as Python's scanner reads one.
  bool parse_value(Value* out, int depth) {
    if (at_end()) return fail("Expecting value", pos_);
    switch (peek()) {
      case '"':
        out->type = Type::String;
        return parse_string(&out->string);
      case '{':
        return parse_object(out, depth + 1);
      case '[':
        return parse_array(out, depth + 1);
      default:
        break;
    }
    if (parse_keyword(out)) return true;
    if (starts_with("NaN") || starts_with("Infinity") || starts_with("-Infinity")) {
      return fail("NaN and Infinity are not JSON numbers", pos_);  // Python accepts them; JSON does not
    }
    return parse_number(out);
  }

  bool parse_keyword(Value* out) {
    if (starts_with("null")) {
      out->type = Type::Null;
      pos_ += 4;
    } else if (starts_with("true") || starts_with("false")) {
      out->type = Type::Bool;
      out->boolean = peek() == 't';
      pos_ += out->boolean ? 4 : 5;
    } else {
      return false;
    }
    return true;
  }

  bool enter(int depth) {
    if (depth > kMaxDepth) return fail("nested too deeply (more than 512 levels)", pos_);
    ++pos_;  // the opening bracket
    skip_whitespace();
    return true;
  }

  // After a member or item: skip to the closing bracket (true, *closed set) or past a ','.
  bool after_element(char closing, bool* closed) {
    skip_whitespace();
    *closed = next_is(closing);
    if (*closed) {
      ++pos_;
      return true;
    }
    if (!next_is(',')) return fail("Expecting ',' delimiter", pos_);
    ++pos_;
    skip_whitespace();
    return true;
  }

  bool parse_array(Value* out, int depth) {
    out->type = Type::Array;
    if (!enter(depth)) return false;
    if (next_is(']')) {
      ++pos_;
      return true;
    }
    for (bool closed = false; !closed;) {
      out->items.emplace_back();
      if (!parse_value(&out->items.back(), depth) || !after_element(']', &closed)) return false;
    }
    return true;
  }

  bool parse_object(Value* out, int depth) {
    out->type = Type::Object;
    if (!enter(depth)) return false;
    if (next_is('}')) {
      ++pos_;
      return true;
    }
    for (bool closed = false; !closed;) {
      if (!next_is('"')) return fail("Expecting property name enclosed in double quotes", pos_);
      out->members.emplace_back();
      auto& member = out->members.back();
      if (!parse_string(&member.first)) return false;
      skip_whitespace();
      if (!next_is(':')) return fail("Expecting ':' delimiter", pos_);
      ++pos_;
      skip_whitespace();
      if (!parse_value(&member.second, depth) || !after_element('}', &closed)) return false;
    }
    return true;
  }

  // A string at pos_ (the opening quote). Positions of errors follow CPython's scanstring.
  bool parse_string(std::string* out) {
    const std::size_t begin = pos_++;
    for (;;) {
      if (at_end()) return fail("Unterminated string starting at", begin);
      const char c = peek();
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) return fail("Invalid control character at", pos_);
      if (c != '\\') {
        out->push_back(c);
        ++pos_;
        continue;
      }
      ++pos_;
      if (at_end()) return fail("Unterminated string starting at", begin);
      if (!(peek() == 'u' ? parse_unicode_escape(out) : parse_simple_escape(out))) return false;
    }
  }

  bool parse_simple_escape(std::string* out) {
    static constexpr std::string_view kFrom = "\"\\/bfnrt", kTo = "\"\\/\b\f\n\r\t";
    const std::size_t which = kFrom.find(peek());
    if (which == std::string_view::npos) return fail("Invalid \\escape", pos_ - 1);
    out->push_back(kTo[which]);
    ++pos_;
    return true;
  }

  // Four hex digits after the 'u' at u_at; like CPython, a character must follow them.
  bool read_hex4(std::size_t u_at, std::uint32_t* code_unit) {
    if (u_at + 5 >= text_.size()) return fail("Invalid \\uXXXX escape", u_at);
    std::uint32_t value = 0;
    for (std::size_t i = u_at + 1; i <= u_at + 4; ++i) {
      const int digit = hex_digit_value(text_[i]);
      if (digit < 0) return fail("Invalid \\uXXXX escape", u_at);
      value = value * 16 + static_cast<std::uint32_t>(digit);
    }
    *code_unit = value;
    return true;
  }

  // \uXXXX at pos_ (the 'u'), joined with a following \uXXXX low surrogate. A lone surrogate (which Python
  // keeps, but UTF-8 cannot hold) becomes U+FFFD.
  bool parse_unicode_escape(std::string* out) {
    std::uint32_t code_point = 0;
    if (!read_hex4(pos_, &code_point)) return false;
    pos_ += 5;
    const bool high = code_point >= 0xD800 && code_point <= 0xDBFF;
    if (high && pos_ + 6 < text_.size() && text_[pos_] == '\\' && text_[pos_ + 1] == 'u') {
      std::uint32_t low = 0;
      if (!read_hex4(pos_ + 1, &low)) return false;
      if (low >= 0xDC00 && low <= 0xDFFF) {
        code_point = 0x10000 + ((code_point - 0xD800) << 10) + (low - 0xDC00);
        pos_ += 6;
      }
    }
    append_utf8(code_point >= 0xD800 && code_point <= 0xDFFF ? 0xFFFD : code_point, out);
    return true;
  }

  std::size_t skip_digits(std::size_t at) const {
    while (at < text_.size() && is_digit(text_[at])) ++at;
    return at;
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)? , the optional parts dropped when incomplete (Python does
  // the same: "1." is the number 1 followed by a stray '.').
  bool parse_number(Value* out) {
    const std::size_t start = pos_;
    std::size_t at = start;
    if (at < text_.size() && text_[at] == '-') ++at;
    if (at >= text_.size() || !is_digit(text_[at])) return fail("Expecting value", start);
    at = text_[at] == '0' ? at + 1 : skip_digits(at);
    bool integral = true;
    if (at + 1 < text_.size() && text_[at] == '.' && is_digit(text_[at + 1])) {
      at = skip_digits(at + 1);
      integral = false;
    }
    if (at < text_.size() && (text_[at] == 'e' || text_[at] == 'E')) {
      std::size_t digits = at + 1;
      if (digits < text_.size() && (text_[digits] == '-' || text_[digits] == '+')) ++digits;
      const std::size_t end = skip_digits(digits);
      if (end > digits) {
        at = end;
        integral = false;
      }
    }
    pos_ = at;
    return convert_number(text_.substr(start, at - start), integral, start, out);
  }

  bool convert_number(std::string_view literal, bool integral, std::size_t start, Value* out) {
    double value = 0.0;
    const auto result = std::from_chars(literal.data(), literal.data() + literal.size(), value);
    if (result.ec == std::errc::result_out_of_range) {
      if (literal_overflows(literal)) return fail("number out of range", start);
      value = literal.front() == '-' ? -0.0 : 0.0;  // underflow: Python's float() gives a signed zero
    } else if (result.ec != std::errc() || result.ptr != literal.data() + literal.size()) {
      return fail("Expecting value", start);  // cannot happen for a literal that matched the grammar
    }
    if (integral && value == 0.0) value = 0.0;  // "-0" is the integer 0, as in Python
    out->type = Type::Number;
    out->number = value;
    out->integral_literal = integral;
    return true;
  }

  std::string_view text_;
  std::size_t pos_ = 0;
  const char* message_ = "";
  std::size_t error_at_ = 0;
};

}  // namespace

bool parse(std::string_view text, Value* out, ParseError* error) {
  try {  // only std::bad_alloc can come through; it must not escape
    Value value;
    Parser parser(text);
    if (!parser.parse_document(&value)) {
      *error = parser.error();
      return false;
    }
    *out = std::move(value);
    return true;
  } catch (const std::bad_alloc&) {
    *error = ParseError{"out of memory", 0, 1, 1};
    return false;
  }
}

bool parse(std::string_view text, Value* out, std::string* error) {
  ParseError detail;
  if (parse(text, out, &detail)) return true;
  try {
    std::string where = detail.line > 1 ? "line " + std::to_string(detail.line) + " column " : "column ";
    *error = "not valid JSON (" + detail.message + " at " + where + std::to_string(detail.column) + ")";
  } catch (const std::bad_alloc&) {
    error->clear();
  }
  return false;
}

}  // namespace qdm::json
