// The detections and multi-label options of `quarry score` and `quarry select`
// (src/cli/instance_commands.cpp): --boxes, --multilabel and --empty-score; --reduce is the
// dense outputs' option (DenseArgs), read from there.
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "dense_cli.hpp"

namespace quarry::cli {

struct InstanceArgs {
  bool boxes = false, multilabel = false;
  double empty_score = 0.0;
  CLI::Option* empty_option = nullptr;

  void add(CLI::App* cmd);
  /// --boxes or --multilabel given.
  bool active() const { return boxes || multilabel; }
  /// Without --boxes: --empty-score is a usage error.
  void expect_inactive() const;
};

/// The options of score/select that the instance commands read or refuse.
struct InstanceCall {
  std::string input, acquisition, device, budget, embeddings, scores, strategy = "topk", exclude, output, format;
  bool logits = false, verbose = false;
  double tolerance = -1.0;
  std::int64_t k = 0;
};

/// `quarry score --boxes|--multilabel`: N scores as .npy float32 [N] or .csv (index,score).
void instance_score(const InstanceArgs& a, const DenseArgs& d, const InstanceCall& c);
/// `quarry select --boxes|--multilabel`: the top k as CSV (rank,index,score) or JSON.
void instance_select(const InstanceArgs& a, const DenseArgs& d, const InstanceCall& c);

}  // namespace quarry::cli
