// Top-k and power sampling against a std::sort reference with the tie rule.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "quarry/error.hpp"
#include "quarry/select.hpp"

namespace {

// Reference: sort every selectable index by (score desc, index asc), take k.
std::vector<std::int64_t> reference_topk(const std::vector<float>& s, std::int64_t k,
                                         const std::vector<std::int64_t>& exclude) {
  std::set<std::int64_t> ex(exclude.begin(), exclude.end());
  std::vector<std::int64_t> idx;
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(s.size()); ++i)
    if (!ex.count(i)) idx.push_back(i);
  std::sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) {
    return s[a] != s[b] ? s[a] > s[b] : a < b;
  });
  idx.resize(static_cast<std::size_t>(k));
  return idx;
}

std::vector<float> random_scores(std::int64_t n, int distinct, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> s(static_cast<std::size_t>(n));
  if (distinct > 0) {
    std::uniform_int_distribution<int> d(0, distinct - 1);
    for (float& x : s) x = static_cast<float>(d(rng)) * 0.25f - 1.0f;
  } else {
    std::normal_distribution<float> d(0.0f, 3.0f);
    for (float& x : s) x = d(rng);
  }
  return s;
}

void expect_topk(const std::vector<float>& s, std::int64_t k, const std::vector<std::int64_t>& ex = {}) {
  const quarry::Selection sel = quarry::select_topk(s.data(), static_cast<std::int64_t>(s.size()), k, ex);
  const std::vector<std::int64_t> ref = reference_topk(s, k, ex);
  ASSERT_EQ(sel.index, ref) << "n=" << s.size() << " k=" << k << " excluded=" << ex.size();
  ASSERT_EQ(sel.score.size(), ref.size());
  for (std::size_t r = 0; r < ref.size(); ++r) EXPECT_EQ(sel.score[r], s[ref[r]]);
}

TEST(TopK, MatchesSortOnRandomScores) {
  for (std::int64_t n : {1, 2, 17, 1000, 65537, 300001}) {
    const auto s = random_scores(n, 0, static_cast<std::uint32_t>(n));
    for (std::int64_t k : {std::int64_t{0}, std::int64_t{1}, n / 3, n - 1, n}) {
      if (k < 0) continue;
      expect_topk(s, k);
    }
  }
}

TEST(TopK, TiesGoToTheLowerIndex) {
  for (int distinct : {1, 2, 5, 100}) {
    const auto s = random_scores(100003, distinct, 7u + distinct);
    for (std::int64_t k : {1, 10, 5000, 50000, 100003}) expect_topk(s, k);
  }
}

TEST(TopK, AllEqualScoresGiveTheFirstK) {
  std::vector<float> s(1000000, 0.5f);
  const auto sel = quarry::select_topk(s.data(), 1000000, 1000);
  std::vector<std::int64_t> first(1000);
  std::iota(first.begin(), first.end(), 0);
  EXPECT_EQ(sel.index, first);
}

TEST(TopK, ExclusionsAreNeverSelected) {
  const auto s = random_scores(50000, 0, 3);
  std::vector<std::int64_t> ex;
  std::mt19937 rng(5);
  for (int i = 0; i < 20000; ++i) ex.push_back(static_cast<std::int64_t>(rng() % 50000));
  ex.push_back(ex.front());  // duplicates are harmless
  // Exclude the true top 100 as well, which must then never appear.
  for (std::int64_t i : reference_topk(s, 100, {})) ex.push_back(i);
  std::set<std::int64_t> exs(ex.begin(), ex.end());
  const std::int64_t selectable = 50000 - static_cast<std::int64_t>(exs.size());
  for (std::int64_t k : {std::int64_t{1}, std::int64_t{1000}, selectable}) expect_topk(s, k, ex);
  const auto sel = quarry::select_topk(s.data(), 50000, selectable, ex);
  for (std::int64_t i : sel.index) EXPECT_FALSE(exs.count(i));
}

TEST(TopK, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> s = {0.0f, -0.0f, inf, -inf, 1e-30f, -1e-30f, 3.0f, -0.0f, inf, 0.0f};
  for (std::int64_t k = 0; k <= 10; ++k) expect_topk(s, k);
}

TEST(TopK, ErrorsSayWhatIsWrong) {
  std::vector<float> s = {1, 2, 3, 4};
  try {
    quarry::select_topk(s.data(), 4, 4, {1});
    FAIL() << "k > selectable accepted";
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("only 3 are selectable"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quarry::select_topk(s.data(), 4, 1, {4}), quarry::Error);
  EXPECT_THROW(quarry::select_topk(s.data(), 4, 1, {-1}), quarry::Error);
  EXPECT_THROW(quarry::select_topk(s.data(), 4, -1), quarry::Error);
  s[2] = std::nanf("");
  try {
    quarry::select_topk(s.data(), 4, 1);
    FAIL() << "NaN accepted";
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 2"), std::string::npos) << e.what();
  }
}

TEST(TopK, SameResultForAnyThreadCount) {
  const auto s = random_scores(1 << 20, 50, 11);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto one = quarry::select_topk(s.data(), 1 << 20, 12345);
  omp_set_num_threads(2);
  const auto two = quarry::select_topk(s.data(), 1 << 20, 12345);
  omp_set_num_threads(saved);
  EXPECT_EQ(one.index, two.index);
}

TEST(Power, ReproducibleForASeedAndWithoutDuplicates) {
  std::vector<float> s = random_scores(20000, 0, 9);
  for (float& x : s) x = std::fabs(x);
  const auto a = quarry::select_power(s.data(), 20000, 500, 1.0, 42);
  const auto b = quarry::select_power(s.data(), 20000, 500, 1.0, 42);
  const auto c = quarry::select_power(s.data(), 20000, 500, 1.0, 43);
  EXPECT_EQ(a.index, b.index);
  EXPECT_NE(a.index, c.index);
  EXPECT_EQ(std::set<std::int64_t>(a.index.begin(), a.index.end()).size(), 500u);
  for (std::size_t r = 0; r < a.index.size(); ++r) EXPECT_EQ(a.score[r], s[a.index[r]]);
}

TEST(Power, DrawsWithProbabilityProportionalToScorePowBeta) {
  // Two samples with scores 1 and 3: P(pick the second first) = 3^b / (1 + 3^b).
  const std::vector<float> s = {1.0f, 3.0f};
  for (double beta : {1.0, 2.0}) {
    const int trials = 20000;
    int second = 0;
    for (int t = 0; t < trials; ++t)
      second += quarry::select_power(s.data(), 2, 1, beta, static_cast<std::uint64_t>(t)).index[0] == 1;
    const double p = std::pow(3.0, beta) / (1.0 + std::pow(3.0, beta));
    const double sd = std::sqrt(p * (1 - p) / trials);
    EXPECT_NEAR(second / static_cast<double>(trials), p, 5 * sd) << "beta " << beta;
  }
}

TEST(Power, ZeroScoresComeLastAndExclusionsHold) {
  std::vector<float> s(100, 0.0f);
  for (int i = 0; i < 10; ++i) s[i * 7] = 1.0f + i;
  const auto sel = quarry::select_power(s.data(), 100, 15, 1.0, 1, {0, 1});
  std::set<std::int64_t> first10(sel.index.begin(), sel.index.begin() + 9);
  for (std::int64_t i : first10) EXPECT_GT(s[i], 0.0f);  // 9 positive, selectable (index 0 excluded)
  EXPECT_EQ(std::vector<std::int64_t>(sel.index.begin() + 9, sel.index.end()),
            (std::vector<std::int64_t>{2, 3, 4, 5, 6, 8}));  // then zeros in index order
  s[3] = -1.0f;
  EXPECT_THROW(quarry::select_power(s.data(), 100, 5, 1.0, 1), quarry::Error);
  EXPECT_THROW(quarry::select_power(s.data(), 100, 5, 0.0, 1), quarry::Error);
}

TEST(Power, LargeBetaApproachesTopK) {
  std::vector<float> s = random_scores(1000, 0, 4);
  for (float& x : s) x = 1.0f + std::fabs(x);
  const auto p = quarry::select_power(s.data(), 1000, 10, 1000.0, 7);
  const auto t = quarry::select_topk(s.data(), 1000, 10);
  EXPECT_EQ(p.index, t.index);
}

}  // namespace
