// Counter-based random numbers (Philox4x32-10, Salmon et al. SC'11) and Gumbel keys for power
// sampling: the stream depends only on (seed, index), so CPU and GPU draw the same numbers.
#pragma once

#include <cmath>

#include "quarry/detail/fastmath.hpp"
#include "quarry/detail/hd.hpp"

namespace quarry::detail {

struct Philox4 {
  std::uint32_t v[4];
};

QUARRY_HD std::uint32_t mulhi32(std::uint32_t a, std::uint32_t b) {
  return static_cast<std::uint32_t>((static_cast<std::uint64_t>(a) * b) >> 32);
}

/// Philox4x32 with 10 rounds: counter (c0..c3), key (k0, k1).
QUARRY_HD Philox4 philox4x32_10(std::uint32_t c0, std::uint32_t c1, std::uint32_t c2,
                                std::uint32_t c3, std::uint32_t k0, std::uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    const std::uint32_t hi0 = mulhi32(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const std::uint32_t hi1 = mulhi32(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    const std::uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

/// A uniform float in (0, 1) for sample `index` of stream `seed`.
QUARRY_HD float uniform_open01(std::uint64_t seed, std::uint64_t index) {
  const Philox4 r = philox4x32_10(static_cast<std::uint32_t>(index),
                                  static_cast<std::uint32_t>(index >> 32), 0x71A2u, 0u,
                                  static_cast<std::uint32_t>(seed),
                                  static_cast<std::uint32_t>(seed >> 32));
  // 23 bits: (j + 0.5) 2^-23 is exact in float for every j, so u lies in [2^-24, 1 - 2^-24].
  return (static_cast<float>(r.v[0] >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

/// Gumbel-top-k key of a sample with score `s` >= 0: beta log s + G, G ~ Gumbel(0, 1).
/// Taking the k largest keys samples k items without replacement with P ~ s^beta.
/// A zero score gets -inf (never drawn while a positive score remains).
QUARRY_HD float gumbel_key(float s, float beta, std::uint64_t seed, std::uint64_t index) {
  const float u = uniform_open01(seed, index);
  const float g = -fast_log(-fast_log(u));
  const bool positive = s >= 1.17549435e-38f;
  const float key = beta * fast_log(positive ? s : 1.0f) + g;  // branch-free: vectorises
  return positive ? key : -HUGE_VALF;
}

}  // namespace quarry::detail
