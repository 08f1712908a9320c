// The O(n) D² draw of coverage_cpu.hpp (d2_sample): Coverage's draws when it does not prune,
// the reference that its Fenwick tree (D2Tree) matches draw for draw. Canonical arithmetic:
// compiled without FP contraction (QUARRY_NO_CONTRACTION in CMakeLists.txt).
#include "cpu/coverage_cpu.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/parallel.hpp"
#include "quarry/detail/diversity_math.hpp"

namespace quarry::cpu::diversity_detail {

// The O(n) form of the D² draw: the smallest i with q_0 + ... + q_i > floor(r Q / 2^64), with
// r = draw `draw` of (seed, stream) (see diversity_math.hpp). Integer sums: exact in any order.
std::int64_t d2_sample(const std::vector<double>& w, double w_max, std::uint64_t seed,
                       std::uint32_t stream, std::uint64_t draw) {
  const std::int64_t n = static_cast<std::int64_t>(w.size());
  const Quantiser q(detail::d2_scale_exponent(w_max, n));
  constexpr std::int64_t kChunk = 4096;
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(chunks), 0);
  parallel_chunks(chunks, 4, n * 4, [&](std::int64_t b, std::int64_t e, int) {
    for (std::int64_t ch = b; ch < e; ++ch) {
      std::uint64_t acc = 0;
      const std::int64_t hi = std::min(n, (ch + 1) * kChunk);
      for (std::int64_t i = ch * kChunk; i < hi; ++i) acc += q(w[i]);
      sums[ch] = acc;
    }
  });
  std::uint64_t total = 0;
  for (std::uint64_t v : sums) total += v;
  const std::uint64_t target = detail::mulhi64(detail::random_u64(seed, stream, draw), total);
  std::uint64_t acc = 0;
  for (std::int64_t ch = 0; ch < chunks; ++ch) {
    if (acc + sums[ch] <= target) {
      acc += sums[ch];
      continue;
    }
    const std::int64_t hi = std::min(n, (ch + 1) * kChunk);
    for (std::int64_t i = ch * kChunk; i < hi; ++i) {
      acc += q(w[i]);
      if (acc > target) return i;
    }
  }
  return -1;  // unreachable for total > 0
}

}  // namespace quarry::cpu::diversity_detail
