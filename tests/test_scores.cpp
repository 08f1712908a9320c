// Acquisition scores on the CPU backend against an independent, plain double-precision
// reference written from DESIGN.md ("The acquisition contract") alone.
//
// The reference below deliberately shares no code with the library's per-row math: it takes
// the exact values the library reads (float32, or float16 decoded exactly), converts them to
// double, normalises probabilities by their row sum (or takes a max-subtracted softmax of
// logits), and evaluates every formula in the most literal way, with 0 log 0 = 0.
//
// Every input is generated from a fixed seed, so every run sees the same numbers.
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

namespace {

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

// Written from DESIGN.md, not from the library's tables.
const std::vector<ScoreInfo>& score_table() {
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

const ScoreInfo& info(Acquisition a) {
  for (const auto& s : score_table())
    if (s.acq == a) return s;
  throw std::logic_error("unknown acquisition");
}

std::vector<Acquisition> all_scores() {
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

Tensor make_tensor(const std::vector<double>& values, std::vector<std::int64_t> shape,
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

Dims dims_of(const Tensor& t) {
  if (t.shape.size() == 2) return {1, t.shape[0], t.shape[1], false};
  return {t.shape[0], t.shape[1], t.shape[2], true};
}

// One row of probabilities: row-sum normalised probabilities, or a max-subtracted softmax.
std::vector<double> ref_probs(const double* x, std::int64_t C, bool logits) {
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

double ref_entropy(const std::vector<double>& p) {
  double h = 0;
  for (double v : p)
    if (v > 0) h -= v * std::log(v);  // 0 log 0 = 0
  return h;
}

// KL(p || q); terms with p_c = 0 are 0.
double ref_kl(const std::vector<double>& p, const std::vector<double>& q) {
  double k = 0;
  for (std::size_t c = 0; c < p.size(); ++c)
    if (p[c] > 0) k += p[c] * std::log(p[c] / q[c]);
  return k;
}

// argmax, ties to the lowest class index.
std::int64_t ref_argmax(const std::vector<double>& p) {
  std::int64_t best = 0;
  for (std::size_t c = 1; c < p.size(); ++c)
    if (p[c] > p[best]) best = static_cast<std::int64_t>(c);
  return best;
}

// The two largest probabilities p(1) >= p(2) (equal values allowed); p(2) = 0 for C = 1.
void ref_top2(const std::vector<double>& p, double& p1, double& p2) {
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
double ref_dist_to_onehot(const std::vector<double>& p, std::int64_t y,
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

MemberProbs ref_member_probs(const Tensor& in, std::int64_t n, bool logits) {
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

std::vector<double> reference(const Tensor& in, Acquisition a, bool logits,
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
std::vector<char> ambiguous_vote_rows(const Tensor& in, bool logits, double gap = 1e-5,
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

quarry::ScoreOptions cpu_options(bool logits = false) {
  quarry::ScoreOptions o;
  o.logits = logits;
  o.device.kind = quarry::DeviceKind::cpu;
  return o;
}

// Embeddings are passed only to the scores that read them.
std::vector<float> lib_score(const Tensor& in, Acquisition a, bool logits,
                             const Tensor* emb = nullptr) {
  if (!info(a).embeddings) emb = nullptr;
  const quarry::ArrayView ev = emb ? emb->view() : quarry::ArrayView{};
  return quarry::score(in.view(), a, cpu_options(logits), emb ? &ev : nullptr);
}

// ------------------------------------------------------------------ comparison and error log

constexpr double kAtol = 2e-5;
constexpr double kRtol = 2e-5;
constexpr double kU32 = 0x1.0p-24;  // float32 unit roundoff

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
Tol tol_for_classes(std::int64_t C) {
  const double extra = 2.0 * static_cast<double>(C) * kU32;
  return {kAtol + extra, kRtol + extra};
}

// egl and badge-norm are ||h|| times a function of p alone (homogeneous of degree 1 in h):
// whatever absolute accuracy the p-part has, the score has ||h|| times it, so their absolute
// tolerance is scaled by max(1, ||h||) per row (embedding norms in the tests go up to ~2000).
std::vector<double> embedding_norms(const Tensor& emb) {
  const std::int64_t N = emb.shape[0], D = emb.shape[1];
  std::vector<double> r(N);
  for (std::int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (std::int64_t k = 0; k < D; ++k) s += emb.vals[n * D + k] * emb.vals[n * D + k];
    r[n] = std::sqrt(s);
  }
  return r;
}
std::vector<double> atol_scale_for(Acquisition a, const Tensor* emb);

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

std::map<std::string, ErrStats>& worst_log() {
  static std::map<std::string, ErrStats> m;
  return m;
}

ErrStats expect_close(const std::vector<float>& got, const std::vector<double>& ref, double atol,
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

void log_worst(const std::string& name, const ErrStats& st) {
  worst_log()[name].merge(st);
}

// Prints the worst error seen per score at the end of the run.
class WorstErrorReport : public ::testing::Environment {
 public:
  void TearDown() override {
    if (worst_log().empty()) return;
    std::cout << "\n[ worst error vs the double reference, per score (all random and hard cases) ]\n";
    std::cout << std::left << std::setw(20) << "score" << std::right << std::setw(13) << "max|err|"
              << std::setw(13) << "max rel" << std::setw(13) << "err/tol" << std::setw(11)
              << "rows" << std::setw(9) << "skipped" << "\n";
    for (const auto& [name, st] : worst_log())
      std::cout << std::left << std::setw(20) << name << std::right << std::scientific
                << std::setprecision(2) << std::setw(13) << st.max_abs << std::setw(13)
                << st.max_rel << std::setw(13) << st.max_frac << std::defaultfloat
                << std::setw(11) << st.compared << std::setw(9) << st.skipped << "\n";
  }
};
const auto* const g_report = ::testing::AddGlobalTestEnvironment(new WorstErrorReport);

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
std::vector<double> random_prob_row(Rng& rng, std::int64_t C, int kind) {
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

const std::vector<Variant>& variants() {
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
Tensor random_input(std::uint64_t seed, std::int64_t M, std::int64_t N, std::int64_t C,
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
Tensor random_embeddings(std::uint64_t seed, std::int64_t N, std::int64_t D, DType dtype) {
  Rng rng(seed ^ 0xE3BEDull);
  std::vector<double> h(static_cast<std::size_t>(N * D));
  for (std::int64_t n = 0; n < N; ++n) {
    const bool zero = rng.uniform() < 0.01;
    const double scale = std::pow(10.0, 4 * rng.uniform() - 2);
    for (std::int64_t k = 0; k < D; ++k) h[n * D + k] = zero ? 0.0 : scale * rng.normal();
  }
  return make_tensor(h, {N, D}, dtype);
}

std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b, std::uint64_t c = 0) {
  return a * 1000003ull + b * 7919ull + c * 104729ull + 17;
}

std::string shape_name(const Tensor& t) {
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < t.shape.size(); ++i) os << (i ? "," : "") << t.shape[i];
  os << "]";
  return os.str();
}

// Compares one score on one input with the reference; vote scores skip near-tied rows.
std::vector<double> atol_scale_for(Acquisition a, const Tensor* emb) {
  if (!info(a).embeddings || !emb) return {};
  return embedding_norms(*emb);
}

ErrStats check_against_reference(const Tensor& in, Acquisition a, bool logits, const Tensor* emb,
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

// ================================================================== 0. the reference itself

// The reference against values worked out by hand, so that a mistake in it cannot hide behind
// an identical mistake in the library.
TEST(Reference, HandComputedValues) {
  const double l2 = std::log(2.0), l3 = std::log(3.0);
  auto ref1 = [](std::vector<double> row, Acquisition a, bool logits = false,
                 std::vector<double> h = {1.0}) {
    const std::int64_t C = static_cast<std::int64_t>(row.size());
    const Tensor in = make_tensor(row, {1, C}, DType::f64);
    const Tensor emb = make_tensor(h, {1, static_cast<std::int64_t>(h.size())}, DType::f64);
    return reference(in, a, logits, &emb)[0];
  };
  EXPECT_NEAR(ref1({0.5, 0.25, 0.25}, Acquisition::entropy), 1.5 * l2, 1e-15);
  EXPECT_NEAR(ref1({0.6, 0.3, 0.1}, Acquisition::least_confidence), 0.4, 1e-15);
  EXPECT_NEAR(ref1({0.6, 0.3, 0.1}, Acquisition::margin), 0.7, 1e-15);
  EXPECT_NEAR(ref1({0.1, 0.3, 0.6}, Acquisition::ratio), 0.5, 1e-15);
  EXPECT_NEAR(ref1({0.5, 0.5}, Acquisition::margin), 1.0, 1e-15);
  EXPECT_NEAR(ref1({1.0}, Acquisition::margin), 0.0, 1e-15);
  EXPECT_NEAR(ref1({1.0}, Acquisition::ratio), 0.0, 1e-15);
  EXPECT_NEAR(ref1({2.0, 1.0, 1.0}, Acquisition::entropy), 1.5 * l2, 1e-15);  // sum 4: normalised
  EXPECT_NEAR(ref1({std::log(2.0), 0.0, 0.0}, Acquisition::entropy, true), 1.5 * l2, 1e-15);
  EXPECT_NEAR(ref1({1e4, -1e4, 0}, Acquisition::entropy, true), 0.0, 1e-15);
  // p = [.75,.25], ||h|| = 2: ||p - e_0|| = .25 sqrt 2, ||p - e_1|| = .75 sqrt 2.
  EXPECT_NEAR(ref1({0.75, 0.25}, Acquisition::egl, false, {0.0, -2.0}),
              2 * (0.75 * 0.25 + 0.25 * 0.75) * std::sqrt(2.0), 1e-15);
  EXPECT_NEAR(ref1({0.75, 0.25}, Acquisition::badge_norm, false, {2.0}), 0.5 * std::sqrt(2.0),
              1e-15);
  // p = [.5,.3,.2], ||h|| = 1: badge = sqrt(.25 + .09 + .04).
  EXPECT_NEAR(ref1({0.5, 0.3, 0.2}, Acquisition::badge_norm), std::sqrt(0.38), 1e-15);
  // egl = .5 sqrt(.38) + .3 sqrt(.25+.49+.04) + .2 sqrt(.25+.09+.64)
  EXPECT_NEAR(ref1({0.5, 0.3, 0.2}, Acquisition::egl),
              0.5 * std::sqrt(0.38) + 0.3 * std::sqrt(0.78) + 0.2 * std::sqrt(0.98), 1e-15);
  // Committee [[1,0],[.5,.5]]: pbar = [.75,.25]; H(pbar) = .75 log(4/3) + .25 log 4;
  // mean H = log2 / 2; KL(e_0||pbar) = log(4/3), KL([.5,.5]||pbar) = .5 log(2/3) + .5 log 2.
  {
    const Tensor com = make_tensor({1.0, 0.0, 0.5, 0.5}, {2, 1, 2}, DType::f64);
    const double hbar = 0.75 * std::log(4.0 / 3) + 0.25 * std::log(4.0);
    EXPECT_NEAR(reference(com, Acquisition::consensus_entropy, false)[0], hbar, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::bald, false)[0], hbar - l2 / 2, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::kl_max, false)[0],
                std::max(std::log(4.0 / 3), 0.5 * std::log(2.0 / 3) + 0.5 * l2), 1e-15);
    // both vote class 0 ([.5,.5] ties to the lowest index)
    EXPECT_NEAR(reference(com, Acquisition::vote_entropy, false)[0], 0.0, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::variation_ratio, false)[0], 0.0, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::entropy, false)[0], hbar, 1e-15);  // on pbar
  }
  {
    const Tensor com = make_tensor({1, 0, 0, 0, 1, 0, 0, 0, 1}, {3, 1, 3}, DType::f64);
    EXPECT_NEAR(reference(com, Acquisition::vote_entropy, false)[0], l3, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::variation_ratio, false)[0], 2.0 / 3, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::kl_max, false)[0], l3, 1e-15);
  }
  // The O(C) form of ||p - e_y|| used for C > 128 equals the literal one.
  {
    Rng rng(1);
    const auto p = random_prob_row(rng, 300, 0);
    for (std::int64_t y : {0, 17, 299}) {
      double lit = 0;
      for (std::int64_t c = 0; c < 300; ++c) lit += (p[c] - (c == y)) * (p[c] - (c == y));
      EXPECT_NEAR(ref_dist_to_onehot(p, y), std::sqrt(lit), 1e-14);
    }
  }
}

// ================================================================== 1. random inputs vs reference

class RandomVsReference : public ::testing::TestWithParam<Acquisition> {};

TEST_P(RandomVsReference, MatchesDoubleReference) {
  const Acquisition a = GetParam();
  const ScoreInfo& si = info(a);
  struct Shape {
    std::int64_t M, N, C, D;  // M = 0: [N,C]
  };
  std::vector<Shape> shapes;
  if (si.committee) {
    shapes = {{1, 1, 1, 0},    {2, 7, 1, 0},     {1, 7, 3, 0},      {2, 1000, 2, 0},
              {5, 1000, 10, 0}, {20, 1000, 10, 0}, {5, 4099, 3, 0},  {2, 4099, 100, 0},
              {5, 1000, 1000, 0}, {20, 7, 1000, 0}, {20, 1000, 100, 0}, {20, 4099, 2, 0}};
  } else if (si.embeddings) {
    shapes = {{0, 1, 1, 1},      {0, 7, 3, 16},     {0, 1000, 10, 300}, {0, 4099, 2, 16},
              {0, 1000, 1000, 16}, {0, 7, 100, 300}, {0, 4099, 10, 1},   {0, 1000, 100, 300},
              {0, 4099, 1, 16},  {5, 1000, 10, 16}, {20, 7, 1000, 16},  {2, 1000, 2, 300}};
  } else {
    shapes = {{0, 1, 1, 0},     {0, 1, 2, 0},      {0, 7, 1, 0},      {0, 7, 3, 0},
              {0, 7, 10, 0},    {0, 1000, 2, 0},   {0, 1000, 10, 0},  {0, 1000, 100, 0},
              {0, 1000, 1000, 0}, {0, 4099, 1, 0},  {0, 4099, 3, 0},   {0, 4099, 100, 0},
              {0, 7, 1000, 0},  {0, 4099, 1000, 0}, {2, 1000, 10, 0},  {5, 7, 1000, 0},
              {20, 1000, 3, 0}, {1, 4099, 100, 0}};
  }
  ErrStats total;
  for (std::size_t si_ = 0; si_ < shapes.size(); ++si_) {
    const Shape& s = shapes[si_];
    for (std::size_t vi = 0; vi < variants().size(); ++vi) {
      const Variant& v = variants()[vi];
      const Tensor in = random_input(mix_seed(s.M * 31 + s.N, s.C, vi), s.M, s.N, s.C, v);
      Tensor emb;
      if (si.embeddings)
        emb = random_embeddings(mix_seed(s.N, s.D, vi), s.N, s.D,
                                vi % 2 ? DType::f16 : DType::f32);
      std::ostringstream what;
      what << si.name << " " << v.name << " input " << shape_name(in);
      if (si.embeddings) what << " embeddings " << shape_name(emb) << "/"
                              << (emb.dtype == DType::f16 ? "f16" : "f32");
      const ErrStats st = check_against_reference(in, a, v.logits,
                                                  si.embeddings ? &emb : nullptr, what.str());
      if (std::getenv("QUARRY_TEST_VERBOSE"))  // per-case worst errors, for diagnosis
        std::cout << "  " << what.str() << std::scientific << std::setprecision(2)
                  << ": max|err| " << st.max_abs << ", err/tol " << st.max_frac
                  << std::defaultfloat << "\n";
      total.merge(st);
    }
  }
  std::ostringstream line;
  line << std::scientific << std::setprecision(2) << "max|err| " << total.max_abs << ", max rel "
       << total.max_rel << ", max err/tol " << total.max_frac << " over " << total.compared
       << " rows (" << total.skipped << " near-tied rows skipped)";
  std::cout << "[ worst ] " << si.name << ": " << line.str() << "\n";
  RecordProperty("worst_error", line.str());
  EXPECT_EQ(total.failures, 0);
}

std::string acq_param_name(const ::testing::TestParamInfo<Acquisition>& p) {
  std::string s = info(p.param).name;
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

INSTANTIATE_TEST_SUITE_P(AllScores, RandomVsReference, ::testing::ValuesIn(all_scores()),
                         acq_param_name);

// float64 input is accepted (the default tolerance for it is documented) and matches too.
TEST(RandomVsReferenceF64, AllScores) {
  const Variant vp{"probs/f64", false, 0, DType::f64};
  const Variant vl{"logits*3/f64", true, 3, DType::f64};
  for (const Variant& v : {vp, vl}) {
    const Tensor in2 = random_input(101, 0, 1000, 10, v);
    const Tensor in3 = random_input(102, 5, 1000, 10, v);
    const Tensor emb = random_embeddings(103, 1000, 16, DType::f32);
    for (const ScoreInfo& si : score_table()) {
      const Tensor& in = si.committee ? in3 : in2;
      check_against_reference(in, si.acq, v.logits, si.embeddings ? &emb : nullptr,
                              std::string(si.name) + " " + v.name);
    }
  }
}

// ================================================================== 2. hard cases

// Checks every applicable score on `in` against the reference (and returns the scores).
std::map<Acquisition, std::vector<float>> check_all(const Tensor& in, bool logits,
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

Tensor ones_embeddings(std::int64_t N, std::int64_t D, double value = 1.0) {
  return make_tensor(std::vector<double>(static_cast<std::size_t>(N * D), value), {N, D});
}

double tol_for(double expected) { return kAtol + kRtol * std::fabs(expected); }

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

std::string row_string(const Tensor& in, std::int64_t m, std::int64_t n) {
  const Dims d = dims_of(in);
  std::ostringstream os;
  os << std::setprecision(9) << "[";
  for (std::int64_t c = 0; c < std::min<std::int64_t>(d.C, 12); ++c)
    os << (c ? ", " : "") << in.vals[(m * d.N + n) * d.C + c];
  if (d.C > 12) os << ", ... (" << d.C << " classes)";
  os << "]";
  return os.str();
}

TEST(HardCases, OneHotRows) {
  for (std::int64_t C : {1, 2, 3, 10, 1000}) {
    for (DType dt : {DType::f32, DType::f16}) {
      const std::int64_t N = std::min<std::int64_t>(C, 37);
      std::vector<double> x(static_cast<std::size_t>(N * C), 0.0);
      for (std::int64_t n = 0; n < N; ++n) x[n * C + (n * 7) % C] = 1.0;
      const Tensor in = make_tensor(x, {N, C}, dt);
      const Tensor emb = random_embeddings(5, N, 16, DType::f32);
      auto s = check_all(in, false, "one-hot C=" + std::to_string(C), &emb);
      for (Acquisition a : {Acquisition::least_confidence, Acquisition::margin, Acquisition::ratio,
                            Acquisition::entropy, Acquisition::egl, Acquisition::badge_norm})
        for (std::int64_t n = 0; n < N && s.count(a); ++n)
          EXPECT_NEAR(s[a][n], 0.0, kAtol) << info(a).name << " one-hot C=" << C << " row " << n;
    }
  }
}

TEST(HardCases, UniformRows) {
  for (std::int64_t C : {1, 2, 3, 10, 1000}) {
    const std::int64_t N = 5;
    const Tensor probs = make_tensor(std::vector<double>(N * C, 1.0 / C), {N, C});
    const Tensor logits = make_tensor(std::vector<double>(N * C, -3.25), {N, C});
    const Tensor emb = ones_embeddings(N, 4, 0.5);  // ||h|| = 1
    for (bool lg : {false, true}) {
      const Tensor& in = lg ? logits : probs;
      auto s = check_all(in, lg, std::string("uniform ") + (lg ? "logits" : "probs") +
                                     " C=" + std::to_string(C), &emb);
      const double c = static_cast<double>(C);
      const std::map<Acquisition, double> expect = {
          {Acquisition::least_confidence, 1 - 1 / c},
          {Acquisition::margin, C == 1 ? 0.0 : 1.0},
          {Acquisition::ratio, C == 1 ? 0.0 : 1.0},
          {Acquisition::entropy, std::log(c)},
          {Acquisition::egl, std::sqrt(1 - 1 / c)},
          {Acquisition::badge_norm, std::sqrt(1 - 1 / c)},
      };
      for (const auto& [a, e] : expect)
        for (std::int64_t n = 0; n < N; ++n)
          EXPECT_NEAR(s[a][n], e, tol_for(e)) << info(a).name << " uniform C=" << C;
    }
  }
}

TEST(HardCases, ExactZerosInRows) {
  const std::vector<double> x = {
      0.5, 0.0, 0.5, 0.0, 0.0,  //
      0.0, 0.0, 1.0, 0.0, 0.0,  //
      0.7, 0.3, 0.0, 0.0, 0.0,  //
      0.0, 0.0, 0.0, 0.0, 1.0,  //
      0.0, 0.2, 0.0, 0.8, 0.0,  //
      0.1, 0.2, 0.3, 0.4, 0.0,
  };
  for (DType dt : {DType::f32, DType::f16}) {
    const Tensor in = make_tensor(x, {6, 5}, dt);
    const Tensor emb = random_embeddings(6, 6, 3, DType::f32);
    auto s = check_all(in, false, "exact zeros", &emb);
    EXPECT_NEAR(s[Acquisition::entropy][0], std::log(2.0), tol_for(std::log(2.0)));
    EXPECT_NEAR(s[Acquisition::margin][0], 1.0, tol_for(1.0));
    EXPECT_NEAR(s[Acquisition::entropy][1], 0.0, kAtol);
    for (auto& [a, v] : s)
      for (float f : v) EXPECT_TRUE(std::isfinite(f)) << info(a).name;
    // Committee: zeros in members, and classes no member gives mass to.
    const std::vector<double> c = {
        0.5, 0.5, 0.0, 0.0,  // member 0, sample 0
        1.0, 0.0, 0.0, 0.0,  // member 0, sample 1
        0.0, 0.5, 0.5, 0.0,  // member 1, sample 0
        1.0, 0.0, 0.0, 0.0,  // member 1, sample 1
    };
    const Tensor com = make_tensor(c, {2, 2, 4}, dt);
    auto t = check_all(com, false, "committee with zeros");
    for (auto& [a, v] : t)
      for (float f : v) EXPECT_TRUE(std::isfinite(f)) << info(a).name;
    // sample 0: pbar = [.25,.5,.25,0]: H = 1.5 log 2, mean H(p_m) = log 2, bald = 0.5 log 2.
    EXPECT_NEAR(t[Acquisition::bald][0], 0.5 * std::log(2.0), tol_for(0.35));
    EXPECT_NEAR(t[Acquisition::kl_max][0], 0.5 * std::log(2.0), tol_for(0.35));
    EXPECT_NEAR(t[Acquisition::bald][1], 0.0, kAtol);
  }
}

TEST(HardCases, SingleClass) {
  // C = 1: p = [1] always; every score is 0 (p(2) = 0), for probabilities and logits alike.
  const std::int64_t N = 9;
  std::vector<double> lg(N);
  for (std::int64_t n = 0; n < N; ++n) lg[n] = (n - 4) * 1234.5;
  const Tensor probs = make_tensor(std::vector<double>(N, 1.0), {N, 1});
  const Tensor logits = make_tensor(lg, {N, 1});
  std::vector<double> lg3;
  for (int m = 0; m < 3; ++m) lg3.insert(lg3.end(), lg.begin(), lg.end());
  const Tensor com_probs = make_tensor(std::vector<double>(3 * N, 1.0), {3, N, 1});
  const Tensor com_logits = make_tensor(lg3, {3, N, 1});
  const Tensor emb = random_embeddings(7, N, 8, DType::f32);
  for (int k = 0; k < 4; ++k) {
    const Tensor& in = k == 0 ? probs : k == 1 ? logits : k == 2 ? com_probs : com_logits;
    const bool is_logits = k % 2 == 1;
    auto s = check_all(in, is_logits, "C=1 case " + std::to_string(k), &emb);
    for (auto& [a, v] : s)
      for (std::int64_t n = 0; n < N; ++n)
        EXPECT_NEAR(v[n], 0.0, kAtol) << info(a).name << " C=1 case " << k << " row " << n;
  }
}

TEST(HardCases, TwoClasses) {
  const std::vector<double> x = {0.5, 0.5, 0.9, 0.1, 0.1, 0.9, 1.0, 0.0, 0.0, 1.0, 0.75, 0.25};
  for (DType dt : {DType::f32, DType::f16}) {
    const Tensor in = make_tensor(x, {6, 2}, dt);
    const Tensor emb = ones_embeddings(6, 1, -2.0);  // ||h|| = 2
    auto s = check_all(in, false, "C=2", &emb);
    EXPECT_NEAR(s[Acquisition::margin][0], 1.0, tol_for(1.0));
    EXPECT_NEAR(s[Acquisition::ratio][0], 1.0, tol_for(1.0));
    EXPECT_NEAR(s[Acquisition::least_confidence][0], 0.5, tol_for(0.5));
    EXPECT_NEAR(s[Acquisition::entropy][0], std::log(2.0), tol_for(0.7));
    // p = [.75,.25]: ||p - e_0|| = .25 sqrt 2, ||p - e_1|| = .75 sqrt 2
    const double egl = 2 * (0.75 * 0.25 * std::sqrt(2.0) + 0.25 * 0.75 * std::sqrt(2.0));
    EXPECT_NEAR(s[Acquisition::egl][5], egl, tol_for(egl));
    EXPECT_NEAR(s[Acquisition::badge_norm][5], 2 * 0.25 * std::sqrt(2.0), tol_for(0.7));
  }
  // Random committees with C = 2.
  for (const Variant& v : variants()) {
    const Tensor com = random_input(11, 3, 500, 2, v);
    check_all(com, v.logits, std::string("C=2 committee ") + v.name);
  }
}

TEST(HardCases, LargeC) {
  const std::int64_t C = 1000, N = 64;
  Rng rng(12);
  std::vector<double> x(static_cast<std::size_t>(N * C), 0.0);
  for (std::int64_t n = 0; n < N; ++n) {
    const auto p = random_prob_row(rng, C, static_cast<int>(n % 5));
    std::copy(p.begin(), p.end(), x.begin() + n * C);
  }
  // a row with one big class and 999 equal tiny ones; a row with two tied tops
  for (std::int64_t c = 0; c < C; ++c) x[c] = c == 500 ? 0.5 : 0.5 / 999;
  for (std::int64_t c = 0; c < C; ++c) x[C + c] = c == 3 || c == 997 ? 0.25 : 0.5 / 998;
  for (DType dt : {DType::f32, DType::f16}) {
    const Tensor in = make_tensor(x, {N, C}, dt);
    const Tensor emb = random_embeddings(13, N, 300, dt);
    auto s = check_all(in, false, "C=1000", &emb);
    EXPECT_NEAR(s[Acquisition::ratio][1], 1.0, tol_for(1.0));
    EXPECT_NEAR(s[Acquisition::margin][1], 1.0, tol_for(1.0));
  }
}

TEST(HardCases, HugeFiniteLogits) {
  const double F = FLT_MAX;
  const std::vector<std::vector<double>> rows = {
      {1e4, -1e4, 0},      {-1e4, 1e4, 0},     {1e4, 1e4, -1e4},   {-1e4, -1e4, -1e4},
      {1e30, -1e30, 0},    {-1e30, -1e30, 1e30}, {1e30, 1e30, 1e30}, {-1e30, 0, -1e30},
      {1e38, -1e38, 0},    {-1e38, -1e38, -1e38}, {1e38, 1e38, -1e38}, {0, 1e-30, -1e-30},
      {88.7, 88.7, -103},  {1e4, 1e4 - 1, 0},  {-1e4, -1e4 + 1, -1e4 + 2}, {0, 0, 0},
  };
  const std::int64_t N = static_cast<std::int64_t>(rows.size()), C = 3;
  std::vector<double> x;
  for (const auto& r : rows) x.insert(x.end(), r.begin(), r.end());
  const Tensor in = make_tensor(x, {N, C});
  const Tensor emb = ones_embeddings(N, 3);
  auto s = check_all(in, true, "huge logits", &emb);
  for (auto& [a, v] : s)
    for (std::int64_t n = 0; n < N; ++n)
      EXPECT_TRUE(std::isfinite(v[n])) << info(a).name << " row " << n << " = " << v[n];
  EXPECT_NEAR(s[Acquisition::entropy][0], 0.0, kAtol);
  EXPECT_NEAR(s[Acquisition::margin][2], 1.0, tol_for(1.0));
  EXPECT_NEAR(s[Acquisition::entropy][3], std::log(3.0), tol_for(1.1));
  EXPECT_NEAR(s[Acquisition::entropy][9], std::log(3.0), tol_for(1.1));
  EXPECT_NEAR(s[Acquisition::entropy][10], std::log(2.0), tol_for(0.7));
  // The largest finite float32 logits, in their own input (so that a failure here does not
  // hide the rows above): x - max overflows to -Inf in float32 for [F, -F], which must still
  // give p = [1, 0] (exp(-Inf) = 0), not an error or NaN.
  {
    const Tensor fm = make_tensor({F, -F, 0, -F, -F, -F, F, F, -F, -F, F, -F}, {4, 3});
    const Tensor emb4 = ones_embeddings(4, 3);
    auto u = check_all(fm, true, "FLT_MAX logits", &emb4);
    EXPECT_NEAR(u[Acquisition::entropy][1], std::log(3.0), tol_for(1.1));
    EXPECT_NEAR(u[Acquisition::entropy][2], std::log(2.0), tol_for(0.7));
  }
  // committee of huge logits, members disagreeing completely
  std::vector<double> c;
  for (int m = 0; m < 4; ++m)
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < C; ++k) c.push_back(rows[(n + m * 3) % N][k]);
  const Tensor com = make_tensor(c, {4, N, C});
  auto t = check_all(com, true, "huge logits committee", &emb);
  for (auto& [a, v] : t)
    for (std::int64_t n = 0; n < N; ++n)
      EXPECT_TRUE(std::isfinite(v[n])) << info(a).name << " committee row " << n;
  // float16 extremes: +-65504
  std::vector<double> h = {65504, -65504, 0, -65504, -65504, -65504, 65504, 65504, 0};
  const Tensor in16 = make_tensor(h, {3, 3}, DType::f16);
  const Tensor emb3 = ones_embeddings(3, 2);
  check_all(in16, true, "f16 huge logits", &emb3);
}

// Gradient norms of confident rows. ||p - e_y||^2 = sum_c p_c^2 - 2 p_y + 1 is exact algebra
// but, evaluated in float32 for p_y near 1, cancels catastrophically (absolute error ~1e-7 in
// a square of ~2 eps^2), so ||p - e_yhat|| comes out 0 or badly wrong. A float32 evaluation
// that keeps 1 - p_y (e.g. as the sum of the other classes, or 1 - p_y directly, exact by
// Sterbenz for p_y >= 1/2) is accurate to ~ulp(1)/eps relative: <= 6e-4 here. We allow 1e-2.
TEST(HardCases, ConfidentRowsGradientNorms) {
  for (double eps : {1e-2, 1e-3, 1e-4, 3e-5}) {
    for (std::int64_t C : {2, 3, 10}) {
      // row 0: [1 - eps, eps, 0, ...]; row 1: [eps/(C-1) ..., 1 - eps, ...] (the big class
      // in the middle); ||h|| = 1.
      std::vector<double> x(2 * C, 0.0);
      x[0] = 1 - eps;
      x[1] = eps;
      for (std::int64_t c = 0; c < C; ++c) x[C + c] = eps / static_cast<double>(C - 1);
      x[C + C / 2] = 1 - eps;
      for (bool lg : {false, true}) {
        std::vector<double> in_x = x;
        if (lg)  // logits whose softmax is (close to) the same rows
          for (auto& v : in_x) v = v > 0 ? std::log(v) : -1e4;
        const Tensor in = make_tensor(in_x, {2, C});
        const Tensor emb = ones_embeddings(2, 4, 0.5);
        for (Acquisition a : {Acquisition::egl, Acquisition::badge_norm}) {
          const auto ref = reference(in, a, lg, &emb);
          std::vector<float> got;
          ASSERT_NO_THROW(got = lib_score(in, a, lg, &emb));
          for (int n = 0; n < 2; ++n)
            EXPECT_NEAR(got[n], ref[n], 1e-2 * ref[n])
                << info(a).name << (lg ? " logits" : " probs") << " C=" << C << " eps=" << eps
                << " row " << n << " (||h|| = 1)";
        }
      }
    }
  }
}

TEST(HardCases, Ties) {
  const std::vector<double> x = {
      0.4, 0.4, 0.2, 0.0,   //
      0.25, 0.25, 0.25, 0.25, //
      0.1, 0.3, 0.3, 0.3,   //
      0.0, 0.5, 0.0, 0.5,   //
      0.3, 0.2, 0.2, 0.3,   //
  };
  for (DType dt : {DType::f32, DType::f16}) {
    const Tensor in = make_tensor(x, {5, 4}, dt);
    const Tensor emb = ones_embeddings(5, 2);
    auto s = check_all(in, false, "ties", &emb);
    for (int n : {0, 1, 2, 3, 4}) {
      EXPECT_NEAR(s[Acquisition::margin][n], 1.0, tol_for(1.0)) << "row " << n;
      EXPECT_NEAR(s[Acquisition::ratio][n], 1.0, tol_for(1.0)) << "row " << n;
    }
  }
  // Votes: tied members vote for the lowest class index.
  // member 0 = [.5,.5,0] -> votes 0; member 1 = [.2,.2,.6] -> votes 2: shares (1/2, 0, 1/2).
  // member 2 = [0,.5,.5] -> votes 1.
  {
    const Tensor com = make_tensor({0.5, 0.5, 0.0, 0.2, 0.2, 0.6}, {2, 1, 3});
    auto t = check_all(com, false, "vote ties 2 members");
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], std::log(2.0), tol_for(0.7));
    EXPECT_NEAR(t[Acquisition::variation_ratio][0], 0.5, tol_for(0.5));
  }
  {
    // Three members all tied between classes 1 and 2: all vote 1 -> vote-entropy 0.
    const Tensor com = make_tensor({0.0, 0.5, 0.5, 0.1, 0.45, 0.45, 0.2, 0.4, 0.4}, {3, 1, 3});
    auto t = check_all(com, false, "vote ties all to class 1");
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], 0.0, 1e-6);
    EXPECT_EQ(t[Acquisition::variation_ratio][0], 0.0f);
  }
  {
    // [.5,.5,0] votes 0, [0,.5,.5] votes 1, [.5,0,.5] votes 0: shares (2/3, 1/3, 0).
    const Tensor com =
        make_tensor({0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.5, 0.0, 0.5}, {3, 1, 3});
    auto t = check_all(com, false, "vote ties lowest index");
    const double ve = -(2.0 / 3) * std::log(2.0 / 3) - (1.0 / 3) * std::log(1.0 / 3);
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], ve, tol_for(ve));
    EXPECT_NEAR(t[Acquisition::variation_ratio][0], 1.0 / 3, tol_for(0.34));
  }
  {
    // Tied logits: [1,1,0] votes 0; [0,2,2] votes 1.
    const Tensor com = make_tensor({1, 1, 0, 0, 2, 2}, {2, 1, 3});
    auto t = check_all(com, true, "vote ties logits");
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], std::log(2.0), tol_for(0.7));
  }
}

TEST(HardCases, CommitteeAgrees) {
  for (std::int64_t M : {1, 2, 5, 20}) {
    for (std::int64_t C : {2, 10, 1000}) {
      for (const Variant& v : variants()) {
        const std::int64_t N = C == 1000 ? 20 : 200;
        const Tensor one = random_input(mix_seed(M, C, 77), 0, N, C, v);
        std::vector<double> x;
        for (std::int64_t m = 0; m < M; ++m) x.insert(x.end(), one.vals.begin(), one.vals.end());
        const Tensor com = make_tensor(x, {M, N, C}, v.dtype);
        const std::string what = "agreeing committee M=" + std::to_string(M) +
                                 " C=" + std::to_string(C) + " " + v.name;
        auto t = check_all(com, v.logits, what);
        // A unanimous committee: bald and kl-max are 0 up to rounding and never negative;
        // vote-entropy is -1 log 1 = 0; variation-ratio is 1 - M/M = 0 exactly.
        const double at = tol_for_classes(C).atol;
        Violations bald(what + " bald"), kl(what + " kl-max"), ve(what + " vote-entropy"),
            vr(what + " variation-ratio");
        for (std::int64_t n = 0; n < N; ++n) {
          const float b = t[Acquisition::bald][n], k = t[Acquisition::kl_max][n];
          const float e = t[Acquisition::vote_entropy][n], r = t[Acquisition::variation_ratio][n];
          auto say = [&](float got) {
            return [=] {
              std::ostringstream os;
              os << std::setprecision(9) << "row " << n << ": got " << got << ", expected 0";
              return os.str();
            };
          };
          bald.check(b >= 0 && b <= at, say(b));
          kl.check(k >= 0 && k <= at, say(k));
          ve.check(e >= 0 && e <= 1e-6, say(e));
          vr.check(r == 0.0f, say(r));
        }
        // Single-model scores on a committee of identical members equal those on the member.
        for (Acquisition a : {Acquisition::least_confidence, Acquisition::margin,
                              Acquisition::ratio, Acquisition::entropy}) {
          const auto a1 = lib_score(one, a, v.logits);
          const auto a2 = t[a];
          std::vector<double> r(a1.begin(), a1.end());
          expect_close(a2, r, tol_for_classes(C).atol, tol_for_classes(C).rtol,
                       what + " " + info(a).name + " vs single model");
        }
      }
    }
  }
}

TEST(HardCases, CommitteeOneHotOnDifferentClasses) {
  // M = 3, C = 3: member m is one-hot on class m. pbar uniform.
  {
    std::vector<double> x;
    for (int m = 0; m < 3; ++m)
      for (int c = 0; c < 3; ++c) x.push_back(c == m ? 1.0 : 0.0);
    for (DType dt : {DType::f32, DType::f16}) {
      const Tensor com = make_tensor(x, {3, 1, 3}, dt);
      const Tensor emb = ones_embeddings(1, 1);
      auto t = check_all(com, false, "one-hot members", &emb);
      const double l3 = std::log(3.0);
      EXPECT_NEAR(t[Acquisition::consensus_entropy][0], l3, tol_for(l3));
      EXPECT_NEAR(t[Acquisition::bald][0], l3, tol_for(l3));
      EXPECT_NEAR(t[Acquisition::vote_entropy][0], l3, tol_for(l3));
      EXPECT_NEAR(t[Acquisition::kl_max][0], l3, tol_for(l3));
      EXPECT_NEAR(t[Acquisition::variation_ratio][0], 2.0 / 3, tol_for(0.67));
      EXPECT_NEAR(t[Acquisition::entropy][0], l3, tol_for(l3));  // on pbar
      EXPECT_NEAR(t[Acquisition::least_confidence][0], 2.0 / 3, tol_for(0.67));
    }
  }
  // M = 2, C = 4, one-hot on classes 0 and 1; plus M = 5 on 5 different classes of C = 1000.
  {
    std::vector<double> x = {1, 0, 0, 0, 0, 1, 0, 0};
    const Tensor com = make_tensor(x, {2, 1, 4});
    auto t = check_all(com, false, "one-hot members M=2");
    const double l2 = std::log(2.0);
    EXPECT_NEAR(t[Acquisition::bald][0], l2, tol_for(l2));
    EXPECT_NEAR(t[Acquisition::kl_max][0], l2, tol_for(l2));
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], l2, tol_for(l2));
    EXPECT_NEAR(t[Acquisition::variation_ratio][0], 0.5, tol_for(0.5));
  }
  {
    const std::int64_t M = 5, C = 1000;
    std::vector<double> x(M * C, 0.0);
    for (std::int64_t m = 0; m < M; ++m) x[m * C + m * 199] = 1.0;
    const Tensor com = make_tensor(x, {M, 1, C});
    auto t = check_all(com, false, "one-hot members M=5 C=1000");
    const double l5 = std::log(5.0);
    EXPECT_NEAR(t[Acquisition::bald][0], l5, tol_for(l5));
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], l5, tol_for(l5));
    EXPECT_NEAR(t[Acquisition::variation_ratio][0], 0.8, tol_for(0.8));
    // The same with logits of +-1e4
    std::vector<double> lg(M * C, -1e4);
    for (std::int64_t m = 0; m < M; ++m) lg[m * C + m * 199] = 1e4;
    const Tensor coml = make_tensor(lg, {M, 1, C});
    auto u = check_all(coml, true, "one-hot members by logits");
    EXPECT_NEAR(u[Acquisition::bald][0], l5, tol_for(l5));
    EXPECT_NEAR(u[Acquisition::kl_max][0], l5, tol_for(l5));
  }
}

// ================================================================== 3. properties

TEST(Properties, EntropyIsLogCAtUniformAndZeroAtOneHot) {
  for (std::int64_t C : {2, 10, 1000}) {
    for (DType dt : {DType::f32, DType::f16}) {
      const Tensor u = make_tensor(std::vector<double>(3 * C, 1.0 / C), {3, C}, dt);
      const auto s = lib_score(u, Acquisition::entropy, false);
      for (float v : s) EXPECT_NEAR(v, std::log(double(C)), tol_for(std::log(double(C)))) << C;
      const Tensor z = make_tensor(std::vector<double>(3 * C, 7.0), {3, C}, dt);
      for (float v : lib_score(z, Acquisition::entropy, true))
        EXPECT_NEAR(v, std::log(double(C)), tol_for(std::log(double(C)))) << C;
      std::vector<double> oh(3 * C, 0.0);
      oh[0] = oh[C + C / 2] = oh[2 * C + C - 1] = 1.0;
      for (float v : lib_score(make_tensor(oh, {3, C}, dt), Acquisition::entropy, false))
        EXPECT_NEAR(v, 0.0, 1e-6) << C;
    }
  }
}

TEST(Properties, BaldIsNonNegative) {
  std::int64_t rows = 0;
  for (std::int64_t M : {1, 2, 5, 20}) {
    for (std::int64_t C : {2, 3, 10, 100, 1000}) {
      for (std::size_t vi = 0; vi < variants().size(); ++vi) {
        const std::int64_t N = C == 1000 ? 60 : 300;
        const Tensor com = random_input(mix_seed(M, C, 500 + vi), M, N, C, variants()[vi]);
        const std::string what = "M=" + std::to_string(M) + " C=" + std::to_string(C) + " " +
                                 variants()[vi].name;
        const auto s = lib_score(com, Acquisition::bald, variants()[vi].logits);
        const auto k = lib_score(com, Acquisition::kl_max, variants()[vi].logits);
        Violations vb("bald >= 0 " + what), vk("kl-max >= 0 " + what);
        for (std::size_t n = 0; n < s.size(); ++n) {
          ++rows;
          auto say = [&](float x) {
            return [&, x, n] {
              std::ostringstream os;
              os << std::setprecision(9) << "row " << n << ": got " << x;
              return os.str();
            };
          };
          vb.check(s[n] >= 0.0f, say(s[n]));
          vk.check(k[n] >= 0.0f, say(k[n]));
        }
      }
    }
  }
  std::cout << "[ bald >= 0 ] checked " << rows << " rows\n";
}

TEST(Properties, InvariantUnderClassPermutation) {
  for (const Variant& v : variants()) {
    for (std::int64_t C : {3, 10, 1000}) {
      const std::int64_t M = 4, N = C == 1000 ? 50 : 500;
      const Tensor com = random_input(mix_seed(C, 9, 1), M, N, C, v);
      std::vector<std::int64_t> perm(C);
      std::iota(perm.begin(), perm.end(), 0);
      Rng rng(C);
      for (std::int64_t i = C - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(i + 1)]);
      std::vector<double> px(com.vals.size());
      for (std::int64_t r = 0; r < M * N; ++r)
        for (std::int64_t c = 0; c < C; ++c) px[r * C + c] = com.vals[r * C + perm[c]];
      const Tensor pcom = make_tensor(px, com.shape, v.dtype);
      // [N,C]: the first member.
      std::vector<double> x2(com.vals.begin(), com.vals.begin() + N * C);
      std::vector<double> p2(px.begin(), px.begin() + N * C);
      const Tensor in2 = make_tensor(x2, {N, C}, v.dtype), pin2 = make_tensor(p2, {N, C}, v.dtype);
      const Tensor emb = random_embeddings(C, N, 16, DType::f32);
      const auto amb = ambiguous_vote_rows(com, v.logits, 1e-5, /*exact_ties=*/true);
      for (const ScoreInfo& si : score_table()) {
        const Tensor& a = si.committee ? com : in2;
        const Tensor& b = si.committee ? pcom : pin2;
        const auto s1 = lib_score(a, si.acq, v.logits, &emb);
        const auto s2 = lib_score(b, si.acq, v.logits, &emb);
        std::vector<double> r1(s1.begin(), s1.end());
        const std::vector<double> hs = atol_scale_for(si.acq, &emb);
        expect_close(s2, r1, tol_for_classes(C).atol, tol_for_classes(C).rtol,
                     std::string("permuted classes ") + si.name + " " + v.name + " C=" +
                         std::to_string(C),
                     si.votes ? &amb : nullptr, hs.empty() ? nullptr : &hs);
      }
    }
  }
}

TEST(Properties, Ranges) {
  for (const Variant& v : variants()) {
    for (std::int64_t C : {1, 2, 3, 10, 1000}) {
      const std::int64_t N = C == 1000 ? 300 : 3000;
      const Tensor in = random_input(mix_seed(C, 3, 3), 0, N, C, v);
      const std::string what = std::string(v.name) + " C=" + std::to_string(C);
      const auto lc = lib_score(in, Acquisition::least_confidence, v.logits);
      const auto mg = lib_score(in, Acquisition::margin, v.logits);
      const auto rt = lib_score(in, Acquisition::ratio, v.logits);
      const auto en = lib_score(in, Acquisition::entropy, v.logits);
      // 1 - p(1) <= 1 - 1/C holds exactly for the true p; float32 rounding of p(1) = 1/C
      // (a uniform row) may put it an ulp above, hence the 1e-6.
      const double lc_max = 1 - 1.0 / C + 1e-6;
      Violations vlc("least-confidence in [0, 1-1/C] " + what), vmg("margin in [0, 1] " + what),
          vrt("ratio in [0, 1] " + what), ven("entropy in [0, log C] " + what);
      for (std::int64_t n = 0; n < N; ++n) {
        auto say = [&](float x) {
          return [&, x, n] {
            std::ostringstream os;
            os << std::setprecision(9) << "row " << n << ": got " << x << " for row "
               << row_string(in, 0, n);
            return os.str();
          };
        };
        vlc.check(lc[n] >= 0 && lc[n] <= lc_max, say(lc[n]));
        vmg.check(mg[n] >= 0 && mg[n] <= 1, say(mg[n]));
        vrt.check(rt[n] >= 0 && rt[n] <= 1, say(rt[n]));
        ven.check(en[n] >= 0 && en[n] <= std::log(double(C)) + 1e-5, say(en[n]));
      }
    }
  }
  // Committee scores: consensus-entropy in [0, log C], vote-entropy in [0, log min(M, C)],
  // variation-ratio in [0, 1 - 1/M], kl-max >= 0; egl, badge-norm >= 0.
  for (const Variant& v : variants()) {
    for (std::int64_t M : {1, 2, 5, 20}) {
      for (std::int64_t C : {2, 3, 10}) {
        const std::int64_t N = 1000;
        const Tensor com = random_input(mix_seed(M, C, 4), M, N, C, v);
        const Tensor emb = random_embeddings(M + C, N, 8, DType::f32);
        const std::string what =
            std::string(v.name) + " M=" + std::to_string(M) + " C=" + std::to_string(C);
        const double logC = std::log(double(C)), logMC = std::log(double(std::min(M, C)));
        struct Bound {
          Acquisition a;
          double lo, hi;
        };
        const std::vector<Bound> bounds = {
            {Acquisition::consensus_entropy, 0, logC + 1e-5},
            {Acquisition::vote_entropy, 0, logMC + 1e-5},
            {Acquisition::variation_ratio, 0, 1 - 1.0 / M + 1e-6},
            {Acquisition::kl_max, 0, std::numeric_limits<double>::infinity()},
            {Acquisition::egl, 0, std::numeric_limits<double>::infinity()},
            {Acquisition::badge_norm, 0, std::numeric_limits<double>::infinity()},
        };
        for (const Bound& b : bounds) {
          const auto s = lib_score(com, b.a, v.logits, &emb);
          Violations vio(std::string(info(b.a).name) + " range " + what);
          for (std::int64_t n = 0; n < N; ++n)
            vio.check(s[n] >= b.lo && s[n] <= b.hi, [&, n] {
              std::ostringstream os;
              os << std::setprecision(9) << "row " << n << ": got " << s[n] << " outside ["
                 << b.lo << ", " << b.hi << "]";
              return os.str();
            });
        }
      }
    }
  }
}

TEST(Properties, LogitsEqualSoftmaxProbabilities) {
  for (double scale : {0.1, 3.0, 30.0}) {
    for (std::int64_t C : {2, 10, 1000}) {
      const std::int64_t M = 3, N = C == 1000 ? 100 : 1000;
      const Variant v{"logits", true, scale, DType::f32};
      const Tensor lg = random_input(mix_seed(C, 1, 2), M, N, C, v);
      // softmax in double, stored as float32
      std::vector<double> px(lg.vals.size());
      for (std::int64_t r = 0; r < M * N; ++r) {
        const auto p = ref_probs(lg.vals.data() + r * C, C, true);
        std::copy(p.begin(), p.end(), px.begin() + r * C);
      }
      const Tensor pr = make_tensor(px, lg.shape);
      std::vector<double> l2(lg.vals.begin(), lg.vals.begin() + N * C);
      std::vector<double> p2(px.begin(), px.begin() + N * C);
      const Tensor lg2 = make_tensor(l2, {N, C}), pr2 = make_tensor(p2, {N, C});
      const Tensor emb = random_embeddings(4, N, 16, DType::f32);
      const auto amb = ambiguous_vote_rows(pr, false);
      for (const ScoreInfo& si : score_table()) {
        const auto a = lib_score(si.committee ? lg : lg2, si.acq, true, &emb);
        const auto b = lib_score(si.committee ? pr : pr2, si.acq, false, &emb);
        std::vector<double> rb(b.begin(), b.end());
        std::ostringstream w;
        w << "logits vs softmax probabilities " << si.name << " scale " << scale << " C=" << C;
        const std::vector<double> hs = atol_scale_for(si.acq, &emb);
        expect_close(a, rb, tol_for_classes(C).atol, tol_for_classes(C).rtol, w.str(),
                     si.votes ? &amb : nullptr, hs.empty() ? nullptr : &hs);
      }
    }
  }
}

TEST(Properties, Float16CloseToFloat32) {
  // float16 keeps 11 significant bits: each probability moves by at most 2^-11 relative, so
  // the scores (Lipschitz in p on these inputs) move by a few 1e-3 at most.
  const double tol16 = 5e-3;
  for (bool logits : {false, true}) {
    const std::int64_t M = 4, N = 1000, C = 10;
    const Variant v32{"f32", logits, 3, DType::f32};
    const Tensor a = random_input(99, M, N, C, v32);
    const Tensor b = make_tensor(a.vals, a.shape, DType::f16);
    std::vector<double> x2(a.vals.begin(), a.vals.begin() + N * C);
    const Tensor a2 = make_tensor(x2, {N, C}), b2 = make_tensor(x2, {N, C}, DType::f16);
    const Tensor emb32 = random_embeddings(98, N, 16, DType::f32);
    const Tensor emb16 = make_tensor(emb32.vals, emb32.shape, DType::f16);
    // float16 rounding (2^-11 relative; <= 0.008 absolute for these logits) can reorder or
    // merge classes closer than that: those rows are not compared for vote scores.
    const auto amb = ambiguous_vote_rows(a, logits, 2e-2, /*exact_ties=*/true);
    for (const ScoreInfo& si : score_table()) {
      const auto s32 = lib_score(si.committee ? a : a2, si.acq, logits, &emb32);
      const auto s16 = lib_score(si.committee ? b : b2, si.acq, logits, &emb16);
      std::vector<double> r(s32.begin(), s32.end());
      const std::vector<double> hs = atol_scale_for(si.acq, &emb32);
      expect_close(s16, r, tol16, tol16,
                   std::string("float16 vs float32 ") + si.name + (logits ? " logits" : " probs"),
                   si.votes ? &amb : nullptr, hs.empty() ? nullptr : &hs);
    }
  }
}

TEST(Properties, EveryRowWrittenPointerOverload) {
  const std::int64_t N = 4099;
  for (const ScoreInfo& si : score_table()) {
    for (const Variant& v : variants()) {
      const Tensor in = random_input(mix_seed(N, 5, 6), si.committee ? 3 : 0, N, 10, v);
      const Tensor emb = random_embeddings(8, N, 16, DType::f32);
      const quarry::ArrayView ev = emb.view();
      std::vector<float> out(N + 16, std::numeric_limits<float>::quiet_NaN());
      for (std::int64_t i = N; i < N + 16; ++i) out[i] = 12345.0f;  // canary past the end
      quarry::score(in.view(), si.acq, out.data(), cpu_options(v.logits),
                    si.embeddings ? &ev : nullptr);
      std::int64_t unwritten = 0;
      for (std::int64_t n = 0; n < N; ++n) unwritten += std::isnan(out[n]) ? 1 : 0;
      EXPECT_EQ(unwritten, 0) << si.name << " " << v.name;
      for (std::int64_t i = N; i < N + 16; ++i)
        EXPECT_EQ(out[i], 12345.0f) << si.name << " wrote past the end at " << i;
      const auto vec = lib_score(in, si.acq, v.logits, &emb);
      ASSERT_EQ(vec.size(), static_cast<std::size_t>(N));
      EXPECT_EQ(std::memcmp(vec.data(), out.data(), N * sizeof(float)), 0)
          << si.name << " pointer and vector overloads differ";
    }
  }
}

TEST(Properties, SumToleranceAndNormalisation) {
  // float32 default 1e-3: a row summing to 1.0005 is accepted and normalised by its sum.
  {
    const Tensor in = make_tensor({0.5, 0.5005, 0.2, 0.8}, {2, 2});
    check_all(in, false, "sum 1.0005");
    const auto s = lib_score(in, Acquisition::entropy, false);
    EXPECT_NEAR(s[0], reference(in, Acquisition::entropy, false)[0], kAtol);
  }
  // A looser sum_tolerance lets a row summing to 0.9 through; it is normalised by its sum.
  {
    const Tensor in = make_tensor({0.45, 0.45, 0.3, 0.6}, {2, 2});
    quarry::ScoreOptions o = cpu_options();
    o.sum_tolerance = 0.2;
    const auto s = quarry::score(in.view(), Acquisition::margin, o);
    EXPECT_NEAR(s[0], 1.0, tol_for(1.0));
    EXPECT_NEAR(s[1], 1 - (0.6 / 0.9 - 0.3 / 0.9), tol_for(0.67));
    const auto e = quarry::score(in.view(), Acquisition::entropy, o);
    EXPECT_NEAR(e[0], std::log(2.0), tol_for(0.7));
  }
  // float16 default 1e-2: 1.005 passes.
  {
    const Tensor in = make_tensor({0.5, 0.505, 0.25, 0.75}, {2, 2}, DType::f16);
    EXPECT_NO_THROW(lib_score(in, Acquisition::entropy, false));
    check_all(in, false, "f16 sum 1.005");
  }
  // Logits need not sum to anything.
  {
    const Tensor in = make_tensor({5, 3, -1, 2, 2, 2}, {2, 3});
    EXPECT_NO_THROW(lib_score(in, Acquisition::entropy, true));
  }
}

// ================================================================== 4. errors

// The message of the quarry::Error `f` throws ("" and a failure if it throws nothing or
// something else).
std::string error_message(const std::function<void()>& f, const std::string& what) {
  try {
    f();
  } catch (const quarry::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw a non-quarry exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << what << ": did not throw";
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A valid [10,4] probability input with row `row` replaced by `bad`.
Tensor ten_rows_with(std::int64_t row, std::vector<double> bad, DType dt = DType::f32,
                     bool committee = false) {
  const std::int64_t N = 10, C = 4;
  std::vector<double> x;
  const std::int64_t M = committee ? 3 : 1;
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t c = 0; c < C; ++c)
        x.push_back((m == M - 1 && n == row) ? bad[c] : (c + 1) / 10.0);
  return make_tensor(x, committee ? std::vector<std::int64_t>{M, N, C}
                                   : std::vector<std::int64_t>{N, C},
                     dt);
}

TEST(Errors, BadProbabilityRowsNameTheRow) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    const char* what;
    std::int64_t row;
    std::vector<double> values;
  };
  const std::vector<Case> cases = {
      {"NaN", 5, {0.25, nan, 0.25, 0.25}},
      {"sum 0.9", 7, {0.3, 0.3, 0.2, 0.1}},
      {"sum 1.1", 2, {0.3, 0.3, 0.3, 0.2}},
      {"negative", 3, {0.6, -0.1, 0.3, 0.2}},
      {"+Inf", 8, {inf, 0.0, 0.0, 0.0}},
      {"-Inf", 4, {-inf, 0.5, 0.5, 0.0}},
      {"all zero", 6, {0.0, 0.0, 0.0, 0.0}},
      {"NaN in last row", 9, {nan, nan, nan, nan}},
  };
  for (const Case& c : cases) {
    for (DType dt : {DType::f32, DType::f16}) {
      for (bool committee : {false, true}) {
        const Tensor in = ten_rows_with(c.row, c.values, dt, committee);
        for (const ScoreInfo& si : score_table()) {
          if (si.committee && !committee) continue;
          const Tensor emb = ones_embeddings(10, 2);
          const std::string what = std::string(c.what) + " " + si.name +
                                   (dt == DType::f16 ? " f16" : " f32") +
                                   (committee ? " committee" : "");
          const std::string msg =
              error_message([&] { lib_score(in, si.acq, false, &emb); }, what);
          const std::string row = "row " + std::to_string(c.row);
          EXPECT_TRUE(contains(msg, row)) << what << ": message does not name " << row << ": "
                                          << msg;
        }
      }
    }
  }
}

TEST(Errors, BadLogitsNameTheRow) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (double bad : {inf, -inf, nan}) {
    for (DType dt : {DType::f32, DType::f16}) {
      for (bool committee : {false, true}) {
        const Tensor in = ten_rows_with(5, {1.0, bad, -2.0, 0.0}, dt, committee);
        for (const ScoreInfo& si : score_table()) {
          if (si.committee && !committee) continue;
          const Tensor emb = ones_embeddings(10, 2);
          const std::string what = std::string("logit ") + std::to_string(bad) + " " + si.name;
          const std::string msg =
              error_message([&] { lib_score(in, si.acq, true, &emb); }, what);
          EXPECT_TRUE(contains(msg, "row 5")) << what << ": " << msg;
        }
      }
    }
  }
}

TEST(Errors, InputNameAppearsInMessage) {
  const Tensor in = ten_rows_with(5, {0.25, std::nan(""), 0.25, 0.25});
  quarry::ScoreOptions o = cpu_options();
  o.input_name = "pool_outputs.npy";
  const std::string msg =
      error_message([&] { quarry::score(in.view(), Acquisition::entropy, o); }, "input_name");
  EXPECT_TRUE(contains(msg, "pool_outputs.npy")) << msg;
  EXPECT_TRUE(contains(msg, "row 5")) << msg;
}

TEST(Errors, ShapeErrors) {
  const Tensor r2 = make_tensor(std::vector<double>(12, 0.25), {3, 4});
  const Tensor r1 = make_tensor(std::vector<double>(4, 0.25), {4});
  const Tensor r4 = make_tensor(std::vector<double>(2 * 2 * 3 * 4, 0.25), {2, 2, 3, 4});
  const Tensor emb = ones_embeddings(3, 2);
  for (const ScoreInfo& si : score_table()) {
    if (si.committee) {
      EXPECT_THROW(lib_score(r2, si.acq, false), quarry::Error) << si.name << " on [N,C]";
    }
    EXPECT_THROW(lib_score(r1, si.acq, false, &emb), quarry::Error) << si.name << " rank 1";
    EXPECT_THROW(lib_score(r4, si.acq, false, &emb), quarry::Error) << si.name << " rank 4";
  }
}

TEST(Errors, EmbeddingErrors) {
  const Tensor in = make_tensor(std::vector<double>(12, 0.25), {3, 4});
  const Tensor com = make_tensor(std::vector<double>(24, 0.25), {2, 3, 4});
  const Tensor wrong_n = ones_embeddings(4, 2);
  const Tensor wrong_n_small = ones_embeddings(2, 2);
  for (Acquisition a : {Acquisition::egl, Acquisition::badge_norm}) {
    const std::string name = info(a).name;
    EXPECT_THROW(lib_score(in, a, false, nullptr), quarry::Error) << name << " without embeddings";
    EXPECT_THROW(lib_score(com, a, false, nullptr), quarry::Error) << name << " without embeddings";
    EXPECT_THROW(lib_score(in, a, false, &wrong_n), quarry::Error) << name << " N+1 embeddings";
    EXPECT_THROW(lib_score(in, a, false, &wrong_n_small), quarry::Error) << name << " N-1";
    EXPECT_THROW(lib_score(com, a, false, &wrong_n), quarry::Error) << name << " committee N+1";
    quarry::ScoreOptions o = cpu_options();
    o.embeddings_name = "features_h.npy";
    const quarry::ArrayView ev = wrong_n.view();
    const std::string msg = error_message(
        [&] { quarry::score(in.view(), a, o, &ev); }, name + " embeddings_name");
    EXPECT_TRUE(contains(msg, "features_h.npy")) << msg;
  }
}

TEST(Errors, UnknownAcquisitionNameListsValidNames) {
  const std::string msg =
      error_message([] { quarry::parse_acquisition("entropee"); }, "parse_acquisition");
  EXPECT_TRUE(contains(msg, "entropy")) << msg;
  for (const ScoreInfo& si : score_table()) EXPECT_TRUE(contains(msg, si.name)) << msg;
  EXPECT_THROW(quarry::parse_acquisition(""), quarry::Error);
}

// ================================================================== 5. names

TEST(Names, RoundTrip) {
  const auto& all = quarry::all_acquisitions();
  ASSERT_EQ(all.size(), score_table().size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    const ScoreInfo& si = score_table()[i];
    EXPECT_EQ(std::count(all.begin(), all.end(), si.acq), 1) << si.name;
    EXPECT_STREQ(quarry::acquisition_name(si.acq), si.name);
    EXPECT_EQ(quarry::parse_acquisition(si.name), si.acq) << si.name;
    EXPECT_EQ(quarry::parse_acquisition(quarry::acquisition_name(si.acq)), si.acq);
    EXPECT_EQ(quarry::acquisition_needs_committee(si.acq), si.committee) << si.name;
    EXPECT_EQ(quarry::acquisition_needs_embeddings(si.acq), si.embeddings) << si.name;
  }
}

TEST(Names, PoolSize) {
  const Tensor r2 = make_tensor(std::vector<double>(12, 0.25), {3, 4});
  const Tensor r3 = make_tensor(std::vector<double>(24, 0.25), {2, 3, 4});
  EXPECT_EQ(quarry::pool_size(r2.view()), 3);
  EXPECT_EQ(quarry::pool_size(r3.view()), 3);
}

// ================================================================== 6. determinism

class OmpThreads {
 public:
  OmpThreads() : saved_(omp_get_max_threads()) {}
  ~OmpThreads() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

TEST(Determinism, SameResultWithOneAndTwoThreads) {
  OmpThreads guard;
  for (const ScoreInfo& si : score_table()) {
    for (std::size_t vi : {0u, 1u, 3u}) {
      const Variant& v = variants()[vi];
      const Tensor in = random_input(mix_seed(4099, 100, vi), si.committee ? 5 : 0, 4099, 100, v);
      const Tensor emb = random_embeddings(21, 4099, 64, DType::f32);
      omp_set_num_threads(1);
      const auto one = lib_score(in, si.acq, v.logits, &emb);
      omp_set_num_threads(2);
      const auto two = lib_score(in, si.acq, v.logits, &emb);
      const auto again = lib_score(in, si.acq, v.logits, &emb);
      ASSERT_EQ(one.size(), two.size());
      EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0)
          << si.name << " " << v.name << ": 1 vs 2 threads";
      EXPECT_EQ(std::memcmp(two.data(), again.data(), two.size() * sizeof(float)), 0)
          << si.name << " " << v.name << ": two runs differ";
    }
  }
}

}  // namespace
