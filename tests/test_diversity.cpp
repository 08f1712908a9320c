// Diversity strategies (BADGE, k-center, cluster-margin, uncertain-k-center, k-means) against
// brute-force double-precision references that materialise what the library never does: the
// full N x N distance matrix, the N x (C D) gradient embeddings. On small pools (N <= 2000).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cpu/diversity_cpu.hpp"
#include "quarry/acquisition.hpp"
#include "quarry/detail/diversity_math.hpp"  // the stream constants only
#include "quarry/detail/hd.hpp"
#include "quarry/detail/random.hpp"
#include "quarry/device.hpp"
#include "quarry/diversity.hpp"
#include "quarry/error.hpp"
#include "quarry/select.hpp"

namespace {

using quarry::ArrayView;
using quarry::DiversityOptions;
using quarry::DiversityStrategy;
using quarry::DType;
using quarry::Selection;

constexpr double kInf = std::numeric_limits<double>::infinity();

// ------------------------------------------------------------------ data

struct Pool {
  std::int64_t n = 0, d = 0, c = 0;
  std::vector<float> h;  // [n, d]
  std::vector<float> p;  // [n, c] probabilities (or logits)
  ArrayView emb() const { return {h.data(), DType::f32, {n, d}}; }
  ArrayView out() const { return {p.data(), DType::f32, {n, c}}; }
};

// Gaussian blobs: `blobs` centres, unit-ish spread; optionally offset far from the origin.
std::vector<float> blob_embeddings(std::int64_t n, std::int64_t d, int blobs, std::uint32_t seed,
                                   float offset = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> centre(static_cast<std::size_t>(blobs * d));
  for (float& v : centre) v = 4.0f * g(rng);
  std::uniform_int_distribution<int> pick(0, blobs - 1);
  std::vector<float> h(static_cast<std::size_t>(n * d));
  for (std::int64_t i = 0; i < n; ++i) {
    const int b = pick(rng);
    for (std::int64_t j = 0; j < d; ++j) h[i * d + j] = offset + centre[b * d + j] + 0.7f * g(rng);
  }
  return h;
}

// Small integers: many exactly equal distances (ties), exact in every float format.
std::vector<float> grid_embeddings(std::int64_t n, std::int64_t d, int levels, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(0, levels - 1);
  std::vector<float> h(static_cast<std::size_t>(n * d));
  for (float& v : h) v = static_cast<float>(u(rng));
  return h;
}

// Probability rows: a softmax of random logits, some peaked, some flat, some two-way.
std::vector<float> random_probs(std::int64_t n, std::int64_t c, std::uint32_t seed, bool logits = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<float> p(static_cast<std::size_t>(n * c));
  std::vector<double> z(static_cast<std::size_t>(c));
  for (std::int64_t i = 0; i < n; ++i) {
    const double sharp = u(rng) < 0.5 ? 4.0 : 0.5;
    for (auto& v : z) v = sharp * g(rng);
    if (logits) {
      for (std::int64_t j = 0; j < c; ++j) p[i * c + j] = static_cast<float>(z[j]);
      continue;
    }
    const double mx = *std::max_element(z.begin(), z.end());
    double s = 0;
    for (auto& v : z) s += (v = std::exp(v - mx));
    for (std::int64_t j = 0; j < c; ++j) p[i * c + j] = static_cast<float>(z[j] / s);
  }
  return p;
}

Pool make_pool(std::int64_t n, std::int64_t d, std::int64_t c, std::uint32_t seed, int blobs = 6) {
  Pool pl;
  pl.n = n;
  pl.d = d;
  pl.c = c;
  pl.h = blob_embeddings(n, d, blobs, seed);
  pl.p = random_probs(n, c, seed + 1);
  return pl;
}

std::vector<std::int64_t> random_subset(std::int64_t n, std::int64_t m, std::uint32_t seed) {
  std::vector<std::int64_t> all(static_cast<std::size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(static_cast<std::size_t>(m));
  return all;
}

// ------------------------------------------------------------------ references

double sqdist(const float* a, const float* b, std::int64_t d) {
  double s = 0;
  for (std::int64_t j = 0; j < d; ++j) {
    const double t = static_cast<double>(a[j]) - static_cast<double>(b[j]);
    s += t * t;
  }
  return s;
}

// Greedy k-center with the full N x N distance matrix, in double.
std::vector<std::int64_t> reference_kcenter(const std::vector<float>& h, std::int64_t n, std::int64_t d,
                                            const std::vector<std::int64_t>& labeled, std::int64_t k) {
  std::vector<double> dist(static_cast<std::size_t>(n * n));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) dist[i * n + j] = sqdist(&h[i * d], &h[j * d], d);
  std::vector<double> mind(static_cast<std::size_t>(n), kInf);
  std::vector<bool> taken(static_cast<std::size_t>(n), false);
  std::vector<std::int64_t> picks;
  auto add = [&](std::int64_t c) {
    taken[c] = true;
    for (std::int64_t i = 0; i < n; ++i) mind[i] = std::min(mind[i], dist[i * n + c]);
  };
  for (std::int64_t l : labeled) add(l);
  if (labeled.empty()) {
    std::vector<double> mean(static_cast<std::size_t>(d), 0.0);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < d; ++j) mean[j] += h[i * d + j];
    for (double& v : mean) v /= static_cast<double>(n);
    std::int64_t best = 0;
    double bv = kInf;
    for (std::int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (std::int64_t j = 0; j < d; ++j) s += (h[i * d + j] - mean[j]) * (h[i * d + j] - mean[j]);
      if (s < bv) {
        bv = s;
        best = i;
      }
    }
    picks.push_back(best);
    add(best);
  }
  while (static_cast<std::int64_t>(picks.size()) < k) {
    std::int64_t best = -1;
    for (std::int64_t i = 0; i < n; ++i)
      if (!taken[i] && (best < 0 || mind[i] > mind[best])) best = i;
    picks.push_back(best);
    add(best);
  }
  return picks;
}

// p in double from [n, c] probabilities (divided by the row sum) or logits (softmax).
std::vector<double> reference_probs(const std::vector<float>& x, std::int64_t n, std::int64_t c, bool logits) {
  std::vector<double> p(x.begin(), x.end());
  for (std::int64_t i = 0; i < n; ++i) {
    double* r = &p[i * c];
    if (logits) {
      const double mx = *std::max_element(r, r + c);
      for (std::int64_t j = 0; j < c; ++j) r[j] = std::exp(r[j] - mx);
    }
    double s = 0;
    for (std::int64_t j = 0; j < c; ++j) s += r[j];
    for (std::int64_t j = 0; j < c; ++j) r[j] /= s;
  }
  return p;
}

// The documented D² draw (include/quarry/detail/diversity_math.hpp), written out again.
std::int64_t reference_d2_draw(const std::vector<double>& w, std::uint64_t seed, std::uint32_t stream,
                               std::uint64_t draw) {
  const std::int64_t n = static_cast<std::int64_t>(w.size());
  double wmax = 0;
  for (double v : w) wmax = std::max(wmax, v);
  int e = 0;
  std::frexp(wmax, &e);
  int bits = 0;
  for (std::uint64_t v = static_cast<std::uint64_t>(n); v; v >>= 1) ++bits;
  const int s = 62 - bits - e;
  std::vector<std::uint64_t> q(static_cast<std::size_t>(n));
  unsigned __int128 total = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    q[i] = w[i] > 0 ? static_cast<std::uint64_t>(std::ceil(std::ldexp(w[i], s))) : 0;
    total += q[i];
  }
  const quarry::detail::Philox4 r = quarry::detail::philox4x32_10(
      static_cast<std::uint32_t>(draw), static_cast<std::uint32_t>(draw >> 32), stream, 0u,
      static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  const std::uint64_t r64 = (static_cast<std::uint64_t>(r.v[1]) << 32) | r.v[0];
  const std::uint64_t target = static_cast<std::uint64_t>((static_cast<unsigned __int128>(r64) * total) >> 64);
  std::uint64_t acc = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    acc += q[i];
    if (acc > target) return i;
  }
  return -1;
}

// BADGE with the gradient embeddings g_i = (p_i - e_yhat) ⊗ h_i materialised in double.
std::vector<std::int64_t> reference_badge(const std::vector<double>& p, const std::vector<float>& h,
                                          std::int64_t n, std::int64_t c, std::int64_t d,
                                          const std::vector<std::int64_t>& exclude, std::int64_t k,
                                          std::uint64_t seed) {
  const std::int64_t w = c * d;
  std::vector<double> g(static_cast<std::size_t>(n * w));
  for (std::int64_t i = 0; i < n; ++i) {
    std::vector<double> a(&p[i * c], &p[i * c] + c);
    std::int64_t top = 0;
    for (std::int64_t j = 1; j < c; ++j)
      if (a[j] > a[top]) top = j;
    a[top] -= 1.0;
    for (std::int64_t j = 0; j < c; ++j)
      for (std::int64_t q = 0; q < d; ++q) g[i * w + j * d + q] = a[j] * h[i * d + q];
  }
  std::vector<bool> taken(static_cast<std::size_t>(n), false);
  for (std::int64_t i : exclude) taken[i] = true;
  std::int64_t first = -1;
  double best = -1;
  for (std::int64_t i = 0; i < n; ++i) {
    if (taken[i]) continue;
    double s = 0;
    for (std::int64_t j = 0; j < w; ++j) s += g[i * w + j] * g[i * w + j];
    if (s > best) {
      best = s;
      first = i;
    }
  }
  std::vector<std::int64_t> picks{first};
  std::vector<double> mind(static_cast<std::size_t>(n), kInf);
  auto add = [&](std::int64_t ctr) {
    taken[ctr] = true;
    for (std::int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (std::int64_t j = 0; j < w; ++j) {
        const double t = g[i * w + j] - g[ctr * w + j];
        s += t * t;
      }
      mind[i] = std::min(mind[i], s);
    }
  };
  add(first);
  for (std::int64_t t = 1; t < k; ++t) {
    std::vector<double> weight(static_cast<std::size_t>(n), 0.0);
    double wmax = 0;
    std::int64_t free = -1;
    for (std::int64_t i = 0; i < n; ++i) {
      if (taken[i]) continue;
      weight[i] = mind[i];
      wmax = std::max(wmax, mind[i]);
      if (free < 0) free = i;
    }
    const std::int64_t pick =
        wmax > 0 ? reference_d2_draw(weight, seed, quarry::detail::kStreamBadge, static_cast<std::uint64_t>(t)) : free;
    picks.push_back(pick);
    add(pick);
  }
  return picks;
}

Selection run(DiversityStrategy s, const ArrayView& emb, const ArrayView* out, const DiversityOptions& o) {
  return quarry::select_diverse(s, emb, out, o);
}

DiversityOptions opts(std::int64_t k, std::vector<std::int64_t> exclude = {}, std::uint64_t seed = 0) {
  DiversityOptions o;
  o.k = k;
  o.exclude = std::move(exclude);
  o.seed = seed;
  return o;
}

void expect_valid(const Selection& s, std::int64_t n, std::int64_t k, const std::vector<std::int64_t>& exclude) {
  ASSERT_EQ(s.size(), k);
  ASSERT_EQ(s.score.size(), s.index.size());
  std::set<std::int64_t> seen, ex(exclude.begin(), exclude.end());
  for (std::int64_t i : s.index) {
    EXPECT_TRUE(i >= 0 && i < n) << i;
    EXPECT_TRUE(seen.insert(i).second) << "duplicate pick " << i;
    EXPECT_FALSE(ex.count(i)) << "excluded index " << i << " was picked";
  }
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected quarry::Error containing '" << parts.front() << "'";
  } catch (const quarry::Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

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
  o.progress = [&](const quarry::DiversityProgress& p) {
    if (std::string(p.phase) == "picking") {
      EXPECT_EQ(p.total, 25);
      done.push_back(p.done);
    }
  };
  run(DiversityStrategy::badge, pl.emb(), &out, o);
  std::vector<std::int64_t> want(25);
  std::iota(want.begin(), want.end(), 1);
  EXPECT_EQ(done, want);
  o.progress = [](const quarry::DiversityProgress& p) {
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
