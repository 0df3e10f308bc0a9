// Rendering a whole .ndjson stroke file, like render.py's render_ndjson (and iter_ndjson's checks).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "render.h"

namespace qdm {

// Every non-blank line of an .ndjson file (objects with a "drawing" field, optional string "word") rendered in
// line order: pixels gets N * kPixels bytes, words N strings ("" where a line has none). Lines end with "\n",
// "\r\n" or "\r" (Python's universal newlines) and count from 1; blank means only whitespace (str.isspace).
// Errors are one line: "<path>:<line>: <problem>" (not UTF-8 text, bad JSON, not an object, missing 'drawing',
// non-string word, bad drawing), or "<path>: no such file", "<path>: cannot read (...)",
// "<path>: no drawings (the file is empty)", with the wording of render.py's iter_ndjson / render_ndjson.
bool render_ndjson(const std::string& path, StrokeFormat format, std::vector<std::uint8_t>* pixels,
                   std::vector<std::string>* words, std::string* error);

}  // namespace qdm
