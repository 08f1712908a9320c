// A validated scoring call, as src/engine/score.cpp hands it to a backend (src/cpu, kernels/).
#pragma once

#include <cstdint>
#include <string>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"

namespace quarry {

/// Input [N,C] (m = 0) or committee [M,N,C]; embeddings [N,D] or null. The pointers are host
/// memory for the host entry points and device memory for kernels/'s device entry points.
struct ScoreCall {
  Acquisition acq;
  const void* input;
  DType dtype;
  std::int64_t m, n, c;
  const ArrayView* emb;
  bool logits;
  float tol;
  float* out;
  const std::string* input_name;  // for error messages
  const std::string* embeddings_name;
  /// Elements from one committee member's rows to the next (0: n * c, a contiguous [M,N,C]);
  /// a chunk of rows of a larger [M,N,C] pool keeps the pool's stride.
  std::int64_t member_stride = 0;
  /// Global row of this call's first row: a chunk of a streamed pool reports its bad rows
  /// (and is keyed, for power sampling) by their index in the whole pool.
  std::int64_t row_offset = 0;
  std::int64_t work() const { return (m > 0 ? m : 1) * n * c; }
  std::int64_t stride_m() const { return member_stride > 0 ? member_stride : n * c; }
};

/// Validates a scoring call (shapes, dtypes, embeddings, committee) and fills in everything but
/// `out`; the names in `options` are referenced, so `options` must outlive the call.
ScoreCall make_score_call(const ArrayView& input, Acquisition acquisition,
                          const ScoreOptions& options, const ArrayView* embeddings);

}  // namespace quarry
