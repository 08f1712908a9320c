// Shared by test_diversity.cpp and test_diversity_strategies.cpp (one executable): seeded pools
// (blobs, grids, probabilities), brute-force double references (k-center, BADGE, the D² draw)
// and small checks of selections and errors.
#pragma once

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

namespace diversity_test {

using quarry::ArrayView;
using quarry::DiversityOptions;
using quarry::DiversityStrategy;
using quarry::DType;
using quarry::Selection;

inline constexpr double kInf = std::numeric_limits<double>::infinity();

// ------------------------------------------------------------------ data

struct Pool {
  std::int64_t n = 0, d = 0, c = 0;
  std::vector<float> h;  // [n, d]
  std::vector<float> p;  // [n, c] probabilities (or logits)
  ArrayView emb() const { return {h.data(), DType::f32, {n, d}}; }
  ArrayView out() const { return {p.data(), DType::f32, {n, c}}; }
};

// Gaussian blobs: `blobs` centres, unit-ish spread; optionally offset far from the origin.
inline std::vector<float> blob_embeddings(std::int64_t n, std::int64_t d, int blobs, std::uint32_t seed,
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
inline std::vector<float> grid_embeddings(std::int64_t n, std::int64_t d, int levels, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(0, levels - 1);
  std::vector<float> h(static_cast<std::size_t>(n * d));
  for (float& v : h) v = static_cast<float>(u(rng));
  return h;
}

// Probability rows: a softmax of random logits, some peaked, some flat, some two-way.
inline std::vector<float> random_probs(std::int64_t n, std::int64_t c, std::uint32_t seed, bool logits = false) {
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

inline Pool make_pool(std::int64_t n, std::int64_t d, std::int64_t c, std::uint32_t seed, int blobs = 6) {
  Pool pl;
  pl.n = n;
  pl.d = d;
  pl.c = c;
  pl.h = blob_embeddings(n, d, blobs, seed);
  pl.p = random_probs(n, c, seed + 1);
  return pl;
}

inline std::vector<std::int64_t> random_subset(std::int64_t n, std::int64_t m, std::uint32_t seed) {
  std::vector<std::int64_t> all(static_cast<std::size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(static_cast<std::size_t>(m));
  return all;
}

// ------------------------------------------------------------------ references

inline double sqdist(const float* a, const float* b, std::int64_t d) {
  double s = 0;
  for (std::int64_t j = 0; j < d; ++j) {
    const double t = static_cast<double>(a[j]) - static_cast<double>(b[j]);
    s += t * t;
  }
  return s;
}

// Greedy k-center with the full N x N distance matrix, in double.
inline std::vector<std::int64_t> reference_kcenter(const std::vector<float>& h, std::int64_t n, std::int64_t d,
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
inline std::vector<double> reference_probs(const std::vector<float>& x, std::int64_t n, std::int64_t c, bool logits) {
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
inline std::int64_t reference_d2_draw(const std::vector<double>& w, std::uint64_t seed, std::uint32_t stream,
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
inline std::vector<std::int64_t> reference_badge(const std::vector<double>& p, const std::vector<float>& h,
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

inline Selection run(DiversityStrategy s, const ArrayView& emb, const ArrayView* out, const DiversityOptions& o) {
  return quarry::select_diverse(s, emb, out, o);
}

inline DiversityOptions opts(std::int64_t k, std::vector<std::int64_t> exclude = {}, std::uint64_t seed = 0) {
  DiversityOptions o;
  o.k = k;
  o.exclude = std::move(exclude);
  o.seed = seed;
  return o;
}

inline void expect_valid(const Selection& s, std::int64_t n, std::int64_t k, const std::vector<std::int64_t>& exclude) {
  ASSERT_EQ(s.size(), k);
  ASSERT_EQ(s.score.size(), s.index.size());
  std::set<std::int64_t> seen, ex(exclude.begin(), exclude.end());
  for (std::int64_t i : s.index) {
    EXPECT_TRUE(i >= 0 && i < n) << i;
    EXPECT_TRUE(seen.insert(i).second) << "duplicate pick " << i;
    EXPECT_FALSE(ex.count(i)) << "excluded index " << i << " was picked";
  }
}

inline void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected quarry::Error containing '" << parts.front() << "'";
  } catch (const quarry::Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

}  // namespace diversity_test
