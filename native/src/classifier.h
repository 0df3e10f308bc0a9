// A model loaded in ExecuTorch's C++ runtime the way an app loads it: Module over an mmapped .pte, XNNPACK, one
// forward call per batch of up to max_batch drawings. The contract checks live in artifact.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "artifact.h"
#include "qdm.h"
#include "status.h"

namespace executorch::extension::module {
class Module;
}

namespace qdm {

class Classifier {
 public:
  // threads: XNNPACK compute threads for the process (0: all cores), applied before the program is loaded.
  static std::unique_ptr<Classifier> open(const std::string& model_path, std::uint32_t threads, Status* status);
  ~Classifier();

  const Artifact& artifact() const { return artifact_; }
  std::size_t num_classes() const { return artifact_.labels.size(); }

  bool logits(const std::uint8_t* bitmaps, std::size_t count, float* out, Status* status);
  bool classify(const std::uint8_t* bitmaps, std::size_t count, std::size_t top_k, qdm_prediction* out,
                Status* status);
  // Softmax and the top_k classes of `count` rows of logits.
  bool top_k(const float* logits, std::size_t count, std::size_t top_k, qdm_prediction* out, Status* status) const;
  bool selfcheck(qdm_selfcheck_result* result, Status* status);

 private:
  Classifier() = default;
  bool load(std::uint32_t threads, Status* status);
  bool check_program(Status* status);
  bool forward(std::size_t batch, float* out, Status* status);

  Artifact artifact_;
  std::unique_ptr<executorch::extension::module::Module> module_;
  std::vector<float> input_;  // max_batch normalised drawings, reused between calls
};

// The input contract: x = p / (255 * std) + (-mean / std) in float32, the arithmetic of the Python package.
void normalise(const std::uint8_t* bitmap, double mean, double std, float* out);

// Softmax of one row of logits, computed in double and rounded to float.
void softmax(const float* logits, std::size_t classes, float* probs);

}  // namespace qdm
