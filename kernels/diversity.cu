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
//
// The files: kernels/diversity.cu (this one: the entry points, and the kernels only they
// launch), kernels/diversity_greedy.cu (the argmax, the per-pick pass, exact D² sampling: the
// greedy loop), kernels/diversity_rows.cu (row norms, nearest rows) and
// kernels/diversity_internal.cuh (what they share: constants, the canonical arithmetic, Greedy).
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/context.cuh"
#include "kernels/diversity_cuda.hpp"
#include "kernels/diversity_internal.cuh"
#include "quarry/detail/diversity_math.hpp"
#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"

namespace quarry::cuda {

using namespace diversity_detail;

namespace {

// ------------------------------------------------------------------ per-row helpers of kcenter

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

// mind2 from the labeled distances: taken where skip, else best.
__global__ void init_mind2_kernel(const double* best, const std::uint8_t* skip, i64 n, double* mind2) {
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<i64>(gridDim.x) * blockDim.x)
    mind2[i] = (skip && skip[i]) ? kTaken : best[i];
}

template <class T>
DeviceBuffer<T> upload(Context& ctx, const T* src, std::size_t n, const char* what) {
  DeviceBuffer<T> b(ctx, std::max<std::size_t>(n, 1), what);
  if (n) copy_to_device(ctx, b.data(), src, n * sizeof(T));
  return b;
}

}  // namespace

// ---------------------------------------------------------------------------- entry points

Selection kcenter(const FloatRows& x, const std::vector<std::int64_t>& labeled, std::int64_t k,
                   const ProgressFn& progress, int device) {
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
                 const ProgressFn& progress, int device) {
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
  launch_row_norms(ctx, gr.grid, pool, nullptr, norm2.data());
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
                      const ProgressFn& progress, int device) {
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
      if (progress) progress({"k-means", it + 1, it + 1});
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
