// The GPU goal for the diversity strategies: N = 1e6, D = 512, C = 10, k = 1000, BADGE
// and k-center in under 2 s each on an H100/H200, memory O(N (C + D)).
//
// Measured through the public API (quarry::select_diverse with device cuda:0), so the time is
// what a user waits for: the host-side validation (outputs scored on the CPU for their
// messages, BADGE's p - e_yhat factors), the copy of the embeddings (2 GB) and factors to the
// device, and the k picks (one bandwidth-bound pass over the embeddings per pick; see
// kernels/diversity.cu). Reported: wall time per selection, picks/s, `pool_GB` (the embeddings'
// size) and `pass_GBs`, k passes over the pool divided by the time: the effective bandwidth of
// the picking loop, to compare with the device's memory bandwidth (~3.3 TB/s on an H100 SXM).
// Skips (SkipWithError) without a CUDA device.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "quarry/array.hpp"
#include "quarry/device.hpp"
#include "quarry/diversity.hpp"
#include "quarry/synthetic.hpp"
#include "synthetic_pool.hpp"

namespace {


// args: strategy, N, D, C, k, labeled (every (N / labeled)-th index excluded)
void BM_DiversityCuda(benchmark::State& state) {
  if (quarry::cuda_device_count() == 0) {
    state.SkipWithError("no CUDA device: the GPU diversity benchmark needs one");
    return;
  }
  const auto strategy = static_cast<quarry::DiversityStrategy>(state.range(0));
  const std::int64_t n = state.range(1), d = state.range(2), c = state.range(3), k = state.range(4);
  const std::int64_t labeled = state.range(5);
  const quarry_bench::Pool& data = quarry_bench::synthetic_pool(n, c, d);
  quarry::DiversityOptions o;
  o.k = k;
  o.seed = 1;
  o.device = {quarry::DeviceKind::cuda, 0};
  for (std::int64_t i = 0; i < labeled; ++i) o.exclude.push_back(i * (n / labeled));
  const quarry::ArrayView emb = data.embeddings.view(), out = data.outputs.view();
  std::int64_t first = -1;
  try {
    // One warm-up selection outside the timing (context, cuBLAS handle, memory pool).
    quarry::DiversityOptions warm = o;
    warm.k = 2;
    quarry::select_diverse(strategy, emb, &out, warm);
    for (auto _ : state) {
      const quarry::Selection s = quarry::select_diverse(strategy, emb, &out, o);
      first = s.index.front();
      benchmark::DoNotOptimize(first);
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  const double pool_gb = quarry_bench::diversity_counters(state, n, d, k);
  state.counters["pass_GBs"] = benchmark::Counter(pool_gb * static_cast<double>(k),
                                                  benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(quarry::diversity_strategy_name(strategy));
}

using S = quarry::DiversityStrategy;
constexpr auto kBadge = static_cast<std::int64_t>(S::badge);
constexpr auto kKCenter = static_cast<std::int64_t>(S::kcenter);

BENCHMARK(BM_DiversityCuda)
    ->ArgNames({"strategy", "N", "D", "C", "k", "labeled"})
    ->Args({kBadge, 1000000, 512, 10, 1000, 0})    // the goal: < 2 s
    ->Args({kKCenter, 1000000, 512, 10, 1000, 0})  // the goal: < 2 s
    ->Args({kKCenter, 1000000, 512, 10, 1000, 10000})  // + GEMM distances to 10,000 labeled
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
