// The files `qdm export` writes beside a model, read and checked the way quickdraw_mobile.export.metadata does:
// MODEL.pte.metadata.json (format, input contract, classes, file size and sha256, self-check drawings) and
// MODEL.pte.labels.txt. A mismatch is refused with one line naming the file and the field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "status.h"

namespace qdm {

// Verification drawings and the answers the exporting machine's runtime gave for them.
struct SelfCheck {
  std::size_t drawings = 0;
  std::vector<std::uint8_t> bitmaps;         // drawings * 784
  std::vector<std::int32_t> expected_top1;   // drawings
  std::vector<float> expected_logits;        // drawings * num_classes
  float tolerance = 0.0f;
};

struct Artifact {
  std::string model_path;
  std::string metadata_path;
  std::string labels_path;
  std::string quant;                 // "none" or "int8"
  std::vector<std::string> labels;   // class names in logit order
  double mean = 0.5;                 // x = (p / 255 - mean) / std for each grey level p
  double std = 0.5;
  std::size_t max_batch = 0;         // the largest batch the program takes (0: not stated)
  bool has_selfcheck = false;
  SelfCheck selfcheck;
};

// Read and check MODEL.pte's sidecars and the file's size and sha256.
bool read_artifact(const std::string& model_path, Artifact* artifact, Status* status);

}  // namespace qdm
