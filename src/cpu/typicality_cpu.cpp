// The cold-start strategies of the CPU diversity backend: TypiClust (the most typical sample of
// the least covered k-means cluster) and ProbCover (greedy max coverage of balls of a radius).
// What they select is defined in include/quarry/diversity.hpp. Distances are canonical (double,
// one fixed order), so the picks do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/parallel.hpp"
#include "cpu/diversity_cpu.hpp"
#include "cpu/diversity_internal.hpp"
#include "quarry/error.hpp"

namespace quarry::cpu {

using namespace diversity_detail;

namespace {

// A cluster's typicality is measured against at most this many of its members.
constexpr std::int64_t kTypicalityReference = 1000;
// The ball graph of ProbCover may hold at most this many pairs (4 bytes each, 256 MiB).
constexpr std::int64_t kMaxBallPairs = std::int64_t{1} << 26;

// Typicality of every member of one cluster: 1 / the mean distance to its `neighbours` nearest
// other members of the reference set (`reference`: the members, or a seeded sample of them).
std::vector<double> typicality(const FloatRows& x, const std::vector<std::int64_t>& members,
                               const std::vector<std::int64_t>& reference, int neighbours) {
  std::vector<double> t(members.size(), 0.0);
  const std::int64_t m = static_cast<std::int64_t>(members.size());
  parallel_chunks(m, 16, m * static_cast<std::int64_t>(reference.size()) * x.d, [&](std::int64_t b, std::int64_t e, int) {
    std::vector<double> d;
    for (std::int64_t q = b; q < e; ++q) {
      const std::int64_t i = members[static_cast<std::size_t>(q)];
      d.clear();
      for (const std::int64_t j : reference)
        if (j != i) d.push_back(std::sqrt(sqdist_canonical(x.row(i), x.row(j), x.d)));
      if (d.empty()) continue;  // alone in its cluster: typicality 0
      const std::size_t kn = std::min(d.size(), static_cast<std::size_t>(neighbours));
      std::nth_element(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(kn - 1), d.end());
      std::sort(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(kn));  // a fixed summation order
      double sum = 0;
      for (std::size_t r = 0; r < kn; ++r) sum += d[r];
      const double mean = sum / static_cast<double>(kn);
      t[static_cast<std::size_t>(q)] = mean > 0 ? 1.0 / mean : std::numeric_limits<double>::max();
    }
  });
  return t;
}

}  // namespace

Selection typiclust(const FloatRows& x, const std::vector<std::int32_t>& cluster, std::int64_t clusters,
                    const std::vector<std::uint8_t>& excluded, std::int64_t k, int neighbours,
                    std::uint64_t seed, const ProgressFn& progress) {
  const std::int64_t n = x.n;
  std::vector<std::vector<std::int64_t>> members(static_cast<std::size_t>(clusters));
  std::vector<std::int64_t> covered(static_cast<std::size_t>(clusters), 0), open(static_cast<std::size_t>(clusters), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto c = static_cast<std::size_t>(cluster[static_cast<std::size_t>(i)]);
    members[c].push_back(i);
    if (!excluded.empty() && excluded[static_cast<std::size_t>(i)])
      ++covered[c];
    else
      ++open[c];
  }
  std::vector<std::vector<double>> typical(static_cast<std::size_t>(clusters));  // computed when first needed
  std::vector<std::uint8_t> taken(static_cast<std::size_t>(n), 0);
  if (!excluded.empty()) taken = excluded;
  Selection sel;
  for (std::int64_t pick = 0; pick < k; ++pick) {
    // The least covered cluster with a selectable member; ties: the larger, then the lower id.
    std::int64_t best = -1;
    for (std::int64_t c = 0; c < clusters; ++c) {
      if (open[c] == 0) continue;
      if (best < 0 || covered[c] < covered[best] ||
          (covered[c] == covered[best] && members[c].size() > members[best].size()))
        best = c;
    }
    QUARRY_EXPECTS(best >= 0, "internal: typiclust ran out of selectable samples");
    const auto& mem = members[static_cast<std::size_t>(best)];
    auto& t = typical[static_cast<std::size_t>(best)];
    if (t.empty()) {
      std::vector<std::int64_t> reference = mem;
      if (static_cast<std::int64_t>(reference.size()) > kTypicalityReference) {
        std::mt19937_64 rng(seed ^ (0x7E1Cull + static_cast<std::uint64_t>(best) * 0x9E3779B97F4A7C15ull));
        for (std::int64_t r = 0; r < kTypicalityReference; ++r) {
          const std::int64_t j = r + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(reference.size() - r));
          std::swap(reference[r], reference[j]);
        }
        reference.resize(kTypicalityReference);
        std::sort(reference.begin(), reference.end());
      }
      t = typicality(x, mem, reference, neighbours);
    }
    std::int64_t at = -1;
    for (std::size_t q = 0; q < mem.size(); ++q)
      if (!taken[static_cast<std::size_t>(mem[q])] && (at < 0 || t[q] > t[static_cast<std::size_t>(at)]))
        at = static_cast<std::int64_t>(q);
    const std::int64_t i = mem[static_cast<std::size_t>(at)];
    taken[static_cast<std::size_t>(i)] = 1;
    ++covered[best];
    --open[best];
    sel.index.push_back(i);
    sel.score.push_back(static_cast<float>(t[static_cast<std::size_t>(at)]));
    report(progress, "picking", pick + 1, k);
  }
  return sel;
}

double probcover_radius(const FloatRows& x, const std::vector<std::int32_t>& cluster, std::int64_t clusters,
                        double purity, const ProgressFn& progress) {
  const std::int64_t n = x.n;
  // Each sample's squared distance to the nearest sample of another cluster.
  std::vector<double> other(static_cast<std::size_t>(n), kInf);
  for (std::int64_t c = 0; c < clusters; ++c) {
    std::vector<std::int64_t> in, out;
    for (std::int64_t i = 0; i < n; ++i) (cluster[static_cast<std::size_t>(i)] == c ? in : out).push_back(i);
    if (in.empty() || out.empty()) continue;
    std::vector<double> d2;
    std::vector<std::int32_t> j;
    nearest_rows(gather_rows(x, in), gather_rows(x, out), {}, &d2, &j, progress, "probcover radius");
    for (std::size_t q = 0; q < in.size(); ++q) other[static_cast<std::size_t>(in[q])] = d2[q];
  }
  // A ball of squared radius r2 around i is pure when other[i] > r2: at least ceil(purity n)
  // pure balls means r2 below the ceil(purity n)-th largest value.
  std::sort(other.begin(), other.end());
  const auto pure = static_cast<std::int64_t>(std::ceil(purity * static_cast<double>(n) - 1e-9));
  const double bound = other[static_cast<std::size_t>(n - std::max<std::int64_t>(pure, 1))];
  if (std::isinf(bound)) return kInf;
  const double r2 = std::nextafter(bound, 0.0);
  return r2 > 0 ? std::sqrt(r2) : 0.0;
}

Selection probcover(const FloatRows& x, const std::vector<std::uint8_t>& excluded, std::int64_t k, double radius,
                    std::uint64_t seed, const ProgressFn& progress) {
  const std::int64_t n = x.n;
  const std::vector<std::vector<std::int32_t>> ball =
      rows_within(x, x, radius * radius, kMaxBallPairs, progress, "probcover balls");
  const auto is_excluded = [&](std::int64_t i) { return !excluded.empty() && excluded[static_cast<std::size_t>(i)]; };
  std::vector<std::uint8_t> covered(static_cast<std::size_t>(n), 0), taken(static_cast<std::size_t>(n), 0);
  std::vector<std::int64_t> uncovered(static_cast<std::size_t>(n));  // in each ball
  for (std::int64_t i = 0; i < n; ++i) uncovered[i] = static_cast<std::int64_t>(ball[i].size());
  // Covers the ball of i: every newly covered sample leaves the count of every ball it is in
  // (the graph is symmetric). Returns how many it covered.
  const auto cover = [&](std::int64_t i) {
    std::int64_t newly = 0;
    for (const std::int32_t u : ball[static_cast<std::size_t>(i)]) {
      if (covered[u]) continue;
      covered[u] = 1;
      ++newly;
      for (const std::int32_t w : ball[u]) --uncovered[w];
    }
    return newly;
  };
  for (std::int64_t i = 0; i < n; ++i)
    if (is_excluded(i)) taken[i] = 1, cover(i);
  Selection sel;
  for (std::int64_t pick = 0; pick < k; ++pick) {
    std::int64_t best = -1;
    for (std::int64_t i = 0; i < n; ++i)
      if (!taken[i] && (best < 0 || uncovered[i] > uncovered[best])) best = i;
    if (best < 0 || uncovered[best] == 0) break;  // everything is covered
    taken[best] = 1;
    sel.index.push_back(best);
    sel.score.push_back(static_cast<float>(cover(best)));
    report(progress, "picking", pick + 1, k);
  }
  // Everything covered: the rest at random.
  std::vector<std::int64_t> rest;
  for (std::int64_t i = 0; i < n; ++i)
    if (!taken[i]) rest.push_back(i);
  std::mt19937_64 rng(seed ^ 0x9C0FE5ull);
  for (std::int64_t r = 0; sel.size() < k; ++r) {
    const std::int64_t j = r + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(rest.size() - r));
    std::swap(rest[r], rest[j]);
    sel.index.push_back(rest[r]);
    sel.score.push_back(0.0f);
  }
  return sel;
}

}  // namespace quarry::cpu
