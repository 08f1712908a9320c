// The loop's strategies on given outputs (no model, no LibTorch): parse_strategy's names and
// errors, batchbald as a loop strategy, and balanced:NAME (its quotas, its per-class picks).
// Simulate and project next run them end to end in test_train.cpp and test_project.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <set>

#include "quarry/batchbald.hpp"
#include "quarry/error.hpp"
#include "simulate/strategy.hpp"

namespace {

using quarry::loop::balanced_quotas;
using quarry::loop::parse_strategy;
using quarry::loop::Strategy;
using V = std::vector<std::int64_t>;

quarry::Array floats(const std::vector<float>& v, std::vector<std::int64_t> shape) {
  quarry::Array a = quarry::Array::allocate(quarry::DType::f32, std::move(shape), "test");
  std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
  return a;
}

std::string usage_error(const std::string& name) {
  try {
    parse_strategy(name);
  } catch (const quarry::UsageError& e) {
    return e.what();
  }
  return "no UsageError";
}

TEST(LoopStrategy, NamesBatchBaldAndBalanced) {
  const Strategy b = parse_strategy("batchbald");
  EXPECT_EQ(b.kind, Strategy::Kind::batchbald);
  EXPECT_TRUE(b.committee());
  EXPECT_FALSE(b.balanced);
  const Strategy e = parse_strategy("balanced:entropy");
  EXPECT_EQ(e.name, "balanced:entropy");
  EXPECT_EQ(e.kind, Strategy::Kind::acquisition);
  EXPECT_EQ(e.acquisition, quarry::Acquisition::entropy);
  EXPECT_TRUE(e.balanced);
  EXPECT_FALSE(e.committee());
  EXPECT_TRUE(parse_strategy("balanced:batchbald").committee());
  EXPECT_TRUE(parse_strategy("balanced:bald").committee());
  EXPECT_EQ(parse_strategy("balanced:kcenter").kind, Strategy::Kind::diversity);
  // balanced:random needs the model's predictions; random does not.
  EXPECT_TRUE(parse_strategy("balanced:random").needs_model());
  EXPECT_FALSE(parse_strategy("random").needs_model());
  const std::string names = quarry::loop::strategy_names();
  EXPECT_NE(names.find("batchbald"), std::string::npos) << names;
  EXPECT_NE(names.find("balanced:NAME"), std::string::npos) << names;

  EXPECT_NE(usage_error("balanced:").find("balanced:NAME needs a strategy NAME"), std::string::npos);
  EXPECT_NE(usage_error("balanced:balanced:entropy").find("does not nest"), std::string::npos);
  EXPECT_NE(usage_error("balanced:balanced").find("does not nest"), std::string::npos);
  EXPECT_NE(usage_error("balanced").find("balanced:NAME"), std::string::npos);
  const std::string typo = usage_error("balanced:typo");
  EXPECT_NE(typo.find("unknown strategy 'typo' in 'balanced:typo'"), std::string::npos) << typo;
  EXPECT_NE(typo.find("batchbald"), std::string::npos) << typo;
  EXPECT_NE(usage_error("typo").find("unknown strategy 'typo': expected one of random"), std::string::npos);
  try {
    parse_strategy("balanced:", "--strategies");
    ADD_FAILURE();
  } catch (const quarry::UsageError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("--strategies: strategy 'balanced:'", 0), 0u) << e.what();
  }
}

TEST(LoopStrategy, BalanceTargets) {
  using quarry::loop::parse_balance_target;
  EXPECT_EQ(parse_balance_target("0.5,0.5", 2, "--balance-target"), (std::vector<double>{0.5, 0.5}));
  EXPECT_EQ(parse_balance_target("1,3", 2, "--balance-target"), (std::vector<double>{0.25, 0.75}));
  EXPECT_EQ(parse_balance_target("0,2,0", 3, "--balance-target"), (std::vector<double>{0, 1, 0}));
  for (const char* bad : {"0.5", "0.5,0.5,0", "a,b", "-1,2", "0,0", "0.5,,0.5", "", "nan,1", "1,inf", "0.5,0.5,"}) {
    try {
      parse_balance_target(bad, 2, "--balance-target");
      ADD_FAILURE() << bad;
    } catch (const quarry::UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("--balance-target"), std::string::npos) << e.what();
    }
  }
}

TEST(LoopStrategy, BalancedQuotasByHand) {
  // Uniform: 10 / 3 = 3.33 each, the one left to the lowest class.
  EXPECT_EQ(balanced_quotas(10, {5, 5, 5}), (V{4, 3, 3}));
  EXPECT_EQ(balanced_quotas(9, {5, 5, 5}), (V{3, 3, 3}));
  // A target: 3.5, 2.1, 1.4 -> 3, 2, 1 and the one left to the largest remainder (class 0).
  EXPECT_EQ(balanced_quotas(7, {10, 10, 10}, {0.5, 0.3, 0.2}), (V{4, 2, 1}));
  // Equal remainders: the lower class first.
  EXPECT_EQ(balanced_quotas(3, {10, 10}, {0.5, 0.5}), (V{2, 1}));
  // Class 0 has 1 of its 3: its surplus of 2 goes to the others equally.
  EXPECT_EQ(balanced_quotas(9, {1, 10, 10}), (V{1, 4, 4}));
  // In proportion to the target: class 1 (2 asked, 1 there) gives 1 to classes 0 and 2 by
  // 0.2 : 0.6, so to class 2.
  EXPECT_EQ(balanced_quotas(10, {10, 1, 10}, {0.2, 0.2, 0.6}), (V{2, 1, 7}));
  // A cascade: 3 each; class 0 short by 2 -> 2/3 more each to 1, 2, 3, the remainders tie ->
  // classes 1 and 2; class 1 is then short by 1 -> class 3 (class 2 is full).
  EXPECT_EQ(balanced_quotas(12, {1, 3, 4, 100}), (V{1, 3, 4, 4}));
  // k larger than the pool: every candidate.
  EXPECT_EQ(balanced_quotas(50, {2, 3, 0}), (V{2, 3, 0}));
  EXPECT_EQ(balanced_quotas(0, {2, 3}), (V{0, 0}));
  // A class with target 0 gets only what the others cannot take (equally among the open ones).
  EXPECT_EQ(balanced_quotas(5, {2, 10}, {1.0, 0.0}), (V{2, 3}));
  EXPECT_EQ(balanced_quotas(5, {2, 10, 10}, {1.0, 0.0, 0.0}), (V{2, 2, 1}));
  // A class with no candidates.
  EXPECT_EQ(balanced_quotas(6, {0, 4, 4}), (V{0, 3, 3}));
  // Always min(k, pool) in all, never more than a class has.
  std::mt19937 rng(7);
  for (int t = 0; t < 500; ++t) {
    V avail(1 + rng() % 6);
    std::int64_t total = 0;
    for (auto& a : avail) total += a = rng() % 8;
    std::vector<double> target(avail.size());
    for (auto& w : target) w = rng() % 4;
    if (std::all_of(target.begin(), target.end(), [](double w) { return w == 0; })) target[0] = 1;
    const std::int64_t k = rng() % 30;
    const V q = balanced_quotas(k, avail, target);
    std::int64_t sum = 0;
    for (std::size_t c = 0; c < q.size(); ++c) {
      EXPECT_GE(q[c], 0);
      EXPECT_LE(q[c], avail[c]);
      sum += q[c];
    }
    EXPECT_EQ(sum, std::min(k, total));
  }
}

// Eight samples, two classes: p(class 0) = p0[i]; 0-3 are predicted class 0, 4-7 class 1.
quarry::Inference two_classes() {
  const std::vector<float> p0{0.9f, 0.6f, 0.8f, 0.55f, 0.45f, 0.48f, 0.42f, 0.1f};
  std::vector<float> p;
  for (float x : p0) p.insert(p.end(), {x, 1 - x});
  quarry::Inference inf;
  inf.probs = floats(p, {8, 2});
  return inf;
}

V picks(const std::string& strategy, const quarry::Inference& inf, std::int64_t k, V exclude = {},
        std::vector<double> target = {}, std::uint64_t seed = 1, double batchbald_restart = 0.5) {
  quarry::loop::StepOptions o;
  o.k = k;
  o.batchbald_restart = batchbald_restart;
  o.exclude = std::move(exclude);
  o.seed = seed;
  o.device = quarry::parse_device("cpu");
  o.balance_target = std::move(target);
  const std::int64_t n = inf.probs.shape()[0];
  return quarry::loop::select_on_outputs(parse_strategy(strategy), inf, n, o).index;
}

TEST(LoopStrategy, BalancedTopKFillsEachClassInScoreOrder) {
  const auto inf = two_classes();
  // Entropy ranks by |p0 - 0.5|: 5, 4, 6, 1, 2, 0, 7 (3 excluded). Plain top-4 takes three of
  // class 1; balanced takes 2 + 2, each class in score order, class 0 first.
  EXPECT_EQ(picks("entropy", inf, 4, {3}), (V{5, 4, 6, 1}));
  EXPECT_EQ(picks("balanced:entropy", inf, 4, {3}), (V{1, 2, 5, 4}));
  EXPECT_EQ(picks("balanced:margin", inf, 4, {3}), (V{1, 2, 5, 4}));
  // A target of 1 : 3.
  EXPECT_EQ(picks("balanced:entropy", inf, 4, {3}, {0.25, 0.75}), (V{1, 5, 4, 6}));
  // 7: 4 + 3 asked (ties to class 0), class 0 has 3: the surplus goes to class 1.
  EXPECT_EQ(picks("balanced:entropy", inf, 7, {3}), (V{1, 2, 0, 5, 4, 6, 7}));
  // k beyond the pool: all 7 selectable.
  EXPECT_EQ(picks("balanced:entropy", inf, 20, {3}), (V{1, 2, 0, 5, 4, 6, 7}));
  // Nothing left.
  EXPECT_TRUE(picks("balanced:entropy", inf, 3, {0, 1, 2, 3, 4, 5, 6, 7}).empty());
  // balanced:random: 2 of each class's candidates, deterministic for a seed.
  const V r = picks("balanced:random", inf, 4, {3}, {}, 5);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_TRUE(r[0] < 3 && r[1] < 3 && r[0] != r[1]) << r[0] << " " << r[1];
  EXPECT_TRUE(r[2] >= 4 && r[3] >= 4 && r[2] != r[3]) << r[2] << " " << r[3];
  EXPECT_EQ(picks("balanced:random", inf, 4, {3}, {}, 5), r);
}

// A committee [M, N, C] of 3 classes with embeddings; probs its members' mean.
quarry::Inference committee(std::int64_t n, std::uint64_t seed) {
  const std::int64_t m = 4, c = 3, d = 5;
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  std::uniform_real_distribution<float> u(0.05f, 1.0f);
  std::vector<float> com(static_cast<std::size_t>(m * n * c)), mean(static_cast<std::size_t>(n * c), 0.0f),
      emb(static_cast<std::size_t>(n * d));
  for (std::int64_t s = 0; s < m; ++s)
    for (std::int64_t i = 0; i < n; ++i) {
      float* row = &com[static_cast<std::size_t>((s * n + i) * c)];
      float sum = 0;
      for (std::int64_t j = 0; j < c; ++j) sum += row[j] = u(rng) * (j == i % c ? 3.0f : 1.0f);
      for (std::int64_t j = 0; j < c; ++j) mean[static_cast<std::size_t>(i * c + j)] += (row[j] /= sum) / m;
    }
  for (auto& e : emb) e = u(rng);
  quarry::Inference inf;
  inf.committee = floats(com, {m, n, c});
  inf.probs = floats(mean, {n, c});
  inf.embeddings = floats(emb, {n, d});
  return inf;
}

std::int64_t predicted(const quarry::Inference& inf, std::int64_t i) {
  const float* row = inf.probs.as<float>() + i * 3;
  return std::max_element(row, row + 3) - row;
}

TEST(LoopStrategy, BatchBaldIsTheEnginesSelection) {
  const auto inf = committee(40, 3);
  const V exclude{0, 5, 9};
  std::set<V> distinct;  // the restart share reaches the engine: the picks depend on it
  for (double restart : {0.5, 0.0, 1.0}) {
    const V got = picks("batchbald", inf, 15, exclude, {}, 11, restart);
    quarry::BatchBaldOptions b;
    b.seed = 11;
    b.restart = restart;
    EXPECT_EQ(got, quarry::select_batchbald(inf.committee.view(), 15, exclude, b).index) << restart;
    EXPECT_EQ(std::set<std::int64_t>(got.begin(), got.end()).size(), 15u);
    for (auto i : got) EXPECT_EQ(std::count(exclude.begin(), exclude.end(), i), 0) << i;
    distinct.insert(got);
  }
  EXPECT_GE(distinct.size(), 2u);
}

TEST(LoopStrategy, BalancedRunsAnyStrategyPerClass) {
  const auto inf = committee(60, 4);
  V exclude;
  for (std::int64_t i = 0; i < 60; i += 4) exclude.push_back(i);
  std::vector<std::int64_t> available(3, 0);
  for (std::int64_t i = 0; i < 60; ++i)
    if (i % 4) ++available[static_cast<std::size_t>(predicted(inf, i))];
  const V want = balanced_quotas(10, available);
  for (const char* s : {"balanced:random", "balanced:entropy", "balanced:bald", "balanced:batchbald", "balanced:kcenter",
                        "balanced:badge", "balanced:cluster-margin", "balanced:uncertain-kcenter"}) {
    const V got = picks(s, inf, 10, exclude, {}, 21);
    ASSERT_EQ(got.size(), 10u) << s;
    EXPECT_EQ(std::set<std::int64_t>(got.begin(), got.end()).size(), 10u) << s;
    V per_class(3, 0);
    for (std::size_t j = 0; j < got.size(); ++j) {
      EXPECT_NE(got[j] % 4, 0) << s << " picked the excluded " << got[j];
      ++per_class[static_cast<std::size_t>(predicted(inf, got[j]))];
      // Class by class.
      if (j > 0) EXPECT_LE(predicted(inf, got[j - 1]), predicted(inf, got[j])) << s;
    }
    EXPECT_EQ(per_class, want) << s;
    EXPECT_EQ(picks(s, inf, 10, exclude, {}, 21), got) << s << ": not deterministic";
  }
  // Per class, balanced:batchbald is BatchBALD on the class alone: class 0's picks are
  // select_batchbald's with every other sample excluded, seeded mix(seed, 0).
  const V got = picks("balanced:batchbald", inf, 10, exclude, {}, 21);
  V others = exclude;
  for (std::int64_t i = 0; i < 60; ++i)
    if (i % 4 && predicted(inf, i) != 0) others.push_back(i);
  quarry::BatchBaldOptions b;
  b.seed = quarry::loop::mix(21, 0);
  const V class0 = quarry::select_batchbald(inf.committee.view(), want[0], others, b).index;
  EXPECT_EQ(V(got.begin(), got.begin() + want[0]), class0);
}

}  // namespace

namespace {

TEST(LoopStrategy, AutoChoosesByTheBudget) {
  const Strategy a = parse_strategy("auto");
  EXPECT_EQ(a.kind, Strategy::Kind::automatic);
  EXPECT_TRUE(a.needs_model());
  EXPECT_FALSE(a.committee());
  EXPECT_NE(usage_error("balanced:auto").find("cannot be balanced"), std::string::npos) << usage_error("balanced:auto");
  EXPECT_NE(quarry::loop::strategy_names().find("auto"), std::string::npos);
  // Fewer than 10 labels per class: typicality; from there on, BADGE.
  EXPECT_EQ(quarry::loop::auto_strategy(0, 10).diversity, quarry::DiversityStrategy::typiclust);
  EXPECT_EQ(quarry::loop::auto_strategy(99, 10).diversity, quarry::DiversityStrategy::typiclust);
  EXPECT_EQ(quarry::loop::auto_strategy(100, 10).diversity, quarry::DiversityStrategy::badge);
  EXPECT_EQ(quarry::loop::auto_strategy(20, 2).diversity, quarry::DiversityStrategy::badge);
  EXPECT_EQ(quarry::loop::auto_strategy(100, 10).kind, Strategy::Kind::diversity);
}

}  // namespace
