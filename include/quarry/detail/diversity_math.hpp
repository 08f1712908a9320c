// The arithmetic of the diversity strategies (include/quarry/diversity.hpp) that both backends
// must compute identically: the canonical distances, the BADGE factorisation, and the exact D²
// sampler. Everything here is QUARRY_HD; a CUDA port calls these functions (or evaluates the
// same operations in the same order, with --fmad=false) and reproduces the CPU bit for bit.
//
// Canonical distances. A selection is decided by comparing distances, so "the same selection
// on every thread count and device" needs one definition of each distance, not "a distance
// within rounding". Embeddings are float32 (converted once); every canonical distance is
// accumulated in double in `kLanes` interleaved partial sums (element k goes to lane k mod 8,
// in increasing k), combined as ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). Products of two floats
// are exact in double, so a dot product of float rows is the same with or without FMA; the
// squared differences are rounded products, and the callers compile them without contraction
// (src/cpu/diversity_cpu.cpp turns it off with a pragma; CUDA needs --fmad=false).
//
// The fast paths only screen: they use float arithmetic with a proven error bound to decide
// that a canonical distance cannot change anything, and otherwise compute the canonical value.
#pragma once

#include <cmath>
#include <cstdint>

#include "quarry/detail/hd.hpp"
#include "quarry/detail/random.hpp"

namespace quarry::detail {

constexpr int kLanes = 8;
/// Unit roundoff of double: the error bounds of the canonical distances are multiples of it.
constexpr double kEpsDouble = 1.1102230246251565e-16;  // 2^-53
constexpr double kEpsFloat = 5.9604644775390625e-08;   // 2^-24

QUARRY_HD double combine_lanes(const double* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/// sum_k x_k y_k of two float rows, in double (each product exact), canonical order.
QUARRY_HD double dot_canonical(const float* x, const float* y, std::int64_t n) {
  double l[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int j = 0; j < kLanes; ++j)
      l[j] += static_cast<double>(x[k + j]) * static_cast<double>(y[k + j]);
  for (int j = 0; k + j < n; ++j) l[j] += static_cast<double>(x[k + j]) * static_cast<double>(y[k + j]);
  return combine_lanes(l);
}

/// sum_k x_k y_k of two double rows (each product rounded, then added: no FMA), canonical order.
QUARRY_HD double dot_canonical(const double* x, const double* y, std::int64_t n) {
  double l[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int j = 0; j < kLanes; ++j) l[j] += x[k + j] * y[k + j];
  for (int j = 0; k + j < n; ++j) l[j] += x[k + j] * y[k + j];
  return combine_lanes(l);
}

/// sum_k (x_k - y_k)^2 of two float rows in double, canonical order: the k-center distance.
/// Exactly 0 for equal rows and symmetric in x and y.
QUARRY_HD double sqdist_canonical(const float* x, const float* y, std::int64_t n) {
  double l[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double d = static_cast<double>(x[k + j]) - static_cast<double>(y[k + j]);
      l[j] += d * d;
    }
  for (int j = 0; k + j < n; ++j) {
    const double d = static_cast<double>(x[k + j]) - static_cast<double>(y[k + j]);
    l[j] += d * d;
  }
  return combine_lanes(l);
}

/// sum_k (x_k - m_k)^2 of a float row and a double vector (the pool mean), canonical order.
QUARRY_HD double sqdist_canonical(const float* x, const double* m, std::int64_t n) {
  double l[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double d = static_cast<double>(x[k + j]) - m[k + j];
      l[j] += d * d;
    }
  for (int j = 0; k + j < n; ++j) {
    const double d = static_cast<double>(x[k + j]) - m[k + j];
    l[j] += d * d;
  }
  return combine_lanes(l);
}

/// Relative error bound of sqdist_canonical against the exact distance of the float rows
/// (n + 2 roundings of non-negative terms, with room to spare).
QUARRY_HD double sqdist_rel_error(std::int64_t n) { return static_cast<double>(n + 4) * kEpsDouble; }

/// Squared distance between two BADGE gradient embeddings g = a ⊗ h from the factorisation
/// <a⊗h, b⊗g> = <a,b><h,g>: ||g_i - g_j||^2 = n_i + n_j - 2 <a_i,a_j><h_i,h_j>, where
/// n_i = <a_i,a_i><h_i,h_i> (computed as this same product, so that the distance of a row to
/// itself, or to a duplicate, is exactly 0), clamped at 0. `aa` = <a_i,a_j>, `hh` = <h_i,h_j>.
QUARRY_HD double badge_dist2(double ni, double nj, double aa, double hh) {
  const double t = aa * hh;
  const double d = (ni + nj) - (t + t);
  return d > 0.0 ? d : 0.0;
}

// ------------------------------------------------------------------ screening (float, bounded)

/// sum_k (x_k - y_k)^2 in float, in any order (vectorised). |result - exact| <=
/// sqdist_f32_rel_error(n) * exact (all terms are non-negative), plus n * 2^-149 for subnormal
/// rounding.
QUARRY_HD float sqdist_f32(const float* x, const float* y, std::int64_t n) {
  float s = 0;
  QUARRY_SIMD(reduction(+ : s))
  for (std::int64_t k = 0; k < n; ++k) {
    const float d = x[k] - y[k];
    s = std::fma(d, d, s);
  }
  return s;
}
QUARRY_HD double sqdist_f32_rel_error(std::int64_t n) {
  // gamma_{n+2} = (n+2)u / (1 - (n+2)u) with u = 2^-24 (one rounding for the difference, one
  // for the square, n - 1 for the sums in any order), with margin.
  const double nu = static_cast<double>(n + 4) * kEpsFloat;
  return nu / (1.0 - nu) * 1.001;
}

/// sum_k x_k y_k in float, in any order (vectorised): |result - exact| <=
/// dot_f32_error_factor(n) * ||x|| ||y|| (plus n * 2^-149 for subnormal rounding).
QUARRY_HD float dot_f32(const float* x, const float* y, std::int64_t n) {
  float s = 0;
  QUARRY_SIMD(reduction(+ : s))
  for (std::int64_t k = 0; k < n; ++k) s = std::fma(x[k], y[k], s);
  return s;
}
QUARRY_HD double dot_f32_error_factor(std::int64_t n) {
  const double nu = static_cast<double>(n + 2) * kEpsFloat;
  return nu / (1.0 - nu) * 1.001;
}

// ------------------------------------------------------------------ exact D² sampling
//
// D² sampling (k-means++ seeding, BADGE) draws sample i with probability w_i / sum w. Summing
// doubles in a different order (threads, GPU blocks) changes the sum in its last bits, and
// with it, rarely, the sample drawn. Instead the weights are quantised to integers, whose
// sums are exact in any order:
//   s   = d2_scale_exponent(max_i w_i, n)           (a power of two, chosen from the max only)
//   q_i = d2_quantise(w_i, s) = ceil(w_i 2^s)       (0 for w_i = 0; >= 1 for any w_i > 0)
//   Q   = sum_i q_i                                  (< 2^63: no overflow, exact in any order)
//   r   = random_u64(seed, stream, draw)             (64 random bits from Philox4x32-10)
//   t   = floor(r Q / 2^64)                          (uniform on [0, Q) up to 2^-64)
//   pick the smallest i with q_0 + ... + q_i > t.
// The quantisation changes a probability by at most 1 / 2^(61 - bit_width(n)) of the largest
// weight's, far below anything a float input could express.

/// 64 random bits of draw `counter` in stream `stream` of `seed`: Philox4x32-10 with counter
/// (counter lo, counter hi, stream, 0) and key (seed lo, seed hi); (v1 << 32) | v0. The same
/// generator as uniform_open01 (power sampling uses stream 0x71A2), with 64 bits instead of 23:
/// D² sampling over millions of samples needs finer resolution than 2^-23 of the total mass.
QUARRY_HD std::uint64_t random_u64(std::uint64_t seed, std::uint32_t stream, std::uint64_t counter) {
  const Philox4 r = philox4x32_10(static_cast<std::uint32_t>(counter),
                                  static_cast<std::uint32_t>(counter >> 32), stream, 0u,
                                  static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  return (static_cast<std::uint64_t>(r.v[1]) << 32) | r.v[0];
}

/// The Philox streams of the diversity strategies (the 3rd counter word).
constexpr std::uint32_t kStreamBadge = 0xBAD6E5u;         // BADGE: draw t picks centre t (t >= 1)
constexpr std::uint32_t kStreamKMeansInit = 0xC1A55u;     // k-means++: draw 0 the first centre, t centre t
constexpr std::uint32_t kStreamClusterOrder = 0xC0DE5u;   // cluster-margin: order within a cluster

/// floor(a b / 2^64).
QUARRY_HD std::uint64_t mulhi64(std::uint64_t a, std::uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

/// Number of bits of n (0 for 0).
QUARRY_HD int bit_width(std::uint64_t n) {
  int b = 0;
  while (n) {
    ++b;
    n >>= 1;
  }
  return b;
}

/// The exponent s of the quantisation: w_max 2^s < 2^(62 - bit_width(n)), so that n weights
/// sum below 2^62 + n. `w_max` must be > 0 and finite.
QUARRY_HD int d2_scale_exponent(double w_max, std::int64_t n) {
  int e = 0;
  std::frexp(w_max, &e);  // w_max = m 2^e, m in [0.5, 1): w_max < 2^e
  return 62 - bit_width(static_cast<std::uint64_t>(n)) - e;
}

/// ceil(w 2^s), 0 for w <= 0 (taken samples have negative weights).
QUARRY_HD std::uint64_t d2_quantise(double w, int s) {
  return w > 0.0 ? static_cast<std::uint64_t>(std::ceil(std::ldexp(w, s))) : 0u;
}

/// Sort key that orders the members of a cluster in cluster-margin: a random permutation for
/// the seed (ties, which have probability 2^-64, go to the lower index).
QUARRY_HD std::uint64_t cluster_order_key(std::uint64_t seed, std::int64_t index) {
  return random_u64(seed, kStreamClusterOrder, static_cast<std::uint64_t>(index));
}

}  // namespace quarry::detail
