// Element loaders of the CUDA kernels: every float dtype of an input is read as float (the
// math is in float, as on the CPU; src/cpu/elem.hpp is the host's counterpart).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace quarry::cuda {

struct F32 {
  using T = float;
  static __device__ __forceinline__ float get(const T* p, std::int64_t i) { return p[i]; }
};
struct F64 {
  using T = double;
  static __device__ __forceinline__ float get(const T* p, std::int64_t i) { return static_cast<float>(p[i]); }
};
struct F16 {
  using T = unsigned short;
  static __device__ __forceinline__ float get(const T* p, std::int64_t i) {
    return __half2float(__ushort_as_half(p[i]));
  }
};
struct BF16 {
  using T = unsigned short;
  static __device__ __forceinline__ float get(const T* p, std::int64_t i) {
    return __uint_as_float(static_cast<unsigned>(p[i]) << 16);
  }
};

}  // namespace quarry::cuda
