// CPU throughput of every acquisition score and of top-k / power selection.
//
// Each benchmark reports samples/s, GB/s of input read, and `of_mem_bw`: that rate as a fraction
// of the host's memory read bandwidth, measured at start-up by BM_MemoryRead's kernel (a
// parallel sum over 1 GiB with the same thread count). Inputs are far larger than the caches.
// Shapes whose input would exceed QUARRY_BENCH_MAX_GB (default 6) are skipped, with a message.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/select.hpp"

namespace {

double max_gb() {
  const char* e = std::getenv("QUARRY_BENCH_MAX_GB");
  return e ? std::atof(e) : 6.0;
}

// Parallel read of `bytes` bytes: the ceiling every scoring pass is compared with.
// A vectorised float sum with as many threads as the scoring uses: the read rate no
// scoring pass can beat.
float sum_buffer(const float* p, std::int64_t n) {
  float total = 0;
#pragma omp parallel for simd reduction(+ : total) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) total += p[i];
  return total;
}

double memory_bandwidth_gbs() {
  static const double bw = [] {
    const std::int64_t n = (1ll << 30) / 4;
    std::vector<float> buf(static_cast<std::size_t>(n), 1.0f);
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      benchmark::DoNotOptimize(sum_buffer(buf.data(), n));
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, 4.0 * n / s / 1e9);
    }
    return best;
  }();
  return bw;
}

// splitmix64: a cheap, well-mixed hash of the element index (the pools are gigabytes).
inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline float unit(std::uint64_t i) { return static_cast<float>(mix(i) >> 40) * (1.0f / 16777216.0f); }

// Random probability rows, deterministic per shape: 70% of the rows peaked on one class, the
// rest flat-ish. One pool is cached at a time (they are up to QUARRY_BENCH_MAX_GB).
const quarry::Array& pool(std::int64_t m, std::int64_t n, std::int64_t c, quarry::DType dt) {
  static std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, int>, quarry::Array> cache;
  const auto key = std::make_tuple(m, n, c, static_cast<int>(dt));
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  cache.clear();
  std::vector<std::int64_t> shape = m ? std::vector<std::int64_t>{m, n, c} : std::vector<std::int64_t>{n, c};
  quarry::Array a = quarry::Array::allocate(dt, shape, "bench");
  const std::int64_t rows = (m ? m : 1) * n;
#pragma omp parallel
  {
    std::vector<float> row(static_cast<std::size_t>(c));
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::uint64_t i0 = static_cast<std::uint64_t>(r * c);
      const float peak = unit(~i0) < 0.7f ? 20.0f : 1.0f;
      float s = 0;
      for (std::int64_t j = 0; j < c; ++j) s += (row[j] = unit(i0 + j) + (j == r % c ? peak : 0.0f));
      for (std::int64_t j = 0; j < c; ++j) {
        const float p = row[j] / s;
        if (dt == quarry::DType::f16)
          static_cast<std::uint16_t*>(a.mutable_data())[r * c + j] = quarry::detail::float_to_half(p);
        else
          static_cast<float*>(a.mutable_data())[r * c + j] = p;
      }
    }
  }
  return cache.emplace(key, std::move(a)).first->second;
}

const quarry::Array& embeddings(std::int64_t n, std::int64_t d) {
  static quarry::Array e;
  if (e.rank() == 2 && e.shape()[0] == n && e.shape()[1] == d) return e;
  e = quarry::Array::allocate(quarry::DType::f32, {n, d}, "bench embeddings");
  float* h = static_cast<float*>(e.mutable_data());
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n * d; ++i) h[i] = static_cast<float>((i * 2654435761u) % 1000) * 1e-3f;
  return e;
}

void report(benchmark::State& state, std::int64_t samples, double bytes) {
  state.SetItemsProcessed(state.iterations() * samples);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["mem_bw_GB/s"] = memory_bandwidth_gbs();
  state.counters["of_mem_bw"] = benchmark::Counter(bytes / 1e9 / memory_bandwidth_gbs(),
                                                   benchmark::Counter::kIsIterationInvariantRate);
}

// args: acquisition, M (0 for [N,C]), N, C, dtype (0 f32, 1 f16)
void BM_Score(benchmark::State& state) {
  const auto acq = static_cast<quarry::Acquisition>(state.range(0));
  const std::int64_t m = state.range(1), n = state.range(2), c = state.range(3);
  const quarry::DType dt = state.range(4) ? quarry::DType::f16 : quarry::DType::f32;
  const std::int64_t d = 64;
  const bool emb = quarry::acquisition_needs_embeddings(acq);
  const double bytes = static_cast<double>((m ? m : 1) * n * c) * quarry::dtype_size(dt) + (emb ? 4.0 * n * d : 0.0);
  if (bytes / 1e9 > max_gb()) {
    state.SkipWithError("input larger than QUARRY_BENCH_MAX_GB");
    return;
  }
  const quarry::Array& in = pool(m, n, c, dt);
  quarry::ArrayView ev;
  if (emb) ev = embeddings(n, d).view();
  std::vector<float> out(static_cast<std::size_t>(n));
  quarry::ScoreOptions opt;
  opt.sum_tolerance = 1e-2;  // float16 rows of 1000 classes round to within 1e-2 of 1
  for (auto _ : state) {
    quarry::score(in.view(), acq, out.data(), opt, emb ? &ev : nullptr);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(std::string(quarry::acquisition_name(acq)) + (dt == quarry::DType::f16 ? " f16" : " f32"));
  report(state, n, bytes);
}

// Shape-major, so that each (cached) pool serves every score before the next is made.
void score_args(benchmark::internal::Benchmark* b) {
  using A = quarry::Acquisition;
  for (std::int64_t n : {1000000, 10000000})
    for (std::int64_t c : {10, 100, 1000})
      for (A a : {A::least_confidence, A::margin, A::ratio, A::entropy, A::egl, A::badge_norm})
        b->Args({static_cast<int>(a), 0, n, c, 0});
  b->Args({static_cast<int>(A::entropy), 0, 10000000, 10, 1});  // float16
  for (std::int64_t n : {1000000, 10000000})
    for (std::int64_t c : {10, 100})
      for (A a : {A::consensus_entropy, A::bald, A::vote_entropy, A::kl_max, A::variation_ratio})
        b->Args({static_cast<int>(a), 10, n, c, 0});
}
BENCHMARK(BM_Score)->Apply(score_args)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);

std::vector<float> random_scores(std::int64_t n) {
  std::vector<float> s(static_cast<std::size_t>(n));
#pragma omp parallel
  {
    std::mt19937 rng(99u + static_cast<unsigned>(omp_get_thread_num()));
    std::uniform_real_distribution<float> u(0.0f, 2.3f);
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) s[i] = u(rng);
  }
  return s;
}

// args: N, k, strategy (0 topk, 1 power)
void BM_Select(benchmark::State& state) {
  const std::int64_t n = state.range(0), k = state.range(1);
  static std::vector<float> s;
  if (static_cast<std::int64_t>(s.size()) != n) s = random_scores(n);
  for (auto _ : state) {
    const quarry::Selection sel = state.range(2) ? quarry::select_power(s.data(), n, k, 1.0, 7)
                                                 : quarry::select_topk(s.data(), n, k);
    benchmark::DoNotOptimize(sel.index.data());
  }
  state.SetLabel(state.range(2) ? "power" : "topk");
  report(state, n, 4.0 * n);
}
BENCHMARK(BM_Select)
    ->ArgsProduct({{1000000, 10000000}, {1000, 100000}, {0, 1}})
    ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);

// The goal's pipeline: entropy + top-k (k = 1000) over N = 1e7, C = 10 float32.
void BM_EntropyTopK(benchmark::State& state) {
  const std::int64_t n = state.range(0), c = state.range(1), k = 1000;
  const quarry::Array& in = pool(0, n, c, quarry::DType::f32);
  std::vector<float> out(static_cast<std::size_t>(n));
  for (auto _ : state) {
    quarry::score(in.view(), quarry::Acquisition::entropy, out.data());
    const quarry::Selection sel = quarry::select_topk(out.data(), n, k);
    benchmark::DoNotOptimize(sel.index.data());
  }
  report(state, n, 4.0 * n * c);
}
BENCHMARK(BM_EntropyTopK)->Args({10000000, 10})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0);

void BM_MemoryRead(benchmark::State& state) {
  const std::int64_t n = (1ll << 30) / 4;
  std::vector<float> buf(static_cast<std::size_t>(n), 1.0f);
  for (auto _ : state) benchmark::DoNotOptimize(sum_buffer(buf.data(), n));
  report(state, n, 4.0 * n);
}
BENCHMARK(BM_MemoryRead)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);

}  // namespace

BENCHMARK_MAIN();
