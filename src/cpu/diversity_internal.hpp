// Internals shared by the files of the CPU diversity backend (see src/cpu/diversity_cpu.cpp):
// constants, the (value, index) argmax, prefetching, the vector type of the float screens and
// the declaration of the float screen of distance_screen_cpu.cpp. Not part of the backend's
// interface (src/cpu/diversity_cpu.hpp); the names live in quarry::cpu::diversity_detail.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/parallel.hpp"
#include "cpu/diversity_cpu.hpp"
#include "quarry/detail/diversity_math.hpp"

namespace quarry::cpu::diversity_detail {

using detail::dot_canonical;
using detail::sqdist_canonical;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kEps = detail::kEpsDouble;
constexpr double kTaken = -1.0;  // mind2 of a centre or an excluded sample
// Slack on the pruning tests, far above the rounding of evaluating the tests themselves.
constexpr double kSlack = 1.0 + 1e-12;
// Samples per chunk of a greedy pass.
constexpr std::int64_t kPassChunk = 2048;
// How many rows ahead the greedy passes prefetch.
constexpr int kAhead = 8;

// (value, index) with the larger value winning and ties going to the lower index: the result
// of merging partial results is the same in any order.
struct ArgMax {
  double value = -kInf;
  std::int64_t index = -1;
  void take(double v, std::int64_t i) {
    if (v > value || (v == value && (index < 0 || i < index))) {
      value = v;
      index = i;
    }
  }
  void take(const ArgMax& o) {
    if (o.index >= 0) take(o.value, o.index);
  }
};

template <class F>
ArgMax parallel_argmax(std::int64_t n, std::int64_t work, F value_of) {  // -inf: not a candidate
  std::vector<ArgMax> part(static_cast<std::size_t>(max_threads()));
  parallel_chunks(n, 8192, work, [&](std::int64_t b, std::int64_t e, int t) {
    ArgMax m = part[t];
    for (std::int64_t i = b; i < e; ++i) {
      const double v = value_of(i);
      if (v != -kInf) m.take(v, i);
    }
    part[t] = m;
  });
  ArgMax best;
  for (const ArgMax& m : part) best.take(m);
  return best;
}

// Asks for every cache line of [p, p + bytes) to be loaded, into L2 (locality 1): the L1 has
// too few fill buffers for the rows of several samples in flight.
inline void prefetch_bytes(const void* p, std::int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (std::int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 1);
}

// 16 floats as one vector (the compiler lowers it to whatever the target has), and the sum of
// its elements in element order: the float screens of diversity_metrics.hpp and
// distance_screen_cpu.cpp.
using f32x16 = float __attribute__((vector_size(64)));
inline float hsum(f32x16 v) {
  float s = 0;
  for (int j = 0; j < 16; ++j) s += v[j];
  return s;
}

// sum_k (r_k - c_jk)^2 for four rows c_j at once, in float, within the bound of
// detail::sqdist_f32: the float screen of k-center (distance_screen_cpu.cpp, the one file of the
// backend compiled with FP contraction allowed).
void sqdist_f32_x4(const float* r, const float* const c[4], std::int64_t n, float out[4]);

// Subnormal rounding of a float sum of n products: at most n * 2^-149 each way, doubled.
inline double subnormal_slack(std::int64_t n) { return 8.0 * static_cast<double>(n) * 1.401298464324817e-45; }
// The bf16 screens round a term at most d / 32 + 50 times (the accumulator, the 16-lane sum,
// a scalar tail of up to 31): their error bounds are taken for d + 64 terms.
constexpr std::int64_t kScreenExtra = 64;

// out[q] = in[order[q]]
template <class T>
void permute(std::vector<T>& v, const std::vector<std::int32_t>& order) {
  std::vector<T> out(v.size());
  for (std::size_t q = 0; q < order.size(); ++q) out[q] = v[static_cast<std::size_t>(order[q])];
  v.swap(out);
}

inline void report(const ProgressFn& progress, const char* phase, std::int64_t done, std::int64_t total) {
  if (progress) progress({phase, done, total});
}

}  // namespace quarry::cpu::diversity_detail
