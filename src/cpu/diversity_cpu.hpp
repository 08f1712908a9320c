// CPU backend of the diversity strategies, called by src/engine/diversity.cpp after it has
// validated the call. The definitions of what is computed are in include/quarry/diversity.hpp
// and include/quarry/detail/diversity_math.hpp.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/rows.hpp"
#include "quarry/array.hpp"

namespace quarry::cpu {


/// BADGE's factor a_i = p_i - e_yhat_i per row, in double [N, C], from validated outputs [N, C]
/// (probabilities are divided by their row sum; logits go through a softmax in double).
std::vector<double> badge_factors(const ArrayView& outputs, bool logits);

/// Tuning and test switches of the greedy loops.
struct GreedyOptions {
  /// Skip distance computations that the triangle inequality proves cannot change anything.
  /// Off, every pick recomputes every distance (the reference for tests). Same result.
  bool prune = true;
};

/// k-center greedy over the rows of x. `labeled` (sorted, unique) are the initial centres and
/// are never picked. 0 < k <= n - |labeled|.
Selection kcenter(const FloatRows& x, const std::vector<std::int64_t>& labeled, std::int64_t k,
              const ProgressFn& progress, const GreedyOptions& opt = {});

/// BADGE over a [n, c] (double, p - e_yhat) and h [n, d]. excluded[i] != 0: never picked
/// (`excluded` empty: none). 0 < k <= selectable.
Selection badge(const std::vector<double>& a, std::int64_t c, const FloatRows& h,
            const std::vector<std::uint8_t>& excluded, std::int64_t k, std::uint64_t seed,
            const ProgressFn& progress, const GreedyOptions& opt = {});

/// k-means++ seeding and Lloyd iterations; 1 <= clusters <= n.
KMeansOut kmeans(const FloatRows& x, std::int64_t clusters, int iterations, std::uint64_t seed,
                 const ProgressFn& progress, const GreedyOptions& opt = {});

/// TypiClust's picks (quarry/diversity.hpp): `cluster` [n] in [0, clusters) from kmeans;
/// excluded[i] != 0: never picked, but counts as its cluster's member. 0 < k <= selectable.
Selection typiclust(const FloatRows& x, const std::vector<std::int32_t>& cluster, std::int64_t clusters,
                    const std::vector<std::uint8_t>& excluded, std::int64_t k, int neighbours,
                    std::uint64_t seed, const ProgressFn& progress);

/// ProbCover's radius: the largest at which at least `purity` of the balls hold one cluster of
/// `cluster` (the 1 - purity quantile of the distances to the nearest sample of another
/// cluster); a tiny positive radius where that quantile is 0; +inf for one cluster.
double probcover_radius(const FloatRows& x, const std::vector<std::int32_t>& cluster, std::int64_t clusters,
                        double purity, const ProgressFn& progress);

/// ProbCover's greedy max coverage with balls of `radius` (quarry/diversity.hpp).
Selection probcover(const FloatRows& x, const std::vector<std::uint8_t>& excluded, std::int64_t k, double radius,
                    std::uint64_t seed, const ProgressFn& progress);

/// For every row i of x, the rows j of y at canonical squared distance <= r2 (ascending j):
/// BLAS GEMM blocks screen with a proven error bound and every pair the bound cannot decide is
/// computed exactly. Throws an Error beyond `max_pairs` pairs in all.
std::vector<std::vector<std::int32_t>> rows_within(const FloatRows& x, const FloatRows& y, double r2,
                                                   std::int64_t max_pairs, const ProgressFn& progress,
                                                   const char* phase);

/// For every row i of x (skip[i] == 0, or `skip` empty), the row j of y at the smallest
/// canonical distance (ties to the lower j) and that squared distance: BLAS GEMM blocks give
/// approximations with a proven error bound, and every j that the bound cannot rule out is
/// recomputed exactly. Rows with skip[i] != 0 get (+inf, -1).
void nearest_rows(const FloatRows& x, const FloatRows& y, const std::vector<std::uint8_t>& skip,
                  std::vector<double>* best_d2, std::vector<std::int32_t>* best_j,
                  const ProgressFn& progress, const char* phase);

}  // namespace quarry::cpu
