// Branch-free log and exp for float, accurate to a few ulp, that vectorise on the CPU and
// compute the same values on the GPU. Both are written from textbook series:
//   log x = e ln2 + 2 atanh(s),  s = (m-1)/(m+1), m in [sqrt(1/2), sqrt 2)
//   exp x = 2^n e^r,             r = x - n ln2, |r| <= ln2/2 (Cody-Waite split of ln2)
#pragma once

#include "quarry/detail/hd.hpp"

namespace quarry::detail {

/// Natural log of a positive normal float (x >= 2^-126). Callers guard zero and subnormals.
QUARRY_HD float fast_log(float x) {
  const std::uint32_t b = float_to_bits(x);
  float e = static_cast<float>(static_cast<std::int32_t>(b >> 23) - 127);
  float m = bits_to_float((b & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1.0f : e;
  const float s = (m - 1.0f) / (m + 1.0f);  // |s| <= 0.1716
  const float s2 = s * s;
  // 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + s^7/7 + s^9/9 + s^11/11 + ...)
  float p = 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  const float atanh2 = 2.0f * s + 2.0f * s * s2 * p;
  return e * 0.693147180559945f + atanh2;
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
  x = under ? 0.0f : x;
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
  const float scale = bits_to_float(static_cast<std::uint32_t>(n + 127) << 23);
  const float v = p * scale;
  return under ? 0.0f : v;
}

}  // namespace quarry::detail
