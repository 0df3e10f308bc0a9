// SHA-256 of a file: the metadata records the artifact's digest, so a swapped or corrupt .pte is refused before it
// runs (the same check as quickdraw_mobile.export.metadata.read_metadata).
#pragma once

#include <string>

namespace qdm {

// Lowercase hex digest of the file at `path`; false with a message when it cannot be read.
bool sha256_file(const std::string& path, std::string* hex, std::string* error);

}  // namespace qdm
