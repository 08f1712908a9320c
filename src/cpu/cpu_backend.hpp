// The CPU backend, called by the dispatchers in src/core/ after they have validated the call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "core/score_call.hpp"
#include "quarry/array.hpp"

namespace quarry::cpu {

using quarry::ScoreCall;

/// Scores every row; throws quarry::Error naming the first bad row.
void score(const ScoreCall& call);

/// Throws the Error score() would throw for row `row` of a host-resident call (another backend
/// found that row bad and reports it in the CPU's words).
[[noreturn]] void diagnose_row(const ScoreCall& call, std::int64_t row);

/// The k best of n scores (excluded[i] != 0 skips i; `excluded` empty: none), sorted by score
/// descending then index ascending. Requires 0 < k <= selectable. NaN is an Error.
std::vector<std::int64_t> topk(const float* scores, std::int64_t n, std::int64_t k,
                               const std::vector<std::uint8_t>& excluded);

/// Gumbel-top-k keys of power sampling; scores must be finite and >= 0 (Error otherwise).
void gumbel_keys(const float* scores, std::int64_t n, float beta, std::uint64_t seed, float* keys);

}  // namespace quarry::cpu
