// The CPU backend, called by the dispatchers in src/engine/ after they have validated the call.
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

/// The Error score() throws for row `row` of a host-resident call (quarry::diagnose_row).
[[noreturn]] void explain_row(const ScoreCall& call, std::int64_t row);


/// The k best of n scores (excluded[i] != 0 skips i; `excluded` empty: none), sorted by score
/// descending then index ascending. Requires 0 < k <= selectable. NaN is an Error naming its
/// index + index_offset (the scores of a chunk name their row of the whole pool).
std::vector<std::int64_t> topk(const float* scores, std::int64_t n, std::int64_t k,
                               const std::vector<std::uint8_t>& excluded, std::int64_t index_offset = 0);

/// Gumbel-top-k keys of power sampling; scores must be finite and >= 0 (Error otherwise).
/// keys[i] is keyed by the global index first_index + i, so a chunk gets the keys of its rows.
void gumbel_keys(const float* scores, std::int64_t n, float beta, std::uint64_t seed, float* keys,
                 std::int64_t first_index = 0);

}  // namespace quarry::cpu
