// A small strict JSON reader (RFC 8259) for .ndjson lines and metadata files.
//
// Errors are worded like Python's json module ("Expecting ',' delimiter", "Extra data", ...) at the same
// positions, so that native tools and the Python package report a bad line the same way. Beyond Python, this
// reader refuses NaN / Infinity, numbers too large for a double and nesting deeper than kMaxDepth.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qdm::json {

enum class Type { Null, Bool, Number, String, Array, Object };

inline constexpr int kMaxDepth = 512;  // arrays/objects nested deeper are refused (bounds the recursion)

struct Value {
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;            // parsed with std::from_chars (locale-independent, correctly rounded)
  bool integral_literal = false;  // the literal had no '.', 'e' or 'E' (like Python's json giving an int)
  std::string string;             // UTF-8, escapes decoded (\uXXXX incl. surrogate pairs)
  std::vector<Value> items;       // Array
  std::vector<std::pair<std::string, Value>> members;  // Object, in file order

  // Member by key (the last one wins, like Python), nullptr if absent or not an object.
  const Value* find(std::string_view key) const;
  bool is_number() const { return type == Type::Number; }
  bool is_string() const { return type == Type::String; }
  bool is_array() const { return type == Type::Array; }
  bool is_object() const { return type == Type::Object; }
};

// Where and why a parse failed, counted like Python's json.JSONDecodeError.
struct ParseError {
  std::string message;      // e.g. "Expecting ',' delimiter"
  std::size_t offset = 0;   // byte offset into the text
  std::size_t line = 1;     // 1 + the number of '\n' before offset
  std::size_t column = 1;   // 1 + the number of characters (code points) between the last '\n' and offset
};

// Parse a whole document. On failure returns false and fills *error.
bool parse(std::string_view text, Value* out, ParseError* error);

// Same; the message reads "not valid JSON (Expecting ',' delimiter at column 17)", with "line L column C"
// when the error is past the first line.
bool parse(std::string_view text, Value* out, std::string* error);

// Whether text is well-formed UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF). On failure
// *bad_offset (if given) is the offset of the first byte of the first bad sequence.
bool is_valid_utf8(std::string_view text, std::size_t* bad_offset = nullptr);

}  // namespace qdm::json
