/* The smallest app: open a model, run its self-check, classify one drawing given as strokes.
 *
 *   qdm-example-c MODEL.pte
 *
 * Plain C on libqdm.so, as a JNI, Swift or Dart bridge would call it. */
#include <stdio.h>

#include "qdm.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.pte\n", argv[0]);
    return 2;
  }
  qdm_error error;
  qdm_classifier* model = NULL;
  if (qdm_classifier_open(argv[1], NULL, &model, &error) != QDM_OK) {
    fprintf(stderr, "error: %s\n", error.message);
    return 2;
  }
  qdm_selfcheck_result check;
  if (qdm_selfcheck(model, &check, &error) == QDM_OK)
    printf("selfcheck %s (%zu/%zu)\n", check.passed ? "passed" : "FAILED", check.top1_agree, check.drawings);
  else
    printf("selfcheck not run: %s\n", error.message);

  /* A circle of 24 points in screen pixels, one stroke, no times: raw strokes are simplified as in Python. */
  double xs[25], ys[25];
  static const double cosines[24] = {1, .966, .866, .707, .5, .259, 0, -.259, -.5, -.707, -.866, -.966,
                                     -1, -.966, -.866, -.707, -.5, -.259, 0, .259, .5, .707, .866, .966};
  for (int i = 0; i < 25; ++i) {
    xs[i] = 200 + 120 * cosines[i % 24];
    ys[i] = 200 + 120 * cosines[(i + 18) % 24];
  }
  size_t lengths[1] = {25};
  unsigned char bitmap[QDM_PIXELS];
  qdm_prediction top[3];
  if (qdm_render_strokes(xs, ys, NULL, lengths, 1, QDM_STROKES_RAW, bitmap, &error) != QDM_OK ||
      qdm_classify(model, bitmap, 1, 3, top, &error) != QDM_OK) {
    fprintf(stderr, "error: %s\n", error.message);
    qdm_classifier_close(model);
    return 2;
  }
  for (int k = 0; k < 3; ++k) printf("%d. %s %.4f\n", k + 1, top[k].label, (double)top[k].prob);
  qdm_classifier_close(model);
  return 0;
}
