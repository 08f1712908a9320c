// The metrics of the greedy loops of the CPU diversity backend: Euclid (k-center's reference,
// k-means++ seeding) and Badge (BADGE's gradient embeddings), each with a bfloat16 copy of the
// rows (Bf16Rows) for the float screens. Canonical arithmetic: include only from files compiled
// without FP contraction (QUARRY_NO_CONTRACTION in CMakeLists.txt).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/diversity_internal.hpp"
#include "quarry/detail/hd.hpp"

namespace quarry::cpu::diversity_detail {

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

}  // namespace quarry::cpu::diversity_detail
