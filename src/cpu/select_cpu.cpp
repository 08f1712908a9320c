// Exact top-k and power sampling on the CPU.
//
// For k much smaller than N, a sampled threshold and one collecting pass find the answer
// (topk_by_threshold); otherwise, and whenever that pass cannot prove its answer exact, top-k
// is a radix select on order-preserving 32-bit keys, in O(N) with three parallel passes
// over the scores and no sort of the pool:
//   1. histogram of the high 16 bits of every selectable key (NaN check in the same pass);
//   2. histogram of the low 16 bits within the one high bucket that holds the k-th key;
//   3. collect every key above the k-th key, and the lowest-index ties at it.
// Only the k winners are then sorted (score descending, lower index first).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"
#include "quarry/select.hpp"

namespace quarry {
namespace {

// Larger float -> larger key; -0 and +0 map to the same key.
inline std::uint32_t order_key(float x) {
  std::uint32_t b = detail::float_to_bits(x == 0.0f ? 0.0f : x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// [begin, end) of thread t's contiguous block: blocks are in index order.
inline void block_of(std::int64_t n, int t, int nt, std::int64_t* b, std::int64_t* e) {
  *b = n * t / nt;
  *e = n * (t + 1) / nt;
}

std::vector<std::uint8_t> exclusion_mask(std::int64_t n, const std::vector<std::int64_t>& exclude,
                                         std::int64_t* excluded) {
  std::vector<std::uint8_t> mask;
  *excluded = 0;
  if (exclude.empty()) return mask;
  mask.assign(static_cast<std::size_t>(n), 0);
  for (std::int64_t i : exclude) {
    QUARRY_EXPECTS(i >= 0 && i < n, "excluded index ", i, " is outside the pool [0, ", n, ")");
    *excluded += mask[i] == 0;
    mask[i] = 1;
  }
  return mask;
}

// Finds the bucket (counting down from the top) where the running count reaches `need`.
// Returns the bucket and sets *above to the count of entries in higher buckets.
std::uint32_t find_bucket(const std::vector<std::uint64_t>& hist, std::uint64_t need,
                          std::uint64_t* above) {
  std::uint64_t acc = 0;
  for (std::int64_t b = static_cast<std::int64_t>(hist.size()) - 1; b >= 0; --b) {
    if (acc + hist[b] >= need) {
      *above = acc;
      return static_cast<std::uint32_t>(b);
    }
    acc += hist[b];
  }
  *above = acc;
  return 0;
}

// Score descending, then index ascending.
struct Ranks {
  const float* scores;
  bool operator()(std::int64_t a, std::int64_t b) const {
    const std::uint32_t ka = order_key(scores[a]), kb = order_key(scores[b]);
    return ka != kb ? ka > kb : a < b;
  }
};

// Small pools: nth_element over the selectable indices, then sort the k winners.
std::vector<std::int64_t> topk_small(const float* scores, std::int64_t n, std::int64_t k,
                                     const std::vector<std::uint8_t>& mask) {
  std::vector<std::int64_t> idx;
  idx.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    QUARRY_EXPECTS(scores[i] == scores[i], "score at index ", i, " is NaN; scores must be numbers");
    if (mask.empty() || !mask[i]) idx.push_back(i);
  }
  std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), Ranks{scores});
  idx.resize(static_cast<std::size_t>(k));
  std::sort(idx.begin(), idx.end(), Ranks{scores});
  return idx;
}

// Fast path for k much smaller than n, one pass instead of three: a threshold key T taken from
// a strided sample so that about 2k + 64 scores are expected at or above it, then one parallel
// pass collects every selectable index with key >= T. If at least k were collected, the top k
// are all among them (the k-th largest key is >= T), ties at T included, so the answer is exact.
// Returns false (the caller falls back to the radix select) when fewer than k were collected
// or too many (a threshold inside a large block of equal scores).
bool topk_by_threshold(const float* scores, std::int64_t n, std::int64_t k,
                       const std::vector<std::uint8_t>& mask, std::vector<std::int64_t>* out) {
  constexpr std::int64_t kSample = 1 << 16;
  if (k * 64 > n || n < 4 * kSample) return false;
  const bool masked = !mask.empty();
  std::vector<std::uint32_t> sample;
  sample.reserve(kSample);
  for (std::int64_t j = 0; j < kSample; ++j) {
    const std::int64_t i = j * (n / kSample);
    if (!masked || !mask[i]) sample.push_back(order_key(scores[i]));
  }
  const std::int64_t s = static_cast<std::int64_t>(sample.size());
  const std::int64_t rank = std::min<std::int64_t>(s - 1, (2 * k * s) / n + 64);
  if (rank < 0) return false;
  std::nth_element(sample.begin(), sample.begin() + rank, sample.end(), std::greater<>());
  const std::uint32_t threshold = sample[rank];
  const std::int64_t cap = 16 * k + 4096;  // beyond this, let the radix select do it

  const int nt = omp_get_max_threads();
  std::vector<std::vector<std::int64_t>> found(nt);
  std::int64_t first_nan = std::numeric_limits<std::int64_t>::max(), total = 0;
#pragma omp parallel num_threads(nt) reduction(min : first_nan) reduction(+ : total)
  {
    const int t = omp_get_thread_num();
    std::int64_t b, e;
    block_of(n, t, omp_get_num_threads(), &b, &e);
    auto& mine = found[t];
    for (std::int64_t i = b; i < e; ++i) {
      const float x = scores[i];
      if (x != x) first_nan = std::min(first_nan, i);
      if (order_key(x) >= threshold && (!masked || !mask[i]) &&
          static_cast<std::int64_t>(mine.size()) <= cap)
        mine.push_back(i);
    }
    total = static_cast<std::int64_t>(mine.size());
  }
  QUARRY_EXPECTS(first_nan == std::numeric_limits<std::int64_t>::max(), "score at index ",
                 first_nan, " is NaN; scores must be numbers");
  if (total < k || total > cap) return false;
  out->clear();
  out->reserve(static_cast<std::size_t>(total));
  for (const auto& v : found) out->insert(out->end(), v.begin(), v.end());
  std::nth_element(out->begin(), out->begin() + (k - 1), out->end(), Ranks{scores});
  out->resize(static_cast<std::size_t>(k));
  std::sort(out->begin(), out->end(), Ranks{scores});
  return true;
}

// The k largest of `scores` (selectable by mask), sorted; ties by lower index.
std::vector<std::int64_t> topk_indices(const float* scores, std::int64_t n, std::int64_t k,
                                       const std::vector<std::uint8_t>& mask) {
  if (n <= 65536) return topk_small(scores, n, k, mask);
  std::vector<std::int64_t> fast;
  if (topk_by_threshold(scores, n, k, mask, &fast)) return fast;
  const bool masked = !mask.empty();
  const int nt = std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(n / 65536 + 1)));
  constexpr int kBuckets = 1 << 16;

  // Pass 1: high 16 bits.
  std::vector<std::uint64_t> hist(kBuckets, 0);
  std::int64_t first_nan = std::numeric_limits<std::int64_t>::max();
#pragma omp parallel num_threads(nt)
  {
    std::vector<std::uint64_t> local(kBuckets, 0);
    std::int64_t b, e, nan_at = std::numeric_limits<std::int64_t>::max();
    block_of(n, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
    for (std::int64_t i = b; i < e; ++i) {
      const float x = scores[i];
      if (x != x) nan_at = std::min(nan_at, i);
      if (masked && mask[i]) continue;
      ++local[order_key(x) >> 16];
    }
#pragma omp critical(quarry_topk_hist)
    {
      for (int j = 0; j < kBuckets; ++j) hist[j] += local[j];
      first_nan = std::min(first_nan, nan_at);
    }
  }
  QUARRY_EXPECTS(first_nan == std::numeric_limits<std::int64_t>::max(), "score at index ",
                 first_nan, " is NaN; scores must be numbers");
  std::uint64_t above_hi = 0;
  const std::uint32_t hi = find_bucket(hist, static_cast<std::uint64_t>(k), &above_hi);

  // Pass 2: low 16 bits within bucket `hi`.
  std::fill(hist.begin(), hist.end(), 0);
#pragma omp parallel num_threads(nt)
  {
    std::vector<std::uint64_t> local(kBuckets, 0);
    std::int64_t b, e;
    block_of(n, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
    for (std::int64_t i = b; i < e; ++i) {
      if (masked && mask[i]) continue;
      const std::uint32_t key = order_key(scores[i]);
      if ((key >> 16) == hi) ++local[key & 0xffffu];
    }
#pragma omp critical(quarry_topk_hist)
    for (int j = 0; j < kBuckets; ++j) hist[j] += local[j];
  }
  std::uint64_t above_lo = 0;
  const std::uint32_t lo = find_bucket(hist, static_cast<std::uint64_t>(k) - above_hi, &above_lo);
  const std::uint32_t threshold = (hi << 16) | lo;
  const std::uint64_t ties_wanted = static_cast<std::uint64_t>(k) - above_hi - above_lo;

  // Pass 3: keys above the threshold, and the first `ties_wanted` ties in index order.
  std::vector<std::vector<std::int64_t>> above(nt), ties(nt);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    std::int64_t b, e;
    block_of(n, t, omp_get_num_threads(), &b, &e);
    for (std::int64_t i = b; i < e; ++i) {
      if (masked && mask[i]) continue;
      const std::uint32_t key = order_key(scores[i]);
      if (key > threshold) {
        above[t].push_back(i);
      } else if (key == threshold && ties[t].size() < ties_wanted) {
        ties[t].push_back(i);
      }
    }
  }
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(k));
  for (const auto& v : above) out.insert(out.end(), v.begin(), v.end());
  std::uint64_t taken = 0;
  for (const auto& v : ties) {
    for (std::int64_t i : v) {
      if (taken == ties_wanted) break;
      out.push_back(i);
      ++taken;
    }
  }
  std::sort(out.begin(), out.end(), Ranks{scores});
  return out;
}

void check_k(std::int64_t n, std::int64_t k, std::int64_t excluded) {
  QUARRY_EXPECTS(n >= 0, "pool size must be non-negative, got ", n);
  QUARRY_EXPECTS(k >= 0, "k must be non-negative, got ", k);
  const std::int64_t selectable = n - excluded;
  QUARRY_EXPECTS(k <= selectable, "asked for k = ", k, " samples but only ", selectable,
                 " are selectable (pool of ", n, ", ", excluded, " excluded)");
}

}  // namespace

Selection select_topk(const float* scores, std::int64_t n, std::int64_t k,
                      const std::vector<std::int64_t>& exclude) {
  std::int64_t excluded = 0;
  const std::vector<std::uint8_t> mask = exclusion_mask(n, exclude, &excluded);
  check_k(n, k, excluded);
  Selection sel;
  if (k == 0) return sel;
  sel.index = topk_indices(scores, n, k, mask);
  sel.score.reserve(sel.index.size());
  for (std::int64_t i : sel.index) sel.score.push_back(scores[i]);
  return sel;
}

Selection select_power(const float* scores, std::int64_t n, std::int64_t k, double beta,
                       std::uint64_t seed, const std::vector<std::int64_t>& exclude) {
  QUARRY_EXPECTS(std::isfinite(beta) && beta > 0, "power sampling needs beta > 0, got ", beta);
  std::int64_t excluded = 0;
  const std::vector<std::uint8_t> mask = exclusion_mask(n, exclude, &excluded);
  check_k(n, k, excluded);
  Selection sel;
  if (k == 0) return sel;
  std::vector<float> keys(static_cast<std::size_t>(n));
  std::int64_t bad = std::numeric_limits<std::int64_t>::max();
  const float fbeta = static_cast<float>(beta);
#pragma omp parallel for schedule(static) reduction(min : bad)
  for (std::int64_t i = 0; i < n; ++i) {
    const float s = scores[i];
    if (!(s >= 0.0f && s <= detail::kFloatMax)) bad = std::min(bad, i);
    keys[i] = detail::gumbel_key(s, fbeta, seed, static_cast<std::uint64_t>(i));
  }
  QUARRY_EXPECTS(bad == std::numeric_limits<std::int64_t>::max(), "score at index ", bad, " is ",
                 scores[bad], "; power sampling needs finite scores >= 0");
  sel.index = topk_indices(keys.data(), n, k, mask);
  sel.score.reserve(sel.index.size());
  for (std::int64_t i : sel.index) sel.score.push_back(scores[i]);
  return sel;
}

}  // namespace quarry
