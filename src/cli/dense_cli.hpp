// The dense-output options of `quarry score` and `quarry select` (src/cli/dense_commands.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli.hpp"

namespace quarry::cli {

struct DenseArgs {
  std::string reduce, ignore, class_weights, voxel_map, patches;
  int slices = -1;
  int background = 0;
  bool channels_last = false, committee = false;
  std::int64_t per_case = 0;

  void add(CLI::App* cmd, bool select);
  /// --reduce, --slices or --patches given: the input is dense.
  bool active() const;
  /// A score per slice or per patch (not per case).
  bool regional() const { return slices >= 0 || !patches.empty(); }
  std::vector<Named> inputs() const;
};

void dense_score(const DenseArgs& d, const std::string& input, const std::string& acquisition, bool logits,
                 double tolerance, const std::string& device, const std::string& budget, const std::string& output,
                 bool verbose);

void dense_select(const DenseArgs& d, const std::string& input, const std::string& acquisition, bool logits,
                  double tolerance, const std::string& device, const std::string& budget, std::int64_t k,
                  const std::vector<std::int64_t>& exclude, const std::string& output, std::string format,
                  bool verbose);

}  // namespace quarry::cli
