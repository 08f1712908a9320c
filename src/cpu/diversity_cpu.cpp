// CPU backend of the diversity strategies (BADGE, k-center, k-means for cluster-margin).
//
// The canonical distances of include/quarry/detail/diversity_math.hpp decide every pick, so
// the selection does not depend on the thread count, the BLAS, or the order of any sum. Every
// fast path in front of them only skips work it can prove useless, through error bounds that
// cover the canonical values' own rounding (E, eta):
//
//   * BLAS GEMM blocks (nearest_rows: distances to the labeled set, k-means assignment) give
//     ||x||² + ||y||² - 2 x·y in float with a rigorous error bound; only the columns the bound
//     cannot rule out are recomputed canonically.
//   * k-center (LazyKCenter) needs only the largest distance to the nearest centre at each
//     pick: samples keep stale upper bounds in a max-heap and are brought up to date only when
//     they reach the top, skipping centres by the triangle inequality (a table of bounds on
//     the distances between picks) and screening the rest in float.
//   * BADGE and k-means++ seeding (Coverage) need every D² weight at every draw, so every
//     centre keeps its members; a new centre visits only the members it can take by the
//     triangle inequality (d(owner, c) < 2 d(p, owner), and | |x_p| - |x_c| | < d(p, owner)),
//     screens those in float on a bfloat16 copy of the rows (laid out centre by centre, so
//     that they stream from memory), and computes canonically only what the screen cannot
//     settle. D² draws go through a Fenwick tree over exact integer weights.
//   With GreedyOptions::prune = false every distance is computed canonically, in index order,
//   with none of the above (the tests compare both).
//
// Exact ties in the canonical values decide picks (duplicated embeddings, grid data), which is
// why FMA contraction is turned off in this file: a fused a*b+c rounds differently from the
// canonical a*b then +c, and the CUDA port compiles the same arithmetic with --fmad=false.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "cpu/diversity_cpu.hpp"

#include "core/parallel.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <numeric>
#include <vector>

#include "quarry/detail/diversity_math.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/error.hpp"

// The Fortran BLAS interface: every BLAS (OpenBLAS, the reference BLAS, BLIS, MKL) has it,
// unlike CBLAS. Character arguments carry hidden lengths at the end (gfortran ABI).
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c, const int* ldc,
                       std::size_t transa_len, std::size_t transb_len);
// OpenBLAS's thread control, when the BLAS is OpenBLAS (weak: null otherwise).
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads(void) __attribute__((weak));

namespace quarry::cpu {
namespace {

using detail::dot_canonical;
using detail::sqdist_canonical;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kEps = detail::kEpsDouble;
constexpr double kTaken = -1.0;  // mind2 of a centre or an excluded sample
// Slack on the pruning tests, far above the rounding of evaluating the tests themselves.
constexpr double kSlack = 1.0 + 1e-12;
// Samples per chunk of a greedy pass.
constexpr std::int64_t kPassChunk = 2048;
// How many rows ahead the greedy passes prefetch.
constexpr int kAhead = 8;

// Each thread calls GEMM on its own rows, so the BLAS must not start threads of its own:
// OpenBLAS's pthreads would compete with OpenMP's for the same cores (and spin after each
// call). Restores the caller's setting. (An OpenMP build of OpenBLAS, MKL and BLIS detect the
// enclosing parallel region themselves.)
class BlasSingleThreaded {
 public:
  BlasSingleThreaded() {
    if (openblas_set_num_threads && openblas_get_num_threads) {
      saved_ = openblas_get_num_threads();
      openblas_set_num_threads(1);
    }
  }
  ~BlasSingleThreaded() {
    if (saved_ > 0) openblas_set_num_threads(saved_);
  }
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;

 private:
  int saved_ = 0;
};


// (value, index) with the larger value winning and ties going to the lower index: the result
// of merging partial results is the same in any order.
struct ArgMax {
  double value = -kInf;
  std::int64_t index = -1;
  void take(double v, std::int64_t i) {
    if (v > value || (v == value && (index < 0 || i < index))) {
      value = v;
      index = i;
    }
  }
  void take(const ArgMax& o) {
    if (o.index >= 0) take(o.value, o.index);
  }
};

template <class F>
ArgMax parallel_argmax(std::int64_t n, std::int64_t work, F value_of) {  // -inf: not a candidate
  std::vector<ArgMax> part(static_cast<std::size_t>(max_threads()));
  parallel_chunks(n, 8192, work, [&](std::int64_t b, std::int64_t e, int t) {
    ArgMax m = part[t];
    for (std::int64_t i = b; i < e; ++i) {
      const double v = value_of(i);
      if (v != -kInf) m.take(v, i);
    }
    part[t] = m;
  });
  ArgMax best;
  for (const ArgMax& m : part) best.take(m);
  return best;
}

// Asks for every cache line of [p, p + bytes) to be loaded, into L2 (locality 1): the L1 has
// too few fill buffers for the rows of several samples in flight.
inline void prefetch_bytes(const void* p, std::int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (std::int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 1);
}

// ---------------------------------------------------------------------------- metrics
//
// A metric over the rows of a pool. The greedy loops address samples two ways: by index i
// (the caller's row number, which breaks ties and names picks) and by position p, where the
// metric keeps what the screens read (a bfloat16 copy of the rows and per-row bounds). The
// positions are relaid out cluster by cluster as the picks go (relayout), so that the rows a
// pick visits, those of a few clusters, lie together in memory and stream from it.
//   exact(i, j)          the canonical squared distance (by index);
//   at_least(p, q, m)    true when the canonical squared distance of positions p, q is provably
//                        >= m (a float computation on the copies, with its error bound);
//   rho(p)               a norm with |rho_p - rho_q| <= true d(p, q) + eta (the distance to
//                        the origin);
//   E, eta               bounds on |canonical d² - true d²| and on the error of |rho_p - rho_q|.

// sum_k (x_k - y_k)^2 and sum_k x_k y_k over bfloat16 rows, in float, in any order: within
// gamma_{n+2} of the exact value (relative, resp. times ||x|| ||y||), as the float screens of
// diversity_math.hpp. 32 values at a time as 16 32-bit words: the even elements are
// (word << 16), the odd ones (word & 0xFFFF0000), both exact floats; two accumulators. (Widening
// the 16-bit values one by one costs twice the instructions; the compiler lowers the 16-wide
// vectors to whatever the target has.)
using f32x16 = float __attribute__((vector_size(64)));
using u32x16 = std::uint32_t __attribute__((vector_size(64)));

struct Bf16Pair {
  f32x16 even, odd;
};
inline Bf16Pair load_bf16x32(const std::uint16_t* p) {
  u32x16 w;
  std::memcpy(&w, p, sizeof w);
  const u32x16 e = w << 16, o = w & 0xFFFF0000u;
  Bf16Pair out;
  std::memcpy(&out.even, &e, sizeof e);
  std::memcpy(&out.odd, &o, sizeof o);
  return out;
}
inline float hsum(f32x16 v) {
  float s = 0;
  for (int j = 0; j < 16; ++j) s += v[j];
  return s;
}
inline float sqdist_bf16(const std::uint16_t* x, const std::uint16_t* y, std::int64_t n) {
  f32x16 a = {}, b = {};
  std::int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    const Bf16Pair px = load_bf16x32(x + k), py = load_bf16x32(y + k);
    const f32x16 d0 = px.even - py.even, d1 = px.odd - py.odd;
    a += d0 * d0;
    b += d1 * d1;
  }
  float s = hsum(a + b);
  for (; k < n; ++k) {
    const float d = detail::bfloat16_to_float(x[k]) - detail::bfloat16_to_float(y[k]);
    s += d * d;
  }
  return s;
}
inline float dot_bf16(const std::uint16_t* x, const std::uint16_t* y, std::int64_t n) {
  f32x16 a = {}, b = {};
  std::int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    const Bf16Pair px = load_bf16x32(x + k), py = load_bf16x32(y + k);
    a += px.even * py.even;
    b += px.odd * py.odd;
  }
  float s = hsum(a + b);
  for (; k < n; ++k) s += detail::bfloat16_to_float(x[k]) * detail::bfloat16_to_float(y[k]);
  return s;
}

// sum_k (r_k - c_jk)^2 for four rows c_j at once, in float, in any order (the bound of
// detail::sqdist_f32): four independent accumulators, and r read once for the four. A screen
// only, so FMA contraction is allowed here (the rest of the file forbids it).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
#endif
__attribute__((noinline)) void sqdist_f32_x4(const float* r, const float* const c[4], std::int64_t n, float out[4]) {
  f32x16 acc[4] = {};
  std::int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    f32x16 rv;
    std::memcpy(&rv, r + k, sizeof rv);
    for (int j = 0; j < 4; ++j) {
      f32x16 cv;
      std::memcpy(&cv, c[j] + k, sizeof cv);
      const f32x16 dv = rv - cv;
      acc[j] += dv * dv;
    }
  }
  for (int j = 0; j < 4; ++j) {
    float s = hsum(acc[j]);
    for (std::int64_t q = k; q < n; ++q) {
      const float dq = r[q] - c[j][q];
      s += dq * dq;
    }
    out[j] = s;
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

// Subnormal rounding of a float sum of n products: at most n * 2^-149 each way, doubled.
double subnormal_slack(std::int64_t n) { return 8.0 * static_cast<double>(n) * 1.401298464324817e-45; }
// The bf16 screens round a term at most d / 32 + 50 times (the accumulator, the 16-lane sum,
// a scalar tail of up to 31): their error bounds are taken for d + 64 terms.
constexpr std::int64_t kScreenExtra = 64;

// out[q] = in[order[q]]
template <class T>
void permute(std::vector<T>& v, const std::vector<std::int32_t>& order) {
  std::vector<T> out(v.size());
  for (std::size_t q = 0; q < order.size(); ++q) out[q] = v[static_cast<std::size_t>(order[q])];
  v.swap(out);
}

// Rows in position order, as bfloat16 (half the bytes of float32 to stream), with, per row,
// err >= ||x - b|| (the rounding, measured) and ||b||: by the triangle inequality a float
// computation on the copies then bounds the true values.
class Bf16Rows {
 public:
  explicit Bf16Rows(const FloatRows& x)
      : d_(x.d), v_(static_cast<std::size_t>(x.n * x.d)), err_(static_cast<std::size_t>(x.n)),
        norm_(static_cast<std::size_t>(x.n)) {
    parallel_chunks(x.n, 1024, x.n * x.d, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t i = b; i < e; ++i) {
        const float* r = x.row(i);
        std::uint16_t* o = v_.data() + i * d_;
        double e2 = 0, n2 = 0;
        for (std::int64_t k = 0; k < d_; ++k) {
          const std::uint32_t u = detail::float_to_bits(r[k]);
          std::uint32_t rn = u + 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even
          if ((rn & 0x7F800000u) == 0x7F800000u) rn = u;     // would overflow: truncate
          o[k] = static_cast<std::uint16_t>(rn >> 16);
          const double bk = detail::bfloat16_to_float(o[k]);
          const double diff = static_cast<double>(r[k]) - bk;  // exact
          e2 += diff * diff;
          n2 += bk * bk;
        }
        // Upper bounds: a relative (d + 8) eps covers the rounding of the sums and the sqrt.
        err_[i] = std::sqrt(e2) * (1.0 + static_cast<double>(d_ + 8) * kEps) + 1e-300;
        norm_[i] = std::sqrt(n2) * (1.0 + static_cast<double>(d_ + 8) * kEps);
      }
    });
  }
  const std::uint16_t* row(std::int64_t p) const { return v_.data() + p * d_; }
  double err(std::int64_t p) const { return err_[p]; }
  double norm(std::int64_t p) const { return norm_[p]; }
  void prefetch(std::int64_t p) const { prefetch_bytes(row(p), d_ * 2); }
  void relayout(const std::vector<std::int32_t>& order) {
    const std::int64_t n = static_cast<std::int64_t>(order.size());
    std::vector<std::uint16_t> v(v_.size());
    parallel_chunks(n, 1024, n * d_, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t q = b; q < e; ++q)
        std::memcpy(v.data() + q * d_, v_.data() + order[q] * d_, static_cast<std::size_t>(d_) * 2);
    });
    v_.swap(v);
    permute(err_, order);
    permute(norm_, order);
  }

 private:
  std::int64_t d_;
  std::vector<std::uint16_t> v_;
  std::vector<double> err_, norm_;
};

class Euclid {
 public:
  explicit Euclid(const FloatRows& x) : x_(x), d_(x.d), rho_(static_cast<std::size_t>(x.n)), copy_(x) {
    std::vector<double> part(static_cast<std::size_t>(max_threads()), 0.0);
    parallel_chunks(x.n, 4096, x.n * x.d, [&](std::int64_t b, std::int64_t e, int t) {
      double mx = part[t];
      for (std::int64_t i = b; i < e; ++i) {
        const double r2 = dot_canonical(x.row(i), x.row(i), d_);
        rho_[i] = std::sqrt(r2);
        mx = std::max(mx, r2);
      }
      part[t] = mx;
    });
    const double xmax2 = *std::max_element(part.begin(), part.end()) * (1 + 1e-9);
    // canonical: relative error (d + 4) eps of a squared distance <= 4 xmax²
    E = 4.1 * static_cast<double>(d_ + 8) * kEps * xmax2;
    eta = 1.1 * static_cast<double>(d_ + 8) * kEps * std::sqrt(xmax2);
    screen_ = 4.0 * xmax2 < 1e36;  // no overflow in float
    gamma1_ = (1.0 + detail::sqdist_f32_rel_error(d_ + kScreenExtra)) * kSlack;
    abs_ = subnormal_slack(d_ + kScreenExtra);
  }
  std::int64_t n() const { return x_.n; }
  double exact(std::int64_t i, std::int64_t j) const { return sqdist_canonical(x_.row(i), x_.row(j), d_); }
  bool at_least(std::int64_t p, std::int64_t q, double m) const {
    if (!screen_) return false;
    // ||x_p - x_q|| >= ||b_p - b_q|| - err_p - err_q, and f overestimates ||b_p - b_q||² by
    // at most a factor 1 + gamma (plus abs): so f >= (1 + gamma) (sqrt(m + E) + err_p + err_q)²
    // + abs proves a true distance >= sqrt(m + E), hence a canonical one >= m.
    const double f = sqdist_bf16(copy_.row(p), copy_.row(q), d_);
    const double r = std::sqrt((m + E) * kSlack) * kSlack + copy_.err(p) + copy_.err(q);
    return f >= r * r * gamma1_ + abs_;
  }
  double rho(std::int64_t p) const { return rho_[p]; }
  void prefetch(std::int64_t p) const { copy_.prefetch(p); }
  void prefetch_exact(std::int64_t i) const { prefetch_bytes(x_.row(i), d_ * 4); }
  void relayout(const std::vector<std::int32_t>& order) {
    copy_.relayout(order);
    permute(rho_, order);
  }
  double E = 0, eta = 0;

 private:
  const FloatRows& x_;
  std::int64_t d_;
  std::vector<double> rho_;  // by position
  Bf16Rows copy_;            // by position
  bool screen_ = true;
  double gamma1_ = 1, abs_ = 0;
};

// BADGE gradient embeddings g_i = a_i ⊗ h_i through <a⊗h, b⊗g> = <a,b><h,g>.
class Badge {
 public:
  Badge(const std::vector<double>& a, std::int64_t c, const FloatRows& h)
      : a_(a.data()), c_(c), h_(h), d_(h.d), n_(static_cast<std::size_t>(h.n)), ap_(a),
        rho_(n_.size()), hnorm_(n_.size()), copy_(h) {
    std::vector<double> part(static_cast<std::size_t>(max_threads()), 0.0);
    parallel_chunks(h.n, 4096, h.n * (h.d + c), [&](std::int64_t b, std::int64_t e, int t) {
      double mx = part[t];
      for (std::int64_t i = b; i < e; ++i) {
        const double aa = dot_canonical(a_ + i * c_, a_ + i * c_, c_);
        const double hh = dot_canonical(h.row(i), h.row(i), d_);
        n_[i] = aa * hh;  // the same product as badge_dist2 forms: d(i, i) = 0 exactly
        rho_[i] = std::sqrt(n_[i]);
        hnorm_[i] = std::sqrt(hh) * (1.0 + static_cast<double>(d_ + 8) * kEps);
        mx = std::max(mx, n_[i]);
      }
      part[t] = mx;
    });
    np_ = n_;
    const double gmax2 = *std::max_element(part.begin(), part.end()) * (1 + 1e-9);
    // <a,a'>: (c + 1) eps ||a|| ||a'||; <h,h'>: d eps ||h|| ||h'||; the products and the final
    // sum a few eps more: (c + d + 6) eps (g_i + g_j)² <= 4 (c + d + 6) eps gmax².
    E = 4.1 * static_cast<double>(c_ + d_ + 8) * kEps * gmax2;
    eta = 1.1 * static_cast<double>(c_ + d_ + 8) * kEps * std::sqrt(gmax2);
    gamma_ = detail::dot_f32_error_factor(d_ + kScreenExtra) * 1.01;
    canon_ = 2.0 * static_cast<double>(d_ + 4) * kEps;
    abs_ = subnormal_slack(d_ + kScreenExtra);
    double hmax = 0;
    for (double v : hnorm_) hmax = std::max(hmax, v);
    screen_ = hmax * hmax < 1e36;
  }
  std::int64_t n() const { return h_.n; }
  double norm2(std::int64_t i) const { return n_[i]; }
  double exact(std::int64_t i, std::int64_t j) const {
    const double aa = dot_canonical(a_ + i * c_, a_ + j * c_, c_);
    const double hh = dot_canonical(h_.row(i), h_.row(j), d_);
    return detail::badge_dist2(n_[i], n_[j], aa, hh);
  }
  bool at_least(std::int64_t p, std::int64_t q, double m) const {
    if (!screen_) return false;
    // aa exactly as canonical (the same a, the same order); hb = <b_p, b_q> in float on the
    // bfloat16 copies, which differs from the canonical <h_p, h_q> by at most: the float
    // rounding (gamma ||b_p|| ||b_q||), the copies' rounding (err_p ||h_q|| + ||b_p|| err_q)
    // and the canonical rounding. So the canonical distance is >= approx - err.
    const double aa = dot_canonical(ap_.data() + p * c_, ap_.data() + q * c_, c_);
    const double hb = dot_bf16(copy_.row(p), copy_.row(q), d_);
    const double herr = gamma_ * copy_.norm(p) * copy_.norm(q) + abs_ + copy_.err(p) * hnorm_[q] +
                        copy_.norm(p) * copy_.err(q) + canon_ * hnorm_[p] * hnorm_[q];
    const double s = np_[p] + np_[q];
    const double t = aa * hb;
    const double approx = s - 2.0 * t;
    const double err = 2.02 * std::fabs(aa) * herr + 8.0 * kEps * (s + 2.0 * std::fabs(t));
    return approx - err >= m * kSlack;
  }
  double rho(std::int64_t p) const { return rho_[p]; }
  void prefetch(std::int64_t p) const {
    copy_.prefetch(p);
    prefetch_bytes(ap_.data() + p * c_, c_ * static_cast<std::int64_t>(sizeof(double)));
  }
  void prefetch_exact(std::int64_t i) const {
    prefetch_bytes(h_.row(i), d_ * 4);
    prefetch_bytes(a_ + i * c_, c_ * static_cast<std::int64_t>(sizeof(double)));
  }
  void relayout(const std::vector<std::int32_t>& order) {
    copy_.relayout(order);
    permute(rho_, order);
    permute(hnorm_, order);
    permute(np_, order);
    std::vector<double> ap(ap_.size());
    for (std::size_t q = 0; q < order.size(); ++q)
      std::copy_n(ap_.data() + order[q] * c_, c_, ap.data() + static_cast<std::int64_t>(q) * c_);
    ap_.swap(ap);
  }
  double E = 0, eta = 0;

 private:
  const double* a_;  // by index
  std::int64_t c_;
  const FloatRows& h_;
  std::int64_t d_;
  std::vector<double> n_;  // by index
  // by position
  std::vector<double> np_, ap_, rho_, hnorm_;
  Bf16Rows copy_;
  double gamma_ = 0, canon_ = 0, abs_ = 0;
  bool screen_ = true;
};

// ---------------------------------------------------------------------------- D² sampling

// q_i = ceil(w_i 2^s) of diversity_math.hpp. Multiplying by an exact power of two is ldexp
// (both round the same way); ldexp itself is a library call per element.
class Quantiser {
 public:
  explicit Quantiser(int s) : s_(s), fast_(s > -1000 && s < 1000), scale_(fast_ ? std::ldexp(1.0, s) : 0.0) {}
  std::uint64_t operator()(double w) const {
    if (!(w > 0.0)) return 0;
    return static_cast<std::uint64_t>(std::ceil(fast_ ? w * scale_ : std::ldexp(w, s_)));
  }

 private:
  int s_;
  bool fast_;
  double scale_;
};

// The O(n) form of the D² draw: the smallest i with q_0 + ... + q_i > floor(r Q / 2^64), with
// r = draw `draw` of (seed, stream) (see diversity_math.hpp). Integer sums: exact in any order.
std::int64_t d2_sample(const std::vector<double>& w, double w_max, std::uint64_t seed,
                       std::uint32_t stream, std::uint64_t draw) {
  const std::int64_t n = static_cast<std::int64_t>(w.size());
  const Quantiser q(detail::d2_scale_exponent(w_max, n));
  constexpr std::int64_t kChunk = 4096;
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(chunks), 0);
  parallel_chunks(chunks, 4, n * 4, [&](std::int64_t b, std::int64_t e, int) {
    for (std::int64_t ch = b; ch < e; ++ch) {
      std::uint64_t acc = 0;
      const std::int64_t hi = std::min(n, (ch + 1) * kChunk);
      for (std::int64_t i = ch * kChunk; i < hi; ++i) acc += q(w[i]);
      sums[ch] = acc;
    }
  });
  std::uint64_t total = 0;
  for (std::uint64_t v : sums) total += v;
  const std::uint64_t target = detail::mulhi64(detail::random_u64(seed, stream, draw), total);
  std::uint64_t acc = 0;
  for (std::int64_t ch = 0; ch < chunks; ++ch) {
    if (acc + sums[ch] <= target) {
      acc += sums[ch];
      continue;
    }
    const std::int64_t hi = std::min(n, (ch + 1) * kChunk);
    for (std::int64_t i = ch * kChunk; i < hi; ++i) {
      acc += q(w[i]);
      if (acc > target) return i;
    }
  }
  return -1;  // unreachable for total > 0
}

// The same draw in O(log n): a Fenwick tree over the q_i in index order, updated for the few
// samples a pick changes, rebuilt when the largest weight changes its power of two (which
// changes s, and so every q_i).
class D2Tree {
 public:
  int scale() const { return s_; }
  void rebuild(const std::vector<double>& w, int s) {
    s_ = s;
    const Quantiser q(s);
    const std::int64_t n = static_cast<std::int64_t>(w.size());
    q_.resize(static_cast<std::size_t>(n));
    tree_.assign(static_cast<std::size_t>(n + 1), 0);
    parallel_chunks(n, 8192, n * 4, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t i = b; i < e; ++i) q_[i] = q(w[i]);
    });
    for (std::int64_t i = 1; i <= n; ++i) {
      tree_[i] += q_[i - 1];
      const std::int64_t j = i + (i & -i);
      if (j <= n) tree_[j] += tree_[i];
    }
  }
  void set(std::int64_t i, double w) {
    const std::uint64_t v = Quantiser(s_)(w);
    const std::uint64_t delta = v - q_[i];  // modulo 2^64: the sums stay exact
    q_[i] = v;
    const std::int64_t n = static_cast<std::int64_t>(q_.size());
    for (std::int64_t j = i + 1; j <= n; j += j & -j) tree_[j] += delta;
  }
  // The smallest i with q_0 + ... + q_i > floor(r Q / 2^64).
  std::int64_t draw(std::uint64_t seed, std::uint32_t stream, std::uint64_t counter) const {
    const std::int64_t n = static_cast<std::int64_t>(q_.size());
    std::uint64_t total = 0;
    for (std::int64_t j = n; j > 0; j -= j & -j) total += tree_[j];
    std::uint64_t t = detail::mulhi64(detail::random_u64(seed, stream, counter), total);
    std::int64_t pos = 0, step = 1;
    while (step * 2 <= n) step *= 2;
    for (; step > 0; step /= 2)
      if (pos + step <= n && tree_[pos + step] <= t) {
        pos += step;
        t -= tree_[pos];
      }
    return pos;
  }

 private:
  int s_ = std::numeric_limits<int>::min();
  std::vector<std::uint64_t> q_, tree_;  // tree_ is 1-based
};

// ---------------------------------------------------------------------------- the greedy state

struct PassStats {
  ArgMax best;  // the largest mind2 of a selectable sample, lowest index on ties
};

// mind2 (the canonical squared distance to the nearest centre) and owner (that centre's slot)
// of every sample against a growing set of centres ("slots"). Taken samples (centres,
// exclusions) have mind2 = kTaken and are never picked. The state is kept by position (see the
// metrics above): idx_[p] is the index at position p, pos_[i] the position of index i.
//
// Pruned (the default), every slot keeps the positions of its members, their largest mind2
// (r2) and their best member; a new centre visits only the members of the slots that the
// triangle inequality cannot rule out as a whole, and computes the distances of only those it
// cannot rule out one by one, so a pick costs what it can change rather than O(N). At 16, 64,
// 256, ... slots the positions are relaid out slot by slot: later slots split earlier ones, so
// their members stay together in memory. Unpruned, every pick computes every distance in index
// order: the reference the tests compare with.
template <class Metric>
class Coverage {
 public:
  Coverage(Metric& m, bool prune, bool sampling)
      : m_(m), prune_(prune), sampling_(sampling), mind2_(static_cast<std::size_t>(m.n()), kInf),
        owner_(static_cast<std::size_t>(m.n()), -1), idx_(static_cast<std::size_t>(m.n())),
        pos_(static_cast<std::size_t>(m.n())) {
    std::iota(idx_.begin(), idx_.end(), 0);
    std::iota(pos_.begin(), pos_.end(), 0);
  }

  /// A sample that is never picked and is not a centre.
  void take(std::int64_t i) { mind2_[pos_[i]] = kTaken; }
  double mind2(std::int64_t i) const { return mind2_[pos_[i]]; }

  /// Initial centres whose distances are already known (kcenter's labeled set: `d2` and `slot`
  /// by index, from nearest_rows; `rows` the slots' indices).
  PassStats set_initial(const std::vector<std::int64_t>& rows, const std::vector<double>& d2,
                        const std::vector<std::int32_t>& slot) {
    slot_row_ = rows;
    for (std::int64_t i = 0; i < m_.n(); ++i) {
      mind2_[pos_[i]] = d2[i];
      owner_[pos_[i]] = slot[i];
    }
    for (std::size_t s = 0; s < rows.size(); ++s) {
      mind2_[pos_[rows[s]]] = kTaken;
      owner_[pos_[rows[s]]] = static_cast<std::int32_t>(s);
    }
    if (!prune_) return full_pass(-1);
    members_.assign(rows.size(), {});
    r2_.assign(rows.size(), 0.0);
    best_.assign(rows.size(), ArgMax{});
    for (std::int64_t p = 0; p < m_.n(); ++p)
      if (mind2_[p] >= 0) members_[owner_[p]].push_back(static_cast<std::int32_t>(p));
    parallel_chunks(slots(), 16, m_.n() * 8, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t a = b; a < e; ++a) {
        sort_members(members_[a]);
        refresh(a);
      }
    });
    return finish({});
  }

  /// Makes index c a centre (taken) and updates every mind2; returns the stats of the result.
  PassStats add_centre(std::int64_t c) {
    const std::int32_t old = owner_[pos_[c]];
    slot_row_.push_back(c);
    mind2_[pos_[c]] = kTaken;
    owner_[pos_[c]] = static_cast<std::int32_t>(slot_row_.size() - 1);
    if (!prune_) return full_pass(c);
    members_.emplace_back();
    r2_.push_back(0.0);
    best_.emplace_back();
    if (slots() == 1) return first_centre(c);
    if (slots() == next_relayout_) relayout();
    return list_pass(c, old);
  }

  /// Draw `draw` of D² sampling over the current mind2 (st: the stats that came with them;
  /// st.best.value > 0).
  std::int64_t sample(const PassStats& st, std::uint64_t seed, std::uint32_t stream, std::uint64_t draw) const {
    if (!sampling_ || !prune_) return d2_sample(mind2_, st.best.value, seed, stream, draw);  // by index
    return tree_.draw(seed, stream, draw);
  }

 private:
  std::int64_t slots() const { return static_cast<std::int64_t>(slot_row_.size()); }

  // ------------------------------------------------ unpruned: every distance, O(N) per pick
  // (positions are indices here: there is no relayout)
  PassStats full_pass(std::int64_t c) {
    const int nt = max_threads();
    std::vector<ArgMax> part(static_cast<std::size_t>(nt));
    const std::int32_t s = static_cast<std::int32_t>(slots() - 1);
    parallel_chunks(m_.n(), kPassChunk, m_.n() * 64, [&](std::int64_t b, std::int64_t e, int t) {
      ArgMax best = part[t];
      for (std::int64_t i = b; i < e; ++i) {
        if (mind2_[i] < 0) continue;
        if (c >= 0) {
          const double d = m_.exact(i, c);
          if (d < mind2_[i]) {
            mind2_[i] = d;
            owner_[i] = s;
          }
        }
        best.take(mind2_[i], i);
      }
      part[t] = best;
    });
    PassStats out;
    for (const ArgMax& a : part) out.best.take(a);
    return out;
  }

  // ------------------------------------------------ pruned
  // Every slot's members are kept in decreasing mind2 (then increasing position): a member's
  // mind2 changes only when it moves to a new slot, so the order holds, and a pass over a slot
  // can stop at the first member whose distance the slot's bound already rules out.
  void sort_members(std::vector<std::int32_t>& mem) const {
    std::sort(mem.begin(), mem.end(), [&](std::int32_t a, std::int32_t b) {
      return mind2_[a] != mind2_[b] ? mind2_[a] > mind2_[b] : a < b;
    });
  }

  // Drops the members of slot a that left it among its first `limit` (the only ones a pass can
  // have moved), keeping the order; then r2 (the first member's mind2) and the best member
  // (the lowest index among those equal to r2).
  void refresh(std::int64_t a, std::size_t limit) {
    auto& mem = members_[a];
    limit = std::min(limit, mem.size());
    std::size_t keep = 0;
    for (std::size_t j = 0; j < limit; ++j) {
      const std::int32_t p = mem[j];
      if (mind2_[p] >= 0 && owner_[p] == a) mem[keep++] = p;
    }
    if (keep < limit) mem.erase(mem.begin() + static_cast<std::ptrdiff_t>(keep), mem.begin() + static_cast<std::ptrdiff_t>(limit));
    ArgMax best;
    r2_[a] = mem.empty() ? 0.0 : mind2_[mem.front()];
    for (std::size_t j = 0; j < mem.size() && mind2_[mem[j]] == r2_[a]; ++j) best.take(r2_[a], idx_[mem[j]]);
    best_[a] = best;
  }
  void refresh(std::int64_t a) { refresh(a, members_[a].size()); }

  PassStats first_centre(std::int64_t c) {
    const std::int64_t n = m_.n();
    parallel_chunks(n, kPassChunk, n * 64, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t p = b; p < e; ++p)
        if (mind2_[p] >= 0) {
          mind2_[p] = m_.exact(idx_[p], c);
          owner_[p] = 0;
        }
    });
    auto& mem = members_[0];
    for (std::int64_t p = 0; p < n; ++p)
      if (mind2_[p] >= 0) mem.push_back(static_cast<std::int32_t>(p));
    sort_members(mem);
    refresh(0);
    return finish({});
  }

  // New positions: the members of each slot together (in their current order), then the rest.
  void relayout() {
    next_relayout_ *= 4;
    const std::int64_t n = m_.n();
    std::vector<std::int32_t> order;  // order[q]: the old position of new position q
    order.reserve(static_cast<std::size_t>(n));
    std::vector<std::int32_t> moved(static_cast<std::size_t>(n), -1);  // old position -> new
    for (auto& mem : members_)
      for (std::int32_t& p : mem) {
        moved[p] = static_cast<std::int32_t>(order.size());
        order.push_back(p);
        p = moved[p];
      }
    for (std::int64_t p = 0; p < n; ++p)
      if (moved[p] < 0) {
        moved[p] = static_cast<std::int32_t>(order.size());
        order.push_back(static_cast<std::int32_t>(p));
      }
    m_.relayout(order);
    permute(mind2_, order);
    permute(owner_, order);
    permute(idx_, order);
    for (std::int64_t q = 0; q < n; ++q) pos_[idx_[q]] = static_cast<std::int32_t>(q);
  }

  // Lower bound on the true squared distance from slot a's centre to c, or +inf when no member
  // of the slot can move (r2 = 0): the norm bound when it already rules out every member, else
  // the canonical distance minus its error bound.
  double slot_bound(std::int64_t a, std::int64_t c) const {
    const double r2 = r2_[a];
    if (r2 <= 0.0) return kInf;
    const double g = std::fabs(m_.rho(pos_[slot_row_[a]]) - m_.rho(pos_[c])) - m_.eta;
    const double nb2 = g > 0 ? g * g : 0.0;
    if (nb2 >= 4.0 * (r2 + m_.E) * kSlack) return nb2;
    return std::max(nb2, m_.exact(slot_row_[a], c) - m_.E);
  }

  PassStats list_pass(std::int64_t c, std::int32_t old_owner) {
    const std::int64_t s = slots() - 1;
    const std::int64_t pc = pos_[c];
    const double E = m_.E, eta = m_.eta, rc = m_.rho(pc);
    // The slots c can take members from: d(a, c) < 2 r_a (with the error bounds).
    lb2_.assign(static_cast<std::size_t>(s), kInf);
    parallel_chunks(s, 64, s * 64, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t a = b; a < e; ++a) lb2_[a] = slot_bound(a, c);
    });
    // The slots to visit, each in chunks; a chunk records how far into the slot it had to go.
    struct Item {
      std::int32_t slot;
      std::int64_t begin, end, reach;
    };
    std::vector<Item> items;
    std::int64_t work = 0;
    for (std::int64_t a = 0; a < s; ++a) {
      if (!(lb2_[a] < 4.0 * (r2_[a] + E) * kSlack)) continue;
      const std::int64_t size = static_cast<std::int64_t>(members_[a].size());
      for (std::int64_t b = 0; b < size; b += kPassChunk)
        items.push_back({static_cast<std::int32_t>(a), b, std::min(size, b + kPassChunk), b});
      work += size * 16;
    }
    movers_.resize(static_cast<std::size_t>(max_threads()));
    for (auto& v : movers_) v.clear();
    const std::int32_t snew = static_cast<std::int32_t>(s);
    parallel_chunks(static_cast<std::int64_t>(items.size()), 1, work, [&](std::int64_t b, std::int64_t e, int t) {
      std::int32_t todo[kPassChunk];
      for (std::int64_t it = b; it < e; ++it) {
        Item& item = items[it];
        const std::int32_t* mem = members_[item.slot].data();
        const double lb2 = lb2_[item.slot];
        // First the members whose distance to c the bounds cannot rule out, then those
        // distances, with the rows a few members ahead prefetched. The members come in
        // decreasing mind2: once d(owner, c) >= 2 d(p, owner) holds, it holds for the rest.
        int count = 0;
        std::int64_t j = item.begin;
        for (; j < item.end; ++j) {
          const std::int32_t p = mem[j];
          const double m = mind2_[p];
          if (m < 0) continue;                                // c itself
          if (m == 0 || lb2 >= 4.0 * (m + E) * kSlack) break;  // d(owner, c) >= 2 d(p, owner)
          const double g = std::fabs(m_.rho(p) - rc) - eta;
          if (g > 0 && g * g >= (m + E) * kSlack) continue;   // | |x_p| - |x_c| | >= d(p, owner)
          todo[count++] = p;
        }
        item.reach = j;
        // The screen on the copies, then the canonical distance of those it cannot settle
        // (the rows of the caller's array, prefetched the same way).
        int left = 0;
        for (int j = 0; j < std::min(count, kAhead); ++j) m_.prefetch(todo[j]);
        for (int j = 0; j < count; ++j) {
          if (j + kAhead < count) m_.prefetch(todo[j + kAhead]);
          const std::int32_t p = todo[j];
          if (!m_.at_least(p, pc, mind2_[p])) todo[left++] = p;
        }
        for (int j = 0; j < std::min(left, kAhead); ++j) m_.prefetch_exact(idx_[todo[j]]);
        for (int j = 0; j < left; ++j) {
          if (j + kAhead < left) m_.prefetch_exact(idx_[todo[j + kAhead]]);
          const std::int32_t p = todo[j];
          const double m = mind2_[p];
          const double d = m_.exact(idx_[p], c);
          if (d < m) {
            mind2_[p] = d;
            owner_[p] = snew;
            movers_[t].push_back(p);
          }
        }
      }
    });
    // The visited slots lose the members that moved (all within how far their chunks went),
    // and c's old slot loses c (anywhere in it).
    std::vector<std::pair<std::int64_t, std::int64_t>> dirty;  // (slot, prefix to compact)
    for (const Item& item : items) {
      if (dirty.empty() || dirty.back().first != item.slot) dirty.emplace_back(item.slot, 0);
      dirty.back().second = std::max(dirty.back().second, item.reach);
    }
    if (old_owner >= 0 && old_owner < s) {
      auto it = std::find_if(dirty.begin(), dirty.end(), [&](const auto& dl) { return dl.first == old_owner; });
      if (it == dirty.end()) it = dirty.insert(dirty.end(), {old_owner, 0});
      it->second = static_cast<std::int64_t>(members_[old_owner].size());
    }
    for (const auto& [a, limit] : dirty) refresh(a, static_cast<std::size_t>(limit));
    auto& mem = members_[s];
    for (const auto& v : movers_) mem.insert(mem.end(), v.begin(), v.end());
    sort_members(mem);
    refresh(s);
    std::vector<std::int32_t> changed(mem.begin(), mem.end());
    changed.push_back(static_cast<std::int32_t>(pc));
    return finish(changed);
  }

  // The global stats from the slots', and the sampling tree brought up to date for the
  // `changed` positions (or rebuilt, when the scale moved).
  PassStats finish(const std::vector<std::int32_t>& changed) {
    PassStats out;
    for (const ArgMax& b : best_) out.best.take(b);
    if (sampling_ && out.best.value > 0) {
      const std::int64_t n = m_.n();
      const int s = detail::d2_scale_exponent(out.best.value, n);
      if (s != tree_.scale()) {
        std::vector<double> w(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < n; ++i) w[i] = mind2_[pos_[i]];
        tree_.rebuild(w, s);
      } else {
        for (std::int32_t p : changed) tree_.set(idx_[p], mind2_[p]);
      }
    }
    return out;
  }

  Metric& m_;
  bool prune_, sampling_;
  std::vector<double> mind2_;         // by position
  std::vector<std::int32_t> owner_;   // by position
  std::vector<std::int32_t> idx_, pos_;
  std::vector<std::int64_t> slot_row_;  // the centres' indices
  // pruned only
  std::vector<std::vector<std::int32_t>> members_;  // positions
  std::vector<double> r2_, lb2_;
  std::vector<ArgMax> best_;
  std::vector<std::vector<std::int32_t>> movers_;
  std::int64_t next_relayout_ = 16;
  D2Tree tree_;
};

// The pool mean in double: fixed chunks of rows (their size depends only on n), each summed in
// index order, then the chunk sums in chunk order.
std::vector<double> pool_mean(const FloatRows& x) {
  const std::int64_t n = x.n, d = x.d;
  const std::int64_t chunk = std::max<std::int64_t>(1024, (n + 1023) / 1024);
  const std::int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<double> part(static_cast<std::size_t>(chunks * d), 0.0);
  parallel_chunks(chunks, 1, n * d, [&](std::int64_t b, std::int64_t e, int) {
    for (std::int64_t ch = b; ch < e; ++ch) {
      double* p = part.data() + ch * d;
      for (std::int64_t i = ch * chunk; i < std::min(n, (ch + 1) * chunk); ++i) {
        const float* r = x.row(i);
        for (std::int64_t j = 0; j < d; ++j) p[j] += static_cast<double>(r[j]);
      }
    }
  });
  std::vector<double> mean(static_cast<std::size_t>(d), 0.0);
  for (std::int64_t ch = 0; ch < chunks; ++ch)
    for (std::int64_t j = 0; j < d; ++j) mean[j] += part[ch * d + j];
  for (double& v : mean) v /= static_cast<double>(n);
  return mean;
}

void report(const PhaseProgressFn& progress, const char* phase, std::int64_t done, std::int64_t total) {
  if (progress) progress(phase, done, total);
}

}  // namespace

// ---------------------------------------------------------------------------- inputs

std::vector<double> badge_factors(const ArrayView& o, bool logits) {
  const std::int64_t n = o.shape[0], c = o.shape[1];
  std::vector<double> a(static_cast<std::size_t>(n * c));
  parallel_chunks(n, 4096, n * c * 4, [&](std::int64_t b, std::int64_t e, int) {
    for (std::int64_t i = b; i < e; ++i) {
      double* p = a.data() + i * c;
      for (std::int64_t j = 0; j < c; ++j) {
        const std::int64_t k = i * c + j;
        switch (o.dtype) {
          case DType::f32: p[j] = o.as<float>()[k]; break;
          case DType::f64: p[j] = o.as<double>()[k]; break;
          case DType::f16: p[j] = detail::half_to_float(o.as<std::uint16_t>()[k]); break;
          default: p[j] = detail::bfloat16_to_float(o.as<std::uint16_t>()[k]); break;
        }
      }
      if (logits) {
        double zmax = p[0];
        for (std::int64_t j = 1; j < c; ++j) zmax = std::max(zmax, p[j]);
        for (std::int64_t j = 0; j < c; ++j) p[j] = std::exp(p[j] - zmax);
      }
      double s = 0;
      for (std::int64_t j = 0; j < c; ++j) s += p[j];
      std::int64_t top = 0;
      for (std::int64_t j = 0; j < c; ++j) {
        p[j] /= s;
        if (p[j] > p[top]) top = j;
      }
      p[top] -= 1.0;  // a = p - e_yhat
    }
  });
  return a;
}

// ---------------------------------------------------------------------------- GEMM blocks

void nearest_rows(const FloatRows& x, const FloatRows& y, const std::vector<std::uint8_t>& skip,
                  std::vector<double>* best_d2, std::vector<std::int32_t>* best_j,
                  const PhaseProgressFn& progress, const char* phase) {
  const std::int64_t n = x.n, m = y.n, d = x.d;
  best_d2->assign(static_cast<std::size_t>(n), kInf);
  best_j->assign(static_cast<std::size_t>(n), -1);
  if (n == 0 || m == 0) return;
  std::vector<double> yn2(static_cast<std::size_t>(m)), yn(static_cast<std::size_t>(m));
  for (std::int64_t j = 0; j < m; ++j) {
    yn2[j] = dot_canonical(y.row(j), y.row(j), d);
    yn[j] = std::sqrt(yn2[j]);
  }
  // |fl(x.y) - x.y| <= gamma_{d+1} ||x|| ||y|| for any summation order (one more rounding for
  // the float result); the double terms add a few eps (xn2 + yn2); the canonical value itself
  // is within (d + 4) eps of the exact distance <= 2 (xn2 + yn2).
  const double gam = detail::dot_f32_error_factor(d + 1) * 1.01;
  const double rel = 8.0 * static_cast<double>(d + 8) * kEps;
  const double tiny = 8.0 * static_cast<double>(d) * 1.401298464324817e-45;
  const bool gemm_ok = static_cast<double>(d) * detail::kEpsFloat < 0.01 && d < (1 << 30);

  constexpr std::int64_t kRows = 256, kCols = 1024;
  const int nt = max_threads();
  std::vector<float> tiles(static_cast<std::size_t>(nt) * kRows * kCols);
  std::vector<double> scratch(static_cast<std::size_t>(nt) * kRows * 4);
  BlasSingleThreaded single;
  // Super-blocks of rows between progress reports.
  const std::int64_t super = std::max<std::int64_t>(kRows * nt * 4, (1 << 22) / std::max<std::int64_t>(m, 1) * kRows);
  for (std::int64_t s0 = 0; s0 < n; s0 += super) {
    const std::int64_t s1 = std::min(n, s0 + super);
    parallel_chunks(s1 - s0, kRows, (s1 - s0) * m * d, [&](std::int64_t b, std::int64_t e, int t) {
      const std::int64_t r0 = s0 + b, rows = e - b;
      float* tile = tiles.data() + static_cast<std::size_t>(t) * kRows * kCols;
      double* xn2 = scratch.data() + static_cast<std::size_t>(t) * kRows * 4;
      double* xn = xn2 + kRows;
      double* best = xn + kRows;
      double* upper = best + kRows;
      std::int32_t bj[kRows];
      for (std::int64_t r = 0; r < rows; ++r) {
        xn2[r] = dot_canonical(x.row(r0 + r), x.row(r0 + r), d);
        xn[r] = std::sqrt(xn2[r]);
        best[r] = kInf;
        upper[r] = kInf;
        bj[r] = -1;
      }
      for (std::int64_t c0 = 0; c0 < m; c0 += kCols) {
        const std::int64_t cols = std::min(kCols, m - c0);
        if (gemm_ok) {
          // Row-major tile[r][j] = x_{r0+r} . y_{c0+j}: column-major tile^T = Y^T X.
          const int M = static_cast<int>(cols), N = static_cast<int>(rows), K = static_cast<int>(d);
          const float one = 1.0f, zero = 0.0f;
          sgemm_("T", "N", &M, &N, &K, &one, y.row(c0), &K, x.row(r0), &K, &zero, tile, &M, 1, 1);
        }
        for (std::int64_t r = 0; r < rows; ++r) {
          const std::int64_t i = r0 + r;
          if (!skip.empty() && skip[i]) continue;
          const float* tr = tile + r * cols;
          // First the block's smallest upper bound, then every column it cannot rule out.
          double u = upper[r];
          if (gemm_ok) {
            for (std::int64_t j = 0; j < cols; ++j) {
              const double t2 = 2.0 * static_cast<double>(tr[j]);
              const double s = xn2[r] + yn2[c0 + j];
              const double err = 2.0 * gam * xn[r] * yn[c0 + j] + rel * s + tiny;
              const double hi = (s - t2) + err;
              u = std::min(u, hi);  // NaN (overflow) compares false: no effect
            }
          }
          for (std::int64_t j = 0; j < cols; ++j) {
            if (gemm_ok) {
              const double t2 = 2.0 * static_cast<double>(tr[j]);
              const double s = xn2[r] + yn2[c0 + j];
              const double err = 2.0 * gam * xn[r] * yn[c0 + j] + rel * s + tiny;
              const double lo = (s - t2) - err;
              if (lo > u) continue;  // a NaN lo (overflowed product) is not > u: recomputed
            }
            const double ex = sqdist_canonical(x.row(i), y.row(c0 + j), d);
            if (ex < best[r] || (ex == best[r] && c0 + j < bj[r])) {
              best[r] = ex;
              bj[r] = static_cast<std::int32_t>(c0 + j);
            }
            u = std::min(u, ex);
          }
          upper[r] = u;
        }
      }
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t i = r0 + r;
        if (!skip.empty() && skip[i]) continue;
        (*best_d2)[i] = best[r];
        (*best_j)[i] = bj[r];
      }
    });
    report(progress, phase, s1, n);
  }
}

// ---------------------------------------------------------------------------- strategies

namespace {

// Greedy k-center only ever needs the largest mind2, and mind2 only decreases as centres are
// added. So every sample keeps its mind2 against the centres up to upto[i], an upper bound of
// its current value, in a max-heap ordered by (value desc, index asc). A pick pops the top
// entries, brings them up to date against the centres added since, and pushes them back,
// until the top entry is up to date: that sample is the exact argmax, lowest index on ties,
// since every other entry's bound (hence its value) is smaller, or equal with a larger index.
// Most samples sit below the covering radius and are rarely brought up to date, so a pick
// costs a few hundred distances to recent centres, held in cache, instead of a pass over the
// pool; the values, and so the picks, are those of the eager update.
//
// Bringing sample p up to date against a new centre s is skipped when a lower bound on
// d(owner_p, s)² (kept for every pair of picks, as a float table, while it fits in
// kPairTableBytes) is >= 4 (mind2_p + E): then d(p, s) >= d(p, owner_p) by the triangle
// inequality. Otherwise a float screen with its error bound, four centres at a time, and the
// canonical distance of what it cannot settle.
class LazyKCenter {
 public:
  explicit LazyKCenter(const FloatRows& x)
      : x_(x), d_(x.d), mind2_(static_cast<std::size_t>(x.n), kInf), upto_(static_cast<std::size_t>(x.n), 0),
        owner_(static_cast<std::size_t>(x.n), -1) {
    std::vector<double> part(static_cast<std::size_t>(max_threads()), 0.0);
    parallel_chunks(x.n, 4096, x.n * x.d, [&](std::int64_t b, std::int64_t e, int t) {
      for (std::int64_t i = b; i < e; ++i) part[t] = std::max(part[t], dot_canonical(x.row(i), x.row(i), d_));
    });
    const double xmax2 = *std::max_element(part.begin(), part.end()) * (1 + 1e-9);
    E_ = 4.1 * static_cast<double>(d_ + 8) * kEps * xmax2;  // as Euclid::E
    screen_ = 4.0 * xmax2 < 1e36;                            // no overflow in float
    gamma_ = detail::sqdist_f32_rel_error(d_ + kScreenExtra);
    factor_ = (1.0 + gamma_) * (1.0 + 4.0 * detail::sqdist_rel_error(d_) + 1e-12);
    abs_ = subnormal_slack(d_ + kScreenExtra);
  }

  /// Labeled samples as the first centres, with every other sample's distance to the nearest
  /// (d2, by index).
  void start(const std::vector<std::int64_t>& labeled, std::vector<double> d2) {
    mind2_ = std::move(d2);
    for (std::int64_t l : labeled) mind2_[l] = kTaken;
    labeled_ = static_cast<std::int64_t>(labeled.size());
    std::fill(upto_.begin(), upto_.end(), static_cast<std::int32_t>(labeled_));
    build_heap();  // owners stay -1: no pair bounds with labeled centres
  }
  /// One first centre c: every distance to it.
  void start(std::int64_t c) {
    const std::int64_t n = x_.n;
    parallel_chunks(n, kPassChunk, n * d_, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t i = b; i < e; ++i) mind2_[i] = sqdist_canonical(x_.row(i), x_.row(c), d_);
    });
    labeled_ = 0;
    add(c);
    std::fill(upto_.begin(), upto_.end(), 1);
    std::fill(owner_.begin(), owner_.end(), 0);
    mind2_[c] = kTaken;
    build_heap();
  }

  /// The next pick: the sample farthest from its nearest centre (value: that squared distance),
  /// made a centre.
  ArgMax next() {
    const std::int32_t now = static_cast<std::int32_t>(centres());
    for (;;) {
      if (upto_[heap_.front().i] == now) {
        std::pop_heap(heap_.begin(), heap_.end());
        const Entry top = heap_.back();
        heap_.pop_back();
        add(top.i);
        ArgMax out;
        out.take(top.v, top.i);
        return out;
      }
      // The stale entries on top, brought up to date together (in parallel when worth it).
      batch_.clear();
      std::int64_t work = 0;
      while (!heap_.empty() && static_cast<int>(batch_.size()) < kBatch && upto_[heap_.front().i] != now) {
        std::pop_heap(heap_.begin(), heap_.end());
        batch_.push_back(heap_.back().i);
        work += (now - upto_[heap_.back().i]) * d_;
        heap_.pop_back();
      }
      parallel_chunks(static_cast<std::int64_t>(batch_.size()), 1, work / 4, [&](std::int64_t b, std::int64_t e, int) {
        for (std::int64_t j = b; j < e; ++j) refresh(batch_[j], now);
      });
      for (std::int32_t i : batch_) {
        heap_.push_back({mind2_[i], i});
        std::push_heap(heap_.begin(), heap_.end());
      }
    }
  }

 private:
  struct Entry {
    double v;
    std::int32_t i;
    bool operator<(const Entry& o) const { return v != o.v ? v < o.v : i > o.i; }  // max-heap
  };
  static constexpr int kBatch = 16;
  static constexpr std::int64_t kPairTableBytes = std::int64_t{256} << 20;

  std::int64_t picks() const { return static_cast<std::int64_t>(picked_.size()) / d_; }
  std::int64_t centres() const { return labeled_ + picks(); }
  const float* pick_row(std::int64_t j) const { return picked_.data() + j * d_; }

  // Pick c joins the centres; its row of pair bounds: lower bounds on the true d(c, j)² for
  // every earlier pick j (the float distance divided by its error factor, rounded down).
  void add(std::int64_t c) {
    const std::int64_t j = picks();
    picked_.insert(picked_.end(), x_.row(c), x_.row(c) + d_);
    if (!screen_ || (pairs_.size() + static_cast<std::size_t>(j)) * sizeof(float) > kPairTableBytes) return;
    pair_start_.push_back(static_cast<std::int64_t>(pairs_.size()));
    pairs_.resize(pairs_.size() + static_cast<std::size_t>(j));
    float* row = pairs_.data() + pair_start_.back();
    parallel_chunks((j + 3) / 4, 64, j * d_, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t q = b * 4; q < std::min(j, e * 4); q += 4) {
        const float* cs[4];
        float f[4];
        for (int u = 0; u < 4; ++u) cs[u] = pick_row(std::min(q + u, j - 1));
        sqdist_f32_x4(x_.row(c), cs, d_, f);
        for (int u = 0; u < 4 && q + u < j; ++u) {
          const double lb = (static_cast<double>(f[u]) - abs_) / (1.0 + gamma_) * (1.0 - 1e-6);
          row[q + u] = lb > 0 ? static_cast<float>(lb) : 0.0f;
        }
      }
    });
  }
  // Lower bound on the true d(pick a, pick s)², a < s; 0 where the table stops.
  float pair_bound(std::int64_t s, std::int64_t a) const {
    return s < static_cast<std::int64_t>(pair_start_.size()) ? pairs_[static_cast<std::size_t>(pair_start_[s] + a)] : 0.0f;
  }
  void build_heap() {
    heap_.clear();
    for (std::int64_t i = 0; i < x_.n; ++i)
      if (mind2_[i] >= 0) heap_.push_back({mind2_[i], static_cast<std::int32_t>(i)});
    std::make_heap(heap_.begin(), heap_.end());
  }
  // mind2 of i against the centres upto[i] .. now-1 (all picks, in a contiguous cache-held
  // copy). f >= m (1 + gamma)(1 + 4 delta) + abs proves the canonical distance >= m.
  void refresh(std::int32_t i, std::int32_t now) {
    const float* r = x_.row(i);
    double m = mind2_[i];
    std::int32_t owner = owner_[i];
    const float* cs[4];
    std::int32_t js[4];
    int queued = 0;
    auto settle = [&](int count) {
      float f[4];
      if (screen_) {
        for (int u = count; u < 4; ++u) cs[u] = cs[0];
        sqdist_f32_x4(r, cs, d_, f);
      }
      for (int u = 0; u < count; ++u) {
        if (screen_ && f[u] >= m * factor_ + abs_) continue;
        const double e = sqdist_canonical(r, cs[u], d_);
        if (e < m) {
          m = e;
          owner = js[u];
        }
      }
    };
    for (std::int64_t s = upto_[i] - labeled_; s < now - labeled_; ++s) {
      // d(owner, s) >= 2 sqrt(m + E): s cannot be nearer than the owner.
      if (owner >= 0 && pair_bound(s, owner) >= 4.0 * (m + E_) * kSlack) continue;
      cs[queued] = pick_row(s);
      js[queued] = static_cast<std::int32_t>(s);
      if (++queued == 4) {
        settle(4);
        queued = 0;
      }
    }
    if (queued > 0) settle(queued);
    mind2_[i] = m;
    owner_[i] = owner;
    upto_[i] = now;
  }

  const FloatRows& x_;
  std::int64_t d_;
  std::vector<double> mind2_;
  std::vector<std::int32_t> upto_;
  std::vector<std::int32_t> owner_;  // the pick nearest each sample, -1 for a labeled one
  std::vector<float> picked_;        // rows of the picks, in pick order
  std::vector<float> pairs_;         // pair bounds, row s at pair_start_[s] (s entries)
  std::vector<std::int64_t> pair_start_;
  std::int64_t labeled_ = 0;
  std::vector<Entry> heap_;
  std::vector<std::int32_t> batch_;
  bool screen_ = true;
  double E_ = 0, gamma_ = 0, factor_ = 1, abs_ = 0;
};

}  // namespace

Selection kcenter(const FloatRows& x, const std::vector<std::int64_t>& labeled, std::int64_t k,
              const PhaseProgressFn& progress, const GreedyOptions& opt) {
  Selection out;
  const std::int64_t n = x.n;
  std::vector<double> d2;
  std::vector<std::int32_t> slot;
  std::int64_t first = -1;
  if (!labeled.empty()) {
    // The distance of every sample to the nearest labeled one, in GEMM blocks.
    FloatRows centres = gather_rows(x, labeled);
    std::vector<std::uint8_t> skip(static_cast<std::size_t>(n), 0);
    for (std::int64_t l : labeled) skip[l] = 1;
    nearest_rows(x, centres, skip, &d2, &slot, progress, "labeled distances");
  } else {
    // No labels: the sample nearest the pool mean (ties to the lower index) starts.
    const std::vector<double> mean = pool_mean(x);
    const ArgMax near = parallel_argmax(n, n * x.d, [&](std::int64_t i) {
      return -sqdist_canonical(x.row(i), mean.data(), x.d);
    });
    first = near.index;
    out.index.push_back(first);
    out.score.push_back(static_cast<float>(std::sqrt(-near.value)));
    report(progress, "picking", 1, k);
  }
  if (opt.prune) {
    LazyKCenter lazy(x);
    if (first >= 0) {
      if (k > 1) lazy.start(first);
    } else {
      lazy.start(labeled, std::move(d2));
    }
    for (std::int64_t t = static_cast<std::int64_t>(out.index.size()); t < k; ++t) {
      const ArgMax pick = lazy.next();
      out.index.push_back(pick.index);
      out.score.push_back(static_cast<float>(std::sqrt(std::max(pick.value, 0.0))));
      report(progress, "picking", t + 1, k);
    }
    return out;
  }
  // The reference: every distance to every new centre, in index order.
  Euclid metric(x);
  Coverage<Euclid> cov(metric, false, false);
  PassStats st;
  if (first >= 0) {
    if (k > 1) st = cov.add_centre(first);
  } else {
    st = cov.set_initial(labeled, d2, slot);
  }
  for (std::int64_t t = static_cast<std::int64_t>(out.index.size()); t < k; ++t) {
    const std::int64_t pick = st.best.index;
    out.index.push_back(pick);
    out.score.push_back(static_cast<float>(std::sqrt(std::max(st.best.value, 0.0))));
    if (t + 1 < k) st = cov.add_centre(pick);
    report(progress, "picking", t + 1, k);
  }
  return out;
}

Selection badge(const std::vector<double>& a, std::int64_t c, const FloatRows& h,
            const std::vector<std::uint8_t>& excluded, std::int64_t k, std::uint64_t seed,
            const PhaseProgressFn& progress, const GreedyOptions& opt) {
  Selection out;
  const std::int64_t n = h.n;
  Badge metric(a, c, h);
  Coverage<Badge> cov(metric, opt.prune, true);
  if (!excluded.empty())
    for (std::int64_t i = 0; i < n; ++i)
      if (excluded[i]) cov.take(i);
  // The first centre: the largest gradient-embedding norm.
  const ArgMax first = parallel_argmax(n, n, [&](std::int64_t i) {
    return cov.mind2(i) < 0 ? -kInf : metric.norm2(i);
  });
  out.index.push_back(first.index);
  out.score.push_back(static_cast<float>(first.value));
  report(progress, "picking", 1, k);
  if (k == 1) return out;
  PassStats st = cov.add_centre(first.index);
  for (std::int64_t t = 1; t < k; ++t) {
    std::int64_t pick;
    if (st.best.value > 0) {
      pick = cov.sample(st, seed, detail::kStreamBadge, static_cast<std::uint64_t>(t));
    } else {
      pick = st.best.index;  // every remaining D² is 0: the lowest remaining index
    }
    out.index.push_back(pick);
    out.score.push_back(static_cast<float>(std::max(cov.mind2(pick), 0.0)));
    if (t + 1 < k) st = cov.add_centre(pick);
    report(progress, "picking", t + 1, k);
  }
  return out;
}

KMeansOut kmeans(const FloatRows& x, std::int64_t clusters, int iterations, std::uint64_t seed,
                 const PhaseProgressFn& progress, const GreedyOptions& opt) {
  const std::int64_t n = x.n, d = x.d;
  KMeansOut out;
  // k-means++ seeding: the first centre uniform (draw 0), then D² draws 1 .. clusters-1.
  std::vector<std::int64_t> seeds;
  {
    Euclid metric(x);
    Coverage<Euclid> cov(metric, opt.prune, true);
    std::int64_t c0 = static_cast<std::int64_t>(
        detail::mulhi64(detail::random_u64(seed, detail::kStreamKMeansInit, 0), static_cast<std::uint64_t>(n)));
    seeds.push_back(c0);
    PassStats st;
    if (clusters > 1) st = cov.add_centre(c0);
    for (std::int64_t t = 1; t < clusters; ++t) {
      const std::int64_t pick =
          st.best.value > 0 ? cov.sample(st, seed, detail::kStreamKMeansInit, static_cast<std::uint64_t>(t))
                            : st.best.index;
      seeds.push_back(pick);
      if (t + 1 < clusters) st = cov.add_centre(pick);
      report(progress, "k-means seeding", t + 1, clusters);
    }
  }
  FloatRows cent = gather_rows(x, seeds);
  out.labels.assign(static_cast<std::size_t>(n), -1);
  std::vector<double> d2;
  std::vector<std::int32_t> lab;
  std::vector<std::int64_t> start(static_cast<std::size_t>(clusters + 1));
  std::vector<std::int64_t> members(static_cast<std::size_t>(n));
  for (int it = 0; it < iterations; ++it) {
    nearest_rows(x, cent, {}, &d2, &lab, nullptr, "k-means");
    out.iterations = it + 1;
    if (lab == out.labels) {
      out.converged = true;
      report(progress, "k-means", it + 1, it + 1);
      break;
    }
    out.labels.swap(lab);
    // Members of each cluster in index order (a counting sort), then each centroid summed in
    // double in that order: the same centroids on any thread count.
    std::fill(start.begin(), start.end(), 0);
    for (std::int32_t l : out.labels) ++start[static_cast<std::size_t>(l) + 1];
    for (std::int64_t j = 0; j < clusters; ++j) start[j + 1] += start[j];
    {
      std::vector<std::int64_t> pos(start.begin(), start.end() - 1);
      for (std::int64_t i = 0; i < n; ++i) members[pos[out.labels[i]]++] = i;
    }
    parallel_chunks(clusters, 1, n * d, [&](std::int64_t b, std::int64_t e, int) {
      std::vector<double> sum(static_cast<std::size_t>(d));
      for (std::int64_t j = b; j < e; ++j) {
        const std::int64_t cnt = start[j + 1] - start[j];
        if (cnt == 0) continue;  // an empty cluster keeps its centroid
        std::fill(sum.begin(), sum.end(), 0.0);
        for (std::int64_t p = start[j]; p < start[j + 1]; ++p) {
          const float* r = x.row(members[p]);
          for (std::int64_t q = 0; q < d; ++q) sum[q] += static_cast<double>(r[q]);
        }
        float* dst = cent.storage.data() + j * d;
        for (std::int64_t q = 0; q < d; ++q) dst[q] = static_cast<float>(sum[q] / static_cast<double>(cnt));
      }
    });
    report(progress, "k-means", it + 1, iterations);
  }
  out.centroids = std::move(cent.storage);
  return out;
}

}  // namespace quarry::cpu
