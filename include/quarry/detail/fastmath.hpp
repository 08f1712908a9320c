// Branch-free log and exp for float, accurate to a few ulp, that vectorise on the CPU and
// compute the same values on the GPU:
//   log x = e ln2 + log(1+f),  f = m - 1, m in [sqrt(1/2), sqrt 2), a fitted polynomial
//   exp x = 2^n e^r,           r = x - n ln2, |r| <= ln2/2 (Cody-Waite split of ln2), Taylor
#pragma once

#include "quarry/detail/hd.hpp"

namespace quarry::detail {

/// Natural log of a positive normal float (x >= 2^-126). Callers guard zero and subnormals.
/// x = 2^e m, m in [sqrt(1/2), sqrt 2); log(1+f) = f - f^2/2 + f^3 P(f), f = m - 1, with P of
/// degree 6 fitted by scripts/fit_fast_log.py (worst relative error 1.4e-7). No division, so
/// that a vector loop of it is a few FMAs per element.
QUARRY_HD float fast_log(float x) {
  const std::uint32_t b = float_to_bits(x);
  float e = static_cast<float>(static_cast<std::int32_t>(b >> 23) - 127);
  float m = bits_to_float((b & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1.0f : e;
  const float f = m - 1.0f;
  float p = 8.506953378e-02f;
  p = p * f - 1.419747180e-01f;
  p = p * f + 1.495097949e-01f;
  p = p * f - 1.658794906e-01f;
  p = p * f + 1.996059653e-01f;
  p = p * f - 2.500096937e-01f;
  p = p * f + 3.333397256e-01f;
  const float f2 = f * f;
  return e * 0.693147180559945f + (f - 0.5f * f2 + f2 * f * p);
}

/// x log x with 0 log 0 = 0 (and values below 2^-126 treated as 0: |x log x| < 1e-36 there).
QUARRY_HD float xlogx(float x) {
  const bool tiny = !(x >= 1.17549435e-38f);
  const float safe = tiny ? 1.0f : x;
  const float v = x * fast_log(safe);  // computed unconditionally, then selected: branch-free
  return tiny ? 0.0f : v;
}

/// e^x for x <= 0 (softmax weights exp(z - max z)); returns 0 below -87.
QUARRY_HD float fast_exp_nonpos(float x) {
  const bool under = x < -87.0f;
  x = under ? -87.0f : x;  // clamp, so that 2^n below stays a normal float
  const float t = x * 1.44269504088896f;
  const std::int32_t n = static_cast<std::int32_t>(t - 0.5f);  // round half away (t <= 0)
  const float nf = static_cast<float>(n);
  float r = x - nf * 0.693359375f;   // ln2 high part (exact product)
  r = r - nf * -2.12194440e-4f;      // ln2 low part
  // e^r, |r| <= 0.347: Taylor to degree 7 (relative error < 1e-8)
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float v = p * bits_to_float(static_cast<std::uint32_t>(n + 127) << 23);
  return v * (under ? 0.0f : 1.0f);  // a multiply, not a select: GCC then vectorises the loop
}

}  // namespace quarry::detail
