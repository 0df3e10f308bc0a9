#include "artifact.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "json.h"
#include "render.h"
#include "sha256.h"

namespace qdm {
namespace {

constexpr const char* kFormat = "quickdraw-mobile-artifact";
constexpr double kVersion = 1;
constexpr double kSelfCheckVersion = 1;

std::string base_name(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool read_text(const std::string& path, std::string* text, Status* status) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return status->fail(QDM_ERROR_IO, path + ": missing or unreadable (" + std::strerror(errno) +
                                          "); every exported model needs it beside it (made by 'qdm export')");
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *text = buffer.str();
  return true;
}

bool is_string(const json::Value* value, const char* expected) {
  return value != nullptr && value->is_string() && value->string == expected;
}

bool is_integer(const json::Value* value, double expected) {
  return value != nullptr && value->is_number() && value->number == expected;
}

// A JSON path like input.bitmap.ink, or nullptr when any step is missing.
const json::Value* at(const json::Value& root, std::initializer_list<const char*> keys) {
  const json::Value* value = &root;
  for (const char* key : keys) {
    value = value->find(key);
    if (value == nullptr) return nullptr;
  }
  return value;
}

class MetadataReader {
 public:
  MetadataReader(const json::Value& root, Artifact* artifact, Status* status)
      : root_(root), artifact_(artifact), status_(status), where_(artifact->metadata_path) {}

  bool read() { return format() && classes() && input() && output() && file() && selfcheck(); }

 private:
  bool contract(const std::string& text) { return status_->fail(QDM_ERROR_CONTRACT, where_ + ": " + text); }

  bool format() {
    if (!is_string(root_.find("format"), kFormat)) return contract(std::string("not a ") + kFormat + " file");
    if (!is_integer(root_.find("version"), kVersion))
      return contract("format version differs from 1, the version this library reads");
    if (!is_string(at(root_, {"artifact", "runtime"}), "executorch"))
      return contract("describes a model for another runtime, not an ExecuTorch .pte");
    const json::Value* quant = at(root_, {"artifact", "quant"});
    if (quant == nullptr || !quant->is_string()) return contract("field 'artifact.quant' missing");
    artifact_->quant = quant->string;
    return true;
  }

  bool classes() {
    const json::Value* classes = root_.find("classes");
    const json::Value* count = root_.find("num_classes");
    if (classes == nullptr || !classes->is_array() || classes->items.empty())
      return contract("field 'classes' missing or empty");
    if (count == nullptr || !is_integer(count, static_cast<double>(classes->items.size())))
      return contract("num_classes does not match the " + std::to_string(classes->items.size()) +
                      " names of 'classes'");
    for (const json::Value& name : classes->items) {
      if (!name.is_string()) return contract("field 'classes' must hold strings");
      artifact_->labels.push_back(name.string);
    }
    return true;
  }

  bool input() {
    const json::Value* in = root_.find("input");
    if (in == nullptr || !in->is_object()) return contract("field 'input' missing");
    const json::Value* shape = in->find("shape");
    const bool shape_ok = shape != nullptr && shape->is_array() && shape->items.size() == 4 &&
                          is_string(&shape->items[0], "batch") && is_integer(&shape->items[1], 1) &&
                          is_integer(&shape->items[2], kSide) && is_integer(&shape->items[3], kSide);
    if (!shape_ok || !is_string(in->find("dtype"), "float32"))
      return contract("input must be float32 of shape ['batch', 1, 28, 28]");
    const json::Value* renderer = in->find("renderer");
    if (renderer == nullptr || !renderer->is_string() || renderer->string != kRendererVersion)
      return contract("renderer '" + (renderer && renderer->is_string() ? renderer->string : std::string("?")) +
                      "' differs from this library's '" + kRendererVersion + "'");
    if (!is_integer(at(*in, {"bitmap", "ink"}), 255) || !is_integer(at(*in, {"bitmap", "background"}), 0))
      return contract("input.bitmap must have ink 255 on background 0");
    return normalisation(*in) && batch(*in);
  }

  bool normalisation(const json::Value& in) {
    const json::Value* mean = in.find("mean");
    const json::Value* std = in.find("std");
    if (mean == nullptr || !mean->is_number() || std == nullptr || !std->is_number() || !(std->number > 0))
      return contract("input.mean and input.std must be numbers (std > 0)");
    artifact_->mean = mean->number;
    artifact_->std = std->number;
    return true;
  }

  bool batch(const json::Value& in) {
    const json::Value* max = at(in, {"batch", "max"});
    if (max == nullptr || max->type == json::Type::Null) return true;
    if (!max->is_number() || !(max->number >= 1) || max->number != std::floor(max->number) || max->number > 1e6)
      return contract("input.batch.max must be a positive integer");
    artifact_->max_batch = static_cast<std::size_t>(max->number);
    return true;
  }

  bool output() {
    const json::Value* shape = at(root_, {"output", "shape"});
    const bool ok = shape != nullptr && shape->is_array() && shape->items.size() == 2 &&
                    is_string(&shape->items[0], "batch") &&
                    is_integer(&shape->items[1], static_cast<double>(artifact_->labels.size()));
    if (!ok) return contract("output shape does not match ['batch', num_classes]");
    return true;
  }

  bool file() {
    const std::string name = base_name(artifact_->model_path);
    if (!is_string(at(root_, {"artifact", "file"}), name.c_str()))
      return contract("describes another file, not '" + name + "'");
    struct stat info{};
    if (::stat(artifact_->model_path.c_str(), &info) != 0)
      return status_->fail(QDM_ERROR_IO, artifact_->model_path + ": cannot read (" + std::strerror(errno) + ")");
    std::string digest, error;
    if (!sha256_file(artifact_->model_path, &digest, &error)) return status_->fail(QDM_ERROR_IO, error);
    if (!is_integer(at(root_, {"artifact", "bytes"}), static_cast<double>(info.st_size)) ||
        !is_string(at(root_, {"artifact", "sha256"}), digest.c_str()))
      return status_->fail(QDM_ERROR_CONTRACT, artifact_->model_path + ": size or sha256 differs from " +
                                                   base_name(where_) + " (file changed or corrupt; export it again)");
    return true;
  }

  bool selfcheck() {
    const json::Value* check = root_.find("selfcheck");
    if (check == nullptr || check->type == json::Type::Null) return true;
    SelfCheck& out = artifact_->selfcheck;
    const json::Value* drawings = check->find("drawings");
    const json::Value* tolerance = check->find("tolerance");
    if (!is_integer(check->find("version"), kSelfCheckVersion) || drawings == nullptr || !drawings->is_number() ||
        !(drawings->number >= 1 && drawings->number <= 1024) || tolerance == nullptr || !tolerance->is_number() ||
        !(tolerance->number >= 0))
      return contract("field 'selfcheck' malformed (version 1, drawings 1..1024, tolerance >= 0)");
    out.drawings = static_cast<std::size_t>(drawings->number);
    out.tolerance = static_cast<float>(tolerance->number);
    if (!selfcheck_bitmaps(*check) || !selfcheck_answers(*check)) return false;
    artifact_->has_selfcheck = true;
    return true;
  }

  bool selfcheck_bitmaps(const json::Value& check) {
    const json::Value* bitmaps = check.find("bitmaps");
    if (bitmaps == nullptr || !bitmaps->is_array() || bitmaps->items.size() != artifact_->selfcheck.drawings)
      return contract("selfcheck.bitmaps must list one bitmap per drawing");
    for (const json::Value& hex : bitmaps->items) {
      if (!hex.is_string() || hex.string.size() != 2 * kPixels)
        return contract("selfcheck.bitmaps must be strings of 1568 hex digits");
      for (std::size_t i = 0; i < kPixels; ++i) {
        const int high = hex_digit(hex.string[2 * i]), low = hex_digit(hex.string[2 * i + 1]);
        if (high < 0 || low < 0) return contract("selfcheck.bitmaps must be strings of 1568 hex digits");
        artifact_->selfcheck.bitmaps.push_back(static_cast<std::uint8_t>(high * 16 + low));
      }
    }
    return true;
  }

  bool selfcheck_answers(const json::Value& check) {
    SelfCheck& out = artifact_->selfcheck;
    const std::size_t classes = artifact_->labels.size();
    const json::Value* top1 = check.find("expected_top1");
    const json::Value* logits = check.find("expected_logits");
    if (top1 == nullptr || !top1->is_array() || top1->items.size() != out.drawings || logits == nullptr ||
        !logits->is_array() || logits->items.size() != out.drawings)
      return contract("selfcheck.expected_top1 and expected_logits must have one entry per drawing");
    for (std::size_t i = 0; i < out.drawings; ++i) {
      const json::Value& index = top1->items[i];
      if (!index.is_number() || !(index.number >= 0 && index.number < static_cast<double>(classes)))
        return contract("selfcheck.expected_top1 must hold class indices");
      out.expected_top1.push_back(static_cast<std::int32_t>(index.number));
      const json::Value& row = logits->items[i];
      if (!row.is_array() || row.items.size() != classes)
        return contract("selfcheck.expected_logits rows must have num_classes numbers");
      for (const json::Value& logit : row.items) {
        if (!logit.is_number()) return contract("selfcheck.expected_logits must hold numbers");
        out.expected_logits.push_back(static_cast<float>(logit.number));
      }
    }
    return true;
  }

  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  }

  const json::Value& root_;
  Artifact* artifact_;
  Status* status_;
  std::string where_;
};

bool read_labels(Artifact* artifact, Status* status) {
  std::string text;
  if (!read_text(artifact->labels_path, &text, status)) return false;
  std::vector<std::string> labels;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) labels.push_back(line);
  }
  if (labels != artifact->labels)
    return status->fail(QDM_ERROR_CONTRACT, artifact->labels_path + ": " + std::to_string(labels.size()) +
                                                " labels differ from the " + std::to_string(artifact->labels.size()) +
                                                " classes of " + base_name(artifact->metadata_path));
  return true;
}

}  // namespace

bool read_artifact(const std::string& model_path, Artifact* artifact, Status* status) {
  artifact->model_path = model_path;
  artifact->metadata_path = model_path + ".metadata.json";
  artifact->labels_path = model_path + ".labels.txt";
  if (model_path.size() < 4 || model_path.compare(model_path.size() - 4, 4, ".pte") != 0)
    return status->fail(QDM_ERROR_ARGUMENT, model_path + ": expected an ExecuTorch .pte file");
  struct stat info{};
  if (::stat(model_path.c_str(), &info) != 0 || !S_ISREG(info.st_mode))
    return status->fail(QDM_ERROR_IO, model_path + ": no such exported model");
  std::string text, error;
  if (!read_text(artifact->metadata_path, &text, status)) return false;
  json::Value root;
  if (!json::parse(text, &root, &error))
    return status->fail(QDM_ERROR_CONTRACT, artifact->metadata_path + ": " + error);
  if (!root.is_object()) return status->fail(QDM_ERROR_CONTRACT, artifact->metadata_path + ": not a JSON object");
  return MetadataReader(root, artifact, status).read() && read_labels(artifact, status);
}

}  // namespace qdm
