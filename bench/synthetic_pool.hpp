// The synthetic pools the diversity benchmarks run on, generated once per shape: one pool is
// cached at a time (1e6 x 512 float embeddings are 2 GB).
#pragma once

#include <cstdint>
#include <map>
#include <tuple>
#include <utility>

#include <benchmark/benchmark.h>

#include "quarry/array.hpp"
#include "quarry/synthetic.hpp"

namespace quarry_bench {

// The counters every diversity benchmark reports: picks/s and the pool's shape; returns the
// size of the embeddings in GB.
inline double diversity_counters(benchmark::State& state, std::int64_t n, std::int64_t d, std::int64_t k) {
  const double pool_gb = static_cast<double>(n) * static_cast<double>(d) * 4.0 / 1e9;
  state.SetItemsProcessed(state.iterations() * k);  // picks/s
  state.counters["N"] = static_cast<double>(n);
  state.counters["D"] = static_cast<double>(d);
  state.counters["k"] = static_cast<double>(k);
  state.counters["pool_GB"] = pool_gb;
  return pool_gb;
}

struct Pool {
  quarry::Array outputs, embeddings;
};

inline const Pool& synthetic_pool(std::int64_t n, std::int64_t c, std::int64_t d) {
  static std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t>, Pool> cache;
  const auto key = std::make_tuple(n, c, d);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  cache.clear();
  quarry::SyntheticSpec spec;
  spec.n = n;
  spec.c = c;
  spec.d = d;
  spec.seed = 0;
  Pool pool{quarry::synthetic_outputs(spec), quarry::synthetic_embeddings(spec)};
  return cache.emplace(key, std::move(pool)).first->second;
}

}  // namespace quarry_bench
