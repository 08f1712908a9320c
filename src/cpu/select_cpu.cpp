// CPU backend of top-k and power sampling. Called by src/engine/select.cpp.
//
// Top-k is exact, with ties to the lower index, and never sorts the pool:
//   - n <= 2^16: nth_element over the selectable indices;
//   - k much smaller than n: a threshold from a strided sample and one collecting pass
//     (topk_by_threshold), used only when it can prove its answer exact;
//   - otherwise a radix select on order-preserving 32-bit keys, three passes over the scores:
//     1. histogram of the high 16 bits of every selectable key (NaN check in the same pass);
//     2. histogram of the low 16 bits within the one high bucket that holds the k-th key;
//     3. collect every key above the k-th key, and the lowest-index ties at it.
// Only the k winners are then sorted (score descending, lower index first).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "core/parallel.hpp"
#include "cpu/cpu_backend.hpp"
#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"

namespace quarry::cpu {
namespace {

constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::max();
constexpr int kBuckets = 1 << 16;

// Larger float -> larger key; -0 and +0 map to the same key.
inline std::uint32_t order_key(float x) {
  const std::uint32_t b = detail::float_to_bits(x == 0.0f ? 0.0f : x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Score descending, then index ascending.
struct Ranks {
  const float* scores;
  bool operator()(std::int64_t a, std::int64_t b) const {
    const std::uint32_t ka = order_key(scores[a]), kb = order_key(scores[b]);
    return ka != kb ? ka > kb : a < b;
  }
};

// A NaN at a chunk-local index; topk() reports it at its index in the whole pool.
struct NanScore {
  std::int64_t index;
};
void expect_no_nan(std::int64_t first_nan) {
  if (first_nan != kNone) throw NanScore{first_nan};
}

// The k best of `idx` (in place), sorted.
std::vector<std::int64_t> best_k(std::vector<std::int64_t> idx, std::int64_t k, const float* scores) {
  std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), Ranks{scores});
  idx.resize(static_cast<std::size_t>(k));
  std::sort(idx.begin(), idx.end(), Ranks{scores});
  return idx;
}

std::vector<std::int64_t> topk_small(const float* scores, std::int64_t n, std::int64_t k,
                                     const std::vector<std::uint8_t>& mask) {
  std::vector<std::int64_t> idx;
  idx.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    if (scores[i] != scores[i]) expect_no_nan(i);
    if (mask.empty() || !mask[i]) idx.push_back(i);
  }
  return best_k(std::move(idx), k, scores);
}

// For k much smaller than n: a threshold key T from a strided sample, chosen so that about
// 2k + 64 scores are expected at or above it, then one parallel pass collecting every selectable
// index with key >= T. If at least k were collected, the top k are all among them (the k-th
// largest key is >= T), ties at T included, so the answer is exact. Returns false (use the
// radix select) when fewer than k, or too many (T inside a block of equal scores), were found.
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

  std::vector<std::vector<std::int64_t>> found(static_cast<std::size_t>(omp_get_max_threads()));
  std::int64_t first_nan = kNone;
  parallel_blocks(n, true, [&](std::int64_t b, std::int64_t e) {
    auto& mine = found[omp_get_thread_num()];
    std::int64_t nan_at = kNone;
    for (std::int64_t i = b; i < e; ++i) {
      const float x = scores[i];
      if (x != x) nan_at = std::min(nan_at, i);
      if (order_key(x) >= threshold && (!masked || !mask[i]) &&
          static_cast<std::int64_t>(mine.size()) <= cap)
        mine.push_back(i);
    }
#pragma omp critical(quarry_topk_merge)
    first_nan = std::min(first_nan, nan_at);
  });
  expect_no_nan(first_nan);
  std::int64_t total = 0;
  for (const auto& v : found) total += static_cast<std::int64_t>(v.size());
  if (total < k || total > cap) return false;
  out->clear();
  out->reserve(static_cast<std::size_t>(total));
  for (const auto& v : found) out->insert(out->end(), v.begin(), v.end());
  *out = best_k(std::move(*out), k, scores);
  return true;
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

// Histogram of the high 16 bits of the selectable keys (level 0), or of the low 16 bits of the
// keys whose high 16 bits are `hi` (level 1). Also finds the first NaN.
std::vector<std::uint64_t> histogram(const float* scores, std::int64_t n,
                                     const std::vector<std::uint8_t>& mask, int level,
                                     std::uint32_t hi, std::int64_t* first_nan) {
  std::vector<std::uint64_t> hist(kBuckets, 0);
  const bool masked = !mask.empty();
  *first_nan = kNone;
  parallel_blocks(n, true, [&](std::int64_t b, std::int64_t e) {
    std::vector<std::uint64_t> local(kBuckets, 0);
    std::int64_t nan_at = kNone;
    for (std::int64_t i = b; i < e; ++i) {
      const float x = scores[i];
      if (x != x) nan_at = std::min(nan_at, i);
      if (masked && mask[i]) continue;
      const std::uint32_t key = order_key(x);
      if (level == 0) {
        ++local[key >> 16];
      } else if ((key >> 16) == hi) {
        ++local[key & 0xffffu];
      }
    }
#pragma omp critical(quarry_topk_merge)
    {
      for (int j = 0; j < kBuckets; ++j) hist[j] += local[j];
      *first_nan = std::min(*first_nan, nan_at);
    }
  });
  return hist;
}

std::vector<std::int64_t> topk_radix(const float* scores, std::int64_t n, std::int64_t k,
                                     const std::vector<std::uint8_t>& mask) {
  std::int64_t first_nan = kNone;
  std::uint64_t above_hi = 0, above_lo = 0;
  const std::uint32_t hi =
      find_bucket(histogram(scores, n, mask, 0, 0, &first_nan), static_cast<std::uint64_t>(k), &above_hi);
  expect_no_nan(first_nan);
  const std::uint32_t lo = find_bucket(histogram(scores, n, mask, 1, hi, &first_nan),
                                       static_cast<std::uint64_t>(k) - above_hi, &above_lo);
  const std::uint32_t threshold = (hi << 16) | lo;
  const std::uint64_t ties_wanted = static_cast<std::uint64_t>(k) - above_hi - above_lo;

  // Keys above the threshold, and the first `ties_wanted` ties in index order (blocks are in
  // index order by thread number).
  const bool masked = !mask.empty();
  const std::size_t nt = static_cast<std::size_t>(omp_get_max_threads());
  std::vector<std::vector<std::int64_t>> above(nt), ties(nt);
  parallel_blocks(n, true, [&](std::int64_t b, std::int64_t e) {
    const int t = omp_get_thread_num();
    for (std::int64_t i = b; i < e; ++i) {
      if (masked && mask[i]) continue;
      const std::uint32_t key = order_key(scores[i]);
      if (key > threshold) {
        above[t].push_back(i);
      } else if (key == threshold && ties[t].size() < ties_wanted) {
        ties[t].push_back(i);
      }
    }
  });
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(k));
  for (const auto& v : above) out.insert(out.end(), v.begin(), v.end());
  for (const auto& v : ties)
    for (std::int64_t i : v)
      if (out.size() < static_cast<std::size_t>(k)) out.push_back(i);
  std::sort(out.begin(), out.end(), Ranks{scores});
  return out;
}

}  // namespace

std::vector<std::int64_t> topk(const float* scores, std::int64_t n, std::int64_t k,
                               const std::vector<std::uint8_t>& excluded, std::int64_t index_offset) {
  try {
    if (n <= 65536) return topk_small(scores, n, k, excluded);
    std::vector<std::int64_t> fast;
    if (topk_by_threshold(scores, n, k, excluded, &fast)) return fast;
    return topk_radix(scores, n, k, excluded);
  } catch (const NanScore& nan) {
    QUARRY_FAIL("score at index ", nan.index + index_offset, " is NaN; scores must be numbers");
  }
}

void gumbel_keys(const float* scores, std::int64_t n, float beta, std::uint64_t seed, float* keys,
                 std::int64_t first_index) {
  std::int64_t bad = kNone;
  parallel_blocks(n, n > 65536, [&](std::int64_t b, std::int64_t e) {
    unsigned any_bad = 0;
    QUARRY_SIMD(reduction(| : any_bad))
    for (std::int64_t i = b; i < e; ++i) {
      any_bad |= detail::out_of_range(scores[i], 0.0f);
      keys[i] = detail::gumbel_key(scores[i], beta, seed, static_cast<std::uint64_t>(first_index + i));
    }
    std::int64_t first = kNone;
    for (std::int64_t i = b; any_bad && i < e; ++i)  // rare: find the first bad score
      if (detail::out_of_range(scores[i], 0.0f)) first = std::min(first, i);
#pragma omp critical(quarry_gumbel)
    bad = std::min(bad, first);
  });
  QUARRY_EXPECTS(bad == kNone, "score at index ", bad + first_index, " is ", scores[bad],
                 "; power sampling needs finite scores >= 0");
}

}  // namespace quarry::cpu
