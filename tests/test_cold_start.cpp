// The cold-start strategies, TypiClust and ProbCover, against brute-force references in double:
// the most typical member of each cluster, and greedy max coverage over a materialised N x N
// ball matrix.
#include <gtest/gtest.h>
#include <omp.h>

#include "diversity_reference.hpp"

namespace diversity_test {
namespace {

// Three tight blobs far apart (n / 3 samples each, in blob order): any clustering finds them.
std::vector<float> far_blobs(std::int64_t n, std::int64_t d, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> h(static_cast<std::size_t>(n * d));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) h[i * d + j] = (j == i * 3 / n ? 100.0f : 0.0f) + g(rng);
  return h;
}

int blob_of(std::int64_t i, std::int64_t n) { return static_cast<int>(i * 3 / n); }

// Typicality of i within `members`: 1 / the mean distance to its `kn` nearest other members.
double reference_typicality(const std::vector<float>& h, std::int64_t d, std::int64_t i,
                            const std::vector<std::int64_t>& members, std::size_t kn) {
  std::vector<double> dist;
  for (std::int64_t j : members)
    if (j != i) dist.push_back(std::sqrt(sqdist(&h[i * d], &h[j * d], d)));
  std::sort(dist.begin(), dist.end());
  kn = std::min(kn, dist.size());
  double s = 0;
  for (std::size_t r = 0; r < kn; ++r) s += dist[r];
  return 1.0 / (s / static_cast<double>(kn));
}

TEST(TypiClust, PicksTheMostTypicalMemberOfEachCluster) {
  const std::int64_t n = 600, d = 4;
  const auto h = far_blobs(n, d, 3);
  DiversityOptions o = opts(3);
  o.clusters = 3;
  const Selection s = run(DiversityStrategy::typiclust, ArrayView{h.data(), DType::f32, {n, d}}, nullptr, o);
  expect_valid(s, n, 3, {});
  std::set<int> blobs;
  for (std::size_t t = 0; t < 3; ++t) {
    const int b = blob_of(s.index[t], n);
    blobs.insert(b);
    std::vector<std::int64_t> members;
    for (std::int64_t i = 0; i < n; ++i)
      if (blob_of(i, n) == b) members.push_back(i);
    std::int64_t best = -1;
    double best_t = -1;
    for (std::int64_t i : members) {
      const double ti = reference_typicality(h, d, i, members, 20);
      if (ti > best_t) best_t = ti, best = i;
    }
    EXPECT_EQ(s.index[t], best) << "pick " << t;
    EXPECT_NEAR(s.score[t], best_t, 1e-5 * best_t);
  }
  EXPECT_EQ(blobs.size(), 3u);  // one per cluster
}

TEST(TypiClust, TheLeastCoveredClustersComeFirst) {
  const std::int64_t n = 300, d = 3;
  const auto h = far_blobs(n, d, 5);
  // Five labeled samples in blob 0: the two picks come from blobs 1 and 2, then blob 0's turn
  // comes only after each of them has five.
  DiversityOptions o = opts(2, {0, 1, 2, 3, 4});
  o.clusters = 3;
  Selection s = run(DiversityStrategy::typiclust, ArrayView{h.data(), DType::f32, {n, d}}, nullptr, o);
  expect_valid(s, n, 2, o.exclude);
  EXPECT_EQ(std::set<int>({blob_of(s.index[0], n), blob_of(s.index[1], n)}), std::set<int>({1, 2}));
  o.k = 12;  // 5 + 5 for blobs 1 and 2, then 1 each
  s = run(DiversityStrategy::typiclust, ArrayView{h.data(), DType::f32, {n, d}}, nullptr, o);
  int per_blob[3] = {0, 0, 0};
  for (std::int64_t i : s.index) ++per_blob[blob_of(i, n)];
  EXPECT_EQ(per_blob[0], 1);
  EXPECT_EQ(per_blob[1], 6);
  EXPECT_EQ(per_blob[2], 5);  // ties: the larger cluster (equal here), then the lower id
}

// Greedy max coverage over the N x N ball matrix, in double.
std::vector<std::int64_t> reference_probcover(const std::vector<float>& h, std::int64_t n, std::int64_t d,
                                              double radius, const std::vector<std::int64_t>& labeled,
                                              std::int64_t k) {
  std::vector<std::vector<char>> in(static_cast<std::size_t>(n), std::vector<char>(static_cast<std::size_t>(n)));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) in[i][j] = sqdist(&h[i * d], &h[j * d], d) <= radius * radius;
  std::vector<char> covered(static_cast<std::size_t>(n), 0), taken(static_cast<std::size_t>(n), 0);
  for (std::int64_t i : labeled) {
    taken[i] = 1;
    for (std::int64_t j = 0; j < n; ++j) covered[j] |= in[i][j];
  }
  std::vector<std::int64_t> picks;
  for (std::int64_t t = 0; t < k; ++t) {
    std::int64_t best = -1, best_count = -1;
    for (std::int64_t i = 0; i < n; ++i) {
      if (taken[i]) continue;
      std::int64_t c = 0;
      for (std::int64_t j = 0; j < n; ++j) c += in[i][j] && !covered[j];
      if (c > best_count) best_count = c, best = i;
    }
    if (best_count == 0) break;
    picks.push_back(best);
    taken[best] = 1;
    for (std::int64_t j = 0; j < n; ++j) covered[j] |= in[best][j];
  }
  return picks;
}

TEST(ProbCover, MatchesTheBruteForceGreedy) {
  struct Case {
    std::int64_t n, d, k, labeled;
    double radius;
  };
  for (const Case& cs : {Case{500, 5, 25, 0, 2.0}, Case{800, 8, 40, 30, 2.5}, Case{300, 2, 30, 10, 0.8}}) {
    const auto h = blob_embeddings(cs.n, cs.d, 6, static_cast<std::uint32_t>(cs.n));
    const auto lab = random_subset(cs.n, cs.labeled, 9);
    DiversityOptions o = opts(cs.k, lab);
    o.radius = cs.radius;
    const Selection s = run(DiversityStrategy::probcover, ArrayView{h.data(), DType::f32, {cs.n, cs.d}}, nullptr, o);
    expect_valid(s, cs.n, cs.k, lab);
    const auto want = reference_probcover(h, cs.n, cs.d, cs.radius, lab, cs.k);
    ASSERT_LE(want.size(), s.index.size());
    EXPECT_EQ(std::vector<std::int64_t>(s.index.begin(), s.index.begin() + static_cast<std::ptrdiff_t>(want.size())),
              want)
        << "n=" << cs.n << " radius=" << cs.radius;
    for (std::size_t t = want.size(); t < s.index.size(); ++t) EXPECT_EQ(s.score[t], 0.0f);  // drawn at random
  }
}

TEST(ProbCover, TheChosenRadiusKeepsBallsInsideClusters) {
  const std::int64_t n = 600, d = 4;
  const auto h = far_blobs(n, d, 7);
  DiversityOptions o = opts(3);
  o.clusters = 3;  // radius 0: chosen from the purity
  const Selection s = run(DiversityStrategy::probcover, ArrayView{h.data(), DType::f32, {n, d}}, nullptr, o);
  expect_valid(s, n, 3, {});
  EXPECT_EQ(std::set<int>({blob_of(s.index[0], n), blob_of(s.index[1], n), blob_of(s.index[2], n)}),
            std::set<int>({0, 1, 2}));
  // The radius is below the gap between blobs and covers a blob's bulk: each pick covers most
  // of its blob.
  for (float v : s.score) EXPECT_GT(v, 150.0f);
}

TEST(ColdStart, TheSameOnAnyThreadCount) {
  const std::int64_t n = 3000, d = 16;  // a cluster above the 1000-member typicality reference
  const auto h = blob_embeddings(n, d, 2, 21);
  for (DiversityStrategy st : {DiversityStrategy::typiclust, DiversityStrategy::probcover}) {
    DiversityOptions o = opts(20, random_subset(n, 15, 2), 5);
    o.clusters = 2;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const Selection one = run(st, ArrayView{h.data(), DType::f32, {n, d}}, nullptr, o);
    omp_set_num_threads(std::max(2, saved));
    const Selection many = run(st, ArrayView{h.data(), DType::f32, {n, d}}, nullptr, o);
    omp_set_num_threads(saved);
    EXPECT_EQ(one.index, many.index) << diversity_strategy_name(st);
    expect_valid(one, n, 20, o.exclude);
  }
}

TEST(ColdStart, BadOptionsAreUsageErrors) {
  const std::int64_t n = 50, d = 2;
  const auto h = blob_embeddings(n, d, 2, 1);
  const ArrayView emb{h.data(), DType::f32, {n, d}};
  DiversityOptions o = opts(5);
  o.radius = -1;
  EXPECT_THROW(run(DiversityStrategy::probcover, emb, nullptr, o), quarry::UsageError);
  o = opts(5);
  o.purity = 0;
  EXPECT_THROW(run(DiversityStrategy::probcover, emb, nullptr, o), quarry::UsageError);
  o = opts(5);
  o.neighbours = 0;
  EXPECT_THROW(run(DiversityStrategy::typiclust, emb, nullptr, o), quarry::UsageError);
  o = opts(5);
  o.clusters = 51;
  EXPECT_THROW(run(DiversityStrategy::typiclust, emb, nullptr, o), quarry::UsageError);
  EXPECT_FALSE(quarry::diversity_needs_outputs(DiversityStrategy::typiclust));
  EXPECT_EQ(quarry::parse_diversity_strategy("probcover"), DiversityStrategy::probcover);
}

}  // namespace
}  // namespace diversity_test
