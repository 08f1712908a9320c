// GPU throughput of the CUDA backend's device-pointer entry points (kernels/device_api.cuh):
// every acquisition score (launch_score), exact top-k (topk_device), power sampling
// (launch_gumbel_keys + topk_device) and the fused entropy + top-k pipeline.
//
// Timing: CUDA events on the context's stream around each call (UseManualTime); the pools are
// generated on the device (nothing is copied from the host) and are several times the L2
// cache (H100: 50 MB). Counters:
//   GB/s        input bytes per second, each input byte counted once (the pool, the embeddings
//               for egl/badge-norm, the scores for top-k); outputs are not counted
//   of_copy_bw  GB/s over the device-to-device cudaMemcpy bandwidth measured once in this
//               process (bytes read + bytes written per second, as BM_CopyBandwidth reports)
//   copy_GB/s   that bandwidth
//   spot_err    the largest |GPU - CPU| / tolerance over 64 rows re-scored on the CPU through the
//               public API (rows 0, 1, N/2, N-1 and 60 spread ones): catches 32-bit indexing in
//               pools of more than 2^31 values, which the parity tests never reach
// A pool that does not fit in free device memory is skipped with a message, as is every
// benchmark on a machine without a CUDA device. A row the kernels flag as bad through the fault
// word (kernels/device_api.cuh) stops its benchmark with the CPU's diagnosis of that row.
//
// Pools: row r of M*N rows (member-major), class c:  w = u(r*C + c) + (c == (r mod N) mod C ?
// peak(r) : 0), peak(r) = 20 where u(~r) < 0.7 else 1, p = w / sum_c w; logits z = 4 w;
// embeddings h(i, j) = u(2^40 + i*D + j) - 0.5; top-k scores s(i) = 2.3 u(2^41 + i); where
// u(i) = ((lowbias32(lo32(i) ^ lowbias32(hi32(i))) >> 8) + 1) / 2^24. bench/compare_torch.py
// generates the same pools in PyTorch.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.cuh"
#include "kernels/device_api.cuh"
#include "cpu/dense_cpu.hpp"
#include "quarry/acquisition.hpp"
#include "quarry/dense.hpp"
#include "quarry/device.hpp"
#include "quarry/error.hpp"
#include "quarry/select.hpp"

namespace {

using quarry::Acquisition;
using quarry::DType;
using quarry::cuda::Context;
using quarry::cuda::DeviceBuffer;

// ------------------------------------------------------------------ the pools' generator

__host__ __device__ inline std::uint32_t lowbias32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
__host__ __device__ inline std::uint32_t hash64(std::uint64_t i) {
  return lowbias32(static_cast<std::uint32_t>(i) ^ lowbias32(static_cast<std::uint32_t>(i >> 32)));
}
// (0, 1], exact in float.
__host__ __device__ inline float unit(std::uint64_t i) {
  return static_cast<float>((hash64(i) >> 8) + 1u) * (1.0f / 16777216.0f);
}

template <class T>
__device__ inline T from_float(float x);
template <>
__device__ inline float from_float<float>(float x) { return x; }
template <>
__device__ inline __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// A warp per row: the row's weights, their sum, then p = w / sum (or z = 4 w for logits).
template <class T>
__global__ void generate_pool(T* out, std::int64_t rows, std::int64_t n, int C, bool logits) {
  const int lane = threadIdx.x & 31;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (blockDim.x / 32);
  for (std::int64_t r = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < rows;
       r += warps) {
    const std::int64_t peak_c = (r % n) % C;
    const float peak = unit(~static_cast<std::uint64_t>(r)) < 0.7f ? 20.0f : 1.0f;
    const std::uint64_t base = static_cast<std::uint64_t>(r) * static_cast<std::uint64_t>(C);
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += unit(base + c) + (c == peak_c ? peak : 0.0f);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    for (int c = lane; c < C; c += 32) {
      const float w = unit(base + c) + (c == peak_c ? peak : 0.0f);
      out[base + c] = from_float<T>(logits ? w * 4.0f : w / s);
    }
  }
}

__global__ void generate_uniform(float* out, std::int64_t n, std::uint64_t offset, float scale, float shift) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = unit(offset + static_cast<std::uint64_t>(i)) * scale + shift;
}

constexpr std::uint64_t kEmbOffset = 1ull << 40;
constexpr std::uint64_t kScoreOffset = 1ull << 41;
constexpr int kEmbDim = 64;

// ------------------------------------------------------------------ device, errors, bandwidth

bool have_device(benchmark::State& state) {
  if (quarry::cuda_device_count() > 0) return true;
  state.SkipWithError("no CUDA device: the GPU benchmarks need one (scripts/gpu_check.sh on a GPU machine)");
  return false;
}

#define BENCH_CUDA(call) QUARRY_CUDA_CHECK(call)

// Events on the context's stream: time of what was enqueued between start() and stop().
struct EventTimer {
  cudaEvent_t a = nullptr, b = nullptr;
  cudaStream_t s;
  explicit EventTimer(cudaStream_t stream) : s(stream) {
    BENCH_CUDA(cudaEventCreate(&a));
    BENCH_CUDA(cudaEventCreate(&b));
  }
  ~EventTimer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  void start() { BENCH_CUDA(cudaEventRecord(a, s)); }
  double stop() {  // seconds
    BENCH_CUDA(cudaEventRecord(b, s));
    BENCH_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, a, b));
    return ms * 1e-3;
  }
};

std::size_t free_device_bytes(Context& ctx) {
  ctx.activate();
  std::size_t free = 0, total = 0;
  BENCH_CUDA(cudaMemGetInfo(&free, &total));
  // Memory the stream-ordered pool holds for reuse counts as free for this process.
  cudaMemPool_t pool;
  BENCH_CUDA(cudaDeviceGetDefaultMemPool(&pool, ctx.device()));
  std::uint64_t reserved = 0, used = 0;
  BENCH_CUDA(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  BENCH_CUDA(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used));
  return free + static_cast<std::size_t>(reserved - used);
}

constexpr std::size_t kCopyBytes = std::size_t{2} << 30;  // 2 GiB each way

// Median device-to-device cudaMemcpy bandwidth, bytes read + bytes written per second.
double measure_copy(Context& ctx, int reps) {
  DeviceBuffer<unsigned char> src(ctx, kCopyBytes, "copy source"), dst(ctx, kCopyBytes, "copy destination");
  BENCH_CUDA(cudaMemsetAsync(src.data(), 1, kCopyBytes, ctx.stream()));
  EventTimer t(ctx.stream());
  std::vector<double> s;
  for (int i = 0; i < reps + 2; ++i) {
    t.start();
    BENCH_CUDA(cudaMemcpyAsync(dst.data(), src.data(), kCopyBytes, cudaMemcpyDeviceToDevice, ctx.stream()));
    const double sec = t.stop();
    if (i >= 2) s.push_back(sec);  // two warm-ups
  }
  std::sort(s.begin(), s.end());
  return 2.0 * kCopyBytes / s[s.size() / 2];
}

double copy_bandwidth() {  // GB/s, measured once per process
  static const double bw = measure_copy(quarry::cuda::context(0), 15) / 1e9;
  return bw;
}

// Runs `run` once (warm-up and first-launch costs), then times one run per iteration with
// events on the context's stream.
template <class Run>
void time_iterations(benchmark::State& state, Context& ctx, Run&& run) {
  run();
  EventTimer t(ctx.stream());
  for (auto _ : state) {
    t.start();
    run();
    state.SetIterationTime(t.stop());
  }
}

// The index a kernel flagged in its fault word (kNoFault: none).
unsigned long long flagged(Context& ctx, const unsigned long long* fault) {
  unsigned long long bad = quarry::cuda::kNoFault;
  quarry::cuda::copy_to_host(ctx, &bad, fault, sizeof bad);
  return bad;
}

void report(benchmark::State& state, std::int64_t samples, double input_bytes) {
  state.SetItemsProcessed(state.iterations() * samples);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * input_bytes));
  state.counters["GB/s"] = benchmark::Counter(input_bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["copy_GB/s"] = copy_bandwidth();
  state.counters["of_copy_bw"] = benchmark::Counter(input_bytes / 1e9 / copy_bandwidth(),
                                                    benchmark::Counter::kIsIterationInvariantRate);
  state.counters["input_GB"] = input_bytes / 1e9;
}

void BM_CopyBandwidth(benchmark::State& state) {
  if (!have_device(state)) return;
  try {
    Context& ctx = quarry::cuda::context(0);
    DeviceBuffer<unsigned char> src(ctx, kCopyBytes, "copy source"), dst(ctx, kCopyBytes, "copy destination");
    BENCH_CUDA(cudaMemsetAsync(src.data(), 1, kCopyBytes, ctx.stream()));
    time_iterations(state, ctx, [&] {
      BENCH_CUDA(cudaMemcpyAsync(dst.data(), src.data(), kCopyBytes, cudaMemcpyDeviceToDevice, ctx.stream()));
    });
    state.counters["GB/s"] = benchmark::Counter(2.0 * kCopyBytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["copy_GB/s"] = copy_bandwidth();
    state.SetLabel("device-to-device cudaMemcpy of 2 GiB, bytes read + written");
  } catch (const quarry::Error& e) {
    state.SkipWithError(e.what());
  }
}

// ------------------------------------------------------------------ pools on the device

struct PoolSpec {
  Acquisition acq = Acquisition::entropy;
  std::int64_t m = 0, n = 0, c = 0;
  DType dtype = DType::f32;
  bool logits = false;
  bool emb = false;
  std::int64_t members() const { return m > 0 ? m : 1; }
  double input_bytes() const {
    return static_cast<double>(members() * n * c) * quarry::dtype_size(dtype) + (emb ? 4.0 * n * kEmbDim : 0.0);
  }
  bool same_pool(const PoolSpec& o) const {
    return m == o.m && n == o.n && c == o.c && dtype == o.dtype && logits == o.logits;
  }
};

// The pool of the last benchmark, kept while the next one has the same shape (the benchmarks are
// registered shape-major, so each pool is generated once for every score over it).
struct DevicePool {
  PoolSpec spec;
  DeviceBuffer<unsigned char> input;
  DeviceBuffer<float> emb;  // [N, kEmbDim], made on first use
};
std::unique_ptr<DevicePool>& cached_pool() {
  static auto* p = new std::unique_ptr<DevicePool>();  // never destroyed (CUDA may be gone at exit)
  return *p;
}

void drop_pool() { cached_pool().reset(); }

unsigned grid_for(std::int64_t items, int per_block) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>((items + per_block - 1) / per_block, 1 << 20)));
}

// Returns unused memory of the stream-ordered pool to the device (after a large pool is dropped,
// so that the next, differently sized one can be allocated).
void trim(Context& ctx) {
  ctx.sync();
  cudaMemPool_t mp;
  BENCH_CUDA(cudaDeviceGetDefaultMemPool(&mp, ctx.device()));
  BENCH_CUDA(cudaMemPoolTrimTo(mp, 0));
}

DevicePool& pool_for(Context& ctx, const PoolSpec& s) {
  auto& cache = cached_pool();
  if (!cache || !cache->spec.same_pool(s)) {
    if (cache) {
      cache.reset();
      trim(ctx);
    }
    auto p = std::make_unique<DevicePool>();
    p->spec = s;
    const std::int64_t rows = s.members() * s.n;
    const std::size_t bytes = static_cast<std::size_t>(rows * s.c) * quarry::dtype_size(s.dtype);
    p->input = DeviceBuffer<unsigned char>(ctx, bytes, "benchmark pool");
    const unsigned grid = grid_for(rows, 8);  // 8 warps per block, a warp per row
    const int C = static_cast<int>(s.c);
    switch (s.dtype) {
      case DType::f16:
        generate_pool<<<grid, 256, 0, ctx.stream()>>>(reinterpret_cast<__half*>(p->input.data()), rows, s.n, C, s.logits);
        break;
      case DType::bf16:
        generate_pool<<<grid, 256, 0, ctx.stream()>>>(reinterpret_cast<__nv_bfloat16*>(p->input.data()), rows, s.n, C,
                                                      s.logits);
        break;
      default:
        generate_pool<<<grid, 256, 0, ctx.stream()>>>(reinterpret_cast<float*>(p->input.data()), rows, s.n, C, s.logits);
    }
    QUARRY_CUDA_LAUNCH_CHECK("generate_pool");
    cache = std::move(p);
  }
  cache->spec.acq = s.acq;
  cache->spec.emb = s.emb;
  if (s.emb && !cache->emb.data()) {
    const std::int64_t count = s.n * kEmbDim;
    cache->emb = DeviceBuffer<float>(ctx, static_cast<std::size_t>(count), "benchmark embeddings");
    generate_uniform<<<grid_for(count, 256), 256, 0, ctx.stream()>>>(cache->emb.data(), count, kEmbOffset, 1.0f, -0.5f);
    QUARRY_CUDA_LAUNCH_CHECK("generate_uniform");
  }
  ctx.sync();
  return *cache;
}

// The ScoreCall of a device-resident pool (validated by the library's own make_score_call).
struct DeviceCall {
  std::string input_name = "benchmark pool", emb_name = "benchmark embeddings";
  quarry::ArrayView in_view, emb_view;
  quarry::ScoreOptions options;
  quarry::ScoreCall call{};
};

void make_call(DeviceCall& dc, const DevicePool& p, const PoolSpec& s, float* d_out) {
  dc.in_view = quarry::ArrayView{p.input.data(), s.dtype,
                                 s.m > 0 ? std::vector<std::int64_t>{s.m, s.n, s.c} : std::vector<std::int64_t>{s.n, s.c}};
  dc.emb_view = quarry::ArrayView{p.emb.data(), DType::f32, {s.n, kEmbDim}};
  dc.options.logits = s.logits;
  dc.options.sum_tolerance = 1e-2;  // float16 rows of 1000 classes round to within 1e-2 of 1
  dc.options.input_name = dc.input_name;
  dc.options.embeddings_name = dc.emb_name;
  dc.call = quarry::make_score_call(dc.in_view, s.acq, dc.options, s.emb ? &dc.emb_view : nullptr);
  dc.call.out = d_out;
}

// A fresh fault word (kNoFault).
void reset_fault(Context& ctx, unsigned long long* d_fault) {
  BENCH_CUDA(cudaMemsetAsync(d_fault, 0xff, sizeof(unsigned long long), ctx.stream()));
}

// Copies `rows` sample rows of the device pool (every member's) and their embeddings to the host.
struct HostRows {
  std::vector<unsigned char> input;
  std::vector<float> emb;
  quarry::ArrayView in_view, emb_view;
};
HostRows fetch_rows(Context& ctx, const DevicePool& p, const PoolSpec& s, const std::vector<std::int64_t>& rows) {
  HostRows h;
  const std::size_t es = quarry::dtype_size(s.dtype), row_bytes = static_cast<std::size_t>(s.c) * es;
  const auto R = static_cast<std::int64_t>(rows.size());
  h.input.resize(static_cast<std::size_t>(s.members() * R) * row_bytes);
  for (std::int64_t m = 0; m < s.members(); ++m)
    for (std::int64_t j = 0; j < R; ++j)
      quarry::cuda::copy_to_host(ctx, h.input.data() + (m * R + j) * row_bytes,
                                 p.input.data() + (m * s.n + rows[j]) * row_bytes, row_bytes);
  h.in_view = quarry::ArrayView{h.input.data(), s.dtype,
                                s.m > 0 ? std::vector<std::int64_t>{s.m, R, s.c} : std::vector<std::int64_t>{R, s.c}};
  if (s.emb) {
    h.emb.resize(static_cast<std::size_t>(R * kEmbDim));
    for (std::int64_t j = 0; j < R; ++j)
      quarry::cuda::copy_to_host(ctx, h.emb.data() + j * kEmbDim, p.emb.data() + rows[j] * kEmbDim,
                                 kEmbDim * sizeof(float));
    h.emb_view = quarry::ArrayView{h.emb.data(), DType::f32, {R, kEmbDim}};
  }
  return h;
}

// Re-scores 64 rows on the CPU (public API) and returns max |gpu - cpu| / tolerance; the
// tolerance is tests/cuda_parity.hpp's, widened 10x (the benchmark is a guard, not the test).
double spot_check(Context& ctx, const DevicePool& p, const PoolSpec& s, const float* d_out, std::string* detail) {
  std::vector<std::int64_t> rows = {0, 1, s.n / 2, s.n - 1};
  for (std::uint64_t j = 0; rows.size() < 64; ++j) rows.push_back(static_cast<std::int64_t>(hash64(j * 7919u) % s.n));
  HostRows h = fetch_rows(ctx, p, s, rows);
  quarry::ScoreOptions o;
  o.logits = s.logits;
  o.sum_tolerance = 1e-2;
  o.device = {quarry::DeviceKind::cpu, 0};
  const std::vector<float> cpu = quarry::score(h.in_view, s.acq, o, s.emb ? &h.emb_view : nullptr);
  double worst = 0;
  for (std::size_t j = 0; j < rows.size(); ++j) {
    float g = 0;
    quarry::cuda::copy_to_host(ctx, &g, d_out + rows[j], sizeof g);
    double hn = 1.0;
    if (s.emb) {
      double ss = 0;
      for (int d = 0; d < kEmbDim; ++d) ss += static_cast<double>(h.emb[j * kEmbDim + d]) * h.emb[j * kEmbDim + d];
      hn = std::sqrt(ss);
    }
    const double scale = 1.0 + std::log(static_cast<double>(s.c)) + (s.m > 1 ? std::log(static_cast<double>(s.m)) : 0.0);
    const double tol = 10 * (1e-4 * std::fabs(cpu[j]) + 1e-5 * scale * hn) + 1e-6;
    const double err = std::fabs(static_cast<double>(g) - cpu[j]) / tol;
    if (!(err <= worst)) {
      worst = std::isnan(err) ? HUGE_VAL : err;
      *detail = "row " + std::to_string(rows[j]) + ": gpu " + std::to_string(g) + ", cpu " + std::to_string(cpu[j]);
    }
  }
  return worst;
}

// Google Benchmark calls a benchmark function several times (growing iteration counts); the
// correctness checks after the timed loop run on its first call only, and their result is
// reported on every call. Keyed by the benchmark's label.
struct Verdict {
  bool ok = true;
  double spot_err = -1;  // -1: no spot check
  std::string message;
};
std::map<std::string, Verdict>& verdicts() {
  static auto* v = new std::map<std::string, Verdict>();
  return *v;
}

// Runs `check` once per label; afterwards replays its verdict. False: the benchmark is skipped.
template <class Check>
bool verified(benchmark::State& state, const std::string& label, Check check) {
  auto it = verdicts().find(label);
  if (it == verdicts().end()) it = verdicts().emplace(label, check()).first;
  const Verdict& v = it->second;
  if (v.spot_err >= 0) state.counters["spot_err"] = v.spot_err;
  if (!v.ok) state.SkipWithError(v.message.c_str());
  return v.ok;
}

// What the CPU says of a row the kernels flagged.
std::string diagnose(Context& ctx, const DevicePool& p, const PoolSpec& s, std::int64_t row) {
  HostRows h = fetch_rows(ctx, p, s, {row});
  quarry::ScoreOptions o;
  o.logits = s.logits;
  o.sum_tolerance = 1e-2;
  o.device = {quarry::DeviceKind::cpu, 0};
  o.input_name = "benchmark pool";
  try {
    quarry::score(h.in_view, s.acq, o, s.emb ? &h.emb_view : nullptr);
  } catch (const quarry::Error& e) {
    return std::string("the CPU says: ") + e.what();
  }
  return "the CPU accepts that row";
}

std::string describe(const PoolSpec& s) {
  std::string d = std::string(quarry::acquisition_name(s.acq)) + " " + quarry::dtype_name(s.dtype);
  if (s.logits) d += " logits";
  if (s.m > 0) d += " M=" + std::to_string(s.m);
  d += " N=" + std::to_string(s.n) + " C=" + std::to_string(s.c);
  if (s.emb) d += " D=" + std::to_string(kEmbDim);
  return d;
}

// Whether `extra` bytes (outputs, selection buffers) and the pool of `s` (none: s.n == 0) fit in
// the device memory free now, counting the cached pool as free unless it is the one needed.
bool fits(benchmark::State& state, Context& ctx, const PoolSpec& s, double extra) {
  double free = static_cast<double>(free_device_bytes(ctx));
  double need = extra;
  const auto& cache = cached_pool();
  const bool reuse = cache && s.n > 0 && cache->spec.same_pool(s);
  if (cache && !reuse) free += static_cast<double>(cache->input.bytes() + cache->emb.bytes());
  if (s.n > 0) {
    if (!reuse) need += s.input_bytes();
    else if (s.emb && !cache->emb.data()) need += 4.0 * s.n * kEmbDim;
  }
  if (need + (256u << 20) <= free) return true;
  state.SkipWithError(("needs " + std::to_string(need / 1e9) + " GB of device memory, " +
                       std::to_string(free / 1e9) + " GB free")
                          .c_str());
  return false;
}

// The device's selection against the CPU's select_topk / select_power on the same scores.
Verdict check_selection(Context& ctx, const float* d_scores, std::int64_t n, std::int64_t k,
                        const std::int64_t* d_index, bool power, double beta, std::uint64_t seed) {
  std::vector<float> host(static_cast<std::size_t>(n));
  quarry::cuda::copy_to_host(ctx, host.data(), d_scores, host.size() * sizeof(float));
  std::vector<std::int64_t> gpu(static_cast<std::size_t>(k));
  quarry::cuda::copy_to_host(ctx, gpu.data(), d_index, gpu.size() * sizeof(std::int64_t));
  const quarry::DeviceSpec cpu{quarry::DeviceKind::cpu, 0};
  const quarry::Selection ref = power ? quarry::select_power(host.data(), n, k, beta, seed, {}, cpu)
                                      : quarry::select_topk(host.data(), n, k, {}, cpu);
  Verdict v;
  if (ref.index == gpu) return v;
  std::int64_t r = 0;
  while (r < k && ref.index[r] == gpu[r]) ++r;
  v.ok = false;
  v.message = "the device's selection differs from the CPU's at rank " + std::to_string(r) + ": index " +
              std::to_string(gpu[r]) + " vs " + std::to_string(ref.index[r]);
  return v;
}

// The spot check of scores as a verdict.
Verdict check_scores(Context& ctx, const DevicePool& p, const PoolSpec& s, const float* d_out) {
  Verdict v;
  std::string detail;
  v.spot_err = spot_check(ctx, p, s, d_out, &detail);
  if (!(v.spot_err <= 1.0)) {
    v.ok = false;
    v.message = "GPU scores disagree with the CPU: " + detail;
  }
  return v;
}

// ------------------------------------------------------------------ scores

void BM_Score(benchmark::State& state, PoolSpec s) {
  if (!have_device(state)) return;
  state.SetLabel(describe(s));
  try {
    Context& ctx = quarry::cuda::context(0);
    if (!fits(state, ctx, s, 4.0 * s.n)) return;
    DevicePool& p = pool_for(ctx, s);
    DeviceBuffer<float> out(ctx, static_cast<std::size_t>(s.n), "scores");
    DeviceBuffer<unsigned long long> fault(ctx, 1, "fault word");
    reset_fault(ctx, fault.data());
    DeviceCall dc;
    make_call(dc, p, s, out.data());
    time_iterations(state, ctx, [&] { quarry::cuda::launch_score(ctx, dc.call, fault.data()); });
    const unsigned long long bad = flagged(ctx, fault.data());
    if (bad != quarry::cuda::kNoFault) {
      state.SkipWithError(("the kernel flagged row " + std::to_string(bad) + " as bad; " +
                           diagnose(ctx, p, s, static_cast<std::int64_t>(bad)))
                              .c_str());
      return;
    }
    if (!verified(state, describe(s), [&] { return check_scores(ctx, p, s, out.data()); })) return;
    report(state, s.n, s.input_bytes());
  } catch (const quarry::Error& e) {
    drop_pool();
    state.SkipWithError(e.what());
  }
}

// ------------------------------------------------------------------ selection

// Scores for top-k: 2.3 u(2^41 + i) (distinct up to 2^24 values: some ties).
struct ScoreVector {
  std::int64_t n = 0;
  DeviceBuffer<float> d;
};
ScoreVector& scores_for(Context& ctx, std::int64_t n) {
  static auto* sv = new ScoreVector();
  if (sv->n != n) {
    sv->d = DeviceBuffer<float>();
    sv->d = DeviceBuffer<float>(ctx, static_cast<std::size_t>(n), "top-k scores");
    sv->n = n;
    generate_uniform<<<grid_for(n, 256), 256, 0, ctx.stream()>>>(sv->d.data(), n, kScoreOffset, 2.3f, 0.0f);
    QUARRY_CUDA_LAUNCH_CHECK("generate_uniform");
    ctx.sync();
  }
  return *sv;
}

// args: n, k
void BM_TopK(benchmark::State& state) {
  if (!have_device(state)) return;
  const std::int64_t n = state.range(0), k = state.range(1);
  state.SetLabel("topk f32 N=" + std::to_string(n) + " k=" + std::to_string(k));
  try {
    Context& ctx = quarry::cuda::context(0);
    drop_pool();
    trim(ctx);
    if (!fits(state, ctx, PoolSpec{}, 4.0 * n + 24.0 * k + n / 2.0)) return;
    ScoreVector& sv = scores_for(ctx, n);
    DeviceBuffer<std::int64_t> index(ctx, static_cast<std::size_t>(k), "top-k indices");
    DeviceBuffer<float> chosen(ctx, static_cast<std::size_t>(k), "top-k scores");
    time_iterations(state, ctx,
                    [&] { quarry::cuda::topk_device(ctx, sv.d.data(), n, k, nullptr, index.data(), chosen.data()); });
    if (!verified(state, "topk " + std::to_string(n) + " " + std::to_string(k),
                  [&] { return check_selection(ctx, sv.d.data(), n, k, index.data(), false, 0, 0); }))
      return;
    report(state, n, 4.0 * n);
  } catch (const quarry::Error& e) {
    state.SkipWithError(e.what());
  }
}

// Power sampling: the Gumbel keys, then their top k. args: n, k
void BM_Power(benchmark::State& state) {
  if (!have_device(state)) return;
  const std::int64_t n = state.range(0), k = state.range(1);
  const float beta = 1.0f;
  const std::uint64_t seed = 7;
  state.SetLabel("power f32 N=" + std::to_string(n) + " k=" + std::to_string(k));
  try {
    Context& ctx = quarry::cuda::context(0);
    drop_pool();
    trim(ctx);
    if (!fits(state, ctx, PoolSpec{}, 8.0 * n + 24.0 * k + n / 2.0)) return;
    ScoreVector& sv = scores_for(ctx, n);
    DeviceBuffer<float> keys(ctx, static_cast<std::size_t>(n), "keys");
    DeviceBuffer<std::int64_t> index(ctx, static_cast<std::size_t>(k), "indices");
    DeviceBuffer<unsigned long long> fault(ctx, 1, "fault word");
    reset_fault(ctx, fault.data());
    auto run = [&] {
      quarry::cuda::launch_gumbel_keys(ctx, sv.d.data(), n, beta, seed, keys.data(), fault.data());
      quarry::cuda::topk_device(ctx, keys.data(), n, k, nullptr, index.data(), nullptr);
    };
    time_iterations(state, ctx, run);
    const unsigned long long bad = flagged(ctx, fault.data());
    if (bad != quarry::cuda::kNoFault) {
      state.SkipWithError(("the Gumbel kernel flagged score " + std::to_string(bad) + " as bad").c_str());
      return;
    }
    if (!verified(state, "power " + std::to_string(n) + " " + std::to_string(k),
                  [&] { return check_selection(ctx, sv.d.data(), n, k, index.data(), true, beta, seed); }))
      return;
    report(state, n, 4.0 * n);
  } catch (const quarry::Error& e) {
    state.SkipWithError(e.what());
  }
}

// The goal's pipeline: score + top-k on the device, the scores never leaving it.
void BM_ScoreTopK(benchmark::State& state, PoolSpec s, std::int64_t k) {
  if (!have_device(state)) return;
  state.SetLabel(describe(s) + " + topk k=" + std::to_string(k));
  try {
    Context& ctx = quarry::cuda::context(0);
    if (!fits(state, ctx, s, 4.0 * s.n + 24.0 * k + s.n / 2.0)) return;
    DevicePool& p = pool_for(ctx, s);
    DeviceBuffer<float> scores(ctx, static_cast<std::size_t>(s.n), "scores");
    DeviceBuffer<std::int64_t> index(ctx, static_cast<std::size_t>(k), "indices");
    DeviceBuffer<float> chosen(ctx, static_cast<std::size_t>(k), "selected scores");
    DeviceBuffer<unsigned long long> fault(ctx, 1, "fault word");
    reset_fault(ctx, fault.data());
    DeviceCall dc;
    make_call(dc, p, s, scores.data());
    auto run = [&] {
      quarry::cuda::launch_score(ctx, dc.call, fault.data());
      quarry::cuda::topk_device(ctx, scores.data(), s.n, k, nullptr, index.data(), chosen.data());
    };
    time_iterations(state, ctx, run);
    const unsigned long long bad = flagged(ctx, fault.data());
    if (bad != quarry::cuda::kNoFault) {
      state.SkipWithError(("the kernel flagged row " + std::to_string(bad) + " as bad; " +
                           diagnose(ctx, p, s, static_cast<std::int64_t>(bad)))
                              .c_str());
      return;
    }
    if (!verified(state, describe(s) + " + topk " + std::to_string(k), [&] {
          Verdict v = check_scores(ctx, p, s, scores.data());
          if (!v.ok) return v;
          const Verdict sel = check_selection(ctx, scores.data(), s.n, k, index.data(), false, 0, 0);
          if (!sel.ok) {
            v.ok = false;
            v.message = sel.message;
          }
          return v;
        }))
      return;
    report(state, s.n, s.input_bytes());
  } catch (const quarry::Error& e) {
    drop_pool();
    state.SkipWithError(e.what());
  }
}

// ------------------------------------------------------------------ registration

// Dense outputs (kernels/dense.cu through dense_on_device): N cases of C = 2 class maps of
// D x D x D float16 probabilities, p0 = u(n*V + v), p1 = 1 - p0 (in float16: sums within the
// 1e-2 tolerance), generated on the device. Input bytes: the volumes, read once.
__global__ void generate_volumes(unsigned short* out, std::int64_t cases, std::int64_t V) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < cases * V;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t n = i / V, v = i % V;
    const float p0 = unit(static_cast<std::uint64_t>(i));
    out[(n * 2) * V + v] = __half_as_ushort(__float2half_rn(p0));
    out[(n * 2 + 1) * V + v] = __half_as_ushort(__float2half_rn(1.0f - p0));
  }
}

// args: cases, edge D; the reduction by name.
void BM_Dense(benchmark::State& state, quarry::ReduceSpec reduce) {
  if (!have_device(state)) return;
  const std::int64_t N = state.range(0), D = state.range(1), V = D * D * D;
  state.SetLabel("dense entropy " + quarry::reduction_name(reduce) + " f16 N=" + std::to_string(N) + " C=2 " +
                 std::to_string(D) + "^3");
  try {
    Context& ctx = quarry::cuda::context(0);
    drop_pool();
    trim(ctx);
    const double in_bytes = 2.0 * N * 2 * V;
    if (!fits(state, ctx, PoolSpec{}, in_bytes + 4.0 * N * V + (64 << 20))) return;
    DeviceBuffer<unsigned short> vol(ctx, static_cast<std::size_t>(N * 2 * V), "volumes");
    generate_volumes<<<grid_for(N * V, 256), 256, 0, ctx.stream()>>>(vol.data(), N, V);
    QUARRY_CUDA_LAUNCH_CHECK("generate_volumes");
    DeviceBuffer<float> out(ctx, static_cast<std::size_t>(N), "dense scores");
    quarry::cpu::DenseCall call;
    call.data = nullptr;  // no host copy: a bad voxel is reported by its index
    call.dtype = DType::f16;
    call.layout.members = 1;
    call.layout.cases = N;
    call.layout.classes = 2;
    call.layout.spatial = {D, D, D};
    call.layout.voxels = V;
    call.acquisition = Acquisition::entropy;
    call.tol = 1e-2f;
    call.reduce = reduce;
    call.input_name = "bench volumes";
    time_iterations(state, ctx, [&] { quarry::cuda::dense_on_device(ctx, call, vol.data(), nullptr, out.data(), nullptr); });
    // Spot check: case 0 and N-1 against the CPU backend on a host copy of those cases.
    std::vector<unsigned short> host(static_cast<std::size_t>(2 * V));
    std::vector<float> gpu(static_cast<std::size_t>(N));
    quarry::cuda::copy_to_host(ctx, gpu.data(), out.data(), gpu.size() * sizeof(float));
    double worst = 0.0;
    for (std::int64_t n : {std::int64_t{0}, N - 1}) {
      quarry::cuda::copy_to_host(ctx, host.data(), vol.data() + n * 2 * V, host.size() * sizeof(unsigned short));
      quarry::cpu::DenseCall one = call;
      one.data = host.data();
      one.layout.cases = 1;
      float cpu = 0.0f;
      quarry::cpu::score_dense(one, &cpu);
      worst = std::max(worst, std::fabs(static_cast<double>(gpu[static_cast<std::size_t>(n)]) - cpu) /
                                  (1e-4 * std::fabs(cpu) + 1e-5 * (1.0 + std::log(2.0))));
    }
    state.counters["spot_err"] = worst;
    if (!(worst <= 1.0)) {
      state.SkipWithError(("dense scores differ from the CPU's (spot_err " + std::to_string(worst) + ")").c_str());
      return;
    }
    report(state, N, in_bytes);
  } catch (const quarry::Error& e) {
    state.SkipWithError(e.what());
  }
}

std::string score_name(const PoolSpec& s) {
  std::string n = std::string("score/") + quarry::acquisition_name(s.acq) + "/" + quarry::dtype_name(s.dtype);
  if (s.logits) n += "/logits";
  if (s.m > 0) n += "/M:" + std::to_string(s.m);
  n += "/N:" + std::to_string(s.n) + "/C:" + std::to_string(s.c);
  return n;
}

void register_all() {
  using A = Acquisition;
  auto add_score = [](PoolSpec s) {
    s.emb = quarry::acquisition_needs_embeddings(s.acq);
    benchmark::RegisterBenchmark(score_name(s).c_str(), [s](benchmark::State& st) { BM_Score(st, s); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  };
  benchmark::RegisterBenchmark("copy_bandwidth", BM_CopyBandwidth)->UseManualTime()->Unit(benchmark::kMillisecond);
  const std::vector<A> single = {A::least_confidence, A::margin, A::ratio, A::entropy, A::egl, A::badge_norm};
  const std::vector<A> committee = {A::consensus_entropy, A::bald, A::vote_entropy, A::kl_max, A::variation_ratio};
  // Shape-major: each pool serves every score over it before the next one is generated.
  for (std::int64_t c : {10, 100, 1000})
    for (A a : single) add_score(PoolSpec{a, 0, 10000000, c, DType::f32});
  for (std::int64_t c : {10, 100})
    for (A a : single) add_score(PoolSpec{a, 0, 10000000, c, DType::f16});
  for (std::int64_t c : {10, 100}) {
    add_score(PoolSpec{A::entropy, 0, 10000000, c, DType::f32, true});
    add_score(PoolSpec{A::margin, 0, 10000000, c, DType::f32, true});
  }
  add_score(PoolSpec{A::entropy, 0, 10000000, 100, DType::bf16});
  // Committees of M = 20 (MC-dropout samples): N so that M*N*C*4 bytes <= 16 GB.
  for (std::int64_t c : {10, 100, 1000}) {
    const std::int64_t n = c == 10 ? 10000000 : c == 100 ? 2000000 : 200000;
    for (A a : committee) add_score(PoolSpec{a, 20, n, c, DType::f32});
  }
  add_score(PoolSpec{A::bald, 20, 10000000, 10, DType::f32, true});  // logits: softmax in the pass
  // The goal's pipeline (entropy + top-1000, N = 1e7, C = 100) and BALD + top-1000.
  const PoolSpec ent{A::entropy, 0, 10000000, 100, DType::f32};
  benchmark::RegisterBenchmark("entropy_topk/float32/N:10000000/C:100/k:1000",
                               [ent](benchmark::State& st) { BM_ScoreTopK(st, ent, 1000); })
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  for (std::int64_t c : {10, 100}) {
    const PoolSpec bald{A::bald, 20, c == 10 ? 10000000 : 2000000, c, DType::f32};
    benchmark::RegisterBenchmark(("bald_topk/float32/M:20/N:" + std::to_string(bald.n) + "/C:" + std::to_string(c) +
                                  "/k:1000")
                                     .c_str(),
                                 [bald](benchmark::State& st) { BM_ScoreTopK(st, bald, 1000); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  // Dense: 64 cases of 2 x 128^3 float16 (the goals: mean and max >= 0.8, topq >= 0.6 of copy).
  for (const char* r : {"mean", "max", "topq:0.01"}) {
    const quarry::ReduceSpec spec = quarry::parse_reduction(r);
    benchmark::RegisterBenchmark((std::string("dense/entropy/") + r + "/float16/C:2").c_str(),
                                 [spec](benchmark::State& st) { BM_Dense(st, spec); })
        ->ArgNames({"N", "D"})
        ->Args({64, 128})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RegisterBenchmark("topk/float32", BM_TopK)
      ->ArgNames({"N", "k"})
      ->Args({100000000, 1000})
      ->Args({100000000, 100000})
      ->Args({10000000, 1000})
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("power/float32", BM_Power)
      ->ArgNames({"N", "k"})
      ->Args({100000000, 1000})
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (quarry::cuda_device_count() > 0) {
    try {
      Context& ctx = quarry::cuda::context(0);
      const cudaDeviceProp& p = ctx.props();
      int driver = 0, runtime = 0;
      cudaDriverGetVersion(&driver);
      cudaRuntimeGetVersion(&runtime);
      benchmark::AddCustomContext("device", p.name);
      benchmark::AddCustomContext("device_sm", std::to_string(p.major) + std::to_string(p.minor));
      benchmark::AddCustomContext("device_sms", std::to_string(p.multiProcessorCount));
      benchmark::AddCustomContext("device_l2_bytes", std::to_string(p.l2CacheSize));
      benchmark::AddCustomContext("device_memory_bytes", std::to_string(p.totalGlobalMem));
      benchmark::AddCustomContext("cuda_driver", std::to_string(driver));
      benchmark::AddCustomContext("cuda_runtime", std::to_string(runtime));
      benchmark::AddCustomContext("copy_GB/s", std::to_string(copy_bandwidth()));
    } catch (const quarry::Error& e) {
      std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
