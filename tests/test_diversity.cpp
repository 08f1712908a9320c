// Diversity strategies (BADGE, k-center, cluster-margin, uncertain-k-center, k-means) against
// brute-force double-precision references that materialise what the library never does: the
// full N x N distance matrix, the N x (C D) gradient embeddings. On small pools (N <= 2000).
//
// This file: k-center, BADGE and pruning. Uncertain-k-center, cluster-margin, k-means,
// determinism, progress, errors and names are in test_diversity_strategies.cpp; the shared
// references in diversity_reference.hpp.
#include <gtest/gtest.h>

#include "diversity_reference.hpp"

namespace diversity_test {
namespace {

// ------------------------------------------------------------------ kcenter

TEST(KCenter, MatchesFullDistanceMatrixReference) {
  struct Case {
    std::int64_t n, d, k, labeled;
  };
  for (const Case& cs : {Case{200, 8, 30, 0}, Case{1500, 32, 100, 0}, Case{1500, 32, 100, 40},
                         Case{700, 3, 700, 0}, Case{500, 16, 1, 0}, Case{500, 16, 1, 25},
                         Case{300, 5, 250, 50}, Case{64, 300, 20, 3}}) {
    const auto h = blob_embeddings(cs.n, cs.d, 5, static_cast<std::uint32_t>(cs.n + cs.d));
    auto lab = random_subset(cs.n, cs.labeled, 11);
    const Selection s = run(DiversityStrategy::kcenter, ArrayView{h.data(), DType::f32, {cs.n, cs.d}}, nullptr,
                            opts(cs.k, lab));
    std::sort(lab.begin(), lab.end());
    EXPECT_EQ(s.index, reference_kcenter(h, cs.n, cs.d, lab, cs.k))
        << "n=" << cs.n << " d=" << cs.d << " k=" << cs.k << " labeled=" << cs.labeled;
    expect_valid(s, cs.n, cs.k, lab);
  }
}

TEST(KCenter, ScoresAreTheCoveringRadius) {
  const std::int64_t n = 400, d = 6, k = 50;
  const auto h = blob_embeddings(n, d, 4, 5);
  const Selection s = run(DiversityStrategy::kcenter, ArrayView{h.data(), DType::f32, {n, d}}, nullptr, opts(k));
  // Pick t's score is its distance to the nearest earlier pick (t >= 1), non-increasing.
  for (std::int64_t t = 1; t < k; ++t) {
    double best = kInf;
    for (std::int64_t u = 0; u < t; ++u) best = std::min(best, sqdist(&h[s.index[t] * d], &h[s.index[u] * d], d));
    EXPECT_FLOAT_EQ(s.score[t], static_cast<float>(std::sqrt(best)));
    if (t > 1) EXPECT_LE(s.score[t], s.score[t - 1]);
  }
}

TEST(KCenter, ExactTiesGoToTheLowerIndex) {
  // Integer grids: many equal distances; D = 1 too. With and without labels, up to k = N.
  for (std::int64_t d : {1, 2, 5}) {
    const std::int64_t n = 600;
    const auto h = grid_embeddings(n, d, 7, static_cast<std::uint32_t>(d));
    for (std::int64_t labeled : {0, 30}) {
      auto lab = random_subset(n, labeled, 3);
      std::sort(lab.begin(), lab.end());
      const std::int64_t k = n - labeled;
      const Selection s = run(DiversityStrategy::kcenter, ArrayView{h.data(), DType::f32, {n, d}}, nullptr,
                              opts(k, lab));
      EXPECT_EQ(s.index, reference_kcenter(h, n, d, lab, k)) << "d=" << d << " labeled=" << labeled;
      expect_valid(s, n, k, lab);
    }
  }
}

TEST(KCenter, DuplicatedEmbeddings) {
  // Every row the same: all distances 0, the picks are 0, 1, 2, ... in order.
  const std::int64_t n = 50, d = 4;
  std::vector<float> same(static_cast<std::size_t>(n * d), 1.5f);
  const Selection s = run(DiversityStrategy::kcenter, ArrayView{same.data(), DType::f32, {n, d}}, nullptr, opts(n));
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  EXPECT_EQ(s.index, order);
  // Blocks of duplicates among distinct rows.
  auto h = blob_embeddings(400, 8, 3, 9);
  for (std::int64_t i = 0; i < 400; i += 3) std::copy(&h[0], &h[8], &h[i * 8]);
  for (std::int64_t i = 1; i < 400; i += 7) std::copy(&h[8 * 8], &h[9 * 8], &h[i * 8]);
  for (std::int64_t labeled : {0, 10}) {
    auto lab = random_subset(400, labeled, 1);
    std::sort(lab.begin(), lab.end());
    const Selection t = run(DiversityStrategy::kcenter, ArrayView{h.data(), DType::f32, {400, 8}}, nullptr,
                            opts(400 - labeled, lab));
    EXPECT_EQ(t.index, reference_kcenter(h, 400, 8, lab, 400 - labeled));
  }
}

TEST(KCenter, LabeledDistancesThroughGemmSurviveCancellation) {
  // Far from the origin (||x||² ~ 5e5, distances² ~ 1e2): float GEMM alone cannot order the
  // distances; the exact recomputation of the rows it cannot rule out must.
  const std::int64_t n = 2000, d = 48;
  const auto h = blob_embeddings(n, d, 8, 21, 100.0f);
  auto lab = random_subset(n, 700, 4);
  const Selection s = run(DiversityStrategy::kcenter, ArrayView{h.data(), DType::f32, {n, d}}, nullptr, opts(200, lab));
  std::sort(lab.begin(), lab.end());
  EXPECT_EQ(s.index, reference_kcenter(h, n, d, lab, 200));
}

TEST(KCenter, NearestRowsMatchesBruteForce) {
  for (const bool grid : {false, true}) {
    const std::int64_t n = 1100, m = 1500, d = grid ? 3 : 40;
    const auto xs = grid ? grid_embeddings(n, d, 4, 1) : blob_embeddings(n, d, 5, 1, 30.0f);
    const auto ys = grid ? grid_embeddings(m, d, 4, 2) : blob_embeddings(m, d, 5, 1, 30.0f);
    quarry::FloatRows x, y;
    x.data = xs.data();
    x.n = n;
    x.d = d;
    y.data = ys.data();
    y.n = m;
    y.d = d;
    std::vector<double> d2;
    std::vector<std::int32_t> j;
    quarry::cpu::nearest_rows(x, y, {}, &d2, &j, nullptr, "test");
    for (std::int64_t i = 0; i < n; ++i) {
      std::int32_t bj = -1;
      double bv = kInf;
      for (std::int64_t c = 0; c < m; ++c) {
        const double v = sqdist(&xs[i * d], &ys[c * d], d);
        if (v < bv) {
          bv = v;
          bj = static_cast<std::int32_t>(c);
        }
      }
      ASSERT_EQ(j[i], bj) << "row " << i << (grid ? " (grid)" : "");
      ASSERT_EQ(d2[i], bv);
    }
  }
}

TEST(KCenter, EmbeddingDtypesGiveTheSameSelection) {
  // Grid values are exact in float16, bfloat16 and float64.
  const std::int64_t n = 300, d = 5;
  const auto h = grid_embeddings(n, d, 9, 77);
  std::vector<std::uint16_t> h16(h.size()), hb(h.size());
  std::vector<double> h64(h.begin(), h.end());
  for (std::size_t i = 0; i < h.size(); ++i) {
    h16[i] = quarry::detail::float_to_half(h[i]);
    hb[i] = static_cast<std::uint16_t>(quarry::detail::float_to_bits(h[i]) >> 16);
  }
  const Selection ref = run(DiversityStrategy::kcenter, ArrayView{h.data(), DType::f32, {n, d}}, nullptr, opts(60));
  for (const ArrayView& v : {ArrayView{h16.data(), DType::f16, {n, d}}, ArrayView{hb.data(), DType::bf16, {n, d}},
                             ArrayView{h64.data(), DType::f64, {n, d}}}) {
    const Selection s = run(DiversityStrategy::kcenter, v, nullptr, opts(60));
    EXPECT_EQ(s.index, ref.index) << quarry::dtype_name(v.dtype);
    EXPECT_EQ(s.score, ref.score) << quarry::dtype_name(v.dtype);
  }
}

// ------------------------------------------------------------------ BADGE

TEST(Badge, FirstCentreIsTheLargestGradientNorm) {
  const Pool pl = make_pool(800, 16, 10, 3);
  const ArrayView out = pl.out();
  const Selection s = run(DiversityStrategy::badge, pl.emb(), &out, opts(1));
  const auto p = reference_probs(pl.p, pl.n, pl.c, false);
  std::int64_t best = -1;
  double bv = -1;
  for (std::int64_t i = 0; i < pl.n; ++i) {
    std::int64_t top = 0;
    double a2 = 0, h2 = 0;
    for (std::int64_t j = 1; j < pl.c; ++j)
      if (p[i * pl.c + j] > p[i * pl.c + top]) top = j;
    for (std::int64_t j = 0; j < pl.c; ++j) {
      const double a = p[i * pl.c + j] - (j == top ? 1.0 : 0.0);
      a2 += a * a;
    }
    for (std::int64_t j = 0; j < pl.d; ++j) h2 += static_cast<double>(pl.h[i * pl.d + j]) * pl.h[i * pl.d + j];
    if (a2 * h2 > bv) {
      bv = a2 * h2;
      best = i;
    }
  }
  ASSERT_EQ(s.size(), 1);
  EXPECT_EQ(s.index[0], best);
  EXPECT_NEAR(s.score[0], bv, 1e-5 * bv);
}

TEST(Badge, MatchesMaterialisedGradientEmbeddingsWithTheSameStream) {
  struct Case {
    std::int64_t n, d, c, k, excluded;
    bool logits;
    std::uint64_t seed;
  };
  for (const Case& cs : {Case{600, 16, 10, 60, 0, false, 0}, Case{600, 16, 10, 60, 50, false, 7},
                         Case{400, 1, 5, 40, 0, false, 3}, Case{500, 8, 2, 80, 20, true, 11},
                         Case{300, 12, 3, 300, 0, false, 5}, Case{250, 20, 4, 200, 50, true, 123456789},
                         Case{1200, 24, 10, 150, 100, false, 42}}) {
    Pool pl = make_pool(cs.n, cs.d, cs.c, static_cast<std::uint32_t>(cs.n * 7 + cs.c));
    pl.p = random_probs(cs.n, cs.c, static_cast<std::uint32_t>(cs.seed + 5), cs.logits);
    auto ex = random_subset(cs.n, cs.excluded, 13);
    DiversityOptions o = opts(cs.k, ex, cs.seed);
    o.logits = cs.logits;
    const ArrayView out = pl.out();
    const Selection s = run(DiversityStrategy::badge, pl.emb(), &out, o);
    const auto p = reference_probs(pl.p, cs.n, cs.c, cs.logits);
    EXPECT_EQ(s.index, reference_badge(p, pl.h, cs.n, cs.c, cs.d, ex, cs.k, cs.seed))
        << "n=" << cs.n << " d=" << cs.d << " c=" << cs.c << " k=" << cs.k << " seed=" << cs.seed;
    expect_valid(s, cs.n, cs.k, ex);
  }
}

TEST(Badge, OneClassHasNoGradientAndTakesTheLowestIndices) {
  // C = 1: p = 1 = e_yhat, every gradient embedding is 0, every D² is 0.
  const std::int64_t n = 40, d = 3;
  const auto h = blob_embeddings(n, d, 2, 1);
  std::vector<float> p(static_cast<std::size_t>(n), 1.0f);
  const ArrayView out{p.data(), DType::f32, {n, 1}};
  const Selection s = run(DiversityStrategy::badge, ArrayView{h.data(), DType::f32, {n, d}}, &out, opts(10, {0, 2, 5}));
  EXPECT_EQ(s.index, (std::vector<std::int64_t>{1, 3, 4, 6, 7, 8, 9, 10, 11, 12}));
  for (float v : s.score) EXPECT_EQ(v, 0.0f);
}

TEST(Badge, DuplicatedRowsAndKEqualsN) {
  Pool pl = make_pool(120, 4, 3, 8);
  for (std::int64_t i = 0; i < pl.n; i += 4) {  // every 4th sample duplicates sample 1
    std::copy(&pl.h[4], &pl.h[8], &pl.h[i * 4]);
    std::copy(&pl.p[3], &pl.p[6], &pl.p[i * 3]);
  }
  const ArrayView out = pl.out();
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    const Selection s = run(DiversityStrategy::badge, pl.emb(), &out, opts(pl.n, {}, seed));
    const auto p = reference_probs(pl.p, pl.n, pl.c, false);
    EXPECT_EQ(s.index, reference_badge(p, pl.h, pl.n, pl.c, pl.d, {}, pl.n, seed));
    expect_valid(s, pl.n, pl.n, {});
  }
}

TEST(Badge, ScoresAreTheD2WeightsAtPickTime) {
  const Pool pl = make_pool(300, 6, 4, 12);
  const ArrayView out = pl.out();
  const Selection s = run(DiversityStrategy::badge, pl.emb(), &out, opts(30, {}, 9));
  const auto p = reference_probs(pl.p, pl.n, pl.c, false);
  auto g = [&](std::int64_t i, std::int64_t j, std::int64_t q) {
    std::int64_t top = 0;
    for (std::int64_t c = 1; c < pl.c; ++c)
      if (p[i * pl.c + c] > p[i * pl.c + top]) top = c;
    return (p[i * pl.c + j] - (j == top ? 1.0 : 0.0)) * pl.h[i * pl.d + q];
  };
  for (std::int64_t t = 1; t < s.size(); ++t) {
    double best = kInf;
    for (std::int64_t u = 0; u < t; ++u) {
      double acc = 0;
      for (std::int64_t j = 0; j < pl.c; ++j)
        for (std::int64_t q = 0; q < pl.d; ++q) {
          const double x = g(s.index[t], j, q) - g(s.index[u], j, q);
          acc += x * x;
        }
      best = std::min(best, acc);
    }
    EXPECT_NEAR(s.score[t], best, 1e-5 * best + 1e-9);
  }
}

TEST(Badge, SeedsAreReproducibleAndDiffer) {
  const Pool pl = make_pool(3000, 16, 10, 4);
  const ArrayView out = pl.out();
  const Selection a = run(DiversityStrategy::badge, pl.emb(), &out, opts(100, {}, 1));
  const Selection b = run(DiversityStrategy::badge, pl.emb(), &out, opts(100, {}, 1));
  const Selection c = run(DiversityStrategy::badge, pl.emb(), &out, opts(100, {}, 2));
  EXPECT_EQ(a.index, b.index);
  EXPECT_EQ(a.score, b.score);
  EXPECT_NE(a.index, c.index);
  EXPECT_EQ(a.index[0], c.index[0]);  // the first centre is not random
}

// ------------------------------------------------------------------ pruning is exact

TEST(Pruning, SameResultAsRecomputingEveryDistance) {
  // Large enough for the triangle-inequality and norm tests to skip most of the work and for
  // the relayouts (at 16, 64, 256 centres) to happen; on clustered data, on data far from the
  // origin (the bfloat16 screens and the GEMM bounds near their limits), on integer grids
  // (exact ties), and at widths around the screens' 32-element blocks.
  struct Case {
    const char* data;
    std::int64_t n, d;
  };
  for (const Case& cs : {Case{"blobs", 20000, 24}, Case{"far", 12000, 40}, Case{"grid", 12000, 7},
                         Case{"blobs", 6000, 100}}) {
    const std::string kind = cs.data;
    const std::int64_t n = cs.n, d = cs.d, c = 10;
    const auto hs = kind == "grid" ? grid_embeddings(n, d, 5, 3)
                                   : blob_embeddings(n, d, 12, 31, kind == "far" ? 300.0f : 0.0f);
    quarry::FloatRows h;
    h.data = hs.data();
    h.n = n;
    h.d = d;
    auto lab = random_subset(n, 300, 2);
    std::sort(lab.begin(), lab.end());
    for (const auto& labeled : {std::vector<std::int64_t>{}, lab}) {
      const auto a = quarry::cpu::kcenter(h, labeled, 300, nullptr, {true});
      const auto b = quarry::cpu::kcenter(h, labeled, 300, nullptr, {false});
      EXPECT_EQ(a.index, b.index) << kind << " d=" << d << " labeled=" << labeled.size();
      EXPECT_EQ(a.score, b.score) << kind << " d=" << d;
    }
    const auto probs = random_probs(n, c, 8);
    const ArrayView pv{probs.data(), DType::f32, {n, c}};
    const std::vector<double> fac = quarry::cpu::badge_factors(pv, false);
    std::vector<std::uint8_t> ex(static_cast<std::size_t>(n), 0);
    for (std::int64_t i = 0; i < n; i += 17) ex[i] = 1;
    const auto a = quarry::cpu::badge(fac, c, h, ex, 400, 5, nullptr, {true});
    const auto b = quarry::cpu::badge(fac, c, h, ex, 400, 5, nullptr, {false});
    EXPECT_EQ(a.index, b.index) << kind << " d=" << d;
    EXPECT_EQ(a.score, b.score) << kind << " d=" << d;
    const auto ka = quarry::cpu::kmeans(h, 50, 3, 9, nullptr, {true});
    const auto kb = quarry::cpu::kmeans(h, 50, 3, 9, nullptr, {false});
    EXPECT_EQ(ka.labels, kb.labels) << kind << " d=" << d;
    EXPECT_EQ(ka.centroids, kb.centroids) << kind << " d=" << d;
  }
}

}  // namespace
}  // namespace diversity_test
