// The CPU backend, called by the dispatchers in src/core/ after they have validated the call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"

namespace quarry::cpu {

/// A validated scoring call: input [N,C] (m = 0) or [M,N,C], embeddings [N,D] or null.
struct ScoreCall {
  Acquisition acq;
  const void* input;
  DType dtype;
  std::int64_t m, n, c;
  const ArrayView* emb;
  bool logits;
  float tol;
  float* out;
  const std::string* input_name;       // for error messages
  const std::string* embeddings_name;
  std::int64_t work() const { return (m > 0 ? m : 1) * n * c; }
};

/// Scores every row; throws quarry::Error naming the first bad row.
void score(const ScoreCall& call);

/// The k best of n scores (excluded[i] != 0 skips i; `excluded` empty: none), sorted by score
/// descending then index ascending. Requires 0 < k <= selectable. NaN is an Error.
std::vector<std::int64_t> topk(const float* scores, std::int64_t n, std::int64_t k,
                               const std::vector<std::uint8_t>& excluded);

/// Gumbel-top-k keys of power sampling; scores must be finite and >= 0 (Error otherwise).
void gumbel_keys(const float* scores, std::int64_t n, float beta, std::uint64_t seed, float* keys);

}  // namespace quarry::cpu
