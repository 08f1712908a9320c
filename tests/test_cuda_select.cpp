// Backend parity, selection: select_topk, select_power and score_and_select on the GPU equal
// the CPU exactly (indices and score bits). Harness in cuda_parity.hpp.
#include <gtest/gtest.h>

#include "cuda_parity.hpp"

namespace cuda_test {
namespace {

// ------------------------------------------------------------------ top-k: exactly the CPU's

// Scores of many shapes of distribution; `distinct` > 0 draws from that many values (ties).
std::vector<float> make_scores(std::int64_t n, int kind, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> s(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    float v = 0;
    switch (kind) {
      case 0: v = static_cast<float>(3.0 * rng.normal()); break;             // random, both signs
      case 1: v = static_cast<float>(rng.below(16)) * 0.125f - 1.0f; break;  // 16 values: ties
      case 2: v = 0.5f; break;                                               // all equal
      case 3: {                                                              // edges of float
        static const float edge[] = {0.0f, -0.0f, HUGE_VALF, -HUGE_VALF, 1e-45f, -1e-45f,
                                     3.4e38f, -3.4e38f, 1.0f, 1.0000001f};
        v = rng.below(3) == 0 ? edge[rng.below(10)] : static_cast<float>(rng.normal());
        break;
      }
      default: v = static_cast<float>(rng.uniform()); break;  // [0, 1): scores of acquisitions
    }
    s[static_cast<std::size_t>(i)] = v;
  }
  return s;
}
const char* kScoreKinds[] = {"normal", "16 distinct values", "all equal", "float edges", "uniform [0,1)"};

// select_topk on the GPU equals the CPU's, index for index and bit for bit.
void expect_same_topk(const std::vector<float>& s, std::int64_t k, const std::vector<std::int64_t>& ex,
                      const std::string& what) {
  SCOPED_TRACE(what + ", n " + std::to_string(s.size()) + ", k " + std::to_string(k) + ", " +
               std::to_string(ex.size()) + " excluded");
  const auto n = static_cast<std::int64_t>(s.size());
  const quarry::Selection cpu = quarry::select_topk(s.data(), n, k, ex, kCpu);
  quarry::Selection gpu;
  try {
    gpu = quarry::select_topk(s.data(), n, k, ex, kGpu);
  } catch (const quarry::Error& e) {
    FAIL() << "GPU top-k failed: " << e.what();
  }
  ASSERT_EQ(gpu.size(), k);
  std::int64_t first = -1;
  for (std::int64_t r = 0; r < k && first < 0; ++r)
    if (gpu.index[r] != cpu.index[r]) first = r;
  EXPECT_EQ(first, -1) << "first difference at rank " << first << ": gpu index "
                       << (first >= 0 ? gpu.index[first] : 0) << " cpu index "
                       << (first >= 0 ? cpu.index[first] : 0);
  EXPECT_EQ(std::memcmp(gpu.score.data(), cpu.score.data(), k * sizeof(float)), 0) << "scores differ";
  // Properties that hold whatever the CPU does: no duplicates, no excluded index, rank order.
  std::vector<std::int64_t> sorted = gpu.index;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_TRUE(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end()) << "duplicate index";
  const std::set<std::int64_t> exs(ex.begin(), ex.end());
  for (std::int64_t r = 0; r < k; ++r) {
    ASSERT_TRUE(gpu.index[r] >= 0 && gpu.index[r] < n);
    EXPECT_EQ(exs.count(gpu.index[r]), 0u) << "excluded index selected at rank " << r;
    if (r > 0) {
      const float a = s[gpu.index[r - 1]], b = s[gpu.index[r]];
      EXPECT_TRUE(a > b || (a == b && gpu.index[r - 1] < gpu.index[r])) << "rank order broken at " << r;
    }
  }
}

TEST(CudaTopk, EqualsTheCpuExactly) {
  REQUIRE_GPU();
  const auto ns = pick<std::int64_t>({1, 2, 7, 1000, 65535, 65536, 65537, 1000003}, {7, 65537, 300007});
  std::uint64_t seed = 901;
  for (std::int64_t n : ns)
    for (int kind = 0; kind < 5; ++kind) {
      const std::vector<float> s = make_scores(n, kind, seed++);
      std::set<std::int64_t> ks = {1, 2, 10, 1000, n / 3, n - 1, n};
      for (std::int64_t k : ks)
        if (k >= 1 && k <= n) expect_same_topk(s, k, {}, kScoreKinds[kind]);
    }
}

TEST(CudaTopk, AllEqualScoresTakeTheLowestIndices) {
  REQUIRE_GPU();
  const std::int64_t n = 1 << 20;
  const std::vector<float> s(static_cast<std::size_t>(n), 0.25f);
  for (std::int64_t k : {std::int64_t{1}, std::int64_t{1000}, n / 2 + 1, n - 1, n}) {
    const quarry::Selection gpu = quarry::select_topk(s.data(), n, k, {}, kGpu);
    std::vector<std::int64_t> expect(static_cast<std::size_t>(k));
    std::iota(expect.begin(), expect.end(), 0);
    EXPECT_EQ(gpu.index, expect) << "k = " << k;
    expect_same_topk(s, k, {}, "all equal");
  }
}

TEST(CudaTopk, ExclusionsAreNeverSelected) {
  REQUIRE_GPU();
  const std::int64_t n = quick() ? 100003 : 1000003;
  Rng rng(17);
  for (int kind : {0, 1, 2}) {
    const std::vector<float> s = make_scores(n, kind, 33 + kind);
    // Every 10th index, plus the CPU's top 500 (the winners must come from below them).
    std::vector<std::int64_t> ex;
    for (std::int64_t i = 0; i < n; i += 10) ex.push_back(i);
    const quarry::Selection top = quarry::select_topk(s.data(), n, 500, {}, kCpu);
    ex.insert(ex.end(), top.index.begin(), top.index.end());
    ex.push_back(ex.front());  // a duplicate in the list is allowed
    std::set<std::int64_t> uniq(ex.begin(), ex.end());
    const std::int64_t selectable = n - static_cast<std::int64_t>(uniq.size());
    for (std::int64_t k : {std::int64_t{1}, std::int64_t{1000}, selectable / 2, selectable})
      expect_same_topk(s, k, ex, kScoreKinds[kind]);
  }
  // Everything excluded but 3 samples, k = 3.
  const std::vector<float> s = make_scores(5000, 0, 5);
  std::vector<std::int64_t> ex;
  for (std::int64_t i = 0; i < 5000; ++i)
    if (i != 17 && i != 2500 && i != 4999) ex.push_back(i);
  expect_same_topk(s, 3, ex, "all but three excluded");
}

TEST(CudaTopk, LargeKOnThreeMillion) {
  REQUIRE_GPU();
  const std::int64_t n = quick() ? 300000 : 3000000;
  for (int kind : {4, 1}) {
    const std::vector<float> s = make_scores(n, kind, 71 + kind);
    expect_same_topk(s, n / 3, {}, kScoreKinds[kind]);  // k = 1e6 on 3e6
  }
}

TEST(CudaTopk, NanScoresGiveTheCpuMessage) {
  REQUIRE_GPU();
  std::vector<float> s = make_scores(100003, 0, 3);
  s[77777] = std::nanf("");
  s[4242] = -std::nanf("");
  const std::string cpu = error_of([&] { quarry::select_topk(s.data(), 100003, 10, {}, kCpu); });
  const std::string gpu = error_of([&] { quarry::select_topk(s.data(), 100003, 10, {}, kGpu); });
  EXPECT_NE(cpu.find("4242"), std::string::npos) << cpu;
  EXPECT_EQ(gpu, cpu);
}

// ------------------------------------------------------------------ power sampling: same seed, same batch

TEST(CudaPower, EqualsTheCpuForTheSameSeed) {
  REQUIRE_GPU();
  const auto ns = pick<std::int64_t>({1, 7, 1000, 100003, 1000003}, {7, 100003});
  std::uint64_t sseed = 1201;
  for (std::int64_t n : ns) {
    std::vector<float> s = make_scores(n, 4, sseed++);
    Rng rng(n);
    std::int64_t positive = 0;
    for (auto& v : s) {
      if (rng.below(5) == 0) v = 0.0f;  // zeros: taken last, in index order
      positive += v > 0;
    }
    std::vector<std::int64_t> ex;
    for (std::int64_t i = 3; i < n; i += 13) ex.push_back(i);
    for (double beta : pick<double>({0.5, 1.0, 8.0}, {2.0}))
      for (std::uint64_t seed : pick<std::uint64_t>({0, 1, 12345678901234ull}, {12345678901234ull}))
        for (bool use_ex : {false, true}) {
          const std::vector<std::int64_t> e = use_ex ? ex : std::vector<std::int64_t>{};
          const std::int64_t selectable = n - static_cast<std::int64_t>(e.size());
          for (std::int64_t k : {std::int64_t{1}, std::int64_t{10}, positive / 2, selectable}) {
            if (k < 1 || k > selectable) continue;
            SCOPED_TRACE("n " + std::to_string(n) + " k " + std::to_string(k) + " beta " +
                         std::to_string(beta) + " seed " + std::to_string(seed) +
                         (use_ex ? " with exclusions" : ""));
            const quarry::Selection cpu = quarry::select_power(s.data(), n, k, beta, seed, e, kCpu);
            const quarry::Selection gpu = quarry::select_power(s.data(), n, k, beta, seed, e, kGpu);
            ASSERT_EQ(gpu.index, cpu.index);
            EXPECT_EQ(std::memcmp(gpu.score.data(), cpu.score.data(), k * sizeof(float)), 0);
          }
        }
  }
}

TEST(CudaPower, BadScoresGiveTheCpuMessage) {
  REQUIRE_GPU();
  for (float bad : {-0.5f, HUGE_VALF, std::nanf("")}) {
    std::vector<float> s = make_scores(50001, 4, 9);
    s[31337] = bad;
    const std::string cpu = error_of([&] { quarry::select_power(s.data(), 50001, 10, 1.0, 3, {}, kCpu); });
    const std::string gpu = error_of([&] { quarry::select_power(s.data(), 50001, 10, 1.0, 3, {}, kGpu); });
    EXPECT_NE(cpu, "(no error)");
    EXPECT_EQ(gpu, cpu) << "score " << bad;
  }
}

// ------------------------------------------------------------------ score_and_select

// On the GPU, score_and_select is exactly score() then select on the GPU (the scores never
// leave the device, and nothing else changes); against the CPU its selected scores agree rank by
// rank within the score tolerance (the indices may differ where scores are within rounding).
TEST(CudaScoreAndSelect, EqualsScoreThenSelect) {
  REQUIRE_GPU();
  std::uint64_t seed = 1301;
  for (std::int64_t M : {0, 5})
    for (std::int64_t C : pick<std::int64_t>({3, 100, 2000}, {3, 2000})) {
      Shape s;
      s.m = M;
      s.c = C;
      s.n = rows_for(4000000 / (C * std::max<std::int64_t>(M, 1)), 50, quick() ? 20003 : 200003);
      s.d = 32;
      s.logits = (seed % 2) == 1;
      s.seed = seed++;
      const Pool p = make_pool(s);
      std::vector<std::int64_t> ex;
      for (std::int64_t i = 0; i < s.n; i += 7) ex.push_back(i);
      for (Acquisition a : acquisitions_for(s)) {
        SCOPED_TRACE(std::string(quarry::acquisition_name(a)) + " on " + s.str());
        const std::vector<float> g = quarry::score(p.input.view(), a, options(p, kGpu), p.emb_view());
        const std::vector<float> c = quarry::score(p.input.view(), a, options(p, kCpu), p.emb_view());
        for (bool power : {false, true}) {
          quarry::SelectOptions so;
          so.k = std::min<std::int64_t>(100, s.n - static_cast<std::int64_t>(ex.size()));
          so.power = power;
          so.beta = 2.0;
          so.seed = 99;
          so.exclude = ex;
          const quarry::Selection one = quarry::score_and_select(p.input.view(), a, options(p, kGpu), so, p.emb_view());
          const quarry::Selection two =
              power ? quarry::select_power(g.data(), s.n, so.k, so.beta, so.seed, ex, kGpu)
                    : quarry::select_topk(g.data(), s.n, so.k, ex, kGpu);
          EXPECT_EQ(one.index, two.index) << (power ? "power" : "topk");
          EXPECT_EQ(one.score, two.score) << (power ? "power" : "topk");
          if (!power) {
            // |g_i - c_i| <= t_i for every i implies that the r-th largest of g and of c differ
            // by at most max_i t_i: compare rank by rank against that bound.
            double bound = 0;
            for (std::int64_t i = 0; i < s.n; ++i)
              bound = std::max(bound, tolerance(a, C, M, s.d > 0 ? p.hnorm[i] : 1.0, c[i]));
            const quarry::Selection cpu = quarry::select_topk(c.data(), s.n, so.k, ex, kCpu);
            for (std::int64_t r = 0; r < so.k; ++r)
              EXPECT_LE(std::fabs(static_cast<double>(one.score[r]) - cpu.score[r]), bound) << "rank " << r;
          }
        }
      }
    }
}

}  // namespace
}  // namespace cuda_test
