// Streaming: pools larger than memory (host or device) scored and selected chunk by chunk under a
// memory budget, with results identical to the in-memory functions (quarry::score,
// score_and_select, select_topk, select_power). Streamed top-k and power sampling, on one process
// or several, are the calls of quarry/dist.hpp (a Cluster of one process needs no MPI). See
// docs/scale-out.md.
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

/// Both stages in one process. A pool that fits the budget in one chunk gets exactly
/// select_diverse()'s answer; a larger one the two-stage approximation (docs/scale-out.md).
Selection stream_select_diverse(DiversityStrategy strategy, const PoolFiles& embeddings,
                                const PoolFiles* outputs, const DiversityOptions& options,
                                const StreamOptions& stream, StreamStats* stats = nullptr);

}  // namespace quarry
