// Backend parity of the diversity strategies: every strategy (and k-means) on the CUDA device
// against the CPU backend through the public API, on seeded random pools of many shapes (D in
// {1, 7, 64, 300}, C in {1, 2, 10}, N up to a few thousand, not multiples of any block size),
// with exclusions, k = 1 and k = N, duplicated embeddings and grid data (exact distance ties).
// The selections must be identical (same indices in the same order); the scores equal within
// 1e-5 relative. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/device.hpp"
#include "quarry/diversity.hpp"
#include "quarry/error.hpp"

namespace {

using quarry::ArrayView;
using quarry::DeviceKind;
using quarry::DiversityOptions;
using quarry::DiversityStrategy;
using quarry::DType;
using quarry::Selection;

#define QUARRY_REQUIRE_GPU()                                                    \
  do {                                                                          \
    if (quarry::cuda_device_count() == 0)                                       \
      GTEST_SKIP() << "no CUDA device: the CUDA/CPU diversity parity is not checked"; \
  } while (0)

struct Pool {
  std::int64_t n = 0, d = 0, c = 0;
  std::vector<float> h;  // [n, d]
  std::vector<float> p;  // [n, c] probabilities
  ArrayView emb() const { return {h.data(), DType::f32, {n, d}}; }
  ArrayView out() const { return {p.data(), DType::f32, {n, c}}; }
};

enum class Kind { blobs, duplicates, grid };

// Gaussian blobs; `duplicates`: every row copied from one of n/8 originals (exact ties of
// distances and of gradient norms); `grid`: small integers (many exactly equal distances).
Pool make_pool(std::int64_t n, std::int64_t d, std::int64_t c, std::uint32_t seed, Kind kind) {
  Pool pool;
  pool.n = n;
  pool.d = d;
  pool.c = c;
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  pool.h.resize(static_cast<std::size_t>(n * d));
  const int blobs = 5;
  std::vector<float> centre(static_cast<std::size_t>(blobs * d));
  for (float& v : centre) v = 4.0f * g(rng);
  for (std::int64_t i = 0; i < n; ++i) {
    const int b = static_cast<int>(rng() % blobs);
    for (std::int64_t j = 0; j < d; ++j) {
      float v = centre[b * d + j] + 0.7f * g(rng);
      if (kind == Kind::grid) v = static_cast<float>(static_cast<int>(rng() % 4));
      pool.h[i * d + j] = v;
    }
  }
  pool.p.resize(static_cast<std::size_t>(n * c));
  for (std::int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (std::int64_t j = 0; j < c; ++j) {
      const float v = std::exp(1.5f * g(rng));
      pool.p[i * c + j] = v;
      s += v;
    }
    for (std::int64_t j = 0; j < c; ++j) pool.p[i * c + j] = static_cast<float>(pool.p[i * c + j] / s);
  }
  if (kind == Kind::duplicates) {
    const std::int64_t originals = std::max<std::int64_t>(1, n / 8);
    for (std::int64_t i = originals; i < n; ++i) {
      const std::int64_t src = static_cast<std::int64_t>(rng() % originals);
      std::copy_n(pool.h.begin() + src * d, d, pool.h.begin() + i * d);
      std::copy_n(pool.p.begin() + src * c, c, pool.p.begin() + i * c);
    }
  }
  return pool;
}

std::vector<std::int64_t> random_exclusions(std::int64_t n, std::int64_t count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::int64_t> e;
  for (std::int64_t t = 0; t < count; ++t) e.push_back(static_cast<std::int64_t>(rng() % n));
  return e;  // duplicates on purpose: the API takes any list
}

void expect_same(const Selection& cpu, const Selection& gpu, const std::string& what) {
  ASSERT_EQ(cpu.index.size(), gpu.index.size()) << what;
  for (std::size_t t = 0; t < cpu.index.size(); ++t) {
    ASSERT_EQ(cpu.index[t], gpu.index[t]) << what << ": pick " << t;
    const double a = cpu.score[t], b = gpu.score[t];
    EXPECT_LE(std::fabs(a - b), 1e-5 * std::max(std::fabs(a), std::fabs(b)) + 1e-30)
        << what << ": score of pick " << t;
  }
}

struct Case {
  std::int64_t n, d, c;
  Kind kind;
};

std::string name_of(DiversityStrategy s, const Case& cs, std::int64_t k, std::size_t excl) {
  return std::string(quarry::diversity_strategy_name(s)) + " n=" + std::to_string(cs.n) +
         " d=" + std::to_string(cs.d) + " c=" + std::to_string(cs.c) + " kind=" +
         std::to_string(static_cast<int>(cs.kind)) + " k=" + std::to_string(k) +
         " excluded=" + std::to_string(excl);
}

Selection run(DiversityStrategy s, const Pool& pool, DiversityOptions o, DeviceKind kind) {
  o.device = {kind, 0};
  const ArrayView out = pool.out();
  return quarry::select_diverse(s, pool.emb(), quarry::diversity_needs_outputs(s) ? &out : nullptr, o);
}

const Case kCases[] = {
    {1, 1, 1, Kind::blobs},        {37, 1, 2, Kind::blobs},       {513, 7, 10, Kind::blobs},
    {1000, 64, 2, Kind::blobs},    {2049, 300, 10, Kind::blobs},  {3001, 64, 10, Kind::blobs},
    {800, 7, 10, Kind::duplicates}, {1200, 64, 2, Kind::duplicates}, {700, 7, 2, Kind::grid},
    {1500, 1, 10, Kind::grid},
};

// QUARRY_CUDA_TEST_QUICK=1 (the compute-sanitizer runs of scripts/gpu_check.sh): the first
// cases 2 to 4 only (37 to 1000 rows, D = 1 to 64), every strategy and kernel path still taken.
std::vector<Case> cases() {
  const char* q = std::getenv("QUARRY_CUDA_TEST_QUICK");
  const bool quick = q != nullptr && q[0] != '\0' && q[0] != '0';
  return quick ? std::vector<Case>(std::begin(kCases) + 1, std::begin(kCases) + 4)
               : std::vector<Case>(std::begin(kCases), std::end(kCases));
}

TEST(DiversityCuda, EveryStrategyMatchesTheCpu) {
  QUARRY_REQUIRE_GPU();
  std::uint32_t seed = 11;
  for (const Case& cs : cases()) {
    const Pool pool = make_pool(cs.n, cs.d, cs.c, seed++, cs.kind);
    for (DiversityStrategy s : quarry::all_diversity_strategies()) {
      for (std::size_t excl : {std::size_t{0}, static_cast<std::size_t>(cs.n / 10)}) {
        DiversityOptions o;
        o.exclude = random_exclusions(cs.n, static_cast<std::int64_t>(excl), seed++);
        std::vector<std::int64_t> unique = o.exclude;
        std::sort(unique.begin(), unique.end());
        unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
        const std::int64_t selectable = cs.n - static_cast<std::int64_t>(unique.size());
        for (std::int64_t k : {std::int64_t{1}, std::min<std::int64_t>(selectable, 25), selectable}) {
          if (k < 1 || (k > 400 && cs.n > 1200)) continue;  // k = N on the smaller pools
          o.k = k;
          o.seed = 1000u + seed++;
          o.candidates = 0;
          const std::string what = name_of(s, cs, k, unique.size());
          SCOPED_TRACE(what);
          const Selection cpu = run(s, pool, o, DeviceKind::cpu);
          const Selection gpu = run(s, pool, o, DeviceKind::cuda);
          expect_same(cpu, gpu, what);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST(DiversityCuda, ManySeedsOfBadgeMatchTheCpu) {
  QUARRY_REQUIRE_GPU();
  const Pool pool = make_pool(2500, 64, 10, 77, Kind::blobs);
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    DiversityOptions o;
    o.k = 200;
    o.seed = seed;
    const Selection cpu = run(DiversityStrategy::badge, pool, o, DeviceKind::cpu);
    const Selection gpu = run(DiversityStrategy::badge, pool, o, DeviceKind::cuda);
    expect_same(cpu, gpu, "badge seed " + std::to_string(seed));
  }
}

TEST(DiversityCuda, KCenterFromALargeLabeledSet) {
  QUARRY_REQUIRE_GPU();
  // More labeled rows than one GEMM column block (1024) and pool rows than one row block.
  const Pool pool = make_pool(9000, 64, 2, 5, Kind::blobs);
  DiversityOptions o;
  o.k = 300;
  o.exclude = random_exclusions(pool.n, 2500, 9);
  const Selection cpu = run(DiversityStrategy::kcenter, pool, o, DeviceKind::cpu);
  const Selection gpu = run(DiversityStrategy::kcenter, pool, o, DeviceKind::cuda);
  expect_same(cpu, gpu, "kcenter with 2500 labeled");
}

TEST(DiversityCuda, KMeansMatchesTheCpu) {
  QUARRY_REQUIRE_GPU();
  std::uint32_t seed = 3;
  for (const Case& cs : cases()) {
    const Pool pool = make_pool(cs.n, cs.d, cs.c, seed++, cs.kind);
    for (std::int64_t clusters : {std::int64_t{1}, std::min<std::int64_t>(cs.n, 10), cs.n > 600 ? 0 : cs.n}) {
      if (clusters < 1) continue;
      quarry::KMeansOptions o;
      o.clusters = clusters;
      o.iterations = 15;
      o.seed = seed++;
      o.device = {DeviceKind::cpu, 0};
      const quarry::KMeansResult cpu = quarry::kmeans(pool.emb(), o);
      o.device = {DeviceKind::cuda, 0};
      const quarry::KMeansResult gpu = quarry::kmeans(pool.emb(), o);
      const std::string what = "kmeans n=" + std::to_string(cs.n) + " d=" + std::to_string(cs.d) +
                               " clusters=" + std::to_string(clusters);
      EXPECT_EQ(cpu.labels, gpu.labels) << what;
      EXPECT_EQ(cpu.centroids, gpu.centroids) << what << " (bit-identical: same sums in the same order)";
      EXPECT_EQ(cpu.iterations, gpu.iterations) << what;
      EXPECT_EQ(cpu.converged, gpu.converged) << what;
    }
  }
}

TEST(DiversityCuda, ProgressIsReported) {
  QUARRY_REQUIRE_GPU();
  const Pool pool = make_pool(600, 7, 2, 21, Kind::blobs);
  DiversityOptions o;
  o.k = 40;
  o.device = {DeviceKind::cuda, 0};
  std::int64_t last = 0;
  o.progress = [&](const quarry::Progress& p) {
    if (std::string(p.phase) == "picking") last = p.done;
  };
  const ArrayView out = pool.out();
  const Selection s = quarry::select_diverse(DiversityStrategy::badge, pool.emb(), &out, o);
  EXPECT_EQ(s.size(), 40);
  EXPECT_EQ(last, 40);
}

}  // namespace
