// The greedy loop's kernels of the CUDA diversity backend: the argmax (value, index) reductions,
// the per-pick pass (update every distance to the nearest centre against a new centre, then the
// argmax), exact D² sampling, and the members of Greedy (diversity_internal.cuh) that launch
// them, with d2_loop. The entry points that drive them are in kernels/diversity.cu.
#include <cub/block/block_scan.cuh>

#include <cstdint>

#include "kernels/context.cuh"
#include "kernels/diversity_internal.cuh"
#include "quarry/detail/diversity_math.hpp"
#include "quarry/detail/random.hpp"

namespace quarry::cuda::diversity_detail {
namespace {

// ------------------------------------------------------------------ argmax (value, index)

__device__ __forceinline__ void take(Best& b, double v, i64 i) {
  if (i >= 0 && (b.i < 0 || v > b.v || (v == b.v && i < b.i))) {
    b.v = v;
    b.i = i;
  }
}
__device__ __forceinline__ void merge(Best& b, const Best& o) {
  take(b, o.v, o.i);
  if (o.free >= 0 && (b.free < 0 || o.free < b.free)) b.free = o.free;
}
__device__ __forceinline__ Best shfl_best(const Best& b, int lane) {
  Best o;
  o.v = __shfl_down_sync(kFull, b.v, lane);
  o.i = __shfl_down_sync(kFull, b.i, lane);
  o.free = __shfl_down_sync(kFull, b.free, lane);
  return o;
}

// Reduces the block's Best into thread 0's result (blockDim.x a multiple of 32, <= 1024).
__device__ Best block_best(Best b) {
  __shared__ double sv[32];
  __shared__ i64 si[32], sf[32];
  for (int o = 16; o > 0; o >>= 1) merge(b, shfl_best(b, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) {
    sv[warp] = b.v;
    si[warp] = b.i;
    sf[warp] = b.free;
  }
  __syncthreads();
  if (warp == 0) {
    b = Best{0.0, -1, -1};
    if (lane < warps) b = Best{sv[lane], si[lane], sf[lane]};
    for (int o = 16; o > 0; o >>= 1) merge(b, shfl_best(b, o));
  }
  __syncthreads();  // the shared arrays may be reused by a later call
  return b;
}

// ------------------------------------------------------------------ the per-pick pass

// One group of 8 threads per row (grid-stride over blocks of 32 rows, uniform per block so
// that every warp shuffles with all its threads), then one Best per block into part[block].
template <Mode M>
__global__ void __launch_bounds__(kBlock) pass_kernel(Pool p, double* mind2, const i64* centre,
                                                      const double* mean, Best* part) {
  const int g = threadIdx.x % kGroup;
  const i64 c = centre ? *centre : -1;
  Best b{0.0, -1, -1};
  for (i64 base = static_cast<i64>(blockIdx.x) * kRowsPerBlock; base < p.n;
       base += static_cast<i64>(gridDim.x) * kRowsPerBlock) {
    const i64 i = base + threadIdx.x / kGroup;
    const bool row = i < p.n;
    const double m = row ? mind2[i] : kTaken;
    if (M == Mode::mind2) {
      // The CPU updates a selectable row with m > 0 and keeps d only if d < m.
      const bool upd = c >= 0 && m > 0.0;
      const float* xi = p.x + (row ? i : 0) * p.d;
      const float* xc = p.x + (c >= 0 ? c : 0) * p.d;
      double d;
      if (p.a == nullptr) {
        d = combine_group(lane_sqdist(xi, xc, upd ? p.d : 0, g));
      } else {
        const double* ai = p.a + (row ? i : 0) * p.c;
        const double* ac = p.a + (c >= 0 ? c : 0) * p.c;
        const double aa = combine_group(lane_dot(ai, ac, upd ? p.c : 0, g));
        const double hh = combine_group(lane_dot(xi, xc, upd ? p.d : 0, g));
        d = upd ? badge_dist2(p.norm2[i], p.norm2[c], aa, hh) : 0.0;
      }
      double mm = m;
      if (upd && d < m) {
        mm = d;
        if (g == 0) mind2[i] = d;
      }
      if (g == 0 && row && m >= 0.0) {
        take(b, mm, i);
        if (b.free < 0) b.free = i;
      }
    } else if (M == Mode::norm) {
      if (g == 0 && row && m >= 0.0) {
        take(b, p.norm2[i], i);
        if (b.free < 0) b.free = i;
      }
    } else {
      const double d = combine_group(lane_sqdist(p.x + (row ? i : 0) * p.d, mean, row ? p.d : 0, g));
      if (g == 0 && row) {
        take(b, -d, i);
        if (b.free < 0) b.free = i;
      }
    }
  }
  b = block_best(b);
  if (threadIdx.x == 0) part[blockIdx.x] = b;
}

// One block: the Best of the parts into *state. pick != null: also record it as pick t
// (index and value) and mark the row taken.
__global__ void __launch_bounds__(1024) finish_kernel(const Best* part, int parts, Best* state,
                                                      double* mind2, i64* picks, double* values, i64 t) {
  Best b{0.0, -1, -1};
  for (int j = threadIdx.x; j < parts; j += blockDim.x) merge(b, part[j]);
  b = block_best(b);
  if (threadIdx.x == 0) {
    *state = b;
    if (picks) {
      picks[t] = b.i;
      values[t] = b.v;
      if (b.i >= 0) mind2[b.i] = kTaken;
    }
  }
}

// ------------------------------------------------------------------ exact D² sampling

struct Quant {
  int s;
  bool fast;
  double scale;
};

// cpu::d2_sample's quantisation, from the largest weight (state->v) and n.
__device__ __forceinline__ Quant quantiser(double w_max, i64 n) {
  Quant q;
  q.s = w_max > 0.0 ? detail::d2_scale_exponent(w_max, n) : 0;
  q.fast = q.s > -1000 && q.s < 1000;
  q.scale = q.fast ? ldexp(1.0, q.s) : 0.0;
  return q;
}
__device__ __forceinline__ unsigned long long quantise(double w, const Quant& q) {
  if (!(w > 0.0)) return 0ull;
  return static_cast<unsigned long long>(ceil(q.fast ? __dmul_rn(w, q.scale) : ldexp(w, q.s)));
}

// sums[ch] = sum of the quantised weights of rows [ch kChunk, (ch + 1) kChunk).
__global__ void __launch_bounds__(kBlock) d2_chunk_sums_kernel(const double* w, i64 n, const Best* state,
                                                               unsigned long long* sums) {
  __shared__ unsigned long long acc;
  if (threadIdx.x == 0) acc = 0;
  __syncthreads();
  const Quant q = quantiser(state->v, n);
  const i64 b = static_cast<i64>(blockIdx.x) * kChunk;
  unsigned long long s = 0;
  for (i64 i = b + threadIdx.x; i < min(n, b + kChunk); i += blockDim.x) s += quantise(w[i], q);
  atomicAdd(&acc, s);  // integers: exact in any order
  __syncthreads();
  if (threadIdx.x == 0) sums[blockIdx.x] = acc;
}

// One block of kScanThreads: the smallest i whose integer prefix sum exceeds
// floor(r total / 2^64), r = random_u64(seed, stream, draw); when the largest weight is not
// positive, the lowest row not taken (the CPU's first_free). Records pick t, its weight, and
// marks it taken.
__global__ void __launch_bounds__(kScanThreads) d2_select_kernel(const double* w_in, double* mind2, i64 n,
                                                                 const Best* state,
                                                                 const unsigned long long* sums, i64 chunks,
                                                                 std::uint64_t seed, std::uint32_t stream,
                                                                 i64 t, i64* picks, double* values) {
  using Scan = cub::BlockScan<unsigned long long, kScanThreads>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ i64 s_chunk;
  __shared__ unsigned long long s_rest;
  __shared__ i64 s_pick;
  const Best st = *state;
  if (!(st.v > 0.0)) {
    if (threadIdx.x == 0) {
      picks[t] = st.free;
      values[t] = st.free >= 0 ? fmax(mind2[st.free], 0.0) : 0.0;
      if (st.free >= 0) mind2[st.free] = kTaken;
    }
    return;
  }
  const Quant q = quantiser(st.v, n);
  // 1. The chunk: each thread a contiguous range of chunk sums, scanned across the block.
  const i64 per = (chunks + kScanThreads - 1) / kScanThreads;
  const i64 c0 = min(chunks, per * threadIdx.x), c1 = min(chunks, c0 + per);
  unsigned long long mine = 0;
  for (i64 ch = c0; ch < c1; ++ch) mine += sums[ch];
  unsigned long long before = 0, total = 0;
  Scan(tmp).ExclusiveSum(mine, before, total);
  const unsigned long long target = detail::mulhi64(detail::random_u64(seed, stream, static_cast<std::uint64_t>(t)), total);
  if (threadIdx.x == 0) s_chunk = -1;
  __syncthreads();
  if (before <= target && target - before < mine) {  // exactly one thread
    unsigned long long acc = before;
    for (i64 ch = c0; ch < c1; ++ch) {
      if (acc + sums[ch] > target) {
        s_chunk = ch;
        s_rest = target - acc;
        break;
      }
      acc += sums[ch];
    }
  }
  __syncthreads();
  const i64 ch = s_chunk;
  const unsigned long long rest = s_rest;
  // 2. The row in the chunk: kRowsPerThread consecutive rows per thread, scanned across the block.
  const i64 r0 = ch * kChunk + kRowsPerThread * static_cast<i64>(threadIdx.x);
  unsigned long long qs[kRowsPerThread];
  unsigned long long own = 0;
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    qs[r] = (ch >= 0 && r0 + r < n) ? quantise(w_in[r0 + r], q) : 0ull;
    own += qs[r];
  }
  unsigned long long pre = 0, sum = 0;
  __syncthreads();
  Scan(tmp).ExclusiveSum(own, pre, sum);
  if (threadIdx.x == 0) s_pick = -1;
  __syncthreads();
  if (ch >= 0 && pre <= rest && rest - pre < own) {  // exactly one thread
    unsigned long long acc = pre;
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      if (s_pick < 0 && acc + qs[r] > rest) s_pick = r0 + r;
      acc += qs[r];
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const i64 pick = s_pick;
    picks[t] = pick;
    values[t] = pick >= 0 ? fmax(mind2[pick], 0.0) : 0.0;
    if (pick >= 0) mind2[pick] = kTaken;
  }
}

}  // namespace

// ------------------------------------------------------------------ the greedy state

// pass + finish; record: the argmax becomes pick t.
template <Mode M>
void Greedy::pass(i64 centre_pick, const double* mean, bool record, i64 t) {
  const i64* centre = centre_pick >= 0 ? picks.data() + centre_pick : nullptr;
  pass_kernel<M><<<grid, kBlock, 0, ctx.stream()>>>(pool, mind2.data(), centre, mean, part.data());
  QUARRY_CUDA_LAUNCH_CHECK("pass_kernel");
  finish_kernel<<<1, 1024, 0, ctx.stream()>>>(part.data(), grid, state.data(), mind2.data(),
                                              record ? picks.data() : nullptr, values.data(), t);
  QUARRY_CUDA_LAUNCH_CHECK("finish_kernel");
}
template void Greedy::pass<Mode::mind2>(i64, const double*, bool, i64);
template void Greedy::pass<Mode::norm>(i64, const double*, bool, i64);
template void Greedy::pass<Mode::near_mean>(i64, const double*, bool, i64);

// Pick t by D² sampling over mind2 (or the lowest free row when every weight is 0).
void Greedy::sample(i64 t, std::uint64_t seed, std::uint32_t stream, DeviceBuffer<unsigned long long>& sums) {
  const i64 chunks = (pool.n + kChunk - 1) / kChunk;
  d2_chunk_sums_kernel<<<static_cast<unsigned>(chunks), kBlock, 0, ctx.stream()>>>(mind2.data(), pool.n,
                                                                                  state.data(), sums.data());
  QUARRY_CUDA_LAUNCH_CHECK("d2_chunk_sums_kernel");
  d2_select_kernel<<<1, kScanThreads, 0, ctx.stream()>>>(mind2.data(), mind2.data(), pool.n, state.data(),
                                                         sums.data(), chunks, seed, stream, t, picks.data(),
                                                         values.data());
  QUARRY_CUDA_LAUNCH_CHECK("d2_select_kernel");
}

// k-means++ / BADGE: picks 1 .. k-1 by D² sampling after pick 0 is on the device.
void d2_loop(Greedy& gr, std::uint64_t seed, std::uint32_t stream, const ProgressFn& progress,
             const char* phase) {
  DeviceBuffer<unsigned long long> sums(gr.ctx, static_cast<std::size_t>((gr.pool.n + kChunk - 1) / kChunk),
                                        "D2 chunk sums");
  for (i64 t = 1; t < gr.k; ++t) {
    gr.pass<Mode::mind2>(t - 1, nullptr, false, t);  // add centre t-1, argmax into state
    gr.sample(t, seed, stream, sums);
    report(progress, gr.ctx, phase, t + 1, gr.k);
  }
}

}  // namespace quarry::cuda::diversity_detail
