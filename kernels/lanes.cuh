// The Lanes policies of the warp- and block-per-row kernels (see include/quarry/detail/
// row_math.hpp): thread `first()` of a group takes classes first, first + step, ..., and the
// group combines partial results with shuffles (and, for a block, a little shared memory).
// Every method is __host__ __device__ so that the shared QUARRY_HD math may name them; they
// are only ever called on the device.
#pragma once

#include <cuda_runtime.h>

#include "quarry/detail/hd.hpp"

namespace quarry::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

template <class V, class Op>
__device__ __forceinline__ V warp_reduce(V v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

struct MaxOp {
  template <class V>
  __device__ __forceinline__ V operator()(V a, V b) const { return b > a ? b : a; }
};
struct MinOp {
  template <class V>
  __device__ __forceinline__ V operator()(V a, V b) const { return b < a ? b : a; }
};
struct SumOp {
  template <class V>
  __device__ __forceinline__ V operator()(V a, V b) const { return a + b; }
};
struct OrOp {
  __device__ __forceinline__ unsigned operator()(unsigned a, unsigned b) const { return a | b; }
};

/// The combines as the host pass of nvcc sees them: never called there (the policies are only
/// used on the device), but the shared QUARRY_HD math must compile for the host too. The
/// device combines of each policy hide these.
struct HostCombines {
#if !defined(__CUDA_ARCH__)
  float max(float v) const { return v; }
  float sum(float v) const { return v; }
  int sum(int v) const { return v; }
  int min(int v) const { return v; }
  unsigned any(unsigned v) const { return v; }
  double sumd(double v) const { return v; }
#endif
};

/// A warp shares a row: lane l takes classes l, l + 32, ...
struct WarpLanes : HostCombines {
  int lane;
  QUARRY_HD explicit WarpLanes(int l) : lane(l) {}
  QUARRY_HD int first() const { return lane; }
  QUARRY_HD int step() const { return 32; }
  QUARRY_HD bool owns(int c) const { return (c & 31) == lane; }
#if defined(__CUDA_ARCH__)
  __device__ __forceinline__ float max(float v) const { return warp_reduce(v, MaxOp{}); }
  __device__ __forceinline__ float sum(float v) const { return warp_reduce(v, SumOp{}); }
  __device__ __forceinline__ int sum(int v) const { return warp_reduce(v, SumOp{}); }
  __device__ __forceinline__ int min(int v) const { return warp_reduce(v, MinOp{}); }
  __device__ __forceinline__ unsigned any(unsigned v) const { return warp_reduce(v, OrOp{}); }
  __device__ __forceinline__ double sumd(double v) const { return warp_reduce(v, SumOp{}); }
#endif
};

/// A whole block shares a row: thread t takes classes t, t + blockDim.x, ... `scratch` is 32
/// doubles of shared memory owned by this policy (one value per warp).
struct BlockLanes : HostCombines {
  double* scratch;
  QUARRY_HD explicit BlockLanes(double* s) : scratch(s) {}
  QUARRY_HD int first() const {
#if defined(__CUDA_ARCH__)
    return static_cast<int>(threadIdx.x);
#else
    return 0;
#endif
  }
  QUARRY_HD int step() const {
#if defined(__CUDA_ARCH__)
    return static_cast<int>(blockDim.x);
#else
    return 1;
#endif
  }
  QUARRY_HD bool owns(int c) const { return c % step() == first(); }

#if defined(__CUDA_ARCH__)
  // Warp partials to scratch, warp 0 combines them, everyone reads the result. The barriers
  // before and after let the scratch be reused by the next combine at once.
  template <class V, class Op>
  __device__ __forceinline__ V block_reduce(V v, Op op, V identity) const {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_reduce(v, op);
    __syncthreads();
    if (lane == 0) scratch[warp] = static_cast<double>(v);
    __syncthreads();
    if (warp == 0) {
      V w = lane < warps ? static_cast<V>(scratch[lane]) : identity;
      w = warp_reduce(w, op);
      if (lane == 0) scratch[0] = static_cast<double>(w);
    }
    __syncthreads();
    return static_cast<V>(scratch[0]);
  }
  __device__ float max(float v) const { return block_reduce(v, MaxOp{}, -detail::kFloatMax); }
  __device__ float sum(float v) const { return block_reduce(v, SumOp{}, 0.0f); }
  __device__ int sum(int v) const { return block_reduce(v, SumOp{}, 0); }
  __device__ int min(int v) const { return block_reduce(v, MinOp{}, 0x7fffffff); }
  __device__ unsigned any(unsigned v) const { return block_reduce(v, OrOp{}, 0u); }
  __device__ double sumd(double v) const { return block_reduce(v, SumOp{}, 0.0); }
#endif
};

}  // namespace quarry::cuda
