// quarry::select_diverse and quarry::kmeans: validate the call (shapes, k, exclusions,
// candidates, device), prepare the inputs (outputs validated by quarry::score, embeddings as
// float32) and run the strategy on the CPU backend (src/cpu/diversity_cpu.cpp). The
// strategy-level logic that is not arithmetic (candidate sets, the cluster round-robin, index
// mapping) lives here so that a CUDA backend reuses it.
#include "quarry/diversity.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/resident.hpp"
#include "cpu/diversity_cpu.hpp"
#if QUARRY_BUILD_CUDA
#include "kernels/diversity_cuda.hpp"
#endif
#include "quarry/detail/diversity_math.hpp"
#include "quarry/error.hpp"
#include "quarry/select.hpp"

namespace quarry {
namespace {

struct Named {
  DiversityStrategy s;
  const char* name;
};
constexpr Named kNames[] = {
    {DiversityStrategy::badge, "badge"},
    {DiversityStrategy::kcenter, "kcenter"},
    {DiversityStrategy::cluster_margin, "cluster-margin"},
    {DiversityStrategy::uncertain_kcenter, "uncertain-kcenter"},
    {DiversityStrategy::typiclust, "typiclust"},
    {DiversityStrategy::probcover, "probcover"},
};

bool is_float(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16; }

// Whether a selection runs on CUDA (and on which device): `auto` where this build has CUDA and
// a device is visible, as for scoring. Asking for CUDA where there is none is an Error that
// says why (resolve_device).
bool on_cuda(const DeviceSpec& device, int* index) {
  const DeviceSpec d = resolve_device(device);
  *index = d.index;
  return d.kind == DeviceKind::cuda;
}

void expect_embeddings(const ArrayView& e, const std::string& name) {
  QUARRY_EXPECTS(e.rank() == 2, name, ": expected embeddings [N, D], got shape ", shape_string(e.shape));
  QUARRY_EXPECTS(is_float(e.dtype), name, ": embeddings must be float32, float16, bfloat16 or float64, got ",
                 dtype_name(e.dtype));
  QUARRY_EXPECTS(e.shape[1] >= 1, name, ": embeddings need at least one dimension (D >= 1), got shape ",
                 shape_string(e.shape));
  QUARRY_EXPECTS(e.shape[0] <= std::numeric_limits<std::int32_t>::max() - 1, name,
                 ": at most 2^31 - 2 samples are supported, got ", e.shape[0]);
}

// The exclusion mask and the number of excluded samples; an index outside [0, n) is an Error.
std::vector<std::uint8_t> exclusion_mask(const std::vector<std::int64_t>& exclude, std::int64_t n,
                                         std::int64_t* count) {
  std::vector<std::uint8_t> mask;
  *count = 0;
  if (exclude.empty()) return mask;
  mask.assign(static_cast<std::size_t>(n), 0);
  for (std::int64_t i : exclude) {
    QUARRY_EXPECTS(i >= 0 && i < n, "excluded index ", i, " is outside the pool [0, ", n, ")");
    *count += mask[i] == 0;
    mask[i] = 1;
  }
  return mask;
}

std::vector<std::int64_t> sorted_unique(std::vector<std::int64_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

ScoreOptions score_options(const DiversityOptions& o) {
  ScoreOptions so;
  so.logits = o.logits;
  so.sum_tolerance = o.sum_tolerance;
  so.device = {DeviceKind::cpu, 0};
  so.input_name = o.input_name;
  so.embeddings_name = o.embeddings_name;
  return so;
}

Selection to_selection(Selection p) {
  Selection s;
  s.index = std::move(p.index);
  s.score = std::move(p.score);
  return s;
}

// The top `m` samples by `scores` (exclusions skipped), in increasing index order.
std::vector<std::int64_t> top_candidates(const std::vector<float>& scores, std::int64_t m,
                                         const std::vector<std::int64_t>& exclude) {
  Selection top = select_topk(scores.data(), static_cast<std::int64_t>(scores.size()), m, exclude);
  std::sort(top.index.begin(), top.index.end());
  return top.index;
}

Selection kcenter_on(const FloatRows& rows, const std::vector<std::int64_t>& labeled,
                     std::int64_t k, const DiversityOptions& o) {
  int dev = 0;
  const bool cuda = on_cuda(o.device, &dev);
#if QUARRY_BUILD_CUDA
  if (cuda) return to_selection(cuda::kcenter(rows, labeled, k, o.progress, dev));
#endif
  (void)cuda;
  return to_selection(cpu::kcenter(rows, labeled, k, o.progress));
}

Selection uncertain_kcenter(const ArrayView& emb, const ArrayView& outputs, const DiversityOptions& o,
                            std::int64_t candidates) {
  const std::vector<float> scores = score(outputs, o.acquisition, score_options(o),
                                          acquisition_needs_embeddings(o.acquisition) ? &emb : nullptr);
  const FloatRows rows = float_rows(emb, o.embeddings_name);
  const std::vector<std::int64_t> cand = top_candidates(scores, candidates, o.exclude);
  // The sub-pool: candidates and labeled samples in pool order, so that ties between equal
  // distances still go to the lower pool index.
  const std::vector<std::int64_t> labeled = sorted_unique(o.exclude);
  std::vector<std::int64_t> sub;
  sub.reserve(cand.size() + labeled.size());
  std::merge(cand.begin(), cand.end(), labeled.begin(), labeled.end(), std::back_inserter(sub));
  std::vector<std::int64_t> labeled_pos;
  labeled_pos.reserve(labeled.size());
  for (std::size_t r = 0, l = 0; r < sub.size() && l < labeled.size(); ++r)
    if (sub[r] == labeled[l]) {
      labeled_pos.push_back(static_cast<std::int64_t>(r));
      ++l;
    }
  const FloatRows gathered = gather_rows(rows, sub);
  Selection sel = kcenter_on(gathered, labeled_pos, o.k, o);
  for (std::int64_t& i : sel.index) i = sub[static_cast<std::size_t>(i)];
  return sel;
}

Selection cluster_margin(const ArrayView& emb, const ArrayView& outputs, const DiversityOptions& o,
                         std::int64_t candidates) {
  const std::int64_t n = emb.shape[0];
  const std::vector<float> margin = score(outputs, Acquisition::margin, score_options(o));
  std::vector<std::int32_t> labels;
  if (!o.cluster_labels.empty()) {
    QUARRY_EXPECTS(static_cast<std::int64_t>(o.cluster_labels.size()) == n, "cluster labels: expected ",
                   n, " (one per sample of ", o.embeddings_name, "), got ", o.cluster_labels.size());
    for (std::size_t i = 0; i < o.cluster_labels.size(); ++i)
      QUARRY_EXPECTS(o.cluster_labels[i] >= 0, "cluster labels: sample ", i, " has cluster ",
                     o.cluster_labels[i], "; cluster ids must be >= 0");
    labels = o.cluster_labels;
  } else {
    KMeansOptions ko;
    ko.clusters = o.clusters > 0 ? o.clusters : std::min(o.k, n);
    ko.iterations = o.kmeans_iterations;
    ko.seed = o.seed;
    ko.device = o.device;
    ko.embeddings_name = o.embeddings_name;
    ko.progress = o.progress;
    labels = kmeans(emb, ko).labels;
  }
  // The lowest-margin candidates, grouped by cluster, each cluster in a seeded random order.
  const std::vector<std::int64_t> cand = top_candidates(margin, candidates, o.exclude);
  std::map<std::int32_t, std::vector<std::int64_t>> groups;
  for (std::int64_t i : cand) groups[labels[static_cast<std::size_t>(i)]].push_back(i);
  std::vector<std::vector<std::int64_t>*> order;
  for (auto& [label, members] : groups) {
    std::sort(members.begin(), members.end(), [&](std::int64_t a, std::int64_t b) {
      const std::uint64_t ka = detail::cluster_order_key(o.seed, a), kb = detail::cluster_order_key(o.seed, b);
      return ka != kb ? ka < kb : a < b;
    });
    order.push_back(&members);
  }
  // Clusters in increasing size (std::map gave increasing labels: stable keeps that for ties).
  std::stable_sort(order.begin(), order.end(),
                   [](const auto* a, const auto* b) { return a->size() < b->size(); });
  Selection sel;
  for (std::size_t round = 0; sel.size() < o.k; ++round) {
    for (const auto* members : order) {
      if (round >= members->size()) continue;
      const std::int64_t i = (*members)[round];
      sel.index.push_back(i);
      sel.score.push_back(margin[static_cast<std::size_t>(i)]);
      if (sel.size() == o.k) break;
    }
  }
  if (o.progress) o.progress({"picking", o.k, o.k});
  return sel;
}

}  // namespace

DiversityStrategy parse_diversity_strategy(std::string_view name) {
  for (const Named& n : kNames)
    if (name == n.name) return n.s;
  std::string valid;
  for (const Named& n : kNames) valid += std::string(valid.empty() ? "" : ", ") + n.name;
  QUARRY_USAGE_FAIL("unknown diversity strategy '", quote_input(name), "'; expected one of: ", valid);
}

const char* diversity_strategy_name(DiversityStrategy s) {
  for (const Named& n : kNames)
    if (n.s == s) return n.name;
  return "?";
}

const std::vector<DiversityStrategy>& all_diversity_strategies() {
  static const std::vector<DiversityStrategy> all = [] {
    std::vector<DiversityStrategy> v;
    for (const Named& n : kNames) v.push_back(n.s);
    return v;
  }();
  return all;
}

bool diversity_needs_outputs(DiversityStrategy s) {
  return s != DiversityStrategy::kcenter && s != DiversityStrategy::typiclust && s != DiversityStrategy::probcover;
}

namespace {
// k-means of float rows where `cuda` says: cuda::kmeans returns cpu::kmeans's labels exactly, so
// nothing that uses them depends on where it ran.
KMeansOut kmeans_rows(const FloatRows& rows, std::int64_t clusters, int iterations, std::uint64_t seed,
                      const ProgressFn& progress, bool cuda, int device_index) {
#if QUARRY_BUILD_CUDA
  if (cuda) return cuda::kmeans(rows, clusters, iterations, seed, progress, device_index);
#else
  (void)cuda, (void)device_index;
#endif
  return cpu::kmeans(rows, clusters, iterations, seed, progress);
}

Selection diverse_contiguous(DiversityStrategy strategy, const ArrayView& emb, const ArrayView* outputs,
                             const DiversityOptions& o) {
  const char* name = diversity_strategy_name(strategy);
  expect_embeddings(emb, o.embeddings_name);
  const std::int64_t n = emb.shape[0];
  QUARRY_USAGE_EXPECTS(o.k >= 0, "k must be non-negative, got ", o.k);
  std::int64_t excluded = 0;
  const std::vector<std::uint8_t> mask = exclusion_mask(o.exclude, n, &excluded);
  const std::int64_t selectable = n - excluded;
  QUARRY_USAGE_EXPECTS(o.k <= selectable, "asked for k = ", o.k, " samples but only ", selectable,
                 " are selectable (pool of ", n, ", ", excluded, " excluded)");
  int device_index = 0;
  const bool cuda = on_cuda(o.device, &device_index);  // refuses CUDA where there is none, up front

  // The k-means of the cold-start strategies runs on their device.
  const auto cluster = [&](const FloatRows& rows, std::int64_t clusters) {
    return kmeans_rows(rows, clusters, o.kmeans_iterations, o.seed, o.progress, cuda, device_index);
  };

  if (diversity_needs_outputs(strategy)) {
    QUARRY_EXPECTS(outputs != nullptr, name, " needs the model outputs [N, C] (probabilities or logits) ",
                   "besides the embeddings");
  }
  if (outputs) {
    const bool committee_ok = strategy == DiversityStrategy::uncertain_kcenter ||
                              strategy == DiversityStrategy::cluster_margin;
    QUARRY_EXPECTS(outputs->rank() == 2 || (committee_ok && outputs->rank() == 3), o.input_name,
                   ": expected model outputs [N, C]", committee_ok ? " or a committee [M, N, C]" : "",
                   " for ", name, ", got shape ", shape_string(outputs->shape));
    QUARRY_EXPECTS(pool_size(*outputs) == n, o.input_name, " has ", pool_size(*outputs), " samples (shape ",
                   shape_string(outputs->shape), ") but ", o.embeddings_name, " has ", n, " (shape ",
                   shape_string(emb.shape), "); they must describe the same pool");
  }
  std::int64_t candidates = 0;
  if (strategy == DiversityStrategy::cluster_margin || strategy == DiversityStrategy::uncertain_kcenter) {
    QUARRY_EXPECTS(o.candidates >= 0, "candidates must be non-negative, got ", o.candidates);
    candidates = o.candidates > 0 ? o.candidates : std::max<std::int64_t>(o.k, std::min(selectable, 10 * o.k));
    QUARRY_EXPECTS(candidates >= o.k, "candidates (", candidates, ") must be at least k (", o.k,
                   "): the batch is chosen among them");
    candidates = std::min(candidates, selectable);
  }
  if (strategy == DiversityStrategy::cluster_margin) {
    QUARRY_USAGE_EXPECTS(o.clusters >= 0 && o.clusters <= n, "clusters must be between 1 and the pool size ", n,
                   " (0: min(k, N)), got ", o.clusters);
    QUARRY_EXPECTS(o.kmeans_iterations >= 1, "k-means needs at least one iteration, got ", o.kmeans_iterations);
  }
  if (strategy == DiversityStrategy::typiclust || strategy == DiversityStrategy::probcover) {
    QUARRY_USAGE_EXPECTS(o.clusters >= 0 && o.clusters <= n, "clusters must be between 1 and the pool size ", n,
                         " (0: the default), got ", o.clusters);
    QUARRY_USAGE_EXPECTS(o.neighbours >= 1, "typiclust: neighbours must be >= 1, got ", o.neighbours);
    QUARRY_USAGE_EXPECTS(std::isfinite(o.radius) && o.radius >= 0, "probcover: the radius must be >= 0 (0: chosen "
                         "from the purity), got ", o.radius);
    QUARRY_USAGE_EXPECTS(o.purity > 0 && o.purity <= 1, "probcover: the purity must be in (0, 1], got ", o.purity);
  }
  if (o.k == 0) return {};

  switch (strategy) {
    case DiversityStrategy::kcenter: {
      const FloatRows rows = float_rows(emb, o.embeddings_name);
      return kcenter_on(rows, sorted_unique(o.exclude), o.k, o);
    }
    case DiversityStrategy::badge: {
      score(*outputs, Acquisition::margin, score_options(o));  // validates every row, with its messages
      const std::vector<double> a = cpu::badge_factors(*outputs, o.logits);
      const FloatRows rows = float_rows(emb, o.embeddings_name);
#if QUARRY_BUILD_CUDA
      if (cuda)
        return to_selection(
            cuda::badge(a, outputs->shape[1], rows, mask, o.k, o.seed, o.progress, device_index));
#endif
      (void)cuda;
      return to_selection(cpu::badge(a, outputs->shape[1], rows, mask, o.k, o.seed, o.progress));
    }
    case DiversityStrategy::uncertain_kcenter: return uncertain_kcenter(emb, *outputs, o, candidates);
    case DiversityStrategy::cluster_margin: return cluster_margin(emb, *outputs, o, candidates);
    case DiversityStrategy::typiclust: {
      const FloatRows rows = float_rows(emb, o.embeddings_name);
      const std::int64_t clusters =
          o.clusters > 0 ? o.clusters : std::min<std::int64_t>(n, excluded + o.k);
      const KMeansOut km = cluster(rows, clusters);
      return cpu::typiclust(rows, km.labels, clusters, mask, o.k, o.neighbours, o.seed, o.progress);
    }
    case DiversityStrategy::probcover: {
      const FloatRows rows = float_rows(emb, o.embeddings_name);
      double radius = o.radius;
      if (radius == 0) {
        const std::int64_t clusters = o.clusters > 0 ? o.clusters : std::min<std::int64_t>(n, 10);
        const KMeansOut km = cluster(rows, clusters);
        radius = cpu::probcover_radius(rows, km.labels, clusters, o.purity, o.progress);
        if (n < 2) radius = 0;  // one sample: nothing to cover but itself
        QUARRY_USAGE_EXPECTS(std::isfinite(radius), "probcover: with ", clusters, " k-means cluster", clusters == 1 ? "" : "s",
                             " every ball of any radius is pure, so no radius can be chosen from the purity; give "
                             "--clusters 2 or more, or --radius");
      }
      return cpu::probcover(rows, mask, o.k, radius, o.seed, o.progress);
    }
  }
  QUARRY_FAIL("unknown diversity strategy");
}

}  // namespace

// Arrays in CUDA memory are copied to the host once (the strategies prepare their rows on the
// host) and the strategy runs on their device; strided host arrays are copied contiguous.
Selection select_diverse(DiversityStrategy strategy, const ArrayView& emb_raw, const ArrayView* outputs_raw,
                         const DiversityOptions& o) {
  Array emb_host, emb_flat, out_host, out_flat;
  const DiversityOptions* use = &o;
  DiversityOptions on_device;
  if (emb_raw.on_cuda()) {
    on_device = o;
    on_device.device = device_for(emb_raw, o.device, o.embeddings_name);
    use = &on_device;
  }
  const ArrayView emb = contiguous_view(host_view(emb_raw, &emb_host, o.embeddings_name), &emb_flat, o.embeddings_name);
  ArrayView outputs;
  if (outputs_raw) {
    expect_same_location(emb_raw, o.embeddings_name, *outputs_raw, o.input_name);
    outputs = contiguous_view(host_view(*outputs_raw, &out_host, o.input_name), &out_flat, o.input_name);
  }
  return diverse_contiguous(strategy, emb, outputs_raw ? &outputs : nullptr, *use);
}

KMeansResult kmeans(const ArrayView& emb_raw, const KMeansOptions& o_raw) {
  Array emb_host, emb_flat;
  KMeansOptions o = o_raw;
  if (emb_raw.on_cuda()) o.device = device_for(emb_raw, o_raw.device, o_raw.embeddings_name);
  const ArrayView emb = contiguous_view(host_view(emb_raw, &emb_host, o.embeddings_name), &emb_flat, o.embeddings_name);
  expect_embeddings(emb, o.embeddings_name);
  const std::int64_t n = emb.shape[0];
  QUARRY_USAGE_EXPECTS(o.clusters >= 1 && o.clusters <= n, "k-means: clusters must be between 1 and the number of ",
                 "samples (", n, "), got ", o.clusters);
  QUARRY_EXPECTS(o.iterations >= 1, "k-means needs at least one iteration, got ", o.iterations);
  int dev = 0;
  const bool cuda = on_cuda(o.device, &dev);
  const FloatRows rows = float_rows(emb, o.embeddings_name);
  KMeansOut r = kmeans_rows(rows, o.clusters, o.iterations, o.seed, o.progress, cuda, dev);
  KMeansResult out;
  out.labels = std::move(r.labels);
  out.centroids = std::move(r.centroids);
  out.clusters = o.clusters;
  out.dim = emb.shape[1];
  out.iterations = r.iterations;
  out.converged = r.converged;
  return out;
}

}  // namespace quarry
