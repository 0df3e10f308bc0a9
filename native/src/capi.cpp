// The C API of qdm.h over the C++ classes: status codes and messages out, no exception ever crosses it.
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "classifier.h"
#include "json.h"
#include "qdm.h"
#include "render.h"

struct qdm_classifier {
  std::unique_ptr<qdm::Classifier> impl;
};

namespace {

qdm_status report(const qdm::Status& status, qdm_error* error) {
  if (error != nullptr) {
    error->status = status.code;
    std::strncpy(error->message, status.message.c_str(), QDM_MESSAGE_SIZE - 1);
    error->message[QDM_MESSAGE_SIZE - 1] = '\0';
  }
  return status.code;
}

qdm_status fail(qdm_status code, const std::string& message, qdm_error* error) {
  qdm::Status status;
  status.fail(code, message);
  return report(status, error);
}

// Runs `body` (which fills a Status) and turns anything thrown into a status: an app never sees an exception.
template <typename Body>
qdm_status guarded(qdm_error* error, Body&& body) {
  qdm::Status status;
  try {
    body(&status);
  } catch (const std::bad_alloc&) {
    status.fail(QDM_ERROR_MEMORY, "out of memory");
  } catch (const std::exception& exc) {
    status.fail(QDM_ERROR_RUNTIME, std::string("internal error: ") + exc.what());
  } catch (...) {
    status.fail(QDM_ERROR_RUNTIME, "internal error");
  }
  return report(status, error);
}

qdm::StrokeFormat stroke_format(qdm_stroke_format format) {
  switch (format) {
    case QDM_STROKES_SIMPLIFIED: return qdm::StrokeFormat::Simplified;
    case QDM_STROKES_RAW: return qdm::StrokeFormat::Raw;
    default: return qdm::StrokeFormat::Auto;
  }
}

bool valid_format(qdm_stroke_format format) {
  return format == QDM_STROKES_AUTO || format == QDM_STROKES_SIMPLIFIED || format == QDM_STROKES_RAW;
}

void render_prepared(const qdm::Drawing& drawing, qdm_stroke_format format, uint8_t* out, qdm::Status* status) {
  qdm::Drawing simplified;
  std::string message;
  if (!qdm::prepare_drawing(drawing, stroke_format(format), &simplified, &message)) {
    status->fail(QDM_ERROR_INPUT, message);
    return;
  }
  qdm::rasterize(simplified, out);
}

}  // namespace

extern "C" {

const char* qdm_version(void) { return "0.1.0"; }

const char* qdm_renderer_version(void) { return qdm::kRendererVersion; }

qdm_status qdm_render_strokes(const double* xs, const double* ys, const double* ts, const size_t* stroke_lengths,
                              size_t num_strokes, qdm_stroke_format format, uint8_t out[QDM_PIXELS],
                              qdm_error* error) {
  if (xs == nullptr || ys == nullptr || stroke_lengths == nullptr || out == nullptr || !valid_format(format))
    return fail(QDM_ERROR_ARGUMENT, "qdm_render_strokes: xs, ys, stroke_lengths and out are required", error);
  return guarded(error, [&](qdm::Status* status) {
    qdm::Drawing drawing(num_strokes);
    std::size_t offset = 0;
    for (std::size_t s = 0; s < num_strokes; ++s) {
      const std::size_t n = stroke_lengths[s];
      drawing[s].x.assign(xs + offset, xs + offset + n);
      drawing[s].y.assign(ys + offset, ys + offset + n);
      if (ts != nullptr) drawing[s].t.assign(ts + offset, ts + offset + n);
      offset += n;
    }
    render_prepared(drawing, format, out, status);
  });
}

qdm_status qdm_render_json(const char* drawing_json, qdm_stroke_format format, uint8_t out[QDM_PIXELS],
                           qdm_error* error) {
  if (drawing_json == nullptr || out == nullptr || !valid_format(format))
    return fail(QDM_ERROR_ARGUMENT, "qdm_render_json: drawing_json and out are required", error);
  return guarded(error, [&](qdm::Status* status) {
    qdm::json::Value value;
    qdm::Drawing drawing;
    std::string message;
    if (!qdm::json::parse(drawing_json, &value, &message) || !qdm::drawing_from_json(value, &drawing, &message)) {
      status->fail(QDM_ERROR_INPUT, "drawing: " + message);
      return;
    }
    render_prepared(drawing, format, out, status);
  });
}

qdm_status qdm_classifier_open(const char* model_path, const qdm_options* options, qdm_classifier** out,
                               qdm_error* error) {
  if (model_path == nullptr || out == nullptr)
    return fail(QDM_ERROR_ARGUMENT, "qdm_classifier_open: model_path and out are required", error);
  *out = nullptr;
  return guarded(error, [&](qdm::Status* status) {
    auto impl = qdm::Classifier::open(model_path, options != nullptr ? options->threads : 0, status);
    if (impl) *out = new qdm_classifier{std::move(impl)};
  });
}

void qdm_classifier_close(qdm_classifier* classifier) { delete classifier; }

size_t qdm_classifier_num_classes(const qdm_classifier* classifier) {
  return classifier != nullptr ? classifier->impl->num_classes() : 0;
}

const char* qdm_classifier_label(const qdm_classifier* classifier, size_t index) {
  if (classifier == nullptr || index >= classifier->impl->num_classes()) return nullptr;
  return classifier->impl->artifact().labels[index].c_str();
}

const char* qdm_classifier_quant(const qdm_classifier* classifier) {
  return classifier != nullptr ? classifier->impl->artifact().quant.c_str() : nullptr;
}

qdm_status qdm_logits(qdm_classifier* classifier, const uint8_t* bitmaps, size_t count, float* logits,
                      qdm_error* error) {
  if (classifier == nullptr || bitmaps == nullptr || logits == nullptr || count == 0)
    return fail(QDM_ERROR_ARGUMENT, "qdm_logits: a classifier, bitmaps, logits and count >= 1 are required", error);
  return guarded(error, [&](qdm::Status* status) { classifier->impl->logits(bitmaps, count, logits, status); });
}

qdm_status qdm_classify(qdm_classifier* classifier, const uint8_t* bitmaps, size_t count, size_t top_k,
                        qdm_prediction* out, qdm_error* error) {
  if (classifier == nullptr || bitmaps == nullptr || out == nullptr || count == 0)
    return fail(QDM_ERROR_ARGUMENT, "qdm_classify: a classifier, bitmaps, out and count >= 1 are required", error);
  return guarded(error, [&](qdm::Status* status) { classifier->impl->classify(bitmaps, count, top_k, out, status); });
}

qdm_status qdm_top_k(const qdm_classifier* classifier, const float* logits, size_t count, size_t top_k,
                     qdm_prediction* out, qdm_error* error) {
  if (classifier == nullptr || logits == nullptr || out == nullptr || count == 0)
    return fail(QDM_ERROR_ARGUMENT, "qdm_top_k: a classifier, logits, out and count >= 1 are required", error);
  return guarded(error, [&](qdm::Status* status) { classifier->impl->top_k(logits, count, top_k, out, status); });
}

qdm_status qdm_selfcheck(qdm_classifier* classifier, qdm_selfcheck_result* result, qdm_error* error) {
  if (classifier == nullptr || result == nullptr)
    return fail(QDM_ERROR_ARGUMENT, "qdm_selfcheck: a classifier and a result are required", error);
  return guarded(error, [&](qdm::Status* status) { classifier->impl->selfcheck(result, status); });
}

}  // extern "C"
