// Shared by test_scores.cpp, test_scores_cases.cpp and test_scores_properties.cpp (one
// executable): the independent double-precision reference of the acquisition scores (written
// from docs/acquisition.md, "The acquisition contract"), tensors as the library reads them, seeded random
// inputs, the comparison with its tolerances, and the worst-error log (one per executable; the
// report that prints it is registered in test_scores.cpp).
#pragma once

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/device.hpp"
#include "quarry/error.hpp"

namespace scores_test {

using quarry::Acquisition;
using quarry::DType;

// ------------------------------------------------------------------ the 11 scores, by name

struct ScoreInfo {
  Acquisition acq;
  const char* name;
  bool committee;   // needs [M,N,C]
  bool embeddings;  // needs [N,D]
  bool votes;       // depends on argmax of each member (discontinuous in p)
};

// Written from docs/acquisition.md, not from the library's tables.
inline const std::vector<ScoreInfo>& score_table() {
  static const std::vector<ScoreInfo> t = {
      {Acquisition::least_confidence, "least-confidence", false, false, false},
      {Acquisition::margin, "margin", false, false, false},
      {Acquisition::ratio, "ratio", false, false, false},
      {Acquisition::entropy, "entropy", false, false, false},
      {Acquisition::consensus_entropy, "consensus-entropy", true, false, false},
      {Acquisition::bald, "bald", true, false, false},
      {Acquisition::vote_entropy, "vote-entropy", true, false, true},
      {Acquisition::kl_max, "kl-max", true, false, false},
      {Acquisition::variation_ratio, "variation-ratio", true, false, true},
      {Acquisition::egl, "egl", false, true, false},
      {Acquisition::badge_norm, "badge-norm", false, true, false},
  };
  return t;
}

inline const ScoreInfo& info(Acquisition a) {
  for (const auto& s : score_table())
    if (s.acq == a) return s;
  throw std::logic_error("unknown acquisition");
}

inline std::vector<Acquisition> all_scores() {
  std::vector<Acquisition> v;
  for (const auto& s : score_table()) v.push_back(s.acq);
  return v;
}

// ------------------------------------------------------------------ tensors as the library sees them

// Values in float32, float16 (bit patterns) or float64, plus `vals`: the exact values the
// library reads, in double (for float16 the decoded, rounded value).
struct Tensor {
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<double> vals;
  std::vector<float> f32;
  std::vector<std::uint16_t> f16;
  std::vector<double> f64;

  quarry::ArrayView view() const {
    quarry::ArrayView v;
    v.dtype = dtype;
    v.shape = shape;
    if (dtype == DType::f32) v.data = f32.data();
    else if (dtype == DType::f16) v.data = f16.data();
    else v.data = f64.data();
    return v;
  }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
  // Overwrites element i (and keeps `vals` in sync).
  void set(std::int64_t i, double x) {
    if (dtype == DType::f32) {
      f32[i] = static_cast<float>(x);
      vals[i] = f32[i];
    } else if (dtype == DType::f16) {
      f16[i] = quarry::detail::float_to_half(static_cast<float>(x));
      vals[i] = quarry::detail::half_to_float(f16[i]);
    } else {
      f64[i] = x;
      vals[i] = x;
    }
  }
};

inline Tensor make_tensor(const std::vector<double>& values, std::vector<std::int64_t> shape,
                   DType dtype = DType::f32) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  const std::int64_t n = t.numel();
  if (static_cast<std::int64_t>(values.size()) != n) throw std::logic_error("make_tensor: size");
  t.vals.resize(n);
  if (dtype == DType::f32) t.f32.resize(n);
  else if (dtype == DType::f16) t.f16.resize(n);
  else t.f64.resize(n);
  for (std::int64_t i = 0; i < n; ++i) t.set(i, values[i]);
  return t;
}

// ------------------------------------------------------------------ the double reference

struct Dims {
  std::int64_t M, N, C;
  bool rank3;
};

inline Dims dims_of(const Tensor& t) {
  if (t.shape.size() == 2) return {1, t.shape[0], t.shape[1], false};
  return {t.shape[0], t.shape[1], t.shape[2], true};
}

// One row of probabilities: row-sum normalised probabilities, or a max-subtracted softmax.
inline std::vector<double> ref_probs(const double* x, std::int64_t C, bool logits) {
  std::vector<double> p(C);
  if (logits) {
    double mx = -std::numeric_limits<double>::infinity();
    for (std::int64_t c = 0; c < C; ++c) mx = std::max(mx, x[c]);
    double s = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      p[c] = std::exp(x[c] - mx);
      s += p[c];
    }
    for (auto& v : p) v /= s;
  } else {
    double s = 0;
    for (std::int64_t c = 0; c < C; ++c) s += x[c];
    for (std::int64_t c = 0; c < C; ++c) p[c] = x[c] / s;
  }
  return p;
}

inline double ref_entropy(const std::vector<double>& p) {
  double h = 0;
  for (double v : p)
    if (v > 0) h -= v * std::log(v);  // 0 log 0 = 0
  return h;
}

// KL(p || q); terms with p_c = 0 are 0.
inline double ref_kl(const std::vector<double>& p, const std::vector<double>& q) {
  double k = 0;
  for (std::size_t c = 0; c < p.size(); ++c)
    if (p[c] > 0) k += p[c] * std::log(p[c] / q[c]);
  return k;
}

// argmax, ties to the lowest class index.
inline std::int64_t ref_argmax(const std::vector<double>& p) {
  std::int64_t best = 0;
  for (std::size_t c = 1; c < p.size(); ++c)
    if (p[c] > p[best]) best = static_cast<std::int64_t>(c);
  return best;
}

// The two largest probabilities p(1) >= p(2) (equal values allowed); p(2) = 0 for C = 1.
inline void ref_top2(const std::vector<double>& p, double& p1, double& p2) {
  p1 = -std::numeric_limits<double>::infinity();
  p2 = -std::numeric_limits<double>::infinity();
  for (double v : p) {
    if (v > p1) {
      p2 = p1;
      p1 = v;
    } else if (v > p2) {
      p2 = v;  // also takes a second copy of the maximum: [0.5, 0.5] gives p(2) = 0.5
    }
  }
  if (p.size() < 2) p2 = 0.0;
}

// || p - e_y ||; `sumsq` (optional) is sum_c p_c^2, precomputed by a caller looping over y.
inline double ref_dist_to_onehot(const std::vector<double>& p, std::int64_t y,
                          const double* sumsq = nullptr) {
  const std::int64_t C = static_cast<std::int64_t>(p.size());
  if (C <= 128) {  // literally
    double s = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      const double d = p[c] - (c == y ? 1.0 : 0.0);
      s += d * d;
    }
    return std::sqrt(s);
  }
  // Same quantity, expanded to keep the reference O(C) per label for C = 1000:
  // ||p - e_y||^2 = sum_c p_c^2 - p_y^2 + (1 - p_y)^2.
  double s = 0;
  if (sumsq) {
    s = *sumsq;
  } else {
    for (double v : p) s += v * v;
  }
  const double py = p[y];
  return std::sqrt(std::max(0.0, s - py * py + (1 - py) * (1 - py)));
}

struct MemberProbs {
  std::vector<std::vector<double>> P;  // [M][C]
  std::vector<double> pbar;            // [C]
};

inline MemberProbs ref_member_probs(const Tensor& in, std::int64_t n, bool logits) {
  const Dims d = dims_of(in);
  MemberProbs mp;
  mp.P.resize(d.M);
  mp.pbar.assign(d.C, 0.0);
  for (std::int64_t m = 0; m < d.M; ++m) {
    mp.P[m] = ref_probs(in.vals.data() + (m * d.N + n) * d.C, d.C, logits);
    for (std::int64_t c = 0; c < d.C; ++c) mp.pbar[c] += mp.P[m][c];
  }
  for (auto& v : mp.pbar) v /= static_cast<double>(d.M);
  return mp;
}

inline std::vector<double> reference(const Tensor& in, Acquisition a, bool logits,
                              const Tensor* emb = nullptr) {
  const Dims d = dims_of(in);
  std::vector<double> out(d.N);
  for (std::int64_t n = 0; n < d.N; ++n) {
    const MemberProbs mp = ref_member_probs(in, n, logits);
    // Single-model scores read the committee mean for a rank-3 input (M = 1: the member).
    const std::vector<double>& p = mp.pbar;
    double hnorm = 0;
    if (info(a).embeddings) {
      const std::int64_t D = emb->shape[1];
      double s = 0;
      for (std::int64_t k = 0; k < D; ++k) s += emb->vals[n * D + k] * emb->vals[n * D + k];
      hnorm = std::sqrt(s);
    }
    double r = 0;
    switch (a) {
      case Acquisition::least_confidence: {
        double p1, p2;
        ref_top2(p, p1, p2);
        r = 1 - p1;
        break;
      }
      case Acquisition::margin: {
        double p1, p2;
        ref_top2(p, p1, p2);
        r = 1 - (p1 - p2);
        break;
      }
      case Acquisition::ratio: {
        double p1, p2;
        ref_top2(p, p1, p2);
        r = p2 / p1;
        break;
      }
      case Acquisition::entropy:
      case Acquisition::consensus_entropy:
        r = ref_entropy(mp.pbar);
        break;
      case Acquisition::bald: {
        double mh = 0;
        for (const auto& pm : mp.P) mh += ref_entropy(pm);
        r = ref_entropy(mp.pbar) - mh / static_cast<double>(d.M);
        break;
      }
      case Acquisition::vote_entropy:
      case Acquisition::variation_ratio: {
        std::vector<double> votes(d.C, 0.0);
        for (const auto& pm : mp.P) votes[ref_argmax(pm)] += 1;
        if (a == Acquisition::vote_entropy) {
          for (auto& v : votes) v /= static_cast<double>(d.M);
          r = ref_entropy(votes);
        } else {
          r = 1 - *std::max_element(votes.begin(), votes.end()) / static_cast<double>(d.M);
        }
        break;
      }
      case Acquisition::kl_max: {
        r = -std::numeric_limits<double>::infinity();
        for (const auto& pm : mp.P) r = std::max(r, ref_kl(pm, mp.pbar));
        break;
      }
      case Acquisition::egl: {
        double sumsq = 0;
        for (double v : p) sumsq += v * v;
        double s = 0;
        for (std::int64_t y = 0; y < d.C; ++y) s += p[y] * ref_dist_to_onehot(p, y, &sumsq);
        r = hnorm * s;
        break;
      }
      case Acquisition::badge_norm:
        r = ref_dist_to_onehot(p, ref_argmax(p)) * hnorm;
        break;
    }
    out[n] = r;
  }
  return out;
}

// Rows where some member's two largest classes differ, but by less than `gap`: there the
// argmax (a vote) legitimately depends on rounding (float32 in the library, double here), so
// vote scores are not compared on those rows. The gap is judged on the raw input: relative
// for probabilities, absolute for logits (the ratio of two softmax probabilities is
// exp(x1 - x2), so e.g. logits [0, 1e-30] give p(1)/p(0) = 1 + 1e-30, a tie after any
// rounding but class 1 in exact arithmetic). Exact ties are compared (they go to the lowest
// index), unless `exact_ties` is set: a permutation of the classes legitimately changes which
// class a tied member votes for.
inline std::vector<char> ambiguous_vote_rows(const Tensor& in, bool logits, double gap = 1e-5,
                                      bool exact_ties = false) {
  const Dims d = dims_of(in);
  std::vector<char> amb(d.N, 0);
  if (d.C < 2) return amb;
  for (std::int64_t n = 0; n < d.N; ++n) {
    for (std::int64_t m = 0; m < d.M && !amb[n]; ++m) {
      const double* x = in.vals.data() + (m * d.N + n) * d.C;
      std::vector<double> row(x, x + d.C);
      double x1, x2;
      ref_top2(row, x1, x2);
      const double diff = logits ? x1 - x2 : (x1 - x2) / x1;
      if ((diff > 0 || (exact_ties && diff == 0)) && diff <= gap) amb[n] = 1;
    }
  }
  return amb;
}

// ------------------------------------------------------------------ calling the library

inline quarry::ScoreOptions cpu_options(bool logits = false) {
  quarry::ScoreOptions o;
  o.logits = logits;
  o.device.kind = quarry::DeviceKind::cpu;
  return o;
}

// Embeddings are passed only to the scores that read them.
inline std::vector<float> lib_score(const Tensor& in, Acquisition a, bool logits,
                             const Tensor* emb = nullptr) {
  if (!info(a).embeddings) emb = nullptr;
  const quarry::ArrayView ev = emb ? emb->view() : quarry::ArrayView{};
  return quarry::score(in.view(), a, cpu_options(logits), emb ? &ev : nullptr);
}

// ------------------------------------------------------------------ comparison and error log

inline constexpr double kAtol = 2e-5;
inline constexpr double kRtol = 2e-5;
inline constexpr double kU32 = 0x1.0p-24;  // float32 unit roundoff

// Tolerance for a row of C classes: |got - ref| <= atol + rtol |ref|.
//
// The library accumulates in float32. Naive float32 summation of C non-negative terms is exact
// to (C-1) u sum (u = 2^-24); a score goes through two such sums (the row sum that normalises
// p, then the score's own sum over classes), so we allow 2 C u on top of 2e-5 both absolutely
// and relatively. That is < 1.2e-5 extra for C <= 100, and 1.2e-4 for C = 1000, where it is
// needed: float16 rows with one large class and 999 tiny ones of 2^-24 (exactly half an ulp
// of 1) lose each tiny one to round-to-even when added to the large one, which shifts the row
// sum by up to (C-1) 2^-25 = 3e-5 (least-confidence, margin and entropy then move as much).
// The committee size M adds a sum of M terms per class (pbar): M u = 1.2e-6 for M = 20,
// negligible, so M needs nothing extra.
struct Tol {
  double atol, rtol;
};
inline Tol tol_for_classes(std::int64_t C) {
  const double extra = 2.0 * static_cast<double>(C) * kU32;
  return {kAtol + extra, kRtol + extra};
}

// egl and badge-norm are ||h|| times a function of p alone (homogeneous of degree 1 in h):
// whatever absolute accuracy the p-part has, the score has ||h|| times it, so their absolute
// tolerance is scaled by max(1, ||h||) per row (embedding norms in the tests go up to ~2000).
inline std::vector<double> embedding_norms(const Tensor& emb) {
  const std::int64_t N = emb.shape[0], D = emb.shape[1];
  std::vector<double> r(N);
  for (std::int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (std::int64_t k = 0; k < D; ++k) s += emb.vals[n * D + k] * emb.vals[n * D + k];
    r[n] = std::sqrt(s);
  }
  return r;
}
inline std::vector<double> atol_scale_for(Acquisition a, const Tensor* emb);

struct ErrStats {
  double max_abs = 0;       // max |got - ref|
  double max_rel = 0;       // max |got - ref| / |ref| over |ref| >= 1e-3
  double max_frac = 0;      // max |got - ref| / (atol + rtol |ref|): <= 1 passes
  std::int64_t compared = 0, skipped = 0, failures = 0;
  void merge(const ErrStats& o) {
    max_abs = std::max(max_abs, o.max_abs);
    max_rel = std::max(max_rel, o.max_rel);
    max_frac = std::max(max_frac, o.max_frac);
    compared += o.compared;
    skipped += o.skipped;
    failures += o.failures;
  }
};

inline std::map<std::string, ErrStats>& worst_log() {
  static std::map<std::string, ErrStats> m;
  return m;
}

inline ErrStats expect_close(const std::vector<float>& got, const std::vector<double>& ref, double atol,
                      double rtol, const std::string& what,
                      const std::vector<char>* skip = nullptr,
                      const std::vector<double>* atol_scale = nullptr) {
  ErrStats st;
  if (got.size() != ref.size()) {
    ADD_FAILURE() << what << ": got " << got.size() << " scores, expected " << ref.size();
    st.failures = 1;
    return st;
  }
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (skip && (*skip)[i]) {
      ++st.skipped;
      continue;
    }
    ++st.compared;
    const double g = got[i], r = ref[i];
    const double err = std::fabs(g - r);
    const double tol = atol * (atol_scale ? std::max(1.0, (*atol_scale)[i]) : 1.0) +
                       rtol * std::fabs(r);
    if (std::isnan(err)) {
      st.max_abs = st.max_frac = std::numeric_limits<double>::infinity();
    } else {
      st.max_abs = std::max(st.max_abs, err);
      if (std::fabs(r) >= 1e-3) st.max_rel = std::max(st.max_rel, err / std::fabs(r));
      st.max_frac = std::max(st.max_frac, err / tol);
    }
    if (!(err <= tol)) {
      if (st.failures < 5)
        ADD_FAILURE() << what << ": row " << i << ": got " << std::setprecision(10) << g
                      << ", reference " << r << " (|err| " << err << " > tol " << tol << ")"
                      << (atol_scale ? " ||h|| = " + std::to_string((*atol_scale)[i]) : "");
      ++st.failures;
    }
  }
  if (st.failures > 5) ADD_FAILURE() << what << ": " << st.failures << " rows out of tolerance in all";
  return st;
}

inline void log_worst(const std::string& name, const ErrStats& st) {
  worst_log()[name].merge(st);
}

// ------------------------------------------------------------------ seeded random inputs

// SplitMix64 + explicit uniform/normal transforms, so the numbers do not depend on the
// standard library's distributions.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }  // (0,1)
  double normal() {
    const double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  std::int64_t below(std::int64_t n) { return static_cast<std::int64_t>(next() % n); }

 private:
  std::uint64_t s_;
};

// A probability row of one of several kinds: Dirichlet(1), peaked (Dirichlet-like, alpha
// 0.05), near-uniform, sparse with exact zeros, nearly one-hot.
inline std::vector<double> random_prob_row(Rng& rng, std::int64_t C, int kind) {
  std::vector<double> g(C);
  switch (kind) {
    case 0:  // Dirichlet(1)
      for (auto& v : g) v = -std::log(rng.uniform());
      break;
    case 1:  // peaked: u^(1/alpha), alpha = 0.05
      for (auto& v : g) v = std::pow(rng.uniform(), 20.0);
      break;
    case 2:  // near-uniform (+-10%)
      for (auto& v : g) v = 1 + 0.2 * (rng.uniform() - 0.5);
      break;
    case 3: {  // exact zeros
      bool any = false;
      for (auto& v : g) {
        v = rng.uniform() < 0.5 ? 0.0 : -std::log(rng.uniform());
        any = any || v > 0;
      }
      if (!any) g[rng.below(C)] = 1;
      break;
    }
    default: {  // nearly one-hot
      for (auto& v : g) v = 1e-7 * rng.uniform();
      g[rng.below(C)] = 1;
      break;
    }
  }
  double s = 0;
  for (double v : g) s += v;
  for (auto& v : g) v /= s;
  return g;
}

struct Variant {
  const char* name;
  bool logits;
  double scale;  // logits: standard deviation
  DType dtype;
};

inline const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"probs/f32", false, 0, DType::f32},      {"probs/f16", false, 0, DType::f16},
      {"logits*0.1/f32", true, 0.1, DType::f32}, {"logits*3/f32", true, 3, DType::f32},
      {"logits*30/f32", true, 30, DType::f32},   {"logits*3/f16", true, 3, DType::f16},
      {"logits*30/f16", true, 30, DType::f16},
  };
  return v;
}

// [N,C] (M = 0) or [M,N,C]. Committee members are independent, correlated (a common row
// perturbed multiplicatively, small or large), or identical, chosen per sample.
inline Tensor random_input(std::uint64_t seed, std::int64_t M, std::int64_t N, std::int64_t C,
                    const Variant& v) {
  Rng rng(seed);
  const std::int64_t MM = M == 0 ? 1 : M;
  std::vector<double> x(static_cast<std::size_t>(MM * N * C));
  for (std::int64_t n = 0; n < N; ++n) {
    const int mode = static_cast<int>(rng.below(4));  // 0 independent, 1/2 correlated, 3 identical
    if (v.logits) {
      std::vector<double> base(C);
      for (auto& b : base) b = rng.normal();
      const double w = mode == 0 ? 1.5 : mode == 1 ? 0.05 : mode == 2 ? 0.5 : 0.0;
      for (std::int64_t m = 0; m < MM; ++m)
        for (std::int64_t c = 0; c < C; ++c)
          x[(m * N + n) * C + c] = v.scale * (base[c] + (M == 0 ? 0.0 : w * rng.normal()));
    } else {
      const int kind = static_cast<int>(rng.below(5));
      const std::vector<double> base = random_prob_row(rng, C, kind);
      for (std::int64_t m = 0; m < MM; ++m) {
        std::vector<double> p;
        if (M == 0 || mode == 3) {
          p = base;
        } else if (mode == 0) {
          p = random_prob_row(rng, C, static_cast<int>(rng.below(5)));
        } else {
          const double sigma = mode == 1 ? 0.05 : 1.0;
          p = base;
          double s = 0;
          for (auto& q : p) {
            q *= std::exp(sigma * rng.normal());
            s += q;
          }
          for (auto& q : p) q /= s;
        }
        for (std::int64_t c = 0; c < C; ++c) x[(m * N + n) * C + c] = p[c];
      }
    }
  }
  std::vector<std::int64_t> shape = M == 0 ? std::vector<std::int64_t>{N, C}
                                           : std::vector<std::int64_t>{M, N, C};
  return make_tensor(x, shape, v.dtype);
}

// [N,D]: rows of widely different norms (1e-2 .. 1e2), about 1% of them exactly zero.
inline Tensor random_embeddings(std::uint64_t seed, std::int64_t N, std::int64_t D, DType dtype) {
  Rng rng(seed ^ 0xE3BEDull);
  std::vector<double> h(static_cast<std::size_t>(N * D));
  for (std::int64_t n = 0; n < N; ++n) {
    const bool zero = rng.uniform() < 0.01;
    const double scale = std::pow(10.0, 4 * rng.uniform() - 2);
    for (std::int64_t k = 0; k < D; ++k) h[n * D + k] = zero ? 0.0 : scale * rng.normal();
  }
  return make_tensor(h, {N, D}, dtype);
}

inline std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b, std::uint64_t c = 0) {
  return a * 1000003ull + b * 7919ull + c * 104729ull + 17;
}

inline std::string shape_name(const Tensor& t) {
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < t.shape.size(); ++i) os << (i ? "," : "") << t.shape[i];
  os << "]";
  return os.str();
}

// Compares one score on one input with the reference; vote scores skip near-tied rows.
inline std::vector<double> atol_scale_for(Acquisition a, const Tensor* emb) {
  if (!info(a).embeddings || !emb) return {};
  return embedding_norms(*emb);
}

inline ErrStats check_against_reference(const Tensor& in, Acquisition a, bool logits, const Tensor* emb,
                                 const std::string& what) {
  const Tol tol = tol_for_classes(dims_of(in).C);
  const double atol = tol.atol, rtol = tol.rtol;
  std::vector<float> got;
  try {
    got = lib_score(in, a, logits, emb);
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw " << e.what();
    ErrStats st;
    st.failures = 1;
    return st;
  }
  const std::vector<double> ref = reference(in, a, logits, emb);
  std::vector<char> amb;
  if (info(a).votes) amb = ambiguous_vote_rows(in, logits);
  const std::vector<double> hs = atol_scale_for(a, emb);
  const ErrStats st = expect_close(got, ref, atol, rtol, what, info(a).votes ? &amb : nullptr,
                                   hs.empty() ? nullptr : &hs);
  log_worst(info(a).name, st);
  return st;
}

// ------------------------------------------------------------------ hard-case helpers

// Checks every applicable score on `in` against the reference (and returns the scores).
inline std::map<Acquisition, std::vector<float>> check_all(const Tensor& in, bool logits,
                                                    const std::string& what,
                                                    const Tensor* emb = nullptr) {
  std::map<Acquisition, std::vector<float>> out;
  const bool rank3 = in.shape.size() == 3;
  for (const ScoreInfo& si : score_table()) {
    if (si.committee && !rank3) continue;
    if (si.embeddings && !emb) continue;
    const std::string w = what + " / " + si.name;
    check_against_reference(in, si.acq, logits, si.embeddings ? emb : nullptr, w);
    try {
      out[si.acq] = lib_score(in, si.acq, logits, si.embeddings ? emb : nullptr);
    } catch (const std::exception&) {  // already reported by check_against_reference
      out[si.acq].assign(dims_of(in).N, std::numeric_limits<float>::quiet_NaN());
    }
    if (static_cast<std::int64_t>(out[si.acq].size()) != dims_of(in).N)
      out[si.acq].assign(dims_of(in).N, std::numeric_limits<float>::quiet_NaN());
  }
  return out;
}

inline Tensor ones_embeddings(std::int64_t N, std::int64_t D, double value = 1.0) {
  return make_tensor(std::vector<double>(static_cast<std::size_t>(N * D), value), {N, D});
}

inline double tol_for(double expected) { return kAtol + kRtol * std::fabs(expected); }

// Collects the rows that break a property: reports the first few in full, then the count.
class Violations {
 public:
  explicit Violations(std::string what) : what_(std::move(what)) {}
  Violations(const Violations&) = delete;
  Violations& operator=(const Violations&) = delete;
  ~Violations() {
    if (count_ > kShown) ADD_FAILURE() << what_ << ": " << count_ << " violations in all";
  }
  template <class Detail>
  void check(bool ok, Detail&& detail) {
    if (ok) return;
    if (++count_ <= kShown) ADD_FAILURE() << what_ << ": " << detail();
  }

 private:
  static constexpr int kShown = 3;
  std::string what_;
  int count_ = 0;
};

inline std::string row_string(const Tensor& in, std::int64_t m, std::int64_t n) {
  const Dims d = dims_of(in);
  std::ostringstream os;
  os << std::setprecision(9) << "[";
  for (std::int64_t c = 0; c < std::min<std::int64_t>(d.C, 12); ++c)
    os << (c ? ", " : "") << in.vals[(m * d.N + n) * d.C + c];
  if (d.C > 12) os << ", ... (" << d.C << " classes)";
  os << "]";
  return os.str();
}

}  // namespace scores_test
