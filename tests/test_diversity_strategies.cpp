// Diversity strategies: uncertain-k-center, cluster-margin, k-means, determinism across
// threads, progress and cancellation, small pools, errors and names. References in
// diversity_reference.hpp.
#include <gtest/gtest.h>
#include <omp.h>

#include "diversity_reference.hpp"

namespace diversity_test {
namespace {

// ------------------------------------------------------------------ uncertain-kcenter

TEST(UncertainKCenter, EqualsKCenterOnTheTopCandidates) {
  const Pool pl = make_pool(1500, 12, 6, 17);
  const ArrayView out = pl.out();
  for (const auto acq : {quarry::Acquisition::entropy, quarry::Acquisition::margin, quarry::Acquisition::badge_norm}) {
    for (std::int64_t labeled : {0, 60}) {
      auto lab = random_subset(pl.n, labeled, 5);
      DiversityOptions o = opts(40, lab);
      o.candidates = 300;
      o.acquisition = acq;
      const Selection s = run(DiversityStrategy::uncertain_kcenter, pl.emb(), &out, o);
      // By hand: the top 300 by the acquisition, then kcenter on those rows plus the labeled.
      const ArrayView emb = pl.emb();
      const std::vector<float> sc = quarry::score(out, acq, {}, &emb);
      std::set<std::int64_t> ex(lab.begin(), lab.end());
      std::vector<std::int64_t> idx;
      for (std::int64_t i = 0; i < pl.n; ++i)
        if (!ex.count(i)) idx.push_back(i);
      std::sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) { return sc[a] != sc[b] ? sc[a] > sc[b] : a < b; });
      idx.resize(300);
      std::vector<std::int64_t> sub(idx.begin(), idx.end());
      sub.insert(sub.end(), lab.begin(), lab.end());
      std::sort(sub.begin(), sub.end());
      std::vector<float> hs;
      std::vector<std::int64_t> labpos;
      for (std::size_t r = 0; r < sub.size(); ++r) {
        hs.insert(hs.end(), &pl.h[sub[r] * pl.d], &pl.h[sub[r] * pl.d] + pl.d);
        if (ex.count(sub[r])) labpos.push_back(static_cast<std::int64_t>(r));
      }
      const std::int64_t m = static_cast<std::int64_t>(sub.size());
      const Selection k = run(DiversityStrategy::kcenter, ArrayView{hs.data(), DType::f32, {m, pl.d}}, nullptr,
                              opts(40, labpos));
      std::vector<std::int64_t> mapped;
      for (std::int64_t i : k.index) mapped.push_back(sub[i]);
      EXPECT_EQ(s.index, mapped) << quarry::acquisition_name(acq) << " labeled=" << labeled;
      EXPECT_EQ(s.score, k.score);
      expect_valid(s, pl.n, 40, lab);
    }
  }
}

TEST(UncertainKCenter, AcceptsACommittee) {
  const std::int64_t m = 4, n = 500, c = 5, d = 8;
  std::vector<float> committee;
  for (std::int64_t j = 0; j < m; ++j) {
    const auto p = random_probs(n, c, static_cast<std::uint32_t>(40 + j));
    committee.insert(committee.end(), p.begin(), p.end());
  }
  const auto h = blob_embeddings(n, d, 4, 2);
  const ArrayView out{committee.data(), DType::f32, {m, n, c}};
  DiversityOptions o = opts(20);
  o.acquisition = quarry::Acquisition::bald;
  const Selection s = run(DiversityStrategy::uncertain_kcenter, ArrayView{h.data(), DType::f32, {n, d}}, &out, o);
  expect_valid(s, n, 20, {});
  // Default candidates: 10 k = 200 most informative by BALD.
  const std::vector<float> sc = quarry::score(out, quarry::Acquisition::bald);
  const Selection top = quarry::select_topk(sc.data(), n, 200);
  const std::set<std::int64_t> cand(top.index.begin(), top.index.end());
  for (std::int64_t i : s.index) EXPECT_TRUE(cand.count(i)) << i;
}

// ------------------------------------------------------------------ cluster-margin

TEST(ClusterMargin, RoundRobinOverClustersInIncreasingSize) {
  const Pool pl = make_pool(2000, 8, 5, 23);
  const ArrayView out = pl.out();
  // Given clusters: sizes 1 .. 10 as cluster ids in a skewed draw.
  std::mt19937 rng(3);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(pl.n));
  for (auto& l : labels) {
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    l = static_cast<std::int32_t>(std::floor(10 * u * u));
  }
  const auto lab = random_subset(pl.n, 100, 9);
  DiversityOptions o = opts(120, lab, 4);
  o.candidates = 400;
  o.cluster_labels = labels;
  const Selection s = run(DiversityStrategy::cluster_margin, pl.emb(), &out, o);
  expect_valid(s, pl.n, 120, lab);
  // The candidates: the 400 lowest-margin (largest margin score) selectable samples.
  const std::vector<float> margin = quarry::score(out, quarry::Acquisition::margin);
  const Selection top = quarry::select_topk(margin.data(), pl.n, 400, lab);
  std::map<std::int32_t, std::int64_t> size;
  for (std::int64_t i : top.index) ++size[labels[i]];
  std::vector<std::pair<std::int64_t, std::int32_t>> order;  // (size, id)
  for (auto [id, cnt] : size) order.emplace_back(cnt, id);
  std::sort(order.begin(), order.end());
  std::vector<std::int32_t> expected;
  for (std::int64_t round = 0; static_cast<std::int64_t>(expected.size()) < 120; ++round)
    for (auto [cnt, id] : order)
      if (round < cnt && static_cast<std::int64_t>(expected.size()) < 120) expected.push_back(id);
  const std::set<std::int64_t> cand(top.index.begin(), top.index.end());
  std::vector<std::int32_t> got;
  for (std::int64_t r = 0; r < s.size(); ++r) {
    EXPECT_TRUE(cand.count(s.index[r])) << s.index[r] << " is not a candidate";
    got.push_back(labels[s.index[r]]);
    EXPECT_EQ(s.score[r], margin[s.index[r]]);
  }
  EXPECT_EQ(got, expected);
  // Another seed: the same clusters in the same order, other members.
  o.seed = 5;
  const Selection t = run(DiversityStrategy::cluster_margin, pl.emb(), &out, o);
  std::vector<std::int32_t> got2;
  for (std::int64_t i : t.index) got2.push_back(labels[i]);
  EXPECT_EQ(got2, expected);
  EXPECT_NE(t.index, s.index);
}

TEST(ClusterMargin, WithKMeansPicksOnlyCandidates) {
  const Pool pl = make_pool(1500, 10, 4, 29);
  const ArrayView out = pl.out();
  DiversityOptions o = opts(50, {}, 1);
  o.candidates = 200;
  o.clusters = 12;
  const Selection s = run(DiversityStrategy::cluster_margin, pl.emb(), &out, o);
  expect_valid(s, pl.n, 50, {});
  const std::vector<float> margin = quarry::score(out, quarry::Acquisition::margin);
  const Selection top = quarry::select_topk(margin.data(), pl.n, 200);
  const std::set<std::int64_t> cand(top.index.begin(), top.index.end());
  for (std::int64_t i : s.index) EXPECT_TRUE(cand.count(i));
  // k = candidates: the batch is the candidate set.
  o.k = 200;
  const Selection all = run(DiversityStrategy::cluster_margin, pl.emb(), &out, o);
  EXPECT_EQ(std::set<std::int64_t>(all.index.begin(), all.index.end()), cand);
}

// ------------------------------------------------------------------ k-means

TEST(KMeans, LabelsAreTheNearestCentroidsAndCentroidsTheMeans) {
  const std::int64_t n = 1500, d = 6, k = 9;
  const auto h = blob_embeddings(n, d, 9, 41);
  quarry::KMeansOptions ko;
  ko.clusters = k;
  ko.iterations = 100;
  ko.seed = 3;
  const quarry::KMeansResult r = quarry::kmeans(ArrayView{h.data(), DType::f32, {n, d}}, ko);
  ASSERT_TRUE(r.converged) << r.iterations;
  for (std::int64_t i = 0; i < n; ++i) {
    std::int32_t bj = -1;
    double bv = kInf;
    for (std::int64_t j = 0; j < k; ++j) {
      const double v = sqdist(&h[i * d], &r.centroids[j * d], d);
      if (v < bv) {
        bv = v;
        bj = static_cast<std::int32_t>(j);
      }
    }
    ASSERT_EQ(r.labels[i], bj) << i;
  }
  for (std::int64_t j = 0; j < k; ++j) {
    std::vector<double> s(static_cast<std::size_t>(d), 0.0);
    std::int64_t cnt = 0;
    for (std::int64_t i = 0; i < n; ++i)
      if (r.labels[i] == j) {
        ++cnt;
        for (std::int64_t q = 0; q < d; ++q) s[q] += h[i * d + q];
      }
    ASSERT_GT(cnt, 0);
    for (std::int64_t q = 0; q < d; ++q) EXPECT_EQ(r.centroids[j * d + q], static_cast<float>(s[q] / cnt));
  }
}

// ------------------------------------------------------------------ determinism across threads

TEST(Determinism, EveryStrategyIsIndependentOfTheThreadCount) {
  const Pool pl = make_pool(30000, 20, 10, 50, 10);
  const ArrayView out = pl.out();
  const auto lab = random_subset(pl.n, 500, 6);
  const int saved = omp_get_max_threads();
  for (const DiversityStrategy s : quarry::all_diversity_strategies()) {
    for (const bool labeled : {false, true}) {
      DiversityOptions o = opts(200, labeled ? lab : std::vector<std::int64_t>{}, 77);
      o.clusters = 40;
      o.kmeans_iterations = 5;
      omp_set_num_threads(1);
      const Selection one = run(s, pl.emb(), &out, o);
      omp_set_num_threads(2);
      const Selection two = run(s, pl.emb(), &out, o);
      omp_set_num_threads(3);
      const Selection three = run(s, pl.emb(), &out, o);
      omp_set_num_threads(saved);
      EXPECT_EQ(one.index, two.index) << quarry::diversity_strategy_name(s);
      EXPECT_EQ(one.score, two.score) << quarry::diversity_strategy_name(s);
      EXPECT_EQ(one.index, three.index) << quarry::diversity_strategy_name(s);
      expect_valid(one, pl.n, 200, o.exclude);
    }
  }
}

// ------------------------------------------------------------------ progress, small pools

TEST(Progress, ReportsEveryPickAndCanCancel) {
  const Pool pl = make_pool(500, 8, 4, 1);
  const ArrayView out = pl.out();
  DiversityOptions o = opts(25);
  std::vector<std::int64_t> done;
  o.progress = [&](const quarry::Progress& p) {
    if (std::string(p.phase) == "picking") {
      EXPECT_EQ(p.total, 25);
      done.push_back(p.done);
    }
  };
  run(DiversityStrategy::badge, pl.emb(), &out, o);
  std::vector<std::int64_t> want(25);
  std::iota(want.begin(), want.end(), 1);
  EXPECT_EQ(done, want);
  o.progress = [](const quarry::Progress& p) {
    if (p.done == 3) throw quarry::Error("cancelled");
  };
  expect_error([&] { run(DiversityStrategy::kcenter, pl.emb(), nullptr, o); }, {"cancelled"});
}

TEST(SmallPools, OneSampleAndKZero) {
  const float h[3] = {1, 2, 3};
  const float p[2] = {0.25f, 0.75f};
  const ArrayView emb{h, DType::f32, {1, 3}}, out{p, DType::f32, {1, 2}};
  for (const DiversityStrategy s : quarry::all_diversity_strategies()) {
    const Selection one = run(s, emb, &out, opts(1));
    EXPECT_EQ(one.index, std::vector<std::int64_t>{0}) << quarry::diversity_strategy_name(s);
    EXPECT_EQ(run(s, emb, &out, opts(0)).size(), 0);
  }
}

// ------------------------------------------------------------------ errors

TEST(Errors, BadInputsAreClearErrors) {
  const Pool pl = make_pool(100, 4, 3, 2);
  const ArrayView out = pl.out();
  const ArrayView emb = pl.emb();
  const ArrayView short_out{pl.p.data(), DType::f32, {90, 3}};
  expect_error([&] { run(DiversityStrategy::badge, emb, &short_out, opts(5)); },
               {"input has 90 samples", "[90, 3]", "embeddings has 100", "[100, 4]"});
  expect_error([&] { run(DiversityStrategy::kcenter, emb, nullptr, opts(101)); },
               {"k = 101", "only 100 are selectable"});
  expect_error([&] { run(DiversityStrategy::badge, emb, &out, opts(98, {1, 2, 3})); },
               {"k = 98", "only 97", "3 excluded"});
  expect_error([&] { run(DiversityStrategy::kcenter, emb, nullptr, opts(5, {100})); },
               {"excluded index 100", "[0, 100)"});
  std::vector<float> nan = pl.h;
  nan[37 * 4 + 2] = std::nanf("");
  DiversityOptions named = opts(5);
  named.embeddings_name = "h.npy";
  expect_error([&] { run(DiversityStrategy::kcenter, ArrayView{nan.data(), DType::f32, {100, 4}}, nullptr, named); },
               {"h.npy", "row 37", "NaN or Inf"});
  std::vector<double> big(pl.h.begin(), pl.h.end());
  big[5 * 4] = 1e300;
  expect_error([&] { run(DiversityStrategy::badge, ArrayView{big.data(), DType::f64, {100, 4}}, &out, opts(5)); },
               {"row 5", "float32 range"});
  expect_error([&] { run(DiversityStrategy::kcenter, ArrayView{pl.h.data(), DType::f32, {400}}, nullptr, opts(5)); },
               {"embeddings [N, D]", "[400]"});
  std::vector<std::int32_t> ints(400);
  expect_error([&] { run(DiversityStrategy::kcenter, ArrayView{ints.data(), DType::i32, {100, 4}}, nullptr, opts(5)); },
               {"int32"});
  expect_error([&] { run(DiversityStrategy::badge, emb, nullptr, opts(5)); }, {"badge needs the model outputs"});
  const ArrayView committee{pl.p.data(), DType::f32, {3, 100, 1}};
  expect_error([&] { run(DiversityStrategy::badge, emb, &committee, opts(5)); }, {"[N, C]", "[3, 100, 1]"});
  DiversityOptions few = opts(50);
  few.candidates = 20;
  expect_error([&] { run(DiversityStrategy::uncertain_kcenter, emb, &out, few); }, {"candidates (20)", "k (50)"});
  DiversityOptions gpu = opts(5);
  gpu.device = {quarry::DeviceKind::cuda, 0};
  if (quarry::cuda_device_count() == 0)  // no build or no device: refused, saying why
    expect_error([&] { run(DiversityStrategy::badge, emb, &out, gpu); }, {"cuda:0", "use --device cpu"});
  std::vector<float> badp = pl.p;
  badp[12 * 3] = -0.5f;
  DiversityOptions in = opts(5);
  in.input_name = "P.npy";
  const ArrayView bad_out{badp.data(), DType::f32, {100, 3}};
  expect_error([&] { run(DiversityStrategy::badge, emb, &bad_out, in); },
               {"P.npy", "row 12"});
  expect_error([] { quarry::parse_diversity_strategy("coreset"); },
               {"'coreset'", "badge, kcenter, cluster-margin, uncertain-kcenter"});
  quarry::KMeansOptions ko;
  ko.clusters = 101;
  expect_error([&] { quarry::kmeans(emb, ko); }, {"clusters", "100", "101"});
  DiversityOptions bad_labels = opts(5);
  bad_labels.cluster_labels.assign(99, 0);
  expect_error([&] { run(DiversityStrategy::cluster_margin, emb, &out, bad_labels); }, {"cluster labels", "100", "99"});
}

TEST(Names, RoundTrip) {
  for (const DiversityStrategy s : quarry::all_diversity_strategies())
    EXPECT_EQ(quarry::parse_diversity_strategy(quarry::diversity_strategy_name(s)), s);
  EXPECT_FALSE(quarry::diversity_needs_outputs(DiversityStrategy::kcenter));
  EXPECT_TRUE(quarry::diversity_needs_outputs(DiversityStrategy::badge));
}

}  // namespace
}  // namespace diversity_test
