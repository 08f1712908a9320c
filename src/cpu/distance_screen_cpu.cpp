// The float screen of k-center (LazyKCenter, kcenter_cpu.cpp): sum_k (r_k - c_jk)^2 for four
// rows at once. This file is deliberately left out of QUARRY_NO_CONTRACTION (CMakeLists.txt): the
// screen's error bound allows FMA contraction, which makes it faster. Nothing here may decide a
// pick: canonical (exact, tie-deciding) arithmetic belongs in the files on that list, never here.
#include "cpu/diversity_internal.hpp"

#include <cstdint>
#include <cstring>

namespace quarry::cpu::diversity_detail {

// sum_k (r_k - c_jk)^2 for four rows c_j at once, in float, in any order (the bound of
// detail::sqdist_f32): four independent accumulators, and r read once for the four. A screen
// only, so FMA contraction is allowed here (the other files of the backend forbid it).
__attribute__((noinline)) void sqdist_f32_x4(const float* r, const float* const c[4], std::int64_t n, float out[4]) {
  f32x16 acc[4] = {};
  std::int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    f32x16 rv;
    std::memcpy(&rv, r + k, sizeof rv);
    for (int j = 0; j < 4; ++j) {
      f32x16 cv;
      std::memcpy(&cv, c[j] + k, sizeof cv);
      const f32x16 dv = rv - cv;
      acc[j] += dv * dv;
    }
  }
  for (int j = 0; j < 4; ++j) {
    float s = hsum(acc[j]);
    for (std::int64_t q = k; q < n; ++q) {
      const float dq = r[q] - c[j][q];
      s += dq * dq;
    }
    out[j] = s;
  }
}

}  // namespace quarry::cpu::diversity_detail
