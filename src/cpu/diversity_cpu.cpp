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
// why FMA contraction is turned off in every file of this backend that computes them (the list
// QUARRY_NO_CONTRACTION in CMakeLists.txt): a fused a*b+c rounds differently from the canonical
// a*b then +c, and the CUDA port compiles the same arithmetic with --fmad=false. The one file
// left off that list is the float screen of distance_screen_cpu.cpp, which decides nothing.
//
// The files of the backend (src/cpu/):
//   diversity_cpu.cpp        this one: the inputs (badge_factors), BADGE and k-means;
//   kcenter_cpu.cpp          k-center (LazyKCenter and the unpruned reference);
//   gemm_blocks_cpu.cpp      nearest_rows, the BLAS GEMM blocks;
//   coverage_cpu.hpp / .cpp  Coverage (the greedy state) and the D² draws;
//   diversity_metrics.hpp    the metrics (Euclid, Badge) and their bfloat16 copies;
//   distance_screen_cpu.cpp  k-center's float screen (sqdist_f32_x4);
//   diversity_internal.hpp   what they share (namespace quarry::cpu::diversity_detail).

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

#include "cpu/coverage_cpu.hpp"
#include "cpu/diversity_internal.hpp"
#include "cpu/diversity_metrics.hpp"
#include "quarry/detail/diversity_math.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/error.hpp"

namespace quarry::cpu {

using namespace diversity_detail;

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

// ---------------------------------------------------------------------------- strategies

// k-center: kcenter_cpu.cpp.

Selection badge(const std::vector<double>& a, std::int64_t c, const FloatRows& h,
            const std::vector<std::uint8_t>& excluded, std::int64_t k, std::uint64_t seed,
            const ProgressFn& progress, const GreedyOptions& opt) {
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
                 const ProgressFn& progress, const GreedyOptions& opt) {
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
