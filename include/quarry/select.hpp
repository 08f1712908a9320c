// Batch selection over a vector of scores: exact top-k and power (Gumbel-top-k) sampling.
#pragma once

#include <cstdint>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/device.hpp"

namespace quarry {

struct Selection {
  std::vector<std::int64_t> index;  // pool indices, in rank order
  std::vector<float> score;         // the score of each selected sample
  std::int64_t size() const { return static_cast<std::int64_t>(index.size()); }
};

/// Exact top-k: the k largest scores, excluded indices skipped, sorted by score descending with
/// ties broken by the lower index. O(N) expected time (radix select, no sort of the pool).
/// NaN scores are an Error naming the index; k larger than the number of selectable samples
/// is an Error saying how many there are; an excluded index outside [0, n) is an Error.
/// `device`: where the selection runs, by default `auto` as everywhere in quarry (the scores are
/// host memory; on CUDA they are copied to the device once). The selection is identical on
/// every device.
Selection select_topk(const float* scores, std::int64_t n, std::int64_t k,
                      const std::vector<std::int64_t>& exclude = {},
                      const DeviceSpec& device = {});

/// Power sampling (Kirsch et al. 2023): k samples without replacement with probability
/// proportional to score^beta, by the Gumbel-top-k trick with a counter-based (Philox)
/// generator, so a seed gives the same selection everywhere. Scores must be >= 0; samples with
/// score 0 have probability 0 and are taken last, in index order, only when k exceeds the
/// number of positive scores. The returned `score` holds the original scores.
Selection select_power(const float* scores, std::int64_t n, std::int64_t k, double beta,
                       std::uint64_t seed, const std::vector<std::int64_t>& exclude = {},
                       const DeviceSpec& device = {});

/// The same selections over scores in an array: [N] float32 in host memory or in CUDA memory
/// (read in place on its own device; only the k picks and their scores reach the host).
/// `stream`: the caller's CUDA stream for device scores (see ScoreOptions::stream).
Selection select_topk(const ArrayView& scores, std::int64_t k,
                      const std::vector<std::int64_t>& exclude = {},
                      const DeviceSpec& device = {}, void* stream = nullptr);
Selection select_power(const ArrayView& scores, std::int64_t k, double beta, std::uint64_t seed,
                       const std::vector<std::int64_t>& exclude = {},
                       const DeviceSpec& device = {}, void* stream = nullptr);

/// How score_and_select chooses among the scores.
struct SelectOptions {
  std::int64_t k = 0;
  bool power = false;  // false: exact top-k; true: power sampling with beta and seed
  double beta = 1.0;
  std::uint64_t seed = 0;
  std::vector<std::int64_t> exclude;
};

/// Scores the pool (as quarry::score, on score_options.device) and selects from the scores in
/// one call; on CUDA the scores never leave the device, and a pool in CUDA memory is read in
/// place (only the k picks and their scores reach the host). Same result as score() followed by
/// select_topk()/select_power() on the same device.
Selection score_and_select(const ArrayView& input, Acquisition acquisition,
                           const ScoreOptions& score_options, const SelectOptions& select,
                           const ArrayView* embeddings = nullptr);

}  // namespace quarry
