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
#include "quarry/select.hpp"

namespace quarry {

/// A pool stored as one or more arrays concatenated along the sample axis: [N_i, ...] per file
/// (model outputs [N_i, C], embeddings [N_i, D], scores [N_i]) or committees [M, N_i, C]
/// (concatenated along N_i). .npy files are memory-mapped; NPZ members and IDX files are read
/// into memory.
class PoolFiles {
 public:
  PoolFiles() = default;
  /// `spec`: one file ("pool.npy", "outputs.npz:probs"), a glob ("pool-*.npy": the matching
  /// files sorted by name, so number shards with leading zeros) or a comma-separated list of
  /// files in pool order. Every file must have the same dtype and rank and agree on every axis
  /// but the sample axis; an Error names the file that does not.
  static PoolFiles open(const std::string& spec);
  /// A pool of arrays already in memory (host memory, pinned or not), in pool order; `name`
  /// names it in errors. The same checks as open().
  static PoolFiles of(std::vector<Array> parts, const std::string& name);

  const std::string& spec() const { return spec_; }
  bool empty() const { return files_.empty(); }
  std::int64_t n() const { return n_; }
  DType dtype() const { return files_.front().dtype(); }
  int rank() const { return files_.front().rank(); }
  /// The concatenated pool's shape.
  std::vector<std::int64_t> shape() const;
  /// Axis of the samples: 1 for a committee [M, N, C], else 0.
  int sample_axis() const { return rank() == 3 ? 1 : 0; }
  std::size_t file_count() const { return files_.size(); }
  const Array& file(std::size_t i) const { return files_[i]; }
  /// Global index of the first sample of file i; first_row(file_count()) == n().
  std::int64_t first_row(std::size_t i) const { return starts_[i]; }
  /// The file holding global row `row` (0 <= row < n()).
  std::size_t file_of(std::int64_t row) const;
  /// Bytes of one sample over every committee member: M * C * dtype size, or D * dtype size.
  std::size_t sample_bytes() const;
  /// The whole pool as one view (only when it is a single file).
  ArrayView whole() const;
  /// Rows [begin, end) of one file, as an [end-begin, ...] view ([M, end-begin, C] views are not
  /// contiguous: use member_stride()). The rows must lie in one file.
  const void* row_pointer(std::int64_t row) const;
  /// Elements between committee members in the file holding `row` (N_i * C).
  std::int64_t member_stride(std::int64_t row) const;
  /// Tells the kernel that rows [begin, end) will be read soon, or are done with (their pages
  /// leave this process's resident memory; the file keeps them). No-op for in-memory files.
  void prefetch(std::int64_t begin, std::int64_t end) const;
  void release(std::int64_t begin, std::int64_t end) const;
  /// A copy of the given rows (any order, any files) as one contiguous array: [rows, ...] or
  /// [M, rows, C].
  Array gather(const std::vector<std::int64_t>& rows) const;

 private:
  void advise_rows(std::int64_t begin, std::int64_t end, int advice) const;
  std::string spec_;
  std::vector<Array> files_;
  std::vector<bool> mapped_;
  std::vector<std::int64_t> starts_;
  std::int64_t n_ = 0;
};

/// "1000000", "512M", "512MiB", "2G", "1.5GB" (K, M, G, T: powers of 1024) -> bytes; anything
/// else is an Error naming the text.
std::int64_t parse_bytes(std::string_view text);

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
