// BatchBALD (Kirsch, van Amersfoort and Gal, 2019): a batch chosen greedily by the mutual
// information between the labels of the whole batch and the model, so that the batch does not
// hold samples that are informative for the same reason (as BALD's top-k does). The definitions
// are docs/acquisition.md's ("batchbald").
#pragma once

#include <cstdint>
#include <vector>

#include "quarry/array.hpp"
#include "quarry/device.hpp"
#include "quarry/select.hpp"

namespace quarry {

struct BatchBaldOptions {
  /// Label configurations of the batch kept to estimate its joint entropy: exact while the
  /// batch's configurations number at most this many, sampled (this many) beyond.
  std::int64_t samples = 512;
  std::uint64_t seed = 0;
  /// A committee of M members carries at most log M nats about the model in all, so the joint
  /// gains of a long batch vanish after a few picks (M = 10: about 2.3 nats), and the picks that
  /// follow would be noise. With restart > 0 each candidate also has a bound, its BALD score
  /// lowered after each pick j to its gain given j's label alone, and scores the smaller of its
  /// joint gain and its bound; when the best score falls below `restart` times the best bound,
  /// the batch goes on as a new joint batch (configurations afresh, the best bound's sample
  /// first). 0: one joint batch, the paper's BatchBALD.
  double restart = 0.5;
  /// The input holds logits (a softmax per row).
  bool logits = false;
  /// Allowed |sum - 1| of a row's probabilities; negative: 1e-3 (1e-2 for float16/bfloat16).
  double sum_tolerance = -1.0;
  /// Where the candidates' gains are computed: cpu, or cuda[:N] (the greedy loop itself runs on
  /// the host either way). auto means the CPU for now: the CUDA path has not yet run on a GPU.
  DeviceSpec device{};
  /// Names the committee in data errors (the CLI passes the --input file).
  std::string input_name = "input";
};

/// Chooses k samples of a committee's outputs `committee` [M, N, C] (ensemble members or
/// MC-dropout samples; host memory, any float dtype) greedily: each pick maximises the gain of
/// the batch's mutual information, H(y_n | labels of the batch so far) - mean over members of
/// H(p_m,n), over joint batches that restart as options.restart says (the score then is the
/// smaller of that gain and the bound). The first pick is BALD's best. `exclude` (indices) are never chosen. Returns the
/// picks in order with their gains as scores. A bad row (NaN, negative, a sum off 1) is an
/// Error naming the member and the row. The same seed gives the same batch.
Selection select_batchbald(const ArrayView& committee, std::int64_t k, const std::vector<std::int64_t>& exclude,
                           const BatchBaldOptions& options = {});

}  // namespace quarry
