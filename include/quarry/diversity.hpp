// Diversity-aware batch selection: BADGE, k-center greedy, Cluster-Margin and uncertain-k-center
// over a pool's embeddings [N, D] (and its model outputs [N, C] where a strategy needs them).
//
// One public function, select_diverse(), validates the call and dispatches it to a backend (the
// CPU or CUDA). Every strategy is deterministic for a given seed, on any thread count and either
// backend: the distances that decide a pick are computed in double in one fixed order, and the
// random draws come from a counter-based generator (Philox) keyed by the seed and the draw
// number (docs/acquisition.md).
//
// What each strategy selects, and what Selection::score holds for each pick:
//
//   badge (Ash et al. 2020)   k-means++ seeding over the gradient embeddings
//       g_i = (p_i - e_yhat_i) ⊗ h_i, never materialised: distances come from
//       <a⊗h, b⊗g> = <a,b><h,g>, so memory is O(N (C + D)). yhat_i is the predicted class
//       (ties to the lower class). The first pick is the largest ||g_i|| (ties to the lower
//       index); pick t >= 1 is drawn with probability proportional to D²_i, the squared distance
//       from g_i to the nearest earlier pick (exact integer D² sampling with draw t of the
//       seed's BADGE stream; see diversity_math.hpp). If every remaining D² is 0 (duplicates of
//       the picks), the lowest remaining index is taken. Excluded samples are never picked and
//       are not centres (as in the original BADGE). score: ||g||² for the first pick, then the
//       D² weight of the pick at the time it was drawn.
//
//   kcenter (Sener and Savarese 2018, core-set greedy)   The excluded (labeled) samples are
//       the initial centres: every sample starts at its distance to the nearest one (computed
//       in blocks with BLAS GEMM, never an N x N matrix). Without exclusions, the first pick is
//       the sample nearest the pool mean. Then each pick is the sample farthest from its
//       nearest centre (ties to the lower index), and the distances are updated incrementally.
//       score: the Euclidean distance from the pick to its nearest centre when it was picked
//       (the covering radius, non-increasing); for a first pick without exclusions, its
//       distance to the pool mean.
//
//   cluster-margin (Citovsky et al. 2021)   The pool's embeddings are clustered once with
//       k-means (k-means++ seeding, Lloyd iterations with BLAS-backed assignment) rather than
//       the paper's average-linkage HAC, whose O(N²) memory and time do not scale to
//       millions of samples. The `candidates` samples with the smallest margin (largest
//       `margin` score, quarry::score) are grouped by cluster; clusters are visited in
//       increasing number of candidates (ties: lower cluster id), round-robin, one sample per
//       cluster per round, until k are picked. Within a cluster the order is random (a
//       Philox key per sample). score: the pick's margin score, 1 - (p(1) - p(2)).
//
//   uncertain-kcenter   The top `candidates` samples by `acquisition` (quarry::score, then
//       quarry::select_topk, exclusions skipped), then kcenter among them, with the excluded
//       samples as initial centres. score: as kcenter.
//
//   typiclust (Hacohen et al. 2022, for the cold start)   k-means into |excluded| + k clusters
//       (at most N; `clusters` overrides), then k times: the cluster with the fewest picked or
//       excluded members (ties: the larger cluster, then the lower id) gives its most typical
//       selectable member, typicality being 1 / the mean Euclidean distance to its `neighbours`
//       nearest fellow members (measured against at most 1000 members, a seeded sample of a
//       larger cluster). Reads no model outputs. score: the pick's typicality.
//
//   probcover (Yehuda et al. 2022, for the cold start)   Balls of radius `radius` around every
//       sample; greedily the selectable sample whose ball holds the most samples not yet
//       covered (ties to the lower index), the excluded samples' balls covered from the start.
//       Once everything is covered, the rest are drawn at random (seeded). With radius 0 it is
//       chosen as the largest radius at which at least `purity` of the balls hold a single
//       k-means cluster (`clusters` clusters, 0: 10): the 1 - purity quantile of each sample's
//       distance to the nearest sample of another cluster. The ball graph is found with BLAS
//       GEMM blocks, exactly; time is O(N² D) and memory the number of pairs within the radius
//       (at most 2^26: a larger graph is an Error asking for a smaller radius), so it is meant
//       for pools up to about 1e5. score: the uncovered samples the pick
//       covered.
//
// typiclust and probcover run on the CPU whatever `device` says.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"
#include "quarry/device.hpp"
#include "quarry/progress.hpp"
#include "quarry/select.hpp"

namespace quarry {

enum class DiversityStrategy : int { badge, kcenter, cluster_margin, uncertain_kcenter, typiclust, probcover };

/// "badge", "kcenter", "cluster-margin", "uncertain-kcenter", "typiclust", "probcover"; anything
/// else is an Error that lists the valid names.
DiversityStrategy parse_diversity_strategy(std::string_view name);
const char* diversity_strategy_name(DiversityStrategy s);
const std::vector<DiversityStrategy>& all_diversity_strategies();
/// True for the strategies that read model outputs [N, C] (all but kcenter, typiclust and
/// probcover).
bool diversity_needs_outputs(DiversityStrategy s);

struct DiversityOptions {
  /// Batch size.
  std::int64_t k = 0;
  /// Already-labeled samples: never selected; kcenter and uncertain-kcenter start from their
  /// distances (they are the initial centres).
  std::vector<std::int64_t> exclude;
  /// cluster-margin, uncertain-kcenter: how many of the most uncertain samples the batch is
  /// chosen from; 0 means min(10 k, selectable). Must be >= k; larger than the number of
  /// selectable samples is clamped to it.
  std::int64_t candidates = 0;
  /// uncertain-kcenter: the acquisition that ranks the candidates (any score; egl and
  /// badge-norm read the embeddings, committee scores need outputs [M, N, C]).
  Acquisition acquisition = Acquisition::margin;
  /// badge: the D² draws; cluster-margin: k-means++ seeding and the order within clusters.
  std::uint64_t seed = 0;
  /// The outputs are logits (a softmax is taken, stably, in double).
  bool logits = false;
  /// Row-sum tolerance of probability outputs, as ScoreOptions::sum_tolerance.
  double sum_tolerance = -1.0;
  /// cluster-margin: k-means clusters; 0 means min(k, N).
  std::int64_t clusters = 0;
  /// cluster-margin: at most this many Lloyd iterations (they stop earlier when no sample
  /// changes cluster). Each is a GEMM of the pool against the centroids (N x clusters x D);
  /// the round-robin needs coarse clusters, not a converged objective.
  int kmeans_iterations = 10;
  /// typiclust: neighbours of the typicality (fewer in a smaller cluster).
  int neighbours = 20;
  /// probcover: the balls' radius (Euclidean); 0: chosen from `purity`.
  double radius = 0;
  /// probcover: the share of pure balls the chosen radius keeps.
  double purity = 0.95;
  /// cluster-margin: cluster ids [N] from an earlier kmeans() (cluster once, select every
  /// round); empty: cluster now.
  std::vector<std::int32_t> cluster_labels;
  /// Where it runs: cpu, cuda[:N] (the same picks as the CPU for the same seed), or auto (CUDA
  /// where this build has it and a device is visible).
  DeviceSpec device{};
  /// Used in error messages ("pool.npy: row 17: ...").
  std::string input_name = "input";
  std::string embeddings_name = "embeddings";
  /// Progress, reported after every pick, every k-means iteration and every block of labeled
  /// distances: phase "labeled distances" (rows done), "k-means seeding" (centres chosen),
  /// "k-means" (Lloyd iterations) or "picking" (picks made); on a streamed pool also "chunk
  /// candidates" (rows done). May throw to cancel.
  ProgressFn progress;
};

/// Selects a batch of options.k samples with `strategy`. `embeddings` is [N, D] (float32,
/// float16, bfloat16 or float64; converted to float32 once unless it is float32 already);
/// `outputs` is [N, C] probabilities or logits (uncertain-kcenter and cluster-margin also take
/// a committee [M, N, C]) and may be null for kcenter. Returns the picks in pick order, each
/// with the score described at the top of this header.
/// Errors (quarry::Error): shapes that disagree, k larger than the number of selectable
/// samples, an excluded index outside the pool, NaN or Inf embeddings (naming the row), bad
/// output rows (as quarry::score), candidates < k, and CUDA asked for where this build or this
/// machine has none.
Selection select_diverse(DiversityStrategy strategy, const ArrayView& embeddings,
                         const ArrayView* outputs, const DiversityOptions& options);

struct KMeansOptions {
  std::int64_t clusters = 0;
  int iterations = 20;
  std::uint64_t seed = 0;
  DeviceSpec device{};
  std::string embeddings_name = "embeddings";
  /// Progress: phase "k-means seeding" (centres chosen) and "k-means" (Lloyd iterations). May
  /// throw to cancel.
  ProgressFn progress;
};

struct KMeansResult {
  std::vector<std::int32_t> labels;  // [N]: the cluster of each sample
  std::vector<float> centroids;      // [clusters, D], row-major
  std::int64_t clusters = 0, dim = 0;
  int iterations = 0;                // Lloyd iterations run
  bool converged = false;            // the last iteration changed no assignment
};

/// k-means over embeddings [N, D]: k-means++ seeding (exact D² sampling, seeded), then Lloyd
/// iterations; each sample is assigned to the centroid at the smallest canonical distance
/// (ties to the lower cluster), found through BLAS GEMM blocks and confirmed exactly.
/// Centroids are float32 means of their members (summed in double in index order); an empty
/// cluster keeps its centroid. Deterministic for a seed on any thread count.
KMeansResult kmeans(const ArrayView& embeddings, const KMeansOptions& options);

}  // namespace quarry
