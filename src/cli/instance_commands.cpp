// `quarry score` and `quarry select` on instance-level outputs: detections (--boxes, an .npz
// with offsets, probs and optionally objectness) and multi-label outputs (--multilabel, [N, L]
// or a committee [M, N, L]). The definitions are docs/detections.md's.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli.hpp"
#include "instance_cli.hpp"
#include "io/files.hpp"
#include "quarry/detections.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/select.hpp"

namespace quarry::cli {
namespace {

bool ends_with(const std::string& s, const char* tail) {
  const std::size_t n = std::char_traits<char>::length(tail);
  return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}

const char* kind(const InstanceArgs& a) { return a.boxes ? "--boxes" : "--multilabel"; }

// The usage rules shared by score and select.
void expect_usage(const InstanceArgs& a, const DenseArgs& d, const InstanceCall& c) {
  QUARRY_USAGE_EXPECTS(!(a.boxes && a.multilabel), "--boxes and --multilabel: give one (detections, or multi-label "
                       "outputs)");
  const char* k = kind(a);
  QUARRY_USAGE_EXPECTS(!c.input.empty(), k, ": give the model outputs with --input");
  QUARRY_USAGE_EXPECTS(c.scores.empty(), k, " scores --input; --scores is not read with it");
  QUARRY_USAGE_EXPECTS(c.embeddings.empty(), "--embeddings: ", k, " outputs are scored without embeddings");
  QUARRY_USAGE_EXPECTS(c.device == "auto" || c.device == "cpu", "--device ", c.device, ": ", k,
                       " outputs are scored on the CPU in this version");
  QUARRY_USAGE_EXPECTS(c.budget.empty(), "--memory-budget: ", k, " outputs are read whole");
  QUARRY_USAGE_EXPECTS(c.strategy == "topk", "--strategy ", c.strategy, ": ", k, " outputs are selected by topk");
  QUARRY_USAGE_EXPECTS(d.slices < 0 && d.patches.empty() && d.ignore.empty() && d.class_weights.empty() && d.voxel_map.empty() &&
                           !d.channels_last && !d.committee && d.per_case == 0 && d.background == 0,
                       "--slices, --patches, --ignore-mask, --class-weights, --voxel-map, --background, --channels-last, "
                       "--committee and --per-case are options of dense outputs, not of ", k,
                       a.multilabel ? " (the rank of the input decides: [M, N, L] is a committee)" : "");
  QUARRY_USAGE_EXPECTS(a.boxes || !a.empty_option || a.empty_option->count() == 0,
                       "--empty-score is the score of an image without boxes: an option of --boxes");
  QUARRY_USAGE_EXPECTS(a.boxes || c.tolerance < 0, "--tolerance: ", k,
                       " probabilities are checked against [0, 1] each, not a row sum");
}

struct Scored {
  std::vector<float> scores;
  std::string source;  // "dets.npz (boxes, entropy, max)"
};

Scored score_all(const InstanceArgs& a, const DenseArgs& d, const InstanceCall& c) {
  expect_usage(a, d, c);
  const Acquisition acq = parse_acquisition(c.acquisition);
  const ReduceSpec reduce = parse_reduction(d.reduce.empty() ? "mean" : d.reduce);
  const auto t0 = std::chrono::steady_clock::now();
  Scored s;
  std::string shape;
  if (a.boxes) {
    BoxOptions o;
    o.reduce = reduce.how;
    o.logits = c.logits;
    o.sum_tolerance = c.tolerance;
    QUARRY_USAGE_EXPECTS(std::isfinite(a.empty_score) && std::fabs(a.empty_score) <= 3.4028234663852886e38,
                         "--empty-score ", a.empty_score, ": expected a finite number within the float32 range");
    o.empty_score = static_cast<float>(a.empty_score);
    o.input_name = c.input;
    // Usage errors (acquisition, reduction) before the file is read.
    QUARRY_USAGE_EXPECTS(!acquisition_needs_committee(acq) && acquisition_is_box(acq), "-a ", c.acquisition,
                         ": --boxes takes least-confidence, margin, ratio or entropy (committee detections are not ",
                         "supported; egl and badge-norm need embeddings)");
    QUARRY_USAGE_EXPECTS(reduce.how == Reduction::mean || reduce.how == Reduction::max || reduce.how == Reduction::sum,
                         "--reduce ", d.reduce, ": --boxes takes mean, max or sum");
    const Detections det = read_detections(c.input);
    const ArrayView obj = det.objectness.view();
    s.scores = score_boxes(det.offsets.view(), det.probs.view(), det.has_objectness ? &obj : nullptr, acq, o);
    s.source = c.input + " (boxes, " + c.acquisition + ", " + reduction_name(reduce) + ")";
    shape = fmt::format("{} images, {} boxes", s.scores.size(), det.probs.rank() >= 1 ? det.probs.shape()[0] : 0);
  } else {
    MultilabelOptions o;
    o.reduce = reduce.how;
    o.logits = c.logits;
    o.input_name = c.input;
    QUARRY_USAGE_EXPECTS(acquisition_is_multilabel(acq, true), "-a ", c.acquisition,
                         ": --multilabel takes least-confidence, margin, ratio or entropy, and with a committee ",
                         "[M, N, L] also consensus-entropy, bald, vote-entropy, kl-max or variation-ratio");
    QUARRY_USAGE_EXPECTS(reduce.how == Reduction::mean || reduce.how == Reduction::max || reduce.how == Reduction::sum,
                         "--reduce ", d.reduce, ": --multilabel takes mean, max or sum");
    const Array in = read_array(c.input);
    s.scores = score_multilabel(in.view(), acq, o);
    s.source = c.input + " (multilabel, " + c.acquisition + ", " + reduction_name(reduce) + ")";
    shape = fmt::format("{} samples, shape {}", s.scores.size(), shape_string(in.shape()));
  }
  check_mapped_inputs();
  if (c.verbose)
    std::fprintf(stderr, "quarry: %s (%s, %s) in %.3f s\n", shape.c_str(), c.acquisition.c_str(),
                 reduction_name(reduce).c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return s;
}

}  // namespace

void InstanceArgs::add(CLI::App* cmd) {
  cmd->add_flag("--boxes", boxes,
                "Detections: --input is an .npz with offsets [N+1], probs [B,C] and optionally objectness [B]; "
                "each box is scored and the boxes of an image reduced by --reduce (mean, max, sum)");
  cmd->add_flag("--multilabel", multilabel,
                "Multi-label outputs: --input is [N,L] sigmoid probabilities (logits with --logits) or a committee "
                "[M,N,L]; each label is scored and the labels of a sample reduced by --reduce (mean, max, sum)");
  empty_option = cmd->add_option("--empty-score", empty_score, "--boxes: the score of an image without boxes (default 0)");
}

void InstanceArgs::expect_inactive() const {
  QUARRY_USAGE_EXPECTS(!empty_option || empty_option->count() == 0,
                       "--empty-score is the score of an image without boxes: an option of --boxes");
}

void instance_score(const InstanceArgs& a, const DenseArgs& d, const InstanceCall& c) {
  const bool csv = ends_with(c.output, ".csv");
  QUARRY_USAGE_EXPECTS(csv || ends_with(c.output, ".npy"), "--output ", c.output, ": ", kind(a),
                       " scores are written as .npy (float32 [N]) or .csv (index,score)");
  const Scored s = score_all(a, d, c);
  if (csv) {
    std::string text = "index,score\n";
    text.reserve(text.size() + s.scores.size() * 20);
    for (std::size_t i = 0; i < s.scores.size(); ++i) text += fmt::format("{},{:.9g}\n", i, s.scores[i]);
    write_file_atomic(c.output, {text});
  } else {
    write_file_atomic(c.output, {npy_header(DType::f32, {static_cast<std::int64_t>(s.scores.size())}, c.output),
                                 std::string_view(reinterpret_cast<const char*>(s.scores.data()), s.scores.size() * 4)});
  }
}

void instance_select(const InstanceArgs& a, const DenseArgs& d, const InstanceCall& c) {
  expect_usage(a, d, c);
  const std::vector<std::int64_t> exclude = c.exclude.empty() ? std::vector<std::int64_t>{} : read_index_list(c.exclude);
  const Scored s = score_all(a, d, c);
  DeviceSpec cpu;
  cpu.kind = DeviceKind::cpu;
  const Selection sel = select_topk(s.scores.data(), static_cast<std::int64_t>(s.scores.size()), c.k, exclude, cpu);
  std::string format = c.format;
  if (format.empty()) format = ends_with(c.output, ".json") ? "json" : "csv";
  const std::string text = format == "json" ? selection_json(sel, "topk", s.source) : selection_csv(sel);
  if (c.output.empty()) {
    QUARRY_EXPECTS(std::fwrite(text.data(), 1, text.size(), stdout) == text.size(), "cannot write standard output");
  } else {
    write_file_atomic(c.output, {text});
  }
}

}  // namespace quarry::cli
