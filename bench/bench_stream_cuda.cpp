// The GPU streaming goal: a 1e8 x 10 float16 pool (2 GB) in pinned host memory, scored through
// the device under a 512 MiB budget, against the host-to-device bandwidth of one plain pinned
// copy of the same bytes, measured in the same run. Goal: streaming >= 80% of that bandwidth.
//   bench_stream_cuda --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// Without a GPU every benchmark is skipped with a message. Set QUARRY_STREAM_N for another N.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/device.hpp"
#include "quarry/stream.hpp"
#include "quarry/synthetic.hpp"

namespace {

using namespace quarry;

constexpr std::int64_t kClasses = 10;

std::int64_t pool_rows() {
  const char* n = std::getenv("QUARRY_STREAM_N");
  return n ? std::atoll(n) : 100000000;
}

// The pool in pinned host memory, made once: synthetic probabilities, float16.
const Array& pinned_pool() {
  static const Array pool = [] {
    const std::int64_t n = pool_rows();
    const std::size_t bytes = static_cast<std::size_t>(n * kClasses) * 2;
    void* p = nullptr;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) return Array{};
    std::shared_ptr<const void> owner(p, [](const void* q) { cudaFreeHost(const_cast<void*>(q)); });
    // Fill in blocks from the synthetic generator (it makes [rows, C] arrays).
    const std::int64_t block = 1 << 22;
    for (std::int64_t b = 0; b < n; b += block) {
      SyntheticSpec s;
      s.n = std::min(block, n - b);
      s.c = kClasses;
      s.dtype = DType::f16;
      s.seed = static_cast<std::uint64_t>(b);
      const Array part = synthetic_outputs(s);
      std::memcpy(static_cast<unsigned char*>(p) + static_cast<std::size_t>(b * kClasses) * 2, part.data(), part.nbytes());
    }
    return Array(owner, p, DType::f16, {n, kClasses}, "pinned pool");
  }();
  return pool;
}

bool have_gpu(benchmark::State& state) {
  if (cuda_device_count() > 0 && pinned_pool().data()) return true;
  state.SkipWithError("no CUDA device (or the pinned pool could not be allocated)");
  return false;
}

// One plain host-to-device copy of the pool's bytes from pinned memory, in 256 MiB pieces into
// one device buffer (the ceiling streaming is measured against).
void BM_PinnedHostToDevice(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const Array& pool = pinned_pool();
  const std::size_t piece = std::size_t{256} << 20;
  void* d = nullptr;
  cudaMalloc(&d, piece);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  for (auto _ : state) {
    for (std::size_t off = 0; off < pool.nbytes(); off += piece)
      cudaMemcpyAsync(d, static_cast<const unsigned char*>(pool.data()) + off, std::min(piece, pool.nbytes() - off),
                      cudaMemcpyHostToDevice, stream);
    cudaStreamSynchronize(stream);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(pool.nbytes()));
  cudaStreamDestroy(stream);
  cudaFree(d);
}

// quarry::stream_score over the pinned pool with a 512 MiB device budget (entropy; the scores
// come back to host memory and are dropped).
void BM_StreamScore(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const PoolFiles pool = PoolFiles::of({pinned_pool()}, "pinned pool");
  ScoreOptions o;
  o.device = {DeviceKind::cuda, 0};
  StreamOptions s;
  s.memory_budget = std::int64_t{512} << 20;
  StreamStats st;
  for (auto _ : state) {
    double sum = 0;
    st = stream_score(pool, Acquisition::entropy, o, nullptr, s,
                      [&](std::int64_t, const float* x, std::int64_t n) { sum += x[n - 1]; });
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(pinned_pool().nbytes()));
  state.counters["chunks"] = static_cast<double>(st.chunks);
  state.counters["rows_per_chunk"] = static_cast<double>(st.rows_per_chunk);
}

}  // namespace

BENCHMARK(BM_PinnedHostToDevice)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_StreamScore)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
