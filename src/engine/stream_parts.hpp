// The pieces a streamed or distributed selection is made of (internal to the engine): a rank's
// local ranked list over a row range of the pool, the exact merge of such lists, and the two
// stages of a streamed diversity selection. The public calls are in quarry/stream.hpp and
// quarry/dist.hpp.
#pragma once

#include <cstdint>
#include <vector>

#include "quarry/stream.hpp"

namespace quarry {

/// The best samples of a range, best first: key descending, then index ascending. `key` is the
/// score for top-k and the Gumbel key for power sampling; `score` is always the score.
struct Ranked {
  std::vector<std::int64_t> index;
  std::vector<float> key, score;
  std::int64_t size() const { return static_cast<std::int64_t>(index.size()); }
};

/// The k best of the union of ranked lists (each sorted as above; indices disjoint). Exact: the
/// k best of a pool are among the k best of every part that holds them.
Ranked merge_ranked(const std::vector<Ranked>& parts, std::int64_t k);
Selection to_selection(const Ranked& ranked);

/// Checks k against the whole pool of n samples and its exclusions (as select_topk does) and
/// returns the exclusions sorted and unique.
std::vector<std::int64_t> checked_exclusions(std::int64_t n, std::int64_t k,
                                             const std::vector<std::int64_t>& exclude);

/// Scores rows [begin, end) chunk by chunk and keeps a running top-k (or power sample) of them:
/// the local part of a selection, at most select.k rows. Over the whole pool, to_selection() of
/// it equals score_and_select() exactly. select.exclude holds global indices, validated against
/// the whole pool.
Ranked stream_score_select(const PoolFiles& input, Acquisition acquisition, const ScoreOptions& options,
                           const SelectOptions& select, const PoolFiles* embeddings,
                           const StreamOptions& stream, StreamStats* stats = nullptr);

/// The same from precomputed scores [N] (float32, float16 or float64): equals select_topk() /
/// select_power() over the whole pool.
Ranked stream_select_scores(const PoolFiles& scores, const SelectOptions& select, const DeviceSpec& device,
                            const StreamOptions& stream, StreamStats* stats = nullptr);

/// Diversity on a streamed pool, stage one: each chunk of rows [begin, end) picks options.k
/// candidates with the strategy itself (its exclusions as labeled samples); returns their global
/// indices. When the range is one chunk, every selectable row of it is a candidate.
std::vector<std::int64_t> diverse_candidates(DiversityStrategy strategy, const PoolFiles& embeddings,
                                             const PoolFiles* outputs, const DiversityOptions& options,
                                             const StreamOptions& stream, StreamStats* stats = nullptr);

/// Stage two: the final selection among `candidates` (global indices), with every excluded sample
/// as a labeled sample (kcenter's initial centres). Indices in the result are global.
Selection select_among(DiversityStrategy strategy, const PoolFiles& embeddings, const PoolFiles* outputs,
                       const std::vector<std::int64_t>& candidates, const DiversityOptions& options);

}  // namespace quarry
