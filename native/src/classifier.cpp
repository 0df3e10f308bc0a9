#include "classifier.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>
#include <thread>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/platform/platform.h>

#include "render.h"

// The XNNPACK thread pool of libexecutorch_threadpool.so; the wheel ships the library but not this header.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(std::uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace qdm {
namespace {

namespace et = executorch;
using et::extension::module::Module;

// ExecuTorch reports why a load failed only through its log. The library keeps the last error line of the
// calling thread for its own message instead of printing into the host app's stderr.
thread_local std::string last_runtime_error;

void keep_runtime_errors(et_timestamp_t, et_pal_log_level_t level, const char*, const char*, std::size_t,
                         const char* message, std::size_t length) {
  if (level != kError && level != kFatal) return;
  last_runtime_error.clear();
  for (std::size_t i = 0; i < length; ++i) {  // printable ASCII only: messages may quote bytes of a corrupt file
    const auto c = static_cast<unsigned char>(message[i]);
    if (c != '\n') last_runtime_error += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
  }
}

void quiet_runtime_log() {
  static std::once_flag once;
  std::call_once(once, [] { et::runtime::register_pal(et::runtime::PalImpl::create(keep_runtime_errors, __FILE__)); });
}

std::string runtime_reason(et::runtime::Error error) {
  std::string reason = "error " + std::to_string(static_cast<int>(error));
  if (!last_runtime_error.empty()) reason += ": " + last_runtime_error;
  return reason;
}

}  // namespace

void normalise(const std::uint8_t* bitmap, double mean, double std, float* out) {
  const float scale = static_cast<float>(255.0 * std);
  const float shift = static_cast<float>(-mean / std);
  for (std::size_t i = 0; i < static_cast<std::size_t>(kPixels); ++i) out[i] = static_cast<float>(bitmap[i]) / scale + shift;
}

void softmax(const float* logits, std::size_t classes, float* probs) {
  const float top = *std::max_element(logits, logits + classes);
  double total = 0.0;
  for (std::size_t c = 0; c < classes; ++c) total += std::exp(static_cast<double>(logits[c]) - top);
  for (std::size_t c = 0; c < classes; ++c)
    probs[c] = static_cast<float>(std::exp(static_cast<double>(logits[c]) - top) / total);
}

Classifier::~Classifier() = default;

std::unique_ptr<Classifier> Classifier::open(const std::string& model_path, std::uint32_t threads, Status* status) {
  std::unique_ptr<Classifier> classifier(new Classifier());
  if (!read_artifact(model_path, &classifier->artifact_, status) || !classifier->load(threads, status)) return nullptr;
  return classifier;
}

bool Classifier::load(std::uint32_t threads, Status* status) {
  quiet_runtime_log();
  last_runtime_error.clear();
  // The pool is handed to XNNPACK when a method loads, so it is resized first.
  const unsigned all = std::max(1u, std::thread::hardware_concurrency());
  et::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(threads == 0 ? all : threads);
  module_ = std::make_unique<Module>(artifact_.model_path, Module::LoadMode::Mmap);
  // Full internal-consistency verification: the file comes from outside the app.
  et::runtime::Error error = module_->load(et::runtime::Program::Verification::InternalConsistency);
  if (error == et::runtime::Error::Ok) error = module_->load_method("forward");
  if (error != et::runtime::Error::Ok)
    return status->fail(QDM_ERROR_RUNTIME, artifact_.model_path + ": ExecuTorch cannot load it (" +
                                               runtime_reason(error) + "); corrupt or not a .pte");
  return check_program(status);
}

// What the program declares must be what the metadata promises (catches a swapped or stale file).
bool Classifier::check_program(Status* status) {
  auto meta = module_->method_meta("forward");
  const std::string where = artifact_.model_path + ": the program";
  if (!meta.ok() || meta->num_inputs() != 1 || meta->num_outputs() != 1)
    return status->fail(QDM_ERROR_CONTRACT, where + " must have one input and one output");
  auto in = meta->input_tensor_meta(0);
  auto out = meta->output_tensor_meta(0);
  if (!in.ok() || !out.ok()) return status->fail(QDM_ERROR_CONTRACT, where + "'s input and output must be tensors");
  const auto in_sizes = in->sizes();
  const auto out_sizes = out->sizes();
  if (in->scalar_type() != et::aten::ScalarType::Float || in_sizes.size() != 4 || in_sizes[1] != 1 ||
      in_sizes[2] != kSide || in_sizes[3] != kSide || in_sizes[0] < 1)
    return status->fail(QDM_ERROR_CONTRACT, where + " does not take float32 (batch, 1, 28, 28)");
  if (out_sizes.size() != 2 || static_cast<std::size_t>(out_sizes[1]) != num_classes())
    return status->fail(QDM_ERROR_CONTRACT, where + " does not give one logit per class of the metadata (" +
                                                std::to_string(num_classes()) + ")");
  const auto program_batch = static_cast<std::size_t>(in_sizes[0]);
  if (artifact_.max_batch != 0 && artifact_.max_batch != program_batch)
    return status->fail(QDM_ERROR_CONTRACT, where + " takes batches of up to " + std::to_string(program_batch) +
                                                ", the metadata says " + std::to_string(artifact_.max_batch));
  artifact_.max_batch = program_batch;
  input_.resize(program_batch * kPixels);
  return true;
}

bool Classifier::forward(std::size_t batch, float* out, Status* status) {
  auto tensor = et::extension::from_blob(input_.data(), {static_cast<et::aten::SizesType>(batch), 1, kSide, kSide});
  last_runtime_error.clear();
  auto result = module_->forward(tensor);
  if (!result.ok())
    return status->fail(QDM_ERROR_RUNTIME, artifact_.model_path + ": forward failed (" +
                                               runtime_reason(result.error()) + ")");
  const auto& logits = result->at(0).toTensor();
  const std::size_t values = batch * num_classes();
  if (static_cast<std::size_t>(logits.numel()) != values)
    return status->fail(QDM_ERROR_CONTRACT, artifact_.model_path + ": the program gave " +
                                                std::to_string(logits.numel()) + " logits, expected " +
                                                std::to_string(values));
  const float* data = logits.const_data_ptr<float>();
  if (!std::all_of(data, data + values, [](float v) { return std::isfinite(v); }))
    return status->fail(QDM_ERROR_RUNTIME, artifact_.model_path + ": the model produced non-finite logits "
                                                                  "(NaN or infinity)");
  std::copy(data, data + values, out);
  return true;
}

bool Classifier::logits(const std::uint8_t* bitmaps, std::size_t count, float* out, Status* status) {
  for (std::size_t start = 0; start < count; start += artifact_.max_batch) {
    const std::size_t batch = std::min(artifact_.max_batch, count - start);
    for (std::size_t i = 0; i < batch; ++i)
      normalise(bitmaps + (start + i) * kPixels, artifact_.mean, artifact_.std, input_.data() + i * kPixels);
    if (!forward(batch, out + start * num_classes(), status)) return false;
  }
  return true;
}

bool Classifier::classify(const std::uint8_t* bitmaps, std::size_t count, std::size_t top_k, qdm_prediction* out,
                          Status* status) {
  std::vector<float> scores(count * num_classes());
  return logits(bitmaps, count, scores.data(), status) && this->top_k(scores.data(), count, top_k, out, status);
}

bool Classifier::top_k(const float* logits, std::size_t count, std::size_t top_k, qdm_prediction* out,
                       Status* status) const {
  const std::size_t classes = num_classes();
  if (top_k < 1 || top_k > classes)
    return status->fail(QDM_ERROR_ARGUMENT, "top_k must be 1.." + std::to_string(classes) + ", got " +
                                                std::to_string(top_k));
  std::vector<float> probs(classes);
  std::vector<std::size_t> order(classes);
  for (std::size_t row = 0; row < count; ++row) {
    softmax(logits + row * classes, classes, probs.data());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return probs[a] > probs[b]; });
    for (std::size_t k = 0; k < top_k; ++k) {
      const std::size_t c = order[k];
      out[row * top_k + k] = {static_cast<std::int32_t>(c), artifact_.labels[c].c_str(), probs[c]};
    }
  }
  return true;
}

bool Classifier::selfcheck(qdm_selfcheck_result* result, Status* status) {
  if (!artifact_.has_selfcheck)
    return status->fail(QDM_ERROR_NO_SELFCHECK, artifact_.metadata_path +
                                                    ": no self-check drawings (exported by an older qdm, or the model answered none of the "
                                                    "verification drawings by a clear margin)");
  const SelfCheck& check = artifact_.selfcheck;
  const std::size_t classes = num_classes();
  std::vector<float> scores(check.drawings * classes);
  if (!logits(check.bitmaps.data(), check.drawings, scores.data(), status)) return false;
  *result = {0, check.drawings, 0, 0.0f, check.tolerance};
  for (std::size_t row = 0; row < check.drawings; ++row) {
    const float* got = scores.data() + row * classes;
    const auto top1 = static_cast<std::int32_t>(std::max_element(got, got + classes) - got);
    result->top1_agree += top1 == check.expected_top1[row] ? 1u : 0u;
    for (std::size_t c = 0; c < classes; ++c)
      result->max_abs_logit_diff =
          std::max(result->max_abs_logit_diff, std::fabs(got[c] - check.expected_logits[row * classes + c]));
  }
  result->passed = result->top1_agree == check.drawings && result->max_abs_logit_diff <= check.tolerance;
  return true;
}

}  // namespace qdm
