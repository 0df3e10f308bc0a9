// Errors as values inside the library: a qdm_status code and one line of text, carried to the C API unchanged.
#pragma once

#include <string>
#include <utility>

#include "qdm.h"

namespace qdm {

struct Status {
  qdm_status code = QDM_OK;
  std::string message;

  bool ok() const { return code == QDM_OK; }
  // Sets the failure and returns false, so that `return status->fail(...)` ends a bool function.
  bool fail(qdm_status failure, std::string text) {
    code = failure;
    message = std::move(text);
    return false;
  }
};

}  // namespace qdm
