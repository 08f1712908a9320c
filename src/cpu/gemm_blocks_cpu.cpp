// The GEMM blocks of the CPU diversity backend: nearest_rows (the distances to kcenter's labeled
// set, the k-means assignment) screens BLAS SGEMM tiles with a rigorous error bound and
// recomputes canonically every column the bound cannot rule out. Canonical arithmetic: compiled
// without FP contraction (QUARRY_NO_CONTRACTION in CMakeLists.txt).
#include "cpu/diversity_cpu.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/parallel.hpp"
#include "cpu/diversity_internal.hpp"
#include "quarry/detail/diversity_math.hpp"
#include "quarry/error.hpp"

namespace quarry::cpu {
namespace {

// BLAS, loaded on the first GEMM (dlopen) rather than linked: a command that computes none
// (score, select by a score, info) does not pay OpenBLAS's start-up. The Fortran interface:
// every BLAS (OpenBLAS, the reference BLAS, BLIS, MKL) has it, unlike CBLAS. Character arguments
// carry hidden lengths at the end (gfortran ABI).
struct BlasApi {
  using Sgemm = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                         const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                         const float* beta, float* c, const int* ldc, std::size_t transa_len,
                         std::size_t transb_len);
  Sgemm sgemm = nullptr;
  // OpenBLAS's thread control, when the BLAS is OpenBLAS (null otherwise).
  void (*set_threads)(int) = nullptr;
  int (*get_threads)() = nullptr;
};

// The BLAS this build found (QUARRY_BLAS_SONAME), else the system's libblas.so.3. A failure is
// an Error and the next call tries again.
const BlasApi& blas_api() {
  static const BlasApi api = [] {
    void* h = nullptr;
    std::string tried;
    for (const char* name : {QUARRY_BLAS_SONAME, "libblas.so.3"}) {
      if ((h = ::dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
      tried += std::string(tried.empty() ? "" : "; ") + ::dlerror();
    }
    if (!h) QUARRY_FAIL("cannot load a BLAS, which the CPU diversity strategies and k-means need: ", tried);
    BlasApi a;
    a.sgemm = reinterpret_cast<BlasApi::Sgemm>(::dlsym(h, "sgemm_"));
    if (!a.sgemm) QUARRY_FAIL("the BLAS loaded (", QUARRY_BLAS_SONAME, ") has no sgemm_");
    a.set_threads = reinterpret_cast<void (*)(int)>(::dlsym(h, "openblas_set_num_threads"));
    a.get_threads = reinterpret_cast<int (*)()>(::dlsym(h, "openblas_get_num_threads"));
    return a;
  }();
  return api;
}

// Each thread calls GEMM on its own rows, so the BLAS must not start threads of its own:
// OpenBLAS's pthreads would compete with OpenMP's for the same cores (and spin after each
// call). Restores the caller's setting. (An OpenMP build of OpenBLAS, MKL and BLIS detect the
// enclosing parallel region themselves.)
class BlasSingleThreaded {
 public:
  explicit BlasSingleThreaded(const BlasApi& blas) : blas_(blas) {
    if (blas_.set_threads && blas_.get_threads) {
      saved_ = blas_.get_threads();
      blas_.set_threads(1);
    }
  }
  ~BlasSingleThreaded() {
    if (saved_ > 0) blas_.set_threads(saved_);
  }
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;

 private:
  const BlasApi& blas_;
  int saved_ = 0;
};

}  // namespace

using namespace diversity_detail;

// ---------------------------------------------------------------------------- GEMM blocks

namespace {

// The screen of canonical squared distances between rows of x and y by a float GEMM tile:
// |fl(x.y) - x.y| <= gamma_{d+1} ||x|| ||y|| for any summation order (one more rounding for the
// float result); the double terms add a few eps (xn2 + yn2); the canonical value itself is
// within (d + 4) eps of the exact distance <= 2 (xn2 + yn2). Where GEMM is unusable (huge d)
// the bounds are infinite and every pair is computed exactly.
struct Screen {
  const FloatRows& x;
  const FloatRows& y;
  std::vector<double> yn2, yn;
  double gam, rel, tiny;
  bool gemm_ok;
  static constexpr std::int64_t kRows = 256, kCols = 1024;

  Screen(const FloatRows& x_, const FloatRows& y_) : x(x_), y(y_) {
    const std::int64_t d = x.d;
    yn2.resize(static_cast<std::size_t>(y.n));
    yn.resize(static_cast<std::size_t>(y.n));
    for (std::int64_t j = 0; j < y.n; ++j) {
      yn2[j] = dot_canonical(y.row(j), y.row(j), d);
      yn[j] = std::sqrt(yn2[j]);
    }
    gam = detail::dot_f32_error_factor(d + 1) * 1.01;
    rel = 8.0 * static_cast<double>(d + 8) * kEps;
    tiny = 8.0 * static_cast<double>(d) * 1.401298464324817e-45;
    gemm_ok = static_cast<double>(d) * detail::kEpsFloat < 0.01 && d < (1 << 30);
  }
  // Row-major tile[r][j] = x_{r0+r} . y_{c0+j} (column-major tile^T = Y^T X).
  void tile(const BlasApi& blas, std::int64_t r0, std::int64_t rows, std::int64_t c0, std::int64_t cols,
            float* out) const {
    if (!gemm_ok) return;
    const int M = static_cast<int>(cols), N = static_cast<int>(rows), K = static_cast<int>(x.d);
    const float one = 1.0f, zero = 0.0f;
    blas.sgemm("T", "N", &M, &N, &K, &one, y.row(c0), &K, x.row(r0), &K, &zero, out, &M, 1, 1);
  }
  // Bounds {lo, hi} of the canonical squared distance from the tile's value t (x.y in float) and
  // x's squared norm and norm. NaN bounds (an overflowed product) compare false both ways.
  std::pair<double, double> bounds(float t, double xn2, double xn, std::int64_t j) const {
    if (!gemm_ok) return {-kInf, kInf};
    const double s = xn2 + yn2[j];
    const double err = 2.0 * gam * xn * yn[j] + rel * s + tiny;
    const double v = s - 2.0 * static_cast<double>(t);
    return {v - err, v + err};
  }
};

// Runs body(blas, r0, rows, tile, t) over blocks of Screen::kRows rows of x in parallel (tile:
// thread t's kRows x kCols float buffer), in super-blocks of rows with after(rows done) between
// them (progress, checks). The BLAS is loaded (or an Error) before any parallel region and runs
// single-threaded inside it.
template <class Body, class After>
void row_blocks(const FloatRows& x, const FloatRows& y, Body body, After after) {
  constexpr std::int64_t kRows = Screen::kRows, kCols = Screen::kCols;
  const std::int64_t n = x.n, m = y.n;
  const int nt = max_threads();
  std::vector<float> tiles(static_cast<std::size_t>(nt) * kRows * kCols);
  const BlasApi& blas = blas_api();
  BlasSingleThreaded single(blas);
  const std::int64_t super = std::max<std::int64_t>(kRows * nt * 4, (1 << 22) / std::max<std::int64_t>(m, 1) * kRows);
  for (std::int64_t s0 = 0; s0 < n; s0 += super) {
    const std::int64_t s1 = std::min(n, s0 + super);
    parallel_chunks(s1 - s0, kRows, (s1 - s0) * m * x.d, [&](std::int64_t b, std::int64_t e, int t) {
      body(blas, s0 + b, e - b, tiles.data() + static_cast<std::size_t>(t) * kRows * kCols, t);
    });
    after(s1);
  }
}

}  // namespace

void nearest_rows(const FloatRows& x, const FloatRows& y, const std::vector<std::uint8_t>& skip,
                  std::vector<double>* best_d2, std::vector<std::int32_t>* best_j,
                  const ProgressFn& progress, const char* phase) {
  const std::int64_t n = x.n, m = y.n, d = x.d;
  best_d2->assign(static_cast<std::size_t>(n), kInf);
  best_j->assign(static_cast<std::size_t>(n), -1);
  if (n == 0 || m == 0) return;
  const Screen screen(x, y);
  constexpr std::int64_t kRows = Screen::kRows, kCols = Screen::kCols;
  std::vector<double> scratch(static_cast<std::size_t>(max_threads()) * kRows * 4);
  row_blocks(x, y, [&](const BlasApi& blas, std::int64_t r0, std::int64_t rows, float* tile, int t) {
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
        screen.tile(blas, r0, rows, c0, cols, tile);
        for (std::int64_t r = 0; r < rows; ++r) {
          const std::int64_t i = r0 + r;
          if (!skip.empty() && skip[i]) continue;
          const float* tr = tile + r * cols;
          // First the block's smallest upper bound, then every column it cannot rule out.
          double u = upper[r];
          for (std::int64_t j = 0; j < cols; ++j)
            u = std::min(u, screen.bounds(tr[j], xn2[r], xn[r], c0 + j).second);  // NaN: no effect
          for (std::int64_t j = 0; j < cols; ++j) {
            if (screen.bounds(tr[j], xn2[r], xn[r], c0 + j).first > u) continue;  // NaN lo: recomputed
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
  }, [&](std::int64_t done) { report(progress, phase, done, n); });
}

std::vector<std::vector<std::int32_t>> rows_within(const FloatRows& x, const FloatRows& y, double r2,
                                                   std::int64_t max_pairs, const ProgressFn& progress,
                                                   const char* phase) {
  const std::int64_t n = x.n, m = y.n, d = x.d;
  std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(n));
  if (n == 0 || m == 0) return out;
  const Screen screen(x, y);
  constexpr std::int64_t kCols = Screen::kCols;
  std::vector<std::int64_t> pairs(static_cast<std::size_t>(max_threads()), 0);
  row_blocks(x, y, [&](const BlasApi& blas, std::int64_t r0, std::int64_t rows, float* tile, int t) {
      std::vector<double> xn2(static_cast<std::size_t>(rows)), xn(static_cast<std::size_t>(rows));
      for (std::int64_t r = 0; r < rows; ++r) {
        xn2[r] = dot_canonical(x.row(r0 + r), x.row(r0 + r), d);
        xn[r] = std::sqrt(xn2[r]);
      }
      for (std::int64_t c0 = 0; c0 < m; c0 += kCols) {
        const std::int64_t cols = std::min(kCols, m - c0);
        screen.tile(blas, r0, rows, c0, cols, tile);
        for (std::int64_t r = 0; r < rows; ++r) {
          const float* tr = tile + r * cols;
          auto& list = out[static_cast<std::size_t>(r0 + r)];
          for (std::int64_t j = 0; j < cols; ++j) {
            const auto [lo, hi] = screen.bounds(tr[j], xn2[r], xn[r], c0 + j);
            if (lo > r2) continue;
            if (!(hi <= r2) && sqdist_canonical(x.row(r0 + r), y.row(c0 + j), d) > r2) continue;
            list.push_back(static_cast<std::int32_t>(c0 + j));
          }
        }
      }
      for (std::int64_t r = 0; r < rows; ++r) pairs[t] += static_cast<std::int64_t>(out[static_cast<std::size_t>(r0 + r)].size());
  }, [&](std::int64_t done) {
    std::int64_t total = 0;
    for (std::int64_t p : pairs) total += p;
    QUARRY_EXPECTS(total <= max_pairs, "more than ", max_pairs, " pairs of samples lie within the radius ",
                   std::sqrt(r2), ": the ball graph would not fit in memory; give a smaller radius");
    report(progress, phase, done, n);
  });
  return out;
}

}  // namespace quarry::cpu
