// Pools stored in files: one file, a glob of shards or a list, read as one array concatenated
// along the sample axis (memory-mapped where the format allows), and byte sizes as users write
// them ("512MiB"). Streaming (quarry/stream.hpp) and MPI (quarry/dist.hpp) read pools through
// this class.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "quarry/array.hpp"

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
  /// Where pool row `row` starts in the memory of the file that holds it; the following rows of
  /// that file follow it (for a committee [M, N, C], member m's row is member_stride() elements
  /// further per member).
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

}  // namespace quarry
