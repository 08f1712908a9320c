// quarry::select_topk and quarry::select_power: validate the call (k, beta, exclusions) and run
// it on the CPU backend.
#include <cmath>
#include <vector>

#include "cpu/cpu_backend.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/error.hpp"
#include "quarry/select.hpp"

namespace quarry {
namespace {

// Validates n and k against the exclusions and returns the exclusion mask (empty: none).
std::vector<std::uint8_t> prepare(std::int64_t n, std::int64_t k,
                                  const std::vector<std::int64_t>& exclude) {
  QUARRY_EXPECTS(n >= 0, "pool size must be non-negative, got ", n);
  QUARRY_EXPECTS(k >= 0, "k must be non-negative, got ", k);
  std::vector<std::uint8_t> mask;
  std::int64_t excluded = 0;
  if (!exclude.empty()) {
    mask.assign(static_cast<std::size_t>(n), 0);
    for (std::int64_t i : exclude) {
      QUARRY_EXPECTS(i >= 0 && i < n, "excluded index ", i, " is outside the pool [0, ", n, ")");
      excluded += mask[i] == 0;
      mask[i] = 1;
    }
  }
  QUARRY_EXPECTS(k <= n - excluded, "asked for k = ", k, " samples but only ", n - excluded,
                 " are selectable (pool of ", n, ", ", excluded, " excluded)");
  return mask;
}

Selection with_scores(std::vector<std::int64_t> index, const float* scores) {
  Selection sel;
  sel.index = std::move(index);
  sel.score.reserve(sel.index.size());
  for (std::int64_t i : sel.index) sel.score.push_back(scores[i]);
  return sel;
}

}  // namespace

Selection select_topk(const float* scores, std::int64_t n, std::int64_t k,
                      const std::vector<std::int64_t>& exclude) {
  const std::vector<std::uint8_t> mask = prepare(n, k, exclude);
  if (k == 0) return {};
  return with_scores(cpu::topk(scores, n, k, mask), scores);
}

Selection select_power(const float* scores, std::int64_t n, std::int64_t k, double beta,
                       std::uint64_t seed, const std::vector<std::int64_t>& exclude) {
  QUARRY_EXPECTS(std::isfinite(beta) && beta > 0 && beta <= detail::kFloatMax,
                 "power sampling needs a finite beta > 0, got ", beta);
  const std::vector<std::uint8_t> mask = prepare(n, k, exclude);
  if (k == 0) return {};
  std::vector<float> keys(static_cast<std::size_t>(n));
  cpu::gumbel_keys(scores, n, static_cast<float>(beta), seed, keys.data());
  return with_scores(cpu::topk(keys.data(), n, k, mask), scores);
}

}  // namespace quarry
