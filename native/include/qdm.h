/*
 * qdm.h: QuickDraw Mobile's on-device API, in plain C.
 *
 * The shape a JNI, Swift or Dart bridge calls: opaque handles, caller-owned buffers, no C++ exceptions across it.
 * Every function that can fail returns a qdm_status and, when `error` is not NULL, fills it with the same code and
 * one line naming the problem ("model.pte.metadata.json: renderer 'qdm-render-2' differs from this library's
 * 'qdm-render-1'"). Nothing here prints.
 *
 * The contract it implements is the one `qdm export` writes beside every model: MODEL.pte, MODEL.pte.labels.txt
 * and MODEL.pte.metadata.json (input shape, normalisation, renderer version, classes, self-check drawings).
 *
 *   qdm_classifier* model = NULL;
 *   qdm_error error;
 *   if (qdm_classifier_open("model.pte", NULL, &model, &error) != QDM_OK) { show(error.message); return; }
 *   uint8_t bitmap[QDM_PIXELS];
 *   qdm_render_strokes(xs, ys, NULL, lengths, num_strokes, QDM_STROKES_RAW, bitmap, &error);
 *   qdm_prediction top[5];
 *   qdm_classify(model, bitmap, 1, 5, top, &error);   // top[0].label, top[0].prob
 *   qdm_classifier_close(model);
 */
#ifndef QDM_H
#define QDM_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define QDM_API __declspec(dllexport)
#else
#define QDM_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define QDM_SIDE 28
#define QDM_PIXELS 784          /* a bitmap: 28 rows of 28 uint8 grey levels, row-major, ink 255 on 0 */
#define QDM_MESSAGE_SIZE 512

typedef enum {
  QDM_OK = 0,
  QDM_ERROR_ARGUMENT = 1,   /* a NULL pointer, a zero count, top_k of 0, ... */
  QDM_ERROR_IO = 2,         /* a file is missing or unreadable */
  QDM_ERROR_INPUT = 3,      /* strokes or bitmaps are malformed */
  QDM_ERROR_CONTRACT = 4,   /* the model's metadata, labels or program do not match what this library expects */
  QDM_ERROR_RUNTIME = 5,    /* ExecuTorch failed to load or run the program, or it produced non-finite logits */
  QDM_ERROR_MEMORY = 6,     /* an allocation failed */
  QDM_ERROR_NO_SELFCHECK = 7 /* the model was exported without self-check drawings (export it again) */
} qdm_status;

typedef struct {
  qdm_status status;
  char message[QDM_MESSAGE_SIZE]; /* one line, NUL-terminated; "" on success */
} qdm_error;

typedef enum {
  QDM_STROKES_AUTO = 0,       /* raw when any stroke has times or a coordinate is fractional or outside 0..255 */
  QDM_STROKES_SIMPLIFIED = 1, /* integer coordinates 0..255, as in the official "simplified" files */
  QDM_STROKES_RAW = 2         /* screen coordinates (any range), simplified exactly as the Python package does */
} qdm_stroke_format;

/* The library's version and the renderer version it implements (the metadata's input.renderer must equal it). */
QDM_API const char* qdm_version(void);
QDM_API const char* qdm_renderer_version(void);

/*
 * Strokes -> the 28x28 bitmap the model was trained on, byte-identical to quickdraw_mobile.data.render.
 * Stroke i has stroke_lengths[i] points; its coordinates follow those of stroke i-1 in xs and ys (and ts, which
 * may be NULL: times are not used, a non-NULL ts only marks the drawing as raw under QDM_STROKES_AUTO).
 */
QDM_API qdm_status qdm_render_strokes(const double* xs, const double* ys, const double* ts,
                                      const size_t* stroke_lengths, size_t num_strokes, qdm_stroke_format format,
                                      uint8_t out[QDM_PIXELS], qdm_error* error);
/* The same from the JSON text of one drawing: [[[x...], [y...]], ...] or with [t...] lists (the "drawing" field
   of a Quick, Draw! .ndjson line). */
QDM_API qdm_status qdm_render_json(const char* drawing_json, qdm_stroke_format format, uint8_t out[QDM_PIXELS],
                                   qdm_error* error);

typedef struct qdm_classifier qdm_classifier;

typedef struct {
  /* Compute threads for XNNPACK; 0 = all cores. ExecuTorch's thread pool is process-wide: the last model opened
     sets it for every model of the process. */
  uint32_t threads;
} qdm_options;

/* Load MODEL.pte with its .labels.txt and .metadata.json; checks the contract and the file's size and sha256. */
QDM_API qdm_status qdm_classifier_open(const char* model_path, const qdm_options* options, qdm_classifier** out,
                                       qdm_error* error);
QDM_API void qdm_classifier_close(qdm_classifier* classifier);

QDM_API size_t qdm_classifier_num_classes(const qdm_classifier* classifier);
/* The class name of logit `index` (valid while the classifier is open), or NULL when out of range. */
QDM_API const char* qdm_classifier_label(const qdm_classifier* classifier, size_t index);
/* The quantization the model was exported with: "none" (FP32) or "int8". */
QDM_API const char* qdm_classifier_quant(const qdm_classifier* classifier);

/* Raw scores: `count` bitmaps of QDM_PIXELS bytes each in, count * num_classes floats out. */
QDM_API qdm_status qdm_logits(qdm_classifier* classifier, const uint8_t* bitmaps, size_t count, float* logits,
                              qdm_error* error);

typedef struct {
  int32_t index;     /* class index into the labels */
  const char* label; /* class name, owned by the classifier */
  float prob;        /* softmax probability */
} qdm_prediction;

/* The top_k classes for `count` rows of logits (from qdm_logits): softmax, most probable first (ties: lower index
   first), count * top_k entries out. */
QDM_API qdm_status qdm_top_k(const qdm_classifier* classifier, const float* logits, size_t count, size_t top_k,
                             qdm_prediction* out, qdm_error* error);

/* The top_k classes of each bitmap, most probable first (ties: lower index first): count * top_k entries out.
   top_k larger than the number of classes is an argument error. */
QDM_API qdm_status qdm_classify(qdm_classifier* classifier, const uint8_t* bitmaps, size_t count, size_t top_k,
                                qdm_prediction* out, qdm_error* error);

typedef struct {
  int passed;               /* 1 when every drawing's top-1 agrees and every logit is within tolerance */
  size_t drawings;          /* how many verification drawings the export stored */
  size_t top1_agree;        /* how many of them this device classifies as the exporting machine did */
  float max_abs_logit_diff; /* largest difference from the exporting machine's logits */
  float tolerance;          /* the largest difference the export accepts */
} qdm_selfcheck_result;

/* Run the export's verification drawings on this device and compare with the answers recorded at export time.
   Returns QDM_OK when the check could run (see result->passed), QDM_ERROR_NO_SELFCHECK for an older export. */
QDM_API qdm_status qdm_selfcheck(qdm_classifier* classifier, qdm_selfcheck_result* result, qdm_error* error);

#ifdef __cplusplus
}
#endif

#endif /* QDM_H */
