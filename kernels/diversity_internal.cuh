// Internals shared by the files of the CUDA diversity backend (see kernels/diversity.cu): the
// constants, the canonical arithmetic (device functions, inlined into the kernels of each file:
// no relocatable device code), the pool and argmax types, the greedy state (Greedy) and the host
// functions one file calls in another. Not part of the backend's interface
// (kernels/diversity_cuda.hpp); the names live in quarry::cuda::diversity_detail.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/rows.hpp"
#include "kernels/context.cuh"
#include "quarry/detail/diversity_math.hpp"

namespace quarry::cuda::diversity_detail {

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

inline int grid_for(i64 rows_per_block, i64 n, int cap) {
  return static_cast<int>(std::max<i64>(1, std::min<i64>(cap, (n + rows_per_block - 1) / rows_per_block)));
}

// ------------------------------------------------------------------ host functions of the other files

// diversity_rows.cu: row_norms_kernel and fill_kernel on ctx.stream() (grid blocks of kBlock
// threads), launch checked.
void launch_row_norms(Context& ctx, int grid, Pool p, double* hh, double* norm2);
void launch_fill(Context& ctx, int grid, double* v, i64 n, double value);

// diversity_rows.cu: cpu::nearest_rows on device arrays: best_d2[i], best_j[i] for every row of
// x (n x d) against the rows of y (m x d); rows with skip[i] != 0 are left at (+inf, -1).
void nearest_rows_device(Context& ctx, const float* x, i64 n, const float* y, i64 m, i64 d,
                         const std::uint8_t* skip, double* best_d2, int* best_j,
                         const ProgressFn& progress, const char* phase);

// ------------------------------------------------------------------ the greedy state

// The greedy state on the device. pass and sample are in diversity_greedy.cu, with the kernels
// they launch.
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
    launch_fill(c, grid_for(kBlock, p.n, grid), mind2.data(), p.n, std::numeric_limits<double>::infinity());
  }

  // pass + finish; record: the argmax becomes pick t.
  template <Mode M>
  void pass(i64 centre_pick, const double* mean, bool record, i64 t);

  // Pick t by D² sampling over mind2 (or the lowest free row when every weight is 0).
  void sample(i64 t, std::uint64_t seed, std::uint32_t stream, DeviceBuffer<unsigned long long>& sums);

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

inline void report(const ProgressFn& progress, Context& ctx, const char* phase, i64 done, i64 total) {
  if (!progress) return;
  ctx.sync();
  progress({phase, done, total});
}

// diversity_greedy.cu: k-means++ / BADGE: picks 1 .. k-1 by D² sampling after pick 0 is on the
// device.
void d2_loop(Greedy& gr, std::uint64_t seed, std::uint32_t stream, const ProgressFn& progress,
             const char* phase);

}  // namespace quarry::cuda::diversity_detail
