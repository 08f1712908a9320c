// Streaming: pools larger than memory (host or device) scored and selected chunk by chunk under a
// memory budget, with results identical to the in-memory functions (quarry::score,
// score_and_select, select_topk, select_power); and the pieces an MPI run is made of (a row range
// of the pool per rank, local selections, their exact merge). See docs/scale-out.md.
//
// A pool may be one file or several shard files concatenated along the sample axis. Chunks never
// straddle a file, so every chunk is a plain view of memory-mapped data: no copy on the CPU, one
// DMA per chunk (per committee member) on CUDA.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"
#include "quarry/device.hpp"
#include "quarry/diversity.hpp"
#include "quarry/pool_files.hpp"
#include "quarry/select.hpp"

namespace quarry {

struct StreamOptions {
  /// The most bytes the streamed data may occupy at once (the chunk buffers: the mapped input
  /// and embeddings rows of a chunk, their scores and keys; on CUDA, twice that on the device
  /// and in pinned host memory). 0: default_memory_budget(device).
  std::int64_t memory_budget = 0;
  /// The rows of the pool this call covers, [begin, end) (end < 0: to the end): one MPI rank's
  /// shard. Indices everywhere stay global.
  std::int64_t begin = 0;
  std::int64_t end = -1;
};

/// Half the free memory of a CUDA device; on the CPU a quarter of the available host memory.
std::int64_t default_memory_budget(const DeviceSpec& device);

/// How a streamed call was cut: for --verbose and the tests.
struct StreamStats {
  std::int64_t chunks = 0;
  std::int64_t rows_per_chunk = 0;
  std::int64_t budget = 0;
};

/// Receives the scores of consecutive chunks in pool order: rows [first, first + count).
using ScoreSink = std::function<void(std::int64_t first, const float* scores, std::int64_t count)>;

/// Scores rows [begin, end) of `input` chunk by chunk (as quarry::score: same checks, bad rows
/// named by their global index, bit-identical scores). `embeddings` (egl, badge-norm) may be
/// sharded differently from `input`.
StreamStats stream_score(const PoolFiles& input, Acquisition acquisition, const ScoreOptions& options,
                         const PoolFiles* embeddings, const StreamOptions& stream, const ScoreSink& sink);

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

/// Both stages in one process. A pool that fits the budget in one chunk gets exactly
/// select_diverse()'s answer; a larger one the two-stage approximation (docs/scale-out.md).
Selection stream_select_diverse(DiversityStrategy strategy, const PoolFiles& embeddings,
                                const PoolFiles* outputs, const DiversityOptions& options,
                                const StreamOptions& stream, StreamStats* stats = nullptr);

}  // namespace quarry
