// Element loaders of the CPU backend: every float dtype is read as float.
#pragma once

#include <cstdint>

#include "quarry/array.hpp"
#include "quarry/detail/hd.hpp"

namespace quarry::cpu {

template <DType D> struct Elem;
template <> struct Elem<DType::f32> {
  using T = float;
  static float get(const T* p, std::int64_t i) { return p[i]; }
};
template <> struct Elem<DType::f64> {
  using T = double;
  static float get(const T* p, std::int64_t i) { return static_cast<float>(p[i]); }
};
template <> struct Elem<DType::f16> {
  using T = std::uint16_t;
  static float get(const T* p, std::int64_t i) { return detail::half_to_float(p[i]); }
};
template <> struct Elem<DType::bf16> {
  using T = std::uint16_t;
  static float get(const T* p, std::int64_t i) { return detail::bfloat16_to_float(p[i]); }
};

}  // namespace quarry::cpu
