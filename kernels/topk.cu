// Exact top-k and the Gumbel keys of power sampling on the device.
//
// Top-k is a radix select over unique 64-bit composites (score key << 32 | ~index, 0 for an
// excluded index; include/quarry/detail/radix_select.hpp), in the spirit of AIR top-k (Zhang
// et al., SC'23), without sorting the pool:
//   1. digit passes from the top (11/11/10 bits of the score key, then of the index part):
//      radix_pass_kernel histograms the digit of every composite that shares the prefix chosen
//      so far (shared-memory histogram, merged with global atomics); the host reads the
//      histogram back (8 KB) and radix::step picks the bucket holding the k-th largest. The
//      select stops as soon as the chosen bucket holds exactly the rank still wanted; pass 0
//      also finds the lowest NaN index.
//      Once the candidates are at most 1/16 of what a pass reads, that pass also copies them
//      into a compact buffer (and the composites above the prefix, which are in the answer,
//      straight to the output), so later passes read only the buffer.
//   2. collect_kernel appends every composite >= the threshold the select ended with: exactly
//      k of them, with what step 1 already wrote.
//   3. cub::DeviceRadixSort sorts those k descending; decode_kernel writes index and score.
// Appends are warp-aggregated (one atomicAdd per warp and call); every loop of these kernels is
// uniform across the block so that the whole warp takes part in each append.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cuda_backend.hpp"
#include "kernels/device_api.cuh"
#include "quarry/detail/radix_select.hpp"
#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"

namespace quarry::cuda {
namespace {

namespace radix = ::quarry::detail::radix;

constexpr int kBlock = 256;  // threads per block of every kernel here (a multiple of 32)

// The small state every pass reads back: the histogram, then three counters.
constexpr int kBufCountWord = radix::kMaxBuckets;      // candidates written to the buffer
constexpr int kNanWord = radix::kMaxBuckets + 1;       // lowest NaN index (radix::kNoNan: none)
constexpr int kOutCountWord = radix::kMaxBuckets + 2;  // composites written to the output
constexpr int kStateWords = radix::kMaxBuckets + 3;

// ---------------------------------------------------------------- sources of composites

// The scores themselves: W consecutive elements per item (W = 4: one 16-byte load; the pointer
// must then be 16-byte aligned), the composite formed on the fly with the exclusion bit.
template <int W>
struct ScoreSource {
  static constexpr int kWidth = W;
  const float* scores;
  const std::uint32_t* excluded;  // bitmask or null
  std::uint64_t n;

  __host__ __device__ std::uint64_t items() const { return (n + W - 1) / W; }

  // Composites of item v; valid[j] false past n. Lowers nan_min to the index of a NaN.
  __device__ void load(std::uint64_t v, std::uint64_t (&c)[W], bool (&valid)[W],
                       std::uint32_t& nan_min) const {
    const std::uint64_t i0 = v * W;
    float x[W];
    if constexpr (W == 4) {
      if (i0 + 4 <= n) {
        const float4 f = reinterpret_cast<const float4*>(scores)[v];
        x[0] = f.x;
        x[1] = f.y;
        x[2] = f.z;
        x[3] = f.w;
      } else {  // the partial last item
#pragma unroll
        for (int j = 0; j < W; ++j) x[j] = i0 + j < n ? scores[i0 + j] : 0.0f;
      }
    } else {
#pragma unroll
      for (int j = 0; j < W; ++j) x[j] = i0 + j < n ? scores[i0 + j] : 0.0f;
    }
    // W divides 32 and i0 is a multiple of W: the W bits lie in one word.
    const std::uint32_t bits = excluded != nullptr ? excluded[i0 >> 5] >> (i0 & 31) : 0u;
#pragma unroll
    for (int j = 0; j < W; ++j) {
      const std::uint64_t i = i0 + j;
      valid[j] = i < n;
      c[j] = radix::composite(x[j], static_cast<std::uint32_t>(i), ((bits >> j) & 1u) != 0);
      if (valid[j] && x[j] != x[j]) nan_min = min(nan_min, static_cast<std::uint32_t>(i));
    }
  }
};

// A compact buffer of composites.
struct BufferSource {
  static constexpr int kWidth = 1;
  const std::uint64_t* keys;
  std::uint64_t size;

  __host__ __device__ std::uint64_t items() const { return size; }
  __device__ void load(std::uint64_t v, std::uint64_t (&c)[1], bool (&valid)[1], std::uint32_t&) const {
    c[0] = keys[v];
    valid[0] = true;
  }
};

// Item v of the source, or invalid composites past the end (those threads still run the
// iteration: the warp-wide appends need every lane).
template <class Source>
__device__ __forceinline__ void load_or_blank(const Source& src, std::uint64_t v, std::uint64_t items,
                                              std::uint64_t (&c)[Source::kWidth],
                                              bool (&valid)[Source::kWidth], std::uint32_t& nan_min) {
  if (v < items) {
    src.load(v, c, valid, nan_min);
    return;
  }
#pragma unroll
  for (int j = 0; j < Source::kWidth; ++j) {
    c[j] = 0;
    valid[j] = false;
  }
}

// ---------------------------------------------------------------- kernels

// Appends c to dst (capacity cap) for every lane with `want`. Must be called by all 32 lanes
// of the warp (uniform control flow).
__device__ __forceinline__ void warp_append(bool want, std::uint64_t c, std::uint64_t* dst,
                                            std::uint32_t* counter, std::uint32_t cap) {
  const unsigned m = __ballot_sync(0xffffffffu, want);
  if (m == 0) return;  // the same for every lane
  const unsigned lane = threadIdx.x & 31u;
  unsigned base = 0;
  if (lane == 0) base = atomicAdd(counter, static_cast<unsigned>(__popc(m)));
  base = __shfl_sync(0xffffffffu, base, 0);
  if (want) {
    const unsigned pos = base + static_cast<unsigned>(__popc(m & ((1u << lane) - 1u)));
    if (pos < cap) dst[pos] = c;  // never more than cap unless an invariant broke (checked)
  }
}

struct PassArgs {
  int pass;                 // the digit this pass histograms
  int prefix_shift;         // composites with (c >> prefix_shift) == prefix are candidates
  std::uint64_t prefix;
  bool compact;             // also copy candidates to buf and composites above to out
  std::uint64_t* buf;
  std::uint32_t buf_cap;
  std::uint64_t* out;
  std::uint32_t out_cap;
  std::uint32_t* state;     // kStateWords: histogram and counters
};

template <class Source>
__global__ void __launch_bounds__(kBlock) radix_pass_kernel(Source src, PassArgs a) {
  constexpr int W = Source::kWidth;
  __shared__ std::uint32_t hist[radix::kMaxBuckets];
  const int shift = radix::digit_shift(a.pass), bits = radix::digit_bits(a.pass);
  const int buckets = 1 << bits;
  for (int b = threadIdx.x; b < buckets; b += blockDim.x) hist[b] = 0;
  __syncthreads();

  std::uint32_t nan_min = radix::kNoNan;
  const std::uint64_t items = src.items();
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  // Uniform across the block: every thread runs every iteration (warp_append needs the warp).
  for (std::uint64_t base = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x; base < items;
       base += stride) {
    const std::uint64_t v = base + threadIdx.x;
    std::uint64_t c[W];
    bool valid[W];
    load_or_blank(src, v, items, c, valid, nan_min);
    int r[W];
#pragma unroll
    for (int j = 0; j < W; ++j) r[j] = valid[j] ? radix::role(c[j], a.prefix_shift, a.prefix) : radix::kBelow;

    // Histogram; equal digits in a row (equal scores side by side) make one atomic.
    std::uint32_t run_digit = 0, run = 0;
#pragma unroll
    for (int j = 0; j < W; ++j) {
      if (r[j] == radix::kCandidate) {
        const std::uint32_t d = radix::digit_at(c[j], shift, bits);
        if (run != 0 && d == run_digit) {
          ++run;
        } else {
          if (run != 0) atomicAdd(&hist[run_digit], run);
          run_digit = d;
          run = 1;
        }
      }
    }
    if (run != 0) atomicAdd(&hist[run_digit], run);

    if (a.compact) {  // uniform across the grid
#pragma unroll
      for (int j = 0; j < W; ++j) {
        warp_append(r[j] == radix::kCandidate, c[j], a.buf, a.state + kBufCountWord, a.buf_cap);
        warp_append(r[j] == radix::kAbove, c[j], a.out, a.state + kOutCountWord, a.out_cap);
      }
    }
  }
  if (nan_min != radix::kNoNan) atomicMin(a.state + kNanWord, nan_min);
  __syncthreads();
  for (int b = threadIdx.x; b < buckets; b += blockDim.x) {
    const std::uint32_t h = hist[b];
    if (h != 0) atomicAdd(a.state + b, h);
  }
}

// Appends every composite >= threshold to out.
template <class Source>
__global__ void __launch_bounds__(kBlock) collect_kernel(Source src, std::uint64_t threshold,
                                                         std::uint64_t* out, std::uint32_t* out_count,
                                                         std::uint32_t cap) {
  constexpr int W = Source::kWidth;
  std::uint32_t nan_min = radix::kNoNan;  // (pass 0 has checked)
  const std::uint64_t items = src.items();
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  for (std::uint64_t base = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x; base < items;
       base += stride) {
    const std::uint64_t v = base + threadIdx.x;
    std::uint64_t c[W];
    bool valid[W];
    load_or_blank(src, v, items, c, valid, nan_min);
#pragma unroll
    for (int j = 0; j < W; ++j) warp_append(valid[j] && c[j] >= threshold, c[j], out, out_count, cap);
  }
}

// The k sorted composites -> indices (and scores, when `score` is not null).
__global__ void __launch_bounds__(kBlock) decode_kernel(const std::uint64_t* sorted, std::uint64_t k,
                                                        const float* scores, std::int64_t* index,
                                                        float* score) {
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  for (std::uint64_t j = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < k;
       j += stride) {
    const std::uint32_t i = radix::decode_index(sorted[j]);
    index[j] = static_cast<std::int64_t>(i);
    if (score != nullptr) score[j] = scores[i];
  }
}

// keys[i] is keyed by the global index first + i; a bad score lowers *fault to its local i.
__global__ void __launch_bounds__(kBlock) gumbel_keys_kernel(const float* scores, std::uint64_t n,
                                                             float beta, std::uint64_t seed,
                                                             std::uint64_t first, float* keys,
                                                             unsigned long long* fault) {
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  unsigned long long bad = kNoFault;
  for (std::uint64_t i = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float x = scores[i];
    keys[i] = detail::gumbel_key(x, beta, seed, first + i);
    // NaN, negative or +Inf, exactly as cpu::gumbel_keys validates; i grows, so the first is
    // this thread's lowest.
    if (detail::out_of_range(x, 0.0f) != 0 && bad == kNoFault) bad = i;
  }
  if (bad != kNoFault) atomicMin(fault, bad);
}

// ---------------------------------------------------------------- host helpers

// Blocks for a grid-stride kernel over `items` items: enough to fill the device, and at least
// kMinItemsPerThread items per thread where there are fewer (so that a block's histogram flush,
// up to 2048 global atomics, is spread over a few thousand items).
constexpr std::uint64_t kMinItemsPerThread = 4;
template <class Kernel>
unsigned grid_for(const Context& ctx, Kernel kernel, std::uint64_t items) {
  int per_sm = 0;
  QUARRY_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kBlock, 0));
  const std::uint64_t full = static_cast<std::uint64_t>(ctx.props().multiProcessorCount) *
                             static_cast<std::uint64_t>(std::max(per_sm, 1));
  const std::uint64_t per_block = kBlock * kMinItemsPerThread;
  const std::uint64_t need = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<std::uint64_t>(1, std::min(need, full)));
}

template <class Source>
void launch_pass(Context& ctx, const Source& src, const PassArgs& a) {
  const unsigned grid = grid_for(ctx, radix_pass_kernel<Source>, src.items());
  radix_pass_kernel<Source><<<grid, kBlock, 0, ctx.stream()>>>(src, a);
  QUARRY_CUDA_LAUNCH_CHECK("radix_pass_kernel");
}

template <class Source>
void launch_collect(Context& ctx, const Source& src, std::uint64_t threshold, std::uint64_t* out,
                    std::uint32_t* out_count, std::uint32_t cap) {
  const unsigned grid = grid_for(ctx, collect_kernel<Source>, src.items());
  collect_kernel<Source><<<grid, kBlock, 0, ctx.stream()>>>(src, threshold, out, out_count, cap);
  QUARRY_CUDA_LAUNCH_CHECK("collect_kernel");
}

void expect_pool_size(std::int64_t n) {
  QUARRY_EXPECTS(n >= 0 && static_cast<std::uint64_t>(n) <= radix::kMaxN,
                 "top-k on a CUDA device takes fewer than 2^32 scores, got ", n,
                 "; use --device cpu for larger pools");
}

// Runs the select: the source is the scores until a pass compacts, then the last buffer.
template <int W>
void select_on_device(Context& ctx, const float* d_scores, std::uint64_t n, std::uint64_t k,
                      const std::uint32_t* d_excluded, std::int64_t* d_index, float* d_score) {
  cudaStream_t stream = ctx.stream();
  DeviceBuffer<std::uint32_t> state(ctx, kStateWords, "top-k state");
  QUARRY_CUDA_CHECK(cudaMemsetAsync(state.data(), 0, state.bytes(), stream));
  QUARRY_CUDA_CHECK(cudaMemsetAsync(state.data() + kNanWord, 0xFF, sizeof(std::uint32_t), stream));
  DeviceBuffer<std::uint64_t> out(ctx, k, "top-k winners");
  const auto cap = static_cast<std::uint32_t>(k);

  ScoreSource<W> scores;
  scores.scores = d_scores;
  scores.excluded = d_excluded;
  scores.n = n;
  DeviceBuffer<std::uint64_t> cand;  // the compact source once a pass has written one
  std::uint64_t source_size = n;
  std::vector<std::uint32_t> host(kStateWords);

  radix::State s = radix::start(n, k);
  while (!s.done) {
    const bool compact = radix::compacts(s, source_size);
    DeviceBuffer<std::uint64_t> next;
    if (compact) next = DeviceBuffer<std::uint64_t>(ctx, s.candidates, "top-k candidates");
    PassArgs a{};
    a.pass = s.pass;
    a.prefix_shift = s.prefix_shift;
    a.prefix = s.prefix;
    a.compact = compact;
    a.buf = next.data();
    a.buf_cap = static_cast<std::uint32_t>(next.size());
    a.out = out.data();
    a.out_cap = cap;
    a.state = state.data();
    // Histogram and buffer count start at zero in every pass (the NaN and output words stay).
    QUARRY_CUDA_CHECK(cudaMemsetAsync(state.data(), 0, (kBufCountWord + 1) * sizeof(std::uint32_t), stream));
    if (cand.data() == nullptr) {
      launch_pass(ctx, scores, a);
    } else {
      BufferSource b;
      b.keys = cand.data();
      b.size = source_size;
      launch_pass(ctx, b, a);
    }
    copy_to_host(ctx, host.data(), state.data(), state.bytes());
    if (s.pass == 0) {
      QUARRY_EXPECTS(host[kNanWord] == radix::kNoNan, "score at index ",
                     static_cast<std::int64_t>(host[kNanWord]), " is NaN; scores must be numbers");
      const std::uint64_t selectable = radix::selectable_in_pass0(host.data());
      QUARRY_EXPECTS(k <= selectable, "asked for k = ", k, " samples but only ", selectable,
                     " are selectable (pool of ", n, ", ", n - selectable, " excluded)");
    }
    if (compact) {
      QUARRY_EXPECTS(host[kBufCountWord] == s.candidates, "internal error in top-k: pass ", s.pass,
                     " compacted ", host[kBufCountWord], " candidates, expected ", s.candidates);
      cand = std::move(next);
      source_size = s.candidates;
    }
    QUARRY_EXPECTS(radix::step(s, host.data()), "internal error in top-k: radix select pass ",
                   s.pass, " lost the k-th score (k = ", k, ", n = ", n, ")");
  }

  std::uint32_t* out_count = state.data() + kOutCountWord;
  if (cand.data() == nullptr) {
    launch_collect(ctx, scores, s.threshold, out.data(), out_count, cap);
  } else {
    BufferSource b;
    b.keys = cand.data();
    b.size = source_size;
    launch_collect(ctx, b, s.threshold, out.data(), out_count, cap);
  }
  std::uint32_t collected = 0;
  copy_to_host(ctx, &collected, out_count, sizeof collected);
  QUARRY_EXPECTS(collected == k, "internal error in top-k: collected ", collected,
                 " scores at or above the threshold, expected k = ", k);
  cand = DeviceBuffer<std::uint64_t>();

  // Sort the k winners' composites descending: rank order, ties to the lower index.
  DeviceBuffer<std::uint64_t> sorted(ctx, k, "top-k sort");
  std::size_t temp_bytes = 0;
  QUARRY_CUDA_CHECK(cub::DeviceRadixSort::SortKeysDescending(nullptr, temp_bytes, out.data(),
                                                             sorted.data(), cap, 0, 64, stream));
  // Never a null temp pointer: CUB would take it for a size query and not sort.
  DeviceBuffer<unsigned char> temp(ctx, std::max<std::size_t>(temp_bytes, 16), "top-k sort");
  QUARRY_CUDA_CHECK(cub::DeviceRadixSort::SortKeysDescending(temp.data(), temp_bytes, out.data(),
                                                             sorted.data(), cap, 0, 64, stream));
  const unsigned grid = grid_for(ctx, decode_kernel, k);
  decode_kernel<<<grid, kBlock, 0, stream>>>(sorted.data(), k, d_scores, d_index, d_score);
  QUARRY_CUDA_LAUNCH_CHECK("decode_kernel");
}

}  // namespace

// ---------------------------------------------------------------- device entry points

void topk_device(Context& ctx, const float* d_scores, std::int64_t n, std::int64_t k,
                 const std::uint32_t* d_excluded, std::int64_t* d_index, float* d_score) {
  expect_pool_size(n);
  QUARRY_EXPECTS(k > 0 && k <= n, "top-k needs 0 < k <= n, got k = ", k, " for n = ", n);
  ctx.activate();
  const auto un = static_cast<std::uint64_t>(n), uk = static_cast<std::uint64_t>(k);
  if (reinterpret_cast<std::uintptr_t>(d_scores) % 16 == 0)
    select_on_device<4>(ctx, d_scores, un, uk, d_excluded, d_index, d_score);
  else
    select_on_device<1>(ctx, d_scores, un, uk, d_excluded, d_index, d_score);
}

void launch_gumbel_keys(Context& ctx, const float* d_scores, std::int64_t n, float beta,
                        std::uint64_t seed, float* d_keys, unsigned long long* d_fault,
                        std::int64_t first_index) {
  if (n <= 0) return;
  ctx.activate();
  const auto un = static_cast<std::uint64_t>(n);
  const std::uint64_t blocks = std::min<std::uint64_t>((un + kBlock - 1) / kBlock, 1u << 30);
  gumbel_keys_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, ctx.stream()>>>(
      d_scores, un, beta, seed, static_cast<std::uint64_t>(first_index), d_keys, d_fault);
  QUARRY_CUDA_LAUNCH_CHECK("gumbel_keys_kernel");
}

// ---------------------------------------------------------------- host entry points

void gumbel_keys_checked(Context& ctx, const float* d_scores, std::int64_t n, float beta,
                         std::uint64_t seed, float* d_keys, std::int64_t first_index) {
  DeviceBuffer<unsigned long long> d_fault(ctx, 1, "power-sampling fault word");
  QUARRY_CUDA_CHECK(cudaMemsetAsync(d_fault.data(), 0xff, sizeof(unsigned long long), ctx.stream()));
  launch_gumbel_keys(ctx, d_scores, n, beta, seed, d_keys, d_fault.data(), first_index);
  unsigned long long bad = kNoFault;
  copy_to_host(ctx, &bad, d_fault.data(), sizeof bad);
  if (bad == kNoFault) return;
  float v = 0.0f;  // the CPU's message (cpu::gumbel_keys), with the same types streamed
  copy_to_host(ctx, &v, d_scores + bad, sizeof v);
  QUARRY_FAIL("score at index ", static_cast<std::int64_t>(bad) + first_index, " is ", v,
              "; power sampling needs finite scores >= 0");
}

namespace {

// Device memory a select of k of n needs besides its input: mask, winners (3 x 8 bytes each for
// composites, sorted copy, indices) and at most n / 16 compacted candidates.
std::size_t select_bytes(std::int64_t n, std::int64_t k) {
  const auto un = static_cast<std::size_t>(n), uk = static_cast<std::size_t>(k);
  return un / 8 + 24 * uk + (un / radix::kCompactRatio) * 8 + (1u << 20);
}

}  // namespace

DeviceBuffer<std::uint32_t> upload_exclusions(Context& ctx, const std::vector<std::uint8_t>& excluded,
                                              std::int64_t n) {
  if (excluded.empty()) return {};
  QUARRY_EXPECTS(static_cast<std::int64_t>(excluded.size()) == n, "exclusion mask has ",
                 excluded.size(), " entries for a pool of ", n);
  const std::vector<std::uint32_t> words = radix::exclusion_bitmask(excluded);
  DeviceBuffer<std::uint32_t> d(ctx, words.size(), "exclusion mask");
  copy_to_device(ctx, d.data(), words.data(), words.size() * sizeof(std::uint32_t));
  return d;
}

namespace {
// The n scores on the device: resident ones in place, host ones copied into *copy.
const float* on_device(Context& ctx, const float* scores, std::int64_t n, const Residence& where,
                       DeviceBuffer<float>* copy, const char* what) {
  if (where.on_device) return scores;
  *copy = DeviceBuffer<float>(ctx, static_cast<std::size_t>(n), what);
  copy_to_device(ctx, copy->data(), scores, static_cast<std::size_t>(n) * sizeof(float));
  return copy->data();
}
}  // namespace

std::vector<std::int64_t> topk(const float* scores, std::int64_t n, std::int64_t k,
                               const std::vector<std::uint8_t>& excluded, int device,
                               const Residence& where, std::vector<float>* chosen) {
  if (k <= 0) return {};
  expect_pool_size(n);
  Context& ctx = context(device);
  ctx.wait_for(where.stream);
  ctx.expect_fits((where.on_device ? 0 : static_cast<std::size_t>(n) * sizeof(float)) + select_bytes(n, k),
                  "top-k of " + std::to_string(n) + " scores");
  DeviceBuffer<float> d_copy;
  const float* d_scores = on_device(ctx, scores, n, where, &d_copy, "top-k scores");
  const DeviceBuffer<std::uint32_t> d_mask = upload_exclusions(ctx, excluded, n);
  DeviceBuffer<std::int64_t> d_index(ctx, static_cast<std::size_t>(k), "top-k indices");
  DeviceBuffer<float> d_chosen;
  if (chosen) d_chosen = DeviceBuffer<float>(ctx, static_cast<std::size_t>(k), "top-k selected scores");
  topk_device(ctx, d_scores, n, k, d_mask.data(), d_index.data(), chosen ? d_chosen.data() : nullptr);
  std::vector<std::int64_t> index(static_cast<std::size_t>(k));
  copy_to_host(ctx, index.data(), d_index.data(), index.size() * sizeof(std::int64_t));
  if (chosen) {
    chosen->resize(static_cast<std::size_t>(k));
    copy_to_host(ctx, chosen->data(), d_chosen.data(), chosen->size() * sizeof(float));
  }
  return index;
}

std::vector<std::int64_t> power(const float* scores, std::int64_t n, std::int64_t k, float beta,
                                std::uint64_t seed, const std::vector<std::uint8_t>& excluded,
                                int device, std::int64_t first_index, const Residence& where,
                                std::vector<float>* chosen) {
  if (k <= 0) return {};
  expect_pool_size(n);
  Context& ctx = context(device);
  ctx.wait_for(where.stream);
  ctx.expect_fits((where.on_device ? 1 : 2) * static_cast<std::size_t>(n) * sizeof(float) + select_bytes(n, k),
                  "power sampling of " + std::to_string(n) + " scores");
  DeviceBuffer<float> d_keys(ctx, static_cast<std::size_t>(n), "power-sampling keys");
  DeviceBuffer<float> d_copy;
  const float* d_scores = on_device(ctx, scores, n, where, &d_copy, "power-sampling scores");
  gumbel_keys_checked(ctx, d_scores, n, beta, seed, d_keys.data(), first_index);
  const DeviceBuffer<std::uint32_t> d_mask = upload_exclusions(ctx, excluded, n);
  DeviceBuffer<std::int64_t> d_index(ctx, static_cast<std::size_t>(k), "power-sampling indices");
  topk_device(ctx, d_keys.data(), n, k, d_mask.data(), d_index.data(), nullptr);
  std::vector<std::int64_t> index(static_cast<std::size_t>(k));
  copy_to_host(ctx, index.data(), d_index.data(), index.size() * sizeof(std::int64_t));
  if (chosen) {  // the selected samples' scores, gathered on the device
    DeviceBuffer<float> d_chosen(ctx, static_cast<std::size_t>(k), "power-sampling selected scores");
    launch_gather(ctx, d_scores, d_index.data(), k, d_chosen.data());
    chosen->resize(static_cast<std::size_t>(k));
    copy_to_host(ctx, chosen->data(), d_chosen.data(), chosen->size() * sizeof(float));
  }
  return index;
}

}  // namespace quarry::cuda
