// qdm-native: the on-device runtime of QuickDraw Mobile as a command, with the file formats of the Python CLI.
//
//   qdm-native classify  --model M.pte --input FILE.npy|FILE.ndjson --out FILE.jsonl [--top-k 5] [--threads N]
//                        [--logits FILE.npy]
//   qdm-native render    --input FILE.ndjson --out FILE.npy [--format auto|simplified|raw]
//   qdm-native bench     --model M.pte [--input FILE.npy] [--runs 200] [--warmup 20] [--batch 32]
//                        [--threads 1,N] [--json FILE]
//   qdm-native selfcheck --model M.pte [--threads N]
//
// Exit status: 0 done, 1 the self-check failed, 2 bad input or usage (one line "error: ..." on stderr).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_io.h"
#include "ndjson.h"
#include "npy.h"
#include "qdm.h"
#include "render.h"

namespace {

using qdm::cli::json_string;

constexpr int kFailedCheck = 1;
constexpr int kBadInput = 2;

struct Failure {
  std::string message;
};

// --name value options of one command; anything not declared is a usage error.
class Options {
 public:
  Options(const std::string& command, int argc, char** argv, const std::vector<std::string>& known) {
    for (int i = 2; i < argc; i += 2) {
      const std::string name = argv[i];
      if (std::find(known.begin(), known.end(), name) == known.end())
        throw Failure{command + ": unknown option " + name + " (see qdm-native --help)"};
      if (i + 1 >= argc) throw Failure{command + ": " + name + " needs a value"};
      values_[name] = argv[i + 1];
    }
    command_ = command;
  }
  std::string required(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) throw Failure{command_ + ": " + name + " is required"};
    return it->second;
  }
  std::string get(const std::string& name, const std::string& fallback) const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
  }
  std::size_t number(const std::string& name, std::size_t fallback, std::size_t low) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    return parse_number(name, it->second, low);
  }
  std::size_t parse_number(const std::string& name, const std::string& text, std::size_t low) const {
    char* end = nullptr;
    const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || text[0] == '-' || value < low || value > 1000000)
      throw Failure{command_ + ": " + name + " expects a whole number >= " + std::to_string(low) + ", got '" +
                    text + "'"};
    return static_cast<std::size_t>(value);
  }

 private:
  std::string command_;
  std::map<std::string, std::string> values_;
};

void check(qdm_status status, const qdm_error& error) {
  if (status != QDM_OK) throw Failure{error.message};
}

void check(bool ok, const std::string& message) {
  if (!ok) throw Failure{message};
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct Bitmaps {
  std::vector<std::uint8_t> pixels;
  std::size_t count = 0;
};

Bitmaps read_input(const std::string& path) {
  Bitmaps in;
  std::string error;
  if (ends_with(path, ".ndjson")) {
    std::vector<std::string> words;
    check(qdm::render_ndjson(path, qdm::StrokeFormat::Auto, &in.pixels, &words, &error), error);
    in.count = in.pixels.size() / QDM_PIXELS;
  } else if (ends_with(path, ".npy")) {
    check(qdm::read_bitmaps_npy(path, &in.pixels, &in.count, &error), error);
  } else {
    throw Failure{path + ": expected an .npy of uint8 bitmaps or an .ndjson of drawings"};
  }
  check(in.count > 0, path + ": no drawings");
  return in;
}

struct Model {
  qdm_classifier* handle = nullptr;
  Model(const std::string& path, std::size_t threads) {
    qdm_error error;
    const qdm_options options{static_cast<std::uint32_t>(threads)};
    check(qdm_classifier_open(path.c_str(), &options, &handle, &error), error);
  }
  ~Model() { qdm_classifier_close(handle); }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
};

// ------------------------------------------------------------------------------------------------ classify
std::string prediction_line(const qdm_prediction* top, std::size_t k) {
  std::string line = "{\"top\": [";
  for (std::size_t i = 0; i < k; ++i) {
    line += (i ? ", " : "") + std::string("{\"class\": ") + json_string(top[i].label) +
            ", \"prob\": " + qdm::cli::python_probability(static_cast<double>(top[i].prob)) + "}";
  }
  return line + "]}\n";
}

int classify(int argc, char** argv) {
  const Options options("classify", argc, argv, {"--model", "--input", "--out", "--top-k", "--threads", "--logits"});
  const std::string out = options.required("--out");
  const std::size_t top_k = options.number("--top-k", 5, 1);
  Model model(options.required("--model"), options.number("--threads", 0, 0));
  const Bitmaps in = read_input(options.required("--input"));
  const std::size_t classes = qdm_classifier_num_classes(model.handle);
  const std::size_t k = std::min(top_k, classes);  // as qdm predict: at most every class
  qdm_error error;
  std::vector<float> logits(in.count * classes);
  check(qdm_logits(model.handle, in.pixels.data(), in.count, logits.data(), &error), error);
  std::vector<qdm_prediction> top(in.count * k);
  check(qdm_top_k(model.handle, logits.data(), in.count, k, top.data(), &error), error);
  std::string text;
  for (std::size_t i = 0; i < in.count; ++i) text += prediction_line(top.data() + i * k, k);
  std::string message;
  const std::string logits_path = options.get("--logits", "");
  if (!logits_path.empty()) check(qdm::write_float_npy(logits_path, logits.data(), in.count, classes, &message), message);
  check(qdm::write_file_atomic(out, text, &message), message);
  std::fprintf(stderr, "classified %zu drawings -> %s\n", in.count, out.c_str());
  return 0;
}

// -------------------------------------------------------------------------------------------------- render
int render(int argc, char** argv) {
  const Options options("render", argc, argv, {"--input", "--out", "--format"});
  const std::string format = options.get("--format", "auto");
  const std::map<std::string, qdm::StrokeFormat> formats = {
      {"auto", qdm::StrokeFormat::Auto}, {"simplified", qdm::StrokeFormat::Simplified}, {"raw", qdm::StrokeFormat::Raw}};
  check(formats.count(format) == 1, "render: --format expects auto, simplified or raw, got '" + format + "'");
  const std::string input = options.required("--input"), out = options.required("--out");
  std::vector<std::uint8_t> pixels;
  std::vector<std::string> words;
  std::string error;
  check(qdm::render_ndjson(input, formats.at(format), &pixels, &words, &error), error);
  const std::size_t count = pixels.size() / QDM_PIXELS;
  check(qdm::write_bitmaps_npy(out, pixels.data(), count, &error), error);
  std::fprintf(stderr, "rendered %zu drawings -> %s\n", count, out.c_str());
  return 0;
}

// ----------------------------------------------------------------------------------------------- selfcheck
int selfcheck(int argc, char** argv) {
  const Options options("selfcheck", argc, argv, {"--model", "--threads"});
  const std::string path = options.required("--model");
  Model model(path, options.number("--threads", 0, 0));
  qdm_selfcheck_result result{};
  qdm_error error;
  check(qdm_selfcheck(model.handle, &result, &error), error);
  std::printf("selfcheck %s: %s: %zu/%zu drawings give the exporting machine's top-1, largest logit difference "
              "%.6g (tolerance %.6g)\n",
              result.passed ? "passed" : "FAILED", path.c_str(), result.top1_agree, result.drawings,
              static_cast<double>(result.max_abs_logit_diff), static_cast<double>(result.tolerance));
  return result.passed ? 0 : kFailedCheck;
}

// --------------------------------------------------------------------------------------------------- bench
double percentile(std::vector<double> values, double q) {  // numpy's default (linear) percentile
  std::sort(values.begin(), values.end());
  const double position = q / 100.0 * static_cast<double>(values.size() - 1);
  const auto below = static_cast<std::size_t>(position);
  const std::size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (values[above] - values[below]) * (position - static_cast<double>(below));
}

std::vector<double> time_calls(qdm_classifier* model, const std::uint8_t* pixels, std::size_t batch,
                               std::size_t runs, std::size_t warmup, std::vector<float>* logits) {
  qdm_error error;
  std::vector<double> ms;
  for (std::size_t i = 0; i < warmup + runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    check(qdm_logits(model, pixels, batch, logits->data(), &error), error);
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    if (i >= warmup) ms.push_back(took.count());
  }
  return ms;
}

long status_kb(const char* field) {  // VmHWM (peak) or VmRSS (now) of this process, in KiB
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind(field, 0) == 0) return std::atol(line.c_str() + std::string(field).size() + 1);
  return -1;
}

// The shared libraries this process mapped, with their sizes: what an app carries besides its own code.
std::map<std::string, long> loaded_libraries() {
  std::map<std::string, long> libraries;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const std::size_t slash = line.find('/');
    if (slash == std::string::npos || line.find(".so", slash) == std::string::npos) continue;
    const std::string path = line.substr(slash);
    std::ifstream file(path, std::ios::binary | std::ios::ate);
    if (file) libraries[path] = static_cast<long>(file.tellg());
  }
  return libraries;
}

bool system_library(const std::string& path) {
  for (const char* dir : {"/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/aarch64-linux-gnu/"})
    if (path.rfind(dir, 0) == 0) return true;
  return false;
}

std::string sizes_json() {
  std::ifstream self("/proc/self/exe", std::ios::binary | std::ios::ate);
  const long binary = self ? static_cast<long>(self.tellg()) : -1;
  long carried = binary, system = 0;
  std::string list;
  for (const auto& [path, bytes] : loaded_libraries()) {
    (system_library(path) ? system : carried) += bytes;
    list += std::string(list.empty() ? "" : ", ") + "{\"path\": " + json_string(path) +
            ", \"bytes\": " + std::to_string(bytes) + ", \"system\": " + (system_library(path) ? "true" : "false") + "}";
  }
  std::printf("size: qdm-native %.2f MB; with the ExecuTorch libraries it loads %.2f MB (system libraries %.2f MB)\n",
              static_cast<double>(binary) / 1e6, static_cast<double>(carried) / 1e6, static_cast<double>(system) / 1e6);
  return "\"binary_bytes\": " + std::to_string(binary) + ", \"carried_bytes\": " + std::to_string(carried) +
         ", \"system_library_bytes\": " + std::to_string(system) + ", \"libraries\": [" + list + "]";
}

std::string bench_threads(const std::string& path, std::size_t threads, const Bitmaps& in, std::size_t batch,
                          std::size_t runs, std::size_t warmup) {
  Model model(path, threads);
  std::vector<float> logits(batch * qdm_classifier_num_classes(model.handle));
  const auto single = time_calls(model.handle, in.pixels.data(), 1, runs, warmup, &logits);
  const std::size_t batch_runs = std::max<std::size_t>(5, runs / 10);
  const auto batched = time_calls(model.handle, in.pixels.data(), batch, batch_runs, std::max<std::size_t>(1, warmup / 5), &logits);
  double mean = 0;
  for (double v : single) mean += v / static_cast<double>(single.size());
  const double p50 = percentile(single, 50), p95 = percentile(single, 95), per_batch = percentile(batched, 50);
  std::printf("%zu thread%s: latency p50 %.3f ms, p95 %.3f ms; batch of %zu: %.0f drawings/s\n", threads,
              threads == 1 ? "" : "s", p50, p95, batch, static_cast<double>(batch) / per_batch * 1e3);
  char text[512];
  std::snprintf(text, sizeof text,
                "\"%zu\": {\"latency\": {\"p50_ms\": %.6g, \"p95_ms\": %.6g, \"mean_ms\": %.6g, \"runs\": %zu}, "
                "\"throughput\": {\"batch\": %zu, \"images_per_s\": %.6g, \"ms_per_batch\": %.6g, \"runs\": %zu}}",
                threads, p50, p95, mean, runs, batch, static_cast<double>(batch) / per_batch * 1e3, per_batch,
                batch_runs);
  return text;
}

std::vector<std::size_t> thread_counts(const Options& options) {
  const std::size_t all = std::max(1u, std::thread::hardware_concurrency());
  const std::string text = options.get("--threads", "1," + std::to_string(all));
  std::vector<std::size_t> counts;
  std::stringstream items(text);
  for (std::string item; std::getline(items, item, ',');) counts.push_back(options.parse_number("--threads", item, 1));
  std::sort(counts.begin(), counts.end());
  counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
  return counts;
}

// Bitmaps to time: --input, else the model's own self-check drawings are not reachable through the C API, so
// blank paper repeated (latency of these convolutional models does not depend on the pixels).
Bitmaps bench_input(const Options& options, std::size_t batch) {
  Bitmaps in;
  const std::string path = options.get("--input", "");
  if (!path.empty()) in = read_input(path);
  else in = {std::vector<std::uint8_t>(QDM_PIXELS, 0), 1};
  std::vector<std::uint8_t> cycled(batch * QDM_PIXELS);
  for (std::size_t i = 0; i < batch; ++i)
    std::copy_n(in.pixels.data() + (i % in.count) * QDM_PIXELS, QDM_PIXELS, cycled.data() + i * QDM_PIXELS);
  return {cycled, batch};
}

int bench(int argc, char** argv) {
  const Options options("bench", argc, argv, {"--model", "--input", "--runs", "--warmup", "--batch", "--threads", "--json"});
  const std::string path = options.required("--model");
  const std::size_t runs = options.number("--runs", 200, 1), warmup = options.number("--warmup", 20, 0);
  const std::size_t batch = options.number("--batch", 32, 1);
  const auto counts = thread_counts(options);
  const Bitmaps in = bench_input(options, batch);
  std::string quant;
  {
    Model probe(path, counts.front());
    quant = qdm_classifier_quant(probe.handle);
  }
  std::printf("qdm-native bench: %s (%s)\n", path.c_str(), quant == "int8" ? "INT8" : "FP32");
  std::string per_thread;
  for (std::size_t t : counts) per_thread += (per_thread.empty() ? "" : ", ") + bench_threads(path, t, in, batch, runs, warmup);
  const double peak_mb = static_cast<double>(status_kb("VmHWM")) * 1024 / 1e6;
  std::printf("peak resident memory %.1f MB\n", peak_mb);
  const std::string json = "{\"model\": " + json_string(path) + ", \"quant\": " + json_string(quant) +
                           ", \"threads\": {" + per_thread + "}, \"peak_rss_mb\": " + std::to_string(peak_mb) + ", " +
                           sizes_json() + "}\n";
  const std::string json_path = options.get("--json", "");
  std::string error;
  if (!json_path.empty()) check(qdm::write_file_atomic(json_path, json, &error), error);
  return 0;
}

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: qdm-native COMMAND [options]   (QuickDraw Mobile's C++ runtime, library %s, renderer %s)\n"
               "  classify  --model M.pte --input FILE.npy|FILE.ndjson --out FILE.jsonl [--top-k 5] [--threads N]\n"
               "            [--logits FILE.npy]     top-k classes per drawing, the JSONL of 'qdm predict'\n"
               "  render    --input FILE.ndjson --out FILE.npy [--format auto|simplified|raw]\n"
               "                                    strokes -> (N, 784) uint8 bitmaps, as 'qdm data render'\n"
               "  bench     --model M.pte [--input FILE.npy] [--runs 200] [--warmup 20] [--batch 32]\n"
               "            [--threads 1,N] [--json FILE]   latency p50/p95, throughput, peak memory, size\n"
               "  selfcheck --model M.pte [--threads N]     do this device's kernels give the export's answers?\n"
               "exit status: 0 done, 1 self-check failed, 2 bad input\n",
               qdm_version(), qdm_renderer_version());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  const std::map<std::string, int (*)(int, char**)> commands = {
      {"classify", classify}, {"render", render}, {"bench", bench}, {"selfcheck", selfcheck}};
  if (command == "--help" || command == "-h") {
    usage(stdout);
    return 0;
  }
  if (command == "--version") {
    std::printf("qdm-native %s (renderer %s)\n", qdm_version(), qdm_renderer_version());
    return 0;
  }
  auto it = commands.find(command);
  if (it == commands.end()) {
    usage(stderr);
    return kBadInput;
  }
  try {
    return it->second(argc, argv);
  } catch (const Failure& failure) {
    std::fprintf(stderr, "error: %s\n", failure.message.c_str());
  } catch (const std::exception& exc) {
    std::fprintf(stderr, "error: %s\n", exc.what());
  }
  return kBadInput;
}
