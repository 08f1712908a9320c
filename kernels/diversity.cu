// The diversity strategies on the device: k-center greedy, BADGE and k-means (k-means++
// seeding and Lloyd iterations) with the same results as the CPU backend (src/cpu/
// diversity_cpu.cpp) for the same inputs and seed.
//
// Why the picks are identical. The CPU decides every pick from canonical values
// (include/quarry/detail/diversity_math.hpp): squared distances and dot products of float rows
// accumulated in double in 8 interleaved lanes (element e into lane e mod 8, increasing e),
// combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), every product rounded before it is added
// (no FMA). Its fast paths (GEMM bounds, triangle-inequality pruning, float screens) only ever
// skip a distance whose canonical value provably would not change anything, so its state after
// every pick is a function of the canonical values alone:
//   mind2[i] = min over centres c of canonical d²(i, c)   (a min of exact values: any order),
//   the pick = argmax mind2 (ties to the lower index), or the exact integer D² draw over it.
// The device computes the same canonical values: a group of 8 threads per row, thread g holds
// lane g and walks e = g, g+8, ... in increasing order, and the lanes are combined with three
// xor-shuffles that form exactly the CPU's tree (IEEE addition is commutative, so l1+l0 ==
// l0+l1 bit for bit). Every operation is an explicit round-to-nearest intrinsic (__dmul_rn,
// __dadd_rn, __dsub_rn), which nvcc never contracts into an FMA, so no --fmad=false is needed.
// Instead of pruning, the device recomputes every remaining distance to each new centre: one
// pass over the embeddings per pick is bandwidth-bound (2 GB for N = 1e6, D = 512: ~0.6 ms on
// an H100, ~0.6 s for k = 1000), the same cost as a GEMV screen would have, and it gives the
// same mind2 as the pruned CPU loop (which equals its own unpruned loop, tested on the CPU).
// Argmax: per block, then one block over the block results; the combine (larger value, then
// lower index) is a total order, so the result is the same in any reduction order.
// D² sampling: the weights are quantised with detail::d2_scale_exponent / the same ceil(w 2^s)
// as cpu::d2_sample, summed as 64-bit integers (exact in any order), the target is
// mulhi64(random_u64(seed, stream, draw), total) from the same Philox draw, and the pick is the
// smallest index whose integer prefix sum exceeds it: a block-wide scan of chunk sums, then of
// the rows of the chosen chunk. Integer prefix sums are exact, so the index is the CPU's.
// Distances to a set of rows (kcenter's labeled set, k-means assignment) follow cpu::
// nearest_rows: a cuBLAS SGEMM tile (pedantic FP32 compute: no TF32, so the CPU's error bound
// for a float dot product in any summation order holds) screens, and every column the bound
// cannot rule out is recomputed canonically; the minimum (ties to the lower column) is that of
// the canonical values. k-means centroids: members of each cluster in index order (a stable
// radix sort by label), each column summed in double in that order, divided, rounded to float:
// the CPU's arithmetic. The whole greedy loop stays on the device (the pick of step t is read
// by the kernels of step t + 1 from device memory); the host synchronises per pick only when
// it reports progress.
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/context.cuh"
#include "kernels/diversity_cuda.hpp"
#include "quarry/detail/diversity_math.hpp"
#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"

namespace quarry::cuda {
namespace {

using i64 = long long;
constexpr double kTaken = -1.0;  // mind2 of a centre or an excluded sample (as the CPU)
constexpr int kGroup = detail::kLanes;   // threads per row: one per canonical lane
constexpr int kBlock = 256;              // threads of the row kernels
constexpr int kRowsPerBlock = kBlock / kGroup;
constexpr unsigned kFull = 0xffffffffu;
constexpr int kChunk = 2048;             // rows per chunk of the D² sums
constexpr int kScanThreads = 512;        // the one-block D² select (128 registers: no spills)
constexpr int kRowsPerThread = kChunk / kScanThreads;  // consecutive rows per thread in the select
static_assert(kChunk % kScanThreads == 0, "the select kernel takes whole rows per thread");

// ------------------------------------------------------------------ canonical arithmetic

// The CPU's tree ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)) over the 8 threads of a group; every
// thread of the group gets the result. All 32 threads of the warp must call it.
__device__ __forceinline__ double combine_group(double l) {
  l = __dadd_rn(l, __shfl_xor_sync(kFull, l, 1));
  l = __dadd_rn(l, __shfl_xor_sync(kFull, l, 2));
  return __dadd_rn(l, __shfl_xor_sync(kFull, l, 4));
}

// Lane g's partial sums of the canonical functions (elements g, g+8, ... below n).
__device__ __forceinline__ double lane_sqdist(const float* x, const float* y, i64 n, int g) {
  double l = 0.0;
  for (i64 e = g; e < n; e += kGroup) {
    const double t = __dsub_rn(static_cast<double>(x[e]), static_cast<double>(y[e]));
    l = __dadd_rn(l, __dmul_rn(t, t));
  }
  return l;
}
__device__ __forceinline__ double lane_sqdist(const float* x, const double* m, i64 n, int g) {
  double l = 0.0;
  for (i64 e = g; e < n; e += kGroup) {
    const double t = __dsub_rn(static_cast<double>(x[e]), m[e]);
    l = __dadd_rn(l, __dmul_rn(t, t));
  }
  return l;
}
__device__ __forceinline__ double lane_dot(const float* x, const float* y, i64 n, int g) {
  double l = 0.0;
  for (i64 e = g; e < n; e += kGroup)
    l = __dadd_rn(l, __dmul_rn(static_cast<double>(x[e]), static_cast<double>(y[e])));
  return l;
}
__device__ __forceinline__ double lane_dot(const double* x, const double* y, i64 n, int g) {
  double l = 0.0;
  for (i64 e = g; e < n; e += kGroup) l = __dadd_rn(l, __dmul_rn(x[e], y[e]));
  return l;
}

// detail::badge_dist2 with every operation rounded separately.
__device__ __forceinline__ double badge_dist2(double ni, double nj, double aa, double hh) {
  const double t = __dmul_rn(aa, hh);
  const double d = __dsub_rn(__dadd_rn(ni, nj), __dadd_rn(t, t));
  return d > 0.0 ? d : 0.0;
}

// ------------------------------------------------------------------ argmax (value, index)

struct Best {
  double v;   // the largest value (mind2, norm, -distance)
  i64 i;      // its lowest index; -1: none
  i64 free;   // the lowest index not taken; -1: none
};

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

enum class Mode : int {
  mind2,      // update mind2 against centre *centre (if any), then argmax mind2
  norm,       // argmax of norm2 over the rows not taken (BADGE's first centre)
  near_mean,  // argmax of -canonical d²(x_i, mean) (kcenter's first centre without labels)
};

struct Pool {
  const float* x;      // [n, d]
  i64 n, d;
  const double* a;     // BADGE: [n, c] (p - e_yhat); null for Euclidean distances
  i64 c;
  const double* norm2; // BADGE: canonical <a,a><h,h> per row
};

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

// ------------------------------------------------------------------ per-row helpers

// hh[i] = canonical <x_i, x_i>; with a: norm2[i] = <a_i,a_i> <x_i,x_i> (BADGE's n_i).
__global__ void __launch_bounds__(kBlock) row_norms_kernel(Pool p, double* hh, double* norm2) {
  const int g = threadIdx.x % kGroup;
  for (i64 base = static_cast<i64>(blockIdx.x) * kRowsPerBlock; base < p.n;
       base += static_cast<i64>(gridDim.x) * kRowsPerBlock) {
    const i64 i = base + threadIdx.x / kGroup;
    const bool row = i < p.n;
    const float* xi = p.x + (row ? i : 0) * p.d;
    const double h = combine_group(lane_dot(xi, xi, row ? p.d : 0, g));
    double aa = 0.0;
    if (p.a) {
      const double* ai = p.a + (row ? i : 0) * p.c;
      aa = combine_group(lane_dot(ai, ai, row ? p.c : 0, g));
    }
    if (row && g == 0) {
      if (hh) hh[i] = h;
      if (norm2) norm2[i] = __dmul_rn(aa, h);
    }
  }
}

// cpu::pool_mean over all rows (none is taken where it is used): chunk sums in index order,
// then the chunk sums in chunk order, divided by n.
__global__ void mean_parts_kernel(const float* x, i64 n, i64 d, i64 chunk, double* part) {
  const i64 j = static_cast<i64>(blockIdx.y) * blockDim.x + threadIdx.x;
  const i64 ch = blockIdx.x;
  if (j >= d) return;
  double s = 0.0;
  for (i64 i = ch * chunk; i < min(n, (ch + 1) * chunk); ++i) s = __dadd_rn(s, static_cast<double>(x[i * d + j]));
  part[ch * d + j] = s;
}
__global__ void mean_finish_kernel(const double* part, i64 chunks, i64 d, i64 n, double* mean) {
  const i64 j = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= d) return;
  double s = 0.0;
  for (i64 ch = 0; ch < chunks; ++ch) s = __dadd_rn(s, part[ch * d + j]);
  mean[j] = __ddiv_rn(s, static_cast<double>(n));
}

__global__ void fill_kernel(double* v, i64 n, double value) {
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<i64>(gridDim.x) * blockDim.x)
    v[i] = value;
}

// mind2 from the labeled distances: taken where skip, else best.
__global__ void init_mind2_kernel(const double* best, const std::uint8_t* skip, i64 n, double* mind2) {
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<i64>(gridDim.x) * blockDim.x)
    mind2[i] = (skip && skip[i]) ? kTaken : best[i];
}

// ------------------------------------------------------------------ nearest rows (GEMM screen)

struct Bounds {
  double gam, rel, tiny;
  bool gemm;
};

// For rows [r0, r0 + rows) of x and columns [c0, c0 + cols) of y, with tile[r][j] ~ x.y in
// float (gemm) : cpu::nearest_rows' screen, then the canonical distance of every column it
// cannot rule out; best/bj/upper carry over column blocks.
__global__ void __launch_bounds__(kBlock) nearest_tile_kernel(const float* x, const float* y, i64 d,
                                                              i64 r0, i64 rows, i64 c0, i64 cols,
                                                              const float* tile, const double* xn2,
                                                              const double* yn2, const std::uint8_t* skip,
                                                              Bounds bd, double* best, int* bj,
                                                              double* upper) {
  const int g = threadIdx.x % kGroup;
  for (i64 base = static_cast<i64>(blockIdx.x) * kRowsPerBlock; base < rows;
       base += static_cast<i64>(gridDim.x) * kRowsPerBlock) {
    const i64 r = base + threadIdx.x / kGroup;
    const i64 i = r0 + r;
    const bool row = r < rows && !(skip && skip[i]);  // uniform within the group
    if (__all_sync(kFull, !row)) continue;            // uniform within the warp
    const float* tr = tile + (row ? r : 0) * cols;
    const double xa = row ? xn2[i] : 0.0, xn = sqrt(xa);
    double u = row ? upper[i] : 0.0;
    if (row && bd.gemm) {
      for (i64 j = g; j < cols; j += kGroup) {
        const double t2 = 2.0 * static_cast<double>(tr[j]);
        const double s = xa + yn2[c0 + j];
        const double err = 2.0 * bd.gam * xn * sqrt(yn2[c0 + j]) + bd.rel * s + bd.tiny;
        const double hi = (s - t2) + err;
        if (hi < u) u = hi;  // a NaN bound has no effect, as std::min on the CPU
      }
    }
    for (int o = 1; o < kGroup; o <<= 1) {  // the group's smallest bound (exact: a min)
      const double v = __shfl_xor_sync(kFull, u, o);
      if (v < u) u = v;
    }
    double b = row ? best[i] : 0.0;
    int bjv = row ? bj[i] : -1;
    // Every thread of the warp walks the same number of columns (the longest), so the
    // group shuffles stay convergent; idle rows compute nothing.
    for (i64 j = 0; j < cols; ++j) {
      bool need = row;
      if (row && bd.gemm) {
        const double t2 = 2.0 * static_cast<double>(tr[j]);
        const double s = xa + yn2[c0 + j];
        const double err = 2.0 * bd.gam * xn * sqrt(yn2[c0 + j]) + bd.rel * s + bd.tiny;
        const double lo = (s - t2) - err;
        need = !(lo > u);  // a NaN lo is recomputed
      }
      if (__all_sync(kFull, !need)) continue;
      const double ex = combine_group(lane_sqdist(x + (row ? i : 0) * d, y + (c0 + j) * d, need ? d : 0, g));
      if (need) {
        if (ex < b || (ex == b && c0 + j < bjv)) {
          b = ex;
          bjv = static_cast<int>(c0 + j);
        }
        if (ex < u) u = ex;
      }
    }
    if (row && g == 0) {
      best[i] = b;
      bj[i] = bjv;
      upper[i] = u;
    }
  }
}

int grid_for(i64 rows_per_block, i64 n, int cap) {
  return static_cast<int>(std::max<i64>(1, std::min<i64>(cap, (n + rows_per_block - 1) / rows_per_block)));
}

template <class T>
DeviceBuffer<T> upload(Context& ctx, const T* src, std::size_t n, const char* what) {
  DeviceBuffer<T> b(ctx, std::max<std::size_t>(n, 1), what);
  if (n) copy_to_device(ctx, b.data(), src, n * sizeof(T));
  return b;
}

// cpu::nearest_rows on device arrays: best_d2[i], best_j[i] for every row of x (n x d) against
// the rows of y (m x d); rows with skip[i] != 0 are left at (+inf, -1).
void nearest_rows_device(Context& ctx, const float* x, i64 n, const float* y, i64 m, i64 d,
                         const std::uint8_t* skip, double* best_d2, int* best_j,
                         const PhaseProgressFn& progress, const char* phase) {
  const cudaStream_t st = ctx.stream();
  const int cap = ctx.props().multiProcessorCount * 8;
  DeviceBuffer<double> xn2(ctx, static_cast<std::size_t>(n), "row norms");
  DeviceBuffer<double> yn2(ctx, static_cast<std::size_t>(m), "centre norms");
  DeviceBuffer<double> upper(ctx, static_cast<std::size_t>(n), "distance bounds");
  const double inf = std::numeric_limits<double>::infinity();
  row_norms_kernel<<<grid_for(kRowsPerBlock, n, cap), kBlock, 0, st>>>(Pool{x, n, d, nullptr, 0, nullptr}, xn2.data(), nullptr);
  QUARRY_CUDA_LAUNCH_CHECK("row_norms_kernel");
  row_norms_kernel<<<grid_for(kRowsPerBlock, m, cap), kBlock, 0, st>>>(Pool{y, m, d, nullptr, 0, nullptr}, yn2.data(), nullptr);
  QUARRY_CUDA_LAUNCH_CHECK("row_norms_kernel");
  fill_kernel<<<grid_for(kBlock, n, cap), kBlock, 0, st>>>(best_d2, n, inf);
  QUARRY_CUDA_LAUNCH_CHECK("fill_kernel");
  fill_kernel<<<grid_for(kBlock, n, cap), kBlock, 0, st>>>(upper.data(), n, inf);
  QUARRY_CUDA_LAUNCH_CHECK("fill_kernel");
  QUARRY_CUDA_CHECK(cudaMemsetAsync(best_j, 0xff, static_cast<std::size_t>(n) * sizeof(int), st));  // -1

  Bounds bd;
  bd.gam = detail::dot_f32_error_factor(d + 1) * 1.01;
  bd.rel = 8.0 * static_cast<double>(d + 8) * detail::kEpsDouble;
  bd.tiny = 8.0 * static_cast<double>(d) * 1.401298464324817e-45;
  bd.gemm = static_cast<double>(d) * detail::kEpsFloat < 0.01 && d < (1 << 30);
  constexpr i64 kRows = 8192, kCols = 1024;
  DeviceBuffer<float> tile(ctx, bd.gemm ? static_cast<std::size_t>(kRows * kCols) : 1, "distance tile");
  cublasHandle_t h = ctx.cublas();
  const i64 report_every = std::max<i64>(kRows, (i64{1} << 26) / std::max<i64>(m, 1) / kRows * kRows);
  for (i64 r0 = 0; r0 < n; r0 += kRows) {
    const i64 rows = std::min(kRows, n - r0);
    for (i64 c0 = 0; c0 < m; c0 += kCols) {
      const i64 cols = std::min(kCols, m - c0);
      if (bd.gemm) {
        // Row-major tile[r][j] = x_{r0+r} . y_{c0+j}: column-major tile^T = Y^T X, in pedantic
        // FP32 (no TF32: the screen's error bound is that of a float dot product).
        const float one = 1.0f, zero = 0.0f;
        QUARRY_CUBLAS_CHECK(cublas_api().gemm_ex(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(cols), static_cast<int>(rows),
                                         static_cast<int>(d), &one, y + c0 * d, CUDA_R_32F, static_cast<int>(d),
                                         x + r0 * d, CUDA_R_32F, static_cast<int>(d), &zero, tile.data(), CUDA_R_32F,
                                         static_cast<int>(cols), CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
      }
      nearest_tile_kernel<<<grid_for(kRowsPerBlock, rows, cap), kBlock, 0, st>>>(
          x, y, d, r0, rows, c0, cols, tile.data(), xn2.data(), yn2.data(), skip, bd, best_d2, best_j, upper.data());
      QUARRY_CUDA_LAUNCH_CHECK("nearest_tile_kernel");
    }
    if (progress && ((r0 + rows) % report_every == 0 || r0 + rows == n)) {
      ctx.sync();
      progress(phase, r0 + rows, n);
    }
  }
}

// The greedy state on the device.
struct Greedy {
  Context& ctx;
  Pool pool;
  i64 k;
  int grid;
  DeviceBuffer<double> mind2;
  DeviceBuffer<Best> part, state;
  DeviceBuffer<i64> picks;
  DeviceBuffer<double> values;

  Greedy(Context& c, Pool p, i64 k_)
      : ctx(c), pool(p), k(k_), grid(grid_for(kRowsPerBlock, p.n, c.props().multiProcessorCount * 8)),
        mind2(c, static_cast<std::size_t>(p.n), "distances to the nearest centre"),
        part(c, static_cast<std::size_t>(grid), "argmax partials"), state(c, 1, "argmax"),
        picks(c, static_cast<std::size_t>(std::max<i64>(k_, 1)), "picks"),
        values(c, static_cast<std::size_t>(std::max<i64>(k_, 1)), "pick values") {
    fill_kernel<<<grid_for(kBlock, p.n, grid), kBlock, 0, c.stream()>>>(mind2.data(), p.n,
                                                                       std::numeric_limits<double>::infinity());
    QUARRY_CUDA_LAUNCH_CHECK("fill_kernel");
  }

  // pass + finish; record: the argmax becomes pick t.
  template <Mode M>
  void pass(i64 centre_pick, const double* mean, bool record, i64 t) {
    const i64* centre = centre_pick >= 0 ? picks.data() + centre_pick : nullptr;
    pass_kernel<M><<<grid, kBlock, 0, ctx.stream()>>>(pool, mind2.data(), centre, mean, part.data());
    QUARRY_CUDA_LAUNCH_CHECK("pass_kernel");
    finish_kernel<<<1, 1024, 0, ctx.stream()>>>(part.data(), grid, state.data(), mind2.data(),
                                                record ? picks.data() : nullptr, values.data(), t);
    QUARRY_CUDA_LAUNCH_CHECK("finish_kernel");
  }

  // Pick t by D² sampling over mind2 (or the lowest free row when every weight is 0).
  void sample(i64 t, std::uint64_t seed, std::uint32_t stream, DeviceBuffer<unsigned long long>& sums) {
    const i64 chunks = (pool.n + kChunk - 1) / kChunk;
    d2_chunk_sums_kernel<<<static_cast<unsigned>(chunks), kBlock, 0, ctx.stream()>>>(mind2.data(), pool.n,
                                                                                    state.data(), sums.data());
    QUARRY_CUDA_LAUNCH_CHECK("d2_chunk_sums_kernel");
    d2_select_kernel<<<1, kScanThreads, 0, ctx.stream()>>>(mind2.data(), mind2.data(), pool.n, state.data(),
                                                           sums.data(), chunks, seed, stream, t, picks.data(),
                                                           values.data());
    QUARRY_CUDA_LAUNCH_CHECK("d2_select_kernel");
  }

  // The picks in order, each with score(t, value of pick t).
  template <class Score>
  Selection host_picks(Score score) {
    std::vector<i64> idx(static_cast<std::size_t>(k));
    std::vector<double> val(static_cast<std::size_t>(k));
    copy_to_host(ctx, idx.data(), picks.data(), idx.size() * sizeof(i64));
    copy_to_host(ctx, val.data(), values.data(), val.size() * sizeof(double));
    Selection out;
    for (i64 t = 0; t < k; ++t) {
      out.index.push_back(idx[static_cast<std::size_t>(t)]);
      out.score.push_back(static_cast<float>(score(t, val[static_cast<std::size_t>(t)])));
    }
    return out;
  }
};

void report(const PhaseProgressFn& progress, Context& ctx, const char* phase, i64 done, i64 total) {
  if (!progress) return;
  ctx.sync();
  progress(phase, done, total);
}

// k-means++ / BADGE: picks 1 .. k-1 by D² sampling after pick 0 is on the device.
void d2_loop(Greedy& gr, std::uint64_t seed, std::uint32_t stream, const PhaseProgressFn& progress,
             const char* phase) {
  DeviceBuffer<unsigned long long> sums(gr.ctx, static_cast<std::size_t>((gr.pool.n + kChunk - 1) / kChunk),
                                        "D2 chunk sums");
  for (i64 t = 1; t < gr.k; ++t) {
    gr.pass<Mode::mind2>(t - 1, nullptr, false, t);  // add centre t-1, argmax into state
    gr.sample(t, seed, stream, sums);
    report(progress, gr.ctx, phase, t + 1, gr.k);
  }
}

}  // namespace

// ---------------------------------------------------------------------------- entry points

Selection kcenter(const FloatRows& x, const std::vector<std::int64_t>& labeled, std::int64_t k,
                   const PhaseProgressFn& progress, int device) {
  Context& ctx = context(device);
  ctx.activate();
  const i64 n = x.n, d = x.d;
  ctx.expect_fits(static_cast<std::size_t>(n) * (d * sizeof(float) + 4 * sizeof(double)) + (64u << 20),
                  "kcenter over " + std::to_string(n) + " x " + std::to_string(d) + " embeddings");
  DeviceBuffer<float> dx = upload(ctx, x.data, static_cast<std::size_t>(n * d), "embeddings");
  Greedy gr(ctx, Pool{dx.data(), n, d, nullptr, 0, nullptr}, k);
  if (!labeled.empty()) {
    const FloatRows cen = gather_rows(x, labeled);
    DeviceBuffer<float> dy = upload(ctx, cen.data, static_cast<std::size_t>(cen.n * d), "labeled embeddings");
    std::vector<std::uint8_t> skip(static_cast<std::size_t>(n), 0);
    for (std::int64_t l : labeled) skip[static_cast<std::size_t>(l)] = 1;
    DeviceBuffer<std::uint8_t> dskip = upload(ctx, skip.data(), skip.size(), "labeled mask");
    DeviceBuffer<double> best(ctx, static_cast<std::size_t>(n), "labeled distances");
    DeviceBuffer<int> bj(ctx, static_cast<std::size_t>(n), "nearest labeled");
    nearest_rows_device(ctx, dx.data(), n, dy.data(), cen.n, d, dskip.data(), best.data(), bj.data(), progress,
                        "labeled distances");
    init_mind2_kernel<<<grid_for(kBlock, n, gr.grid), kBlock, 0, ctx.stream()>>>(best.data(), dskip.data(), n,
                                                                               gr.mind2.data());
    QUARRY_CUDA_LAUNCH_CHECK("init_mind2_kernel");
    gr.pass<Mode::mind2>(-1, nullptr, true, 0);
  } else {
    // The sample nearest the pool mean (cpu::pool_mean's chunks and order).
    const i64 chunk = std::max<i64>(1024, (n + 1023) / 1024), chunks = (n + chunk - 1) / chunk;
    DeviceBuffer<double> part(ctx, static_cast<std::size_t>(chunks * d), "pool mean partials");
    DeviceBuffer<double> mean(ctx, static_cast<std::size_t>(d), "pool mean");
    const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>((d + 127) / 128));
    mean_parts_kernel<<<grid, 128, 0, ctx.stream()>>>(dx.data(), n, d, chunk, part.data());
    QUARRY_CUDA_LAUNCH_CHECK("mean_parts_kernel");
    mean_finish_kernel<<<static_cast<unsigned>((d + 127) / 128), 128, 0, ctx.stream()>>>(part.data(), chunks, d, n,
                                                                                       mean.data());
    QUARRY_CUDA_LAUNCH_CHECK("mean_finish_kernel");
    gr.pass<Mode::near_mean>(-1, mean.data(), true, 0);
  }
  report(progress, ctx, "picking", 1, k);
  for (i64 t = 1; t < k; ++t) {
    gr.pass<Mode::mind2>(t - 1, nullptr, true, t);
    report(progress, ctx, "picking", t + 1, k);
  }
  // The first pick without labels carries -d² to the mean.
  return gr.host_picks([&](i64 t, double v) {
    return t == 0 && labeled.empty() ? std::sqrt(-v) : std::sqrt(std::max(v, 0.0));
  });
}

Selection badge(const std::vector<double>& a, std::int64_t c, const FloatRows& h,
                 const std::vector<std::uint8_t>& excluded, std::int64_t k, std::uint64_t seed,
                 const PhaseProgressFn& progress, int device) {
  Context& ctx = context(device);
  ctx.activate();
  const i64 n = h.n, d = h.d;
  ctx.expect_fits(static_cast<std::size_t>(n) * (d * sizeof(float) + (c + 4) * sizeof(double)) + (64u << 20),
                  "badge over " + std::to_string(n) + " x " + std::to_string(d) + " embeddings");
  DeviceBuffer<float> dh = upload(ctx, h.data, static_cast<std::size_t>(n * d), "embeddings");
  DeviceBuffer<double> da = upload(ctx, a.data(), static_cast<std::size_t>(n * c), "gradient factors");
  DeviceBuffer<double> norm2(ctx, static_cast<std::size_t>(n), "gradient norms");
  Pool pool{dh.data(), n, d, da.data(), c, norm2.data()};
  Greedy gr(ctx, pool, k);
  row_norms_kernel<<<gr.grid, kBlock, 0, ctx.stream()>>>(pool, nullptr, norm2.data());
  QUARRY_CUDA_LAUNCH_CHECK("row_norms_kernel");
  if (!excluded.empty()) {
    std::vector<double> init(static_cast<std::size_t>(n));
    for (i64 i = 0; i < n; ++i) init[i] = excluded[i] ? kTaken : std::numeric_limits<double>::infinity();
    copy_to_device(ctx, gr.mind2.data(), init.data(), init.size() * sizeof(double));
  }
  gr.pass<Mode::norm>(-1, nullptr, true, 0);  // the largest ||g||², lowest index on ties
  report(progress, ctx, "picking", 1, k);
  d2_loop(gr, seed, detail::kStreamBadge, progress, "picking");
  return gr.host_picks([](i64, double v) { return v; });
}

namespace {

// labels changed: count, and labels = lab.
__global__ void adopt_labels_kernel(const int* lab, int* labels, i64 n, unsigned long long* changed) {
  unsigned long long local = 0;
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<i64>(gridDim.x) * blockDim.x) {
    if (lab[i] != labels[i]) {
      ++local;
      labels[i] = lab[i];
    }
  }
  if (local) atomicAdd(changed, local);
}

__global__ void iota_kernel(int* v, i64 n) {
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<i64>(gridDim.x) * blockDim.x)
    v[i] = static_cast<int>(i);
}

__global__ void count_kernel(const int* labels, i64 n, int* count) {
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<i64>(gridDim.x) * blockDim.x)
    atomicAdd(&count[labels[i]], 1);
}

// Centroid j, column q: the members (index order) summed in double in that order, / count.
__global__ void centroid_kernel(const float* x, i64 d, const int* members, const i64* start, float* cent) {
  const i64 j = blockIdx.x;
  const i64 q = static_cast<i64>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (q >= d) return;
  const i64 b = start[j], e = start[j + 1];
  if (e == b) return;  // an empty cluster keeps its centroid
  double s = 0.0;
  for (i64 p = b; p < e; ++p) s = __dadd_rn(s, static_cast<double>(x[static_cast<i64>(members[p]) * d + q]));
  cent[j * d + q] = __double2float_rn(__ddiv_rn(s, static_cast<double>(e - b)));
}

}  // namespace

KMeansOut kmeans(const FloatRows& x, std::int64_t clusters, int iterations, std::uint64_t seed,
                      const PhaseProgressFn& progress, int device) {
  Context& ctx = context(device);
  ctx.activate();
  const i64 n = x.n, d = x.d;
  const cudaStream_t st = ctx.stream();
  ctx.expect_fits(static_cast<std::size_t>(n) * (d * sizeof(float) + 4 * sizeof(double) + 24) + (64u << 20),
                  "k-means over " + std::to_string(n) + " x " + std::to_string(d) + " embeddings");
  DeviceBuffer<float> dx = upload(ctx, x.data, static_cast<std::size_t>(n * d), "embeddings");
  KMeansOut out;
  // k-means++ seeding: the first centre uniform (draw 0), then D² draws 1 .. clusters-1.
  std::vector<std::int64_t> seeds;
  {
    Greedy gr(ctx, Pool{dx.data(), n, d, nullptr, 0, nullptr}, clusters);
    const i64 c0 = static_cast<i64>(
        detail::mulhi64(detail::random_u64(seed, detail::kStreamKMeansInit, 0), static_cast<std::uint64_t>(n)));
    copy_to_device(ctx, gr.picks.data(), &c0, sizeof(i64));
    const double taken = kTaken;
    copy_to_device(ctx, gr.mind2.data() + c0, &taken, sizeof(double));
    d2_loop(gr, seed, detail::kStreamKMeansInit, progress, "k-means seeding");
    seeds = gr.host_picks([](i64, double) { return 0.0; }).index;
  }
  const FloatRows cent_host = gather_rows(x, seeds);
  DeviceBuffer<float> cent = upload(ctx, cent_host.data, static_cast<std::size_t>(clusters * d), "centroids");
  DeviceBuffer<double> d2(ctx, static_cast<std::size_t>(n), "assignment distances");
  DeviceBuffer<int> lab(ctx, static_cast<std::size_t>(n), "assignments");
  DeviceBuffer<int> labels(ctx, static_cast<std::size_t>(n), "labels");
  DeviceBuffer<int> sorted_labels(ctx, static_cast<std::size_t>(n), "sorted labels");
  DeviceBuffer<int> index(ctx, static_cast<std::size_t>(n), "indices");
  DeviceBuffer<int> members(ctx, static_cast<std::size_t>(n), "members");
  DeviceBuffer<int> count(ctx, static_cast<std::size_t>(clusters), "cluster sizes");
  DeviceBuffer<i64> start(ctx, static_cast<std::size_t>(clusters + 1), "cluster starts");
  DeviceBuffer<unsigned long long> changed(ctx, 1, "changed count");
  QUARRY_CUDA_CHECK(cudaMemsetAsync(labels.data(), 0xff, static_cast<std::size_t>(n) * sizeof(int), st));  // -1
  const int cap = ctx.props().multiProcessorCount * 8;
  iota_kernel<<<grid_for(kBlock, n, cap), kBlock, 0, st>>>(index.data(), n);
  QUARRY_CUDA_LAUNCH_CHECK("iota_kernel");
  int end_bit = 1;
  while (end_bit < 31 && (i64{1} << end_bit) < clusters) ++end_bit;
  std::size_t temp_bytes = 0;
  QUARRY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, labels.data(), sorted_labels.data(),
                                                    index.data(), members.data(), static_cast<int>(n), 0, end_bit, st));
  DeviceBuffer<unsigned char> temp(ctx, std::max<std::size_t>(temp_bytes, 1), "sort scratch");
  std::vector<int> host_count(static_cast<std::size_t>(clusters));
  std::vector<i64> host_start(static_cast<std::size_t>(clusters + 1));
  for (int it = 0; it < iterations; ++it) {
    nearest_rows_device(ctx, dx.data(), n, cent.data(), clusters, d, nullptr, d2.data(), lab.data(), nullptr,
                        "k-means");
    out.iterations = it + 1;
    unsigned long long ch = 0;
    QUARRY_CUDA_CHECK(cudaMemsetAsync(changed.data(), 0, sizeof(unsigned long long), st));
    adopt_labels_kernel<<<grid_for(kBlock, n, cap), kBlock, 0, st>>>(lab.data(), labels.data(), n, changed.data());
    QUARRY_CUDA_LAUNCH_CHECK("adopt_labels_kernel");
    copy_to_host(ctx, &ch, changed.data(), sizeof(ch));
    if (ch == 0) {
      out.converged = true;
      if (progress) progress("k-means", it + 1, it + 1);
      break;
    }
    // Members of each cluster in index order (stable sort of the indices by label).
    QUARRY_CUDA_CHECK(cudaMemsetAsync(count.data(), 0, static_cast<std::size_t>(clusters) * sizeof(int), st));
    count_kernel<<<grid_for(kBlock, n, cap), kBlock, 0, st>>>(labels.data(), n, count.data());
    QUARRY_CUDA_LAUNCH_CHECK("count_kernel");
    QUARRY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data(), temp_bytes, labels.data(), sorted_labels.data(),
                                                      index.data(), members.data(), static_cast<int>(n), 0, end_bit,
                                                      st));
    copy_to_host(ctx, host_count.data(), count.data(), host_count.size() * sizeof(int));
    host_start[0] = 0;
    for (i64 j = 0; j < clusters; ++j) host_start[j + 1] = host_start[j] + host_count[j];
    copy_to_device(ctx, start.data(), host_start.data(), host_start.size() * sizeof(i64));
    const dim3 grid(static_cast<unsigned>(clusters), static_cast<unsigned>((d + 127) / 128));
    centroid_kernel<<<grid, 128, 0, st>>>(dx.data(), d, members.data(), start.data(), cent.data());
    QUARRY_CUDA_LAUNCH_CHECK("centroid_kernel");
    report(progress, ctx, "k-means", it + 1, iterations);
  }
  out.labels.resize(static_cast<std::size_t>(n));
  copy_to_host(ctx, out.labels.data(), labels.data(), static_cast<std::size_t>(n) * sizeof(int));
  out.centroids.resize(static_cast<std::size_t>(clusters * d));
  copy_to_host(ctx, out.centroids.data(), cent.data(), out.centroids.size() * sizeof(float));
  return out;
}

}  // namespace quarry::cuda
