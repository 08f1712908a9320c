// QUARRY_HD marks per-row math shared by the CPU backend and the CUDA kernels.
// No CUDA header is included here: under nvcc it is __host__ __device__, otherwise inline.
#pragma once

#include <cstdint>
#include <cstring>

// Always inlined: a call left inside a row loop stops it vectorising (GCC declined to inline
// fast_log into committee_score, which made kl-max 10x slower).
#if defined(__CUDACC__)
#define QUARRY_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define QUARRY_HD inline __attribute__((always_inline))
#else
#define QUARRY_HD inline
#endif

// QUARRY_SIMD(clauses): `#pragma omp simd clauses` on the host with OpenMP, nothing under nvcc.
// It lets the compiler vectorise the float reductions of a row (reassociating them).
#define QUARRY_PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP) && !defined(__CUDACC__)
#define QUARRY_SIMD(...) QUARRY_PRAGMA(omp simd __VA_ARGS__)
#else
#define QUARRY_SIMD(...)
#endif

namespace quarry::detail {

/// The largest finite float: a value v is finite iff -kFloatMax <= v <= kFloatMax (NaN fails).
constexpr float kFloatMax = 3.402823466e38f;

/// 1 when v is NaN or outside [lo, kFloatMax], else 0. Bitwise, not &&, so that a loop
/// accumulating it has no branch and vectorises.
QUARRY_HD unsigned out_of_range(float v, float lo) {
  return static_cast<unsigned>(!(v >= lo)) | static_cast<unsigned>(!(v <= kFloatMax));
}

QUARRY_HD float bits_to_float(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
QUARRY_HD std::uint32_t float_to_bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

/// IEEE binary16 bits -> float, exact for every value (subnormals, Inf, NaN). Branch-free.
QUARRY_HD float half_to_float(std::uint16_t h) {
  const std::uint32_t shifted = static_cast<std::uint32_t>(h & 0x7fffu) << 13;
  const std::uint32_t exp = shifted & 0x0f800000u;
  std::uint32_t o = shifted + ((127u - 15u) << 23);       // re-bias the exponent
  o = exp == 0x0f800000u ? o + ((128u - 16u) << 23) : o;  // Inf / NaN: exponent 255
  // Zero / subnormal: value = mantissa * 2^-24, formed as (2^-14 + m*2^-24) - 2^-14.
  const float sub = bits_to_float(o + (1u << 23)) - bits_to_float(113u << 23);
  const float mag = exp == 0 ? sub : bits_to_float(o);
  return bits_to_float(float_to_bits(mag) | (static_cast<std::uint32_t>(h & 0x8000u) << 16));
}

/// bfloat16 bits -> float (exact).
QUARRY_HD float bfloat16_to_float(std::uint16_t h) {
  return bits_to_float(static_cast<std::uint32_t>(h) << 16);
}

/// float -> binary16 bits, round to nearest even (used by writers and tests, not hot paths).
QUARRY_HD std::uint16_t float_to_half(float f) {
  const std::uint32_t x = float_to_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<std::uint16_t>(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (ax >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow -> Inf
  if (ax < 0x38800000u) {  // subnormal or zero in half
    // value / 2^-24 rounded to nearest even
    const float v = bits_to_float(ax) * 16777216.0f;
    float r = static_cast<float>(static_cast<std::int32_t>(v));
    const float frac = v - r;
    if (frac > 0.5f || (frac == 0.5f && (static_cast<std::int32_t>(r) & 1))) r += 1.0f;
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(r));
  }
  std::uint32_t m = ax + 0xfffu + ((ax >> 13) & 1u);  // round to nearest even at bit 13
  m -= (112u << 23);
  return static_cast<std::uint16_t>(sign | (m >> 13));
}

}  // namespace quarry::detail
