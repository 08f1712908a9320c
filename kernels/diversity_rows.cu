// The row kernels of the CUDA diversity backend: canonical row norms, fills, and nearest rows
// (cpu::nearest_rows on the device: a cuBLAS SGEMM tile screens with the CPU's error bound, and
// every column it cannot rule out is recomputed canonically), with the host launchers that
// the other files call (diversity_internal.cuh).
#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/context.cuh"
#include "kernels/diversity_internal.cuh"
#include "quarry/detail/diversity_math.hpp"

namespace quarry::cuda::diversity_detail {
namespace {

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

__global__ void fill_kernel(double* v, i64 n, double value) {
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<i64>(gridDim.x) * blockDim.x)
    v[i] = value;
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

}  // namespace

// The launchers declared in diversity_internal.cuh, for the other files.
void launch_row_norms(Context& ctx, int grid, Pool p, double* hh, double* norm2) {
  row_norms_kernel<<<grid, kBlock, 0, ctx.stream()>>>(p, hh, norm2);
  QUARRY_CUDA_LAUNCH_CHECK("row_norms_kernel");
}

void launch_fill(Context& ctx, int grid, double* v, i64 n, double value) {
  fill_kernel<<<grid, kBlock, 0, ctx.stream()>>>(v, n, value);
  QUARRY_CUDA_LAUNCH_CHECK("fill_kernel");
}

// cpu::nearest_rows on device arrays: best_d2[i], best_j[i] for every row of x (n x d) against
// the rows of y (m x d); rows with skip[i] != 0 are left at (+inf, -1).
void nearest_rows_device(Context& ctx, const float* x, i64 n, const float* y, i64 m, i64 d,
                         const std::uint8_t* skip, double* best_d2, int* best_j,
                         const ProgressFn& progress, const char* phase) {
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
      progress({phase, r0 + rows, n});
    }
  }
}

}  // namespace quarry::cuda::diversity_detail
