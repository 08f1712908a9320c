// CPU time of the diversity strategies on the built-in synthetic pool (the same data as
// `quarry generate -n N -c C -d D --seed 0 --embeddings H.npy`, which bench/numpy_diversity.py
// feeds to its NumPy references).
//
// Reported per selection: wall time (the strategies are multi-threaded), picks/s, and
// `pool_GB`, the size of the embeddings one full pass over the pool reads; `passes` is the
// selection's time in units of one such pass at the host's memory bandwidth (bench_cpu
// measures it; here it is taken from QUARRY_BENCH_MEM_BW_GBS when set), which says how much of
// the pool each pick touches on average once the pruning of src/cpu/diversity_cpu.cpp works.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <vector>

#include "quarry/array.hpp"
#include "quarry/diversity.hpp"
#include "quarry/synthetic.hpp"
#include "synthetic_pool.hpp"

namespace {


// args: strategy, N, D, C, k, labeled (the first `labeled` indices excluded), clusters
void BM_Diversity(benchmark::State& state) {
  const auto strategy = static_cast<quarry::DiversityStrategy>(state.range(0));
  const std::int64_t n = state.range(1), d = state.range(2), c = state.range(3), k = state.range(4);
  const std::int64_t labeled = state.range(5), clusters = state.range(6);
  const quarry_bench::Pool& data = quarry_bench::synthetic_pool(n, c, d);
  quarry::DiversityOptions o;
  o.k = k;
  o.seed = 1;
  o.clusters = clusters;
  o.kmeans_iterations = 10;
  for (std::int64_t i = 0; i < labeled; ++i) o.exclude.push_back(i * (n / labeled));
  const quarry::ArrayView emb = data.embeddings.view(), out = data.outputs.view();
  std::int64_t first = -1;
  for (auto _ : state) {
    const quarry::Selection s = quarry::select_diverse(strategy, emb, &out, o);
    first = s.index.front();
    benchmark::DoNotOptimize(first);
  }
  const double pool_gb = quarry_bench::diversity_counters(state, n, d, k);
  if (const char* bw = std::getenv("QUARRY_BENCH_MEM_BW_GBS")) {
    // seconds per iteration / seconds of one read of the embeddings
    state.counters["passes"] = benchmark::Counter(std::atof(bw) / pool_gb,
                                                  benchmark::Counter::kIsIterationInvariantRate |
                                                      benchmark::Counter::kInvert);
  }
  state.SetLabel(quarry::diversity_strategy_name(strategy));
}

using S = quarry::DiversityStrategy;
constexpr auto kBadge = static_cast<std::int64_t>(S::badge);
constexpr auto kKCenter = static_cast<std::int64_t>(S::kcenter);
constexpr auto kClusterMargin = static_cast<std::int64_t>(S::cluster_margin);
constexpr auto kUncertainKCenter = static_cast<std::int64_t>(S::uncertain_kcenter);

// The CPU goal: N = 1e5, D = 256, C = 10, k = 1000, against bench/numpy_diversity.py.
BENCHMARK(BM_Diversity)
    ->ArgNames({"strategy", "N", "D", "C", "k", "labeled", "clusters"})
    ->Args({kBadge, 100000, 256, 10, 1000, 0, 0})
    ->Args({kKCenter, 100000, 256, 10, 1000, 0, 0})
    // Beyond the goal: a labeled set (GEMM distances to 10,000 labeled samples), the two-stage
    // strategies (10 k candidates; cluster-margin with 100 k-means clusters, 10 iterations).
    ->Args({kKCenter, 100000, 256, 10, 1000, 10000, 0})
    ->Args({kUncertainKCenter, 100000, 256, 10, 1000, 0, 0})
    ->Args({kClusterMargin, 100000, 256, 10, 1000, 0, 100})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MeasureProcessCPUTime();

}  // namespace

BENCHMARK_MAIN();
