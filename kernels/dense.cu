// CUDA backend of quarry::score_dense (src/engine/dense.cpp validates the call and dispatches
// here with the CPU backend's cpu::DenseCall; host memory in and out).
//
// The voxel kernel: a thread per voxel, over fixed tiles of kTile voxels of one case, a block of
// kThreads threads per tile (grid-stride over the tiles). Each voxel reads its C class values
// (M members of a committee) through the per-voxel math the CPU uses
// (include/quarry/detail/voxel_math.hpp, row_math.hpp), so a voxel's score is the CPU's up to
// FMA contraction. In the same pass:
//   - mean / max / sum / foreground-mean per case: the tile's counted voxels are reduced in a
//     fixed tree (sum in double, count, max) into the tile's partial, partials[tile]; a second
//     kernel, a block per case, adds its tiles' partials in a fixed order. The tile size and the
//     block size are constants, so the result does not depend on the grid size: bit-identical
//     from run to run.
//   - top-q or slices: the counted voxel scores are written to a buffer (-1 where not counted);
//     the segment kernel, a block per case (or per slice), reduces them there: one pass for
//     count, sum and max, and for top-q an exact radix select of the m = ceil(q n)-th largest
//     score (4 passes of 8 bits over the scores' bits, shared-memory histograms with integer
//     atomics) and one pass summing the scores above it; the mean of the m largest is that sum
//     plus the threshold times the copies of it taken, over m.
//   - the voxel map (where asked): each voxel's score, 0 where ignored.
// A bad voxel (NaN/Inf, negative probability, a sum off 1) lowers a fault word to its index in
// the group (atomicMin); the host then runs the CPU backend's check on that voxel's case alone,
// so that the Error is the CPU's, word for word.
#include <cuda_fp16.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cpu/dense_cpu.hpp"
#include "kernels/cuda_backend.hpp"
#include "kernels/device_api.cuh"
#include "kernels/elem.cuh"
#include "quarry/detail/voxel_math.hpp"

namespace quarry::cuda {
namespace {

using detail::kFloatMax;
using detail::RowStats;

constexpr int kThreads = 256;  // per block, every kernel here (part of the reduction order)
constexpr int kTile = 1024;    // voxels per tile (one partial each)

// A tile's (or a block's) reduction of its counted voxels.
struct Partial {
  double sum;
  long long count;
  float max;
};

struct Args {
  const void* data = nullptr;
  std::int64_t M = 1, N = 0, V = 0;
  int C = 1;
  bool logits = false, committee = false;
  Acquisition acq = Acquisition::entropy;
  float tol = 1e-3f;
  int bg = -1;  // foreground-mean: the background class; else -1 (no voxel is background)
  const float* weights = nullptr;
  const void* mask = nullptr;
  DType mask_dtype = DType::u8;
  float* map = nullptr;       // voxel map, N * V
  float* kept = nullptr;      // counted voxel scores, -1 elsewhere, N * V
  Partial* parts = nullptr;   // per tile
  std::int64_t tiles_per_case = 0;
  unsigned long long* fault = nullptr;
  float* scratch = nullptr;   // committee: 4 * M floats per thread of the grid
  int* iscratch = nullptr;    // committee: M ints per thread of the grid
};

__device__ __forceinline__ bool mask_nonzero(const void* m, DType t, std::int64_t i) {
  switch (t) {
    case DType::u8: return static_cast<const unsigned char*>(m)[i] != 0;
    case DType::i8: return static_cast<const signed char*>(m)[i] != 0;
    case DType::i16: return static_cast<const short*>(m)[i] != 0;
    case DType::i32: return static_cast<const int*>(m)[i] != 0;
    case DType::i64: return static_cast<const long long*>(m)[i] != 0;
    case DType::f32: return static_cast<const float*>(m)[i] != 0.0f;
    case DType::f64: return static_cast<const double*>(m)[i] != 0.0;
    default: return (static_cast<const unsigned short*>(m)[i] & 0x7fffu) != 0;  // f16, bf16
  }
}

// Streaming statistics of member m's voxel v of case n (voxel_math.hpp, class by class in
// order, as the CPU).
template <class L, bool Last>
__device__ __forceinline__ void member_stats(const Args& a, const typename L::T* base, std::int64_t v, float& s,
                                             float& t, float& w1, float& w2, int& i1, unsigned& bad) {
  const std::int64_t cs = Last ? 1 : a.V;
  const std::int64_t at = Last ? v * a.C : v;
  s = t = 0.0f;
  w1 = w2 = -kFloatMax;
  i1 = 0;
  bad = 0;
  // Class sums as the CPU's (Kernel::class_sums): in float over blocks of kSumBlock classes,
  // the blocks added in double.
  double sd = 0.0, td = 0.0;
  if (!a.logits) {
    for (int c0 = 0; c0 < a.C; c0 += detail::kSumBlock) {
      const int c1 = c0 + detail::kSumBlock < a.C ? c0 + detail::kSumBlock : a.C;
      for (int c = c0; c < c1; ++c) detail::voxel_prob_add(L::get(base, at + c * cs), c, s, t, w1, w2, i1, bad);
      sd += s, td += t;
      s = t = 0.0f;
    }
  } else {
    for (int c = 0; c < a.C; ++c) detail::voxel_logit_max(L::get(base, at + c * cs), c, w1, w2, i1, bad);
    for (int c0 = 0; c0 < a.C; c0 += detail::kSumBlock) {
      const int c1 = c0 + detail::kSumBlock < a.C ? c0 + detail::kSumBlock : a.C;
      for (int c = c0; c < c1; ++c) detail::voxel_logit_add(L::get(base, at + c * cs), w1, s, t);
      sd += s, td += t;
      s = t = 0.0f;
    }
  }
  s = static_cast<float>(sd);
  t = static_cast<float>(td);
}

template <bool Logits>
__device__ __forceinline__ float single_score(Acquisition acq, float s, float t, float w1, float w2, int C) {
  switch (acq) {
    case Acquisition::least_confidence: return detail::voxel_score<Acquisition::least_confidence, Logits>(s, t, w1, w2, C);
    case Acquisition::margin: return detail::voxel_score<Acquisition::margin, Logits>(s, t, w1, w2, C);
    case Acquisition::ratio: return detail::voxel_score<Acquisition::ratio, Logits>(s, t, w1, w2, C);
    default: return detail::voxel_score<Acquisition::entropy, Logits>(s, t, w1, w2, C);
  }
}

// The score (before class weights) and predicted class of voxel v of case n; false for a bad
// voxel. `tid` / `nthreads` index the committee scratch of this thread.
template <class L, bool Last, bool Committee>
__device__ __forceinline__ bool voxel(const Args& a, std::int64_t n, std::int64_t v, std::int64_t tid,
                                      std::int64_t nthreads, float& score, int& pred);

// A single model: the member statistics and the score of voxel_math.hpp, as the CPU's.
template <class L, bool Last>
__device__ __forceinline__ bool single_voxel(const Args& a, std::int64_t n, std::int64_t v, float& score, int& pred) {
  using T = typename L::T;
  const T* data = static_cast<const T*>(a.data);
  const int C = a.C;
  float s, t, w1, w2;
  int i1;
  unsigned bad;
  member_stats<L, Last>(a, data + n * C * a.V, v, s, t, w1, w2, i1, bad);
  const RowStats st = detail::voxel_stats(s, t, w1, w2, i1, bad, C, a.logits);
  if (detail::check_row(st, a.logits, a.tol) != detail::kRowOk) return false;
  score = a.logits ? single_score<true>(a.acq, s, t, w1, w2, C) : single_score<false>(a.acq, s, t, w1, w2, C);
  pred = i1;
  return true;
}

template <class L, bool Last>
__device__ bool committee_voxel(const Args& a, std::int64_t n, std::int64_t v, std::int64_t tid, std::int64_t nthreads,
                                float& score, int& pred) {
  using T = typename L::T;
  const T* data = static_cast<const T*>(a.data);
  const int C = a.C;
  float s, t, w1, w2;
  int i1;
  unsigned bad;
  // A committee: every member's statistics (kept per thread in the scratch), the members'
  // mean pbar class by class, then the score as the CPU's Kernel::committee.
  const std::int64_t M = a.M;
  float* S = a.scratch + tid;                  // S[m * nthreads]: the member's sum
  float* Z = a.scratch + M * nthreads + tid;      // zmax (logits; the largest value otherwise)
  float* H = a.scratch + 2 * M * nthreads + tid;  // entropy
  float* X = a.scratch + 3 * M * nthreads + tid;  // kl-max: sum_c w log pbar
  int* I = a.iscratch + tid;                   // argmax
  const float inv_m = 1.0f / static_cast<float>(M);
  float sumh = 0.0f;
  for (std::int64_t m = 0; m < M; ++m) {
    member_stats<L, Last>(a, data + (m * a.N + n) * C * a.V, v, s, t, w1, w2, i1, bad);
    const RowStats st = detail::voxel_stats(s, t, w1, w2, i1, bad, C, a.logits);
    if (detail::check_row(st, a.logits, a.tol) != detail::kRowOk) return false;
    const float h = detail::stats_entropy(st);
    sumh += h;
    S[m * nthreads] = s;
    Z[m * nthreads] = w1;
    H[m * nthreads] = h;
    X[m * nthreads] = 0.0f;
    I[m * nthreads] = i1;
  }
  const bool kl = a.acq == Acquisition::kl_max && M > 1;
  const std::int64_t cs = Last ? 1 : a.V;
  const std::int64_t at = Last ? v * C : v;
  float ps = 0.0f, pt = 0.0f, pw1 = -kFloatMax, pw2 = -kFloatMax;
  int pi1 = 0;
  unsigned pbad = 0;
  double psd = 0.0, ptd = 0.0;  // pbar's class sums in blocks, as member_stats
  for (int c = 0; c < C; ++c) {
    if (c % detail::kSumBlock == 0 && c > 0) {
      psd += ps, ptd += pt;
      ps = pt = 0.0f;
    }
    float pb = 0.0f;
    for (std::int64_t m = 0; m < M; ++m) {
      const float x = L::get(data + (m * a.N + n) * C * a.V, at + c * cs);
      const float scale = 1.0f / (S[m * nthreads] * static_cast<float>(M));
      const float w = a.logits ? detail::fast_exp_nonpos(detail::logit_offset(x, Z[m * nthreads])) : x;
      pb += w * scale;
    }
    detail::voxel_prob_add(pb, c, ps, pt, pw1, pw2, pi1, pbad);
    if (kl) {
      const float lp = pb >= 1.17549435e-38f ? detail::fast_log(pb) : 0.0f;
      for (std::int64_t m = 0; m < M; ++m) {
        const float x = L::get(data + (m * a.N + n) * C * a.V, at + c * cs);
        const float w = a.logits ? detail::fast_exp_nonpos(detail::logit_offset(x, Z[m * nthreads])) : x;
        X[m * nthreads] += w * lp;
      }
    }
  }
  ps = static_cast<float>(psd + ps);
  pt = static_cast<float>(ptd + pt);
  pred = pi1;
  const RowStats pst = detail::voxel_stats(ps, pt, pw1, pw2, pi1, 0u, C, false);
  switch (a.acq) {
    case Acquisition::bald:
    case Acquisition::consensus_entropy: {
      const float h = detail::stats_entropy(pst);
      const float mi = h - sumh * inv_m;
      score = a.acq == Acquisition::consensus_entropy ? h : (M > 1 && mi > 0.0f) ? mi : 0.0f;
      return true;
    }
    case Acquisition::vote_entropy:
    case Acquisition::variation_ratio: {
      float h = 0.0f, most = 0.0f;
      for (std::int64_t m = 0; m < M; ++m) {
        const int cls = I[m * nthreads];
        bool seen = false;
        for (std::int64_t j = 0; j < m && !seen; ++j) seen = I[j * nthreads] == cls;
        if (seen) continue;  // this class's votes were counted at its first voter
        float votes = 1.0f;
        for (std::int64_t j = m + 1; j < M; ++j) votes += I[j * nthreads] == cls ? 1.0f : 0.0f;
        h -= detail::xlogx(votes * inv_m);
        most = votes > most ? votes : most;
      }
      score = a.acq == Acquisition::vote_entropy ? (h > 0.0f ? h : 0.0f)
                                                 : (static_cast<float>(M) - most) / static_cast<float>(M);
      return true;
    }
    case Acquisition::kl_max: {
      float best = 0.0f;
      if (kl) {
        for (std::int64_t m = 0; m < M; ++m) {
          const float k = -H[m * nthreads] - X[m * nthreads] / S[m * nthreads];
          best = k > best ? k : best;
        }
      }
      score = best;
      return true;
    }
    default: score = detail::voxel_score(a.acq, pst, C, false); return true;
  }
}

template <class L, bool Last, bool Committee>
__device__ __forceinline__ bool voxel(const Args& a, std::int64_t n, std::int64_t v, std::int64_t tid,
                                      std::int64_t nthreads, float& score, int& pred) {
  if constexpr (Committee) {
    return committee_voxel<L, Last>(a, n, v, tid, nthreads, score, pred);
  } else {
    return single_voxel<L, Last>(a, n, v, score, pred);
  }
}

// Fixed-order block reductions (kThreads threads): warp shuffles, then warp 0 over the warps.
__device__ __forceinline__ Partial block_reduce(Partial p) {
  __shared__ double s_sum[kThreads / 32];
  __shared__ long long s_cnt[kThreads / 32];
  __shared__ float s_max[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    p.sum += __shfl_down_sync(0xffffffffu, p.sum, o);
    p.count += __shfl_down_sync(0xffffffffu, p.count, o);
    const float x = __shfl_down_sync(0xffffffffu, p.max, o);
    p.max = x > p.max ? x : p.max;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // the shared slots may still be read by a previous call
  if (lane == 0) {
    s_sum[warp] = p.sum;
    s_cnt[warp] = p.count;
    s_max[warp] = p.max;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      p.sum += s_sum[w];
      p.count += s_cnt[w];
      p.max = s_max[w] > p.max ? s_max[w] : p.max;
    }
  }
  return p;  // valid in thread 0
}

template <class L, bool Last, bool Committee>
__global__ void __launch_bounds__(kThreads) voxel_kernel(Args a) {
  const std::int64_t nthreads = static_cast<std::int64_t>(gridDim.x) * kThreads;
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::int64_t tiles = a.N * a.tiles_per_case;
  for (std::int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const std::int64_t n = tile / a.tiles_per_case;
    const std::int64_t v0 = (tile % a.tiles_per_case) * kTile;
    Partial p{0.0, 0, 0.0f};
    for (int j = threadIdx.x; j < kTile; j += kThreads) {
      const std::int64_t v = v0 + j;
      if (v >= a.V) break;
      const std::int64_t idx = n * a.V + v;
      float x = 0.0f;
      int pred = 0;
      if (!voxel<L, Last, Committee>(a, n, v, tid, nthreads, x, pred)) {
        atomicMin(a.fault, static_cast<unsigned long long>(idx));
        continue;
      }
      const bool ignored = a.mask != nullptr && mask_nonzero(a.mask, a.mask_dtype, idx);
      if (a.weights) x *= a.weights[pred];
      const bool counted = !ignored && pred != a.bg;
      if (counted) {
        p.sum += x;
        p.count += 1;
        p.max = x > p.max ? x : p.max;
      }
      if (a.kept) a.kept[idx] = counted ? x : -1.0f;
      if (a.map) a.map[idx] = ignored ? 0.0f : x;
    }
    if (a.parts) {
      p = block_reduce(p);
      if (threadIdx.x == 0) a.parts[tile] = p;
    }
  }
}

// reduce_values of the CPU: how 0 mean (and foreground-mean), 1 max, 2 sum.
__device__ __forceinline__ float finish(int how, const Partial& p) {
  if (how == 1) return p.max;
  if (how == 2) return static_cast<float>(p.sum);
  return p.count > 0 ? static_cast<float>(p.sum / static_cast<double>(p.count)) : 0.0f;
}

// A block per case: its tiles' partials in tile order (each thread a fixed stride of them, then
// the fixed tree).
__global__ void __launch_bounds__(kThreads) case_kernel(const Partial* parts, std::int64_t N, std::int64_t tpc,
                                                        int how, float* out) {
  for (std::int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    Partial p{0.0, 0, 0.0f};
    for (std::int64_t t = threadIdx.x; t < tpc; t += kThreads) {
      const Partial q = parts[n * tpc + t];
      p.sum += q.sum;
      p.count += q.count;
      p.max = q.max > p.max ? q.max : p.max;
    }
    p = block_reduce(p);
    if (threadIdx.x == 0) out[n] = finish(how, p);
  }
}

// The order key of a counted (non-negative) score: its bits (-0 as +0).
__device__ __forceinline__ unsigned key_of(float x) { return x > 0.0f ? __float_as_uint(x) : 0u; }

// A block per segment (a case, or a slice of one): segment g of N * S is case g / S, slice
// g % S; its elements are (o * S + s) * inner + i of the case, o < outer, i < inner.
__global__ void __launch_bounds__(kThreads) segment_kernel(const float* kept, std::int64_t N, std::int64_t V,
                                                           std::int64_t S, std::int64_t inner, int how, double q,
                                                           float* out) {
  __shared__ unsigned hist[256];
  __shared__ unsigned s_prefix;
  __shared__ long long s_need;
  const std::int64_t per = V / S;  // elements of a segment
  for (std::int64_t g = blockIdx.x; g < N * S; g += gridDim.x) {
    const std::int64_t n = g / S, s = g % S;
    const float* base = kept + n * V + s * inner;
    auto at = [&](std::int64_t j) { return base[(j / inner) * S * inner + j % inner]; };
    Partial p{0.0, 0, 0.0f};
    for (std::int64_t j = threadIdx.x; j < per; j += kThreads) {
      const float x = at(j);
      if (x < 0.0f) continue;
      p.sum += x;
      p.count += 1;
      p.max = x > p.max ? x : p.max;
    }
    p = block_reduce(p);
    __shared__ long long s_count;
    if (threadIdx.x == 0) s_count = p.count;
    __syncthreads();
    const long long count = s_count;
    if (how != 3) {
      if (threadIdx.x == 0) out[g] = finish(how, p);
      __syncthreads();
      continue;
    }
    const long long m = detail::top_count(q, count);  // the CPU's count
    if (m == 0) {
      if (threadIdx.x == 0) out[g] = 0.0f;
      __syncthreads();
      continue;
    }
    // Exact radix select of the m-th largest key, 8 bits at a time from the top.
    unsigned prefix = 0, mask = 0;
    long long need = m;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = threadIdx.x; b < 256; b += kThreads) hist[b] = 0;
      __syncthreads();
      for (std::int64_t j = threadIdx.x; j < per; j += kThreads) {
        const float x = at(j);
        if (x < 0.0f) continue;
        const unsigned k = key_of(x);
        if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], 1u);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        long long above = 0;
        int d = 255;
        for (; d > 0; --d) {
          if (above + hist[d] >= need) break;
          above += hist[d];
        }
        s_prefix = prefix | (static_cast<unsigned>(d) << shift);
        s_need = need - above;
      }
      __syncthreads();
      prefix = s_prefix;
      need = s_need;
      mask |= 255u << shift;
      __syncthreads();
    }
    // prefix is the m-th largest key; `need` of its copies are among the m largest.
    Partial top{0.0, 0, 0.0f};
    for (std::int64_t j = threadIdx.x; j < per; j += kThreads) {
      const float x = at(j);
      if (x >= 0.0f && key_of(x) > prefix) top.sum += x;
    }
    top = block_reduce(top);
    if (threadIdx.x == 0)
      out[g] = static_cast<float>((top.sum + static_cast<double>(need) * __uint_as_float(prefix)) / static_cast<double>(m));
    __syncthreads();
  }
}

int reduction_code(Reduction r) {
  switch (r) {
    case Reduction::max: return 1;
    case Reduction::sum: return 2;
    case Reduction::topq: return 3;
    default: return 0;  // mean, foreground-mean
  }
}

template <class L, bool Committee>
void launch_voxels(Context& ctx, const Args& a, bool last, int blocks) {
  if (last) {
    voxel_kernel<L, true, Committee><<<blocks, kThreads, 0, ctx.stream()>>>(a);
  } else {
    voxel_kernel<L, false, Committee><<<blocks, kThreads, 0, ctx.stream()>>>(a);
  }
  QUARRY_CUDA_LAUNCH_CHECK("dense voxel_kernel");
}

// The kernel for the call's committee-ness (a single model's kernel carries no committee code).
template <class L>
void launch_voxels(Context& ctx, const Args& a, bool last, int blocks) {
  if (a.committee) {
    launch_voxels<L, true>(ctx, a, last, blocks);
  } else {
    launch_voxels<L, false>(ctx, a, last, blocks);
  }
}

// The CPU's Error for the first bad voxel: its case is scored alone by the CPU backend (which
// checks its voxels in the CPU's order), and the case number put back.
[[noreturn]] void report_bad_voxel(const cpu::DenseCall& call, std::int64_t index) {
  const DenseLayout& l = call.layout;
  const std::int64_t n = index / l.voxels;
  const std::size_t es = dtype_size(call.dtype);
  const std::size_t per = static_cast<std::size_t>(l.classes * l.voxels) * es;  // one member's case
  std::vector<unsigned char> one(per * static_cast<std::size_t>(l.members));
  for (std::int64_t m = 0; m < l.members; ++m)
    std::copy_n(static_cast<const unsigned char*>(call.data) + static_cast<std::size_t>(m * l.cases + n) * per, per,
                one.data() + static_cast<std::size_t>(m) * per);
  cpu::DenseCall c = call;
  c.data = one.data();
  c.layout.cases = 1;
  c.reduce = ReduceSpec{};
  c.ignore = nullptr;  // bad voxels are errors whether ignored or not
  c.slice_axis = -1;
  c.voxel_map = nullptr;
  std::vector<float> out(1);
  try {
    cpu::score_dense(c, out.data());
  } catch (const Error& e) {
    std::string msg = e.what();
    const std::string was = call.input_name + ": case 0,";
    if (msg.compare(0, was.size(), was) == 0)
      msg = call.input_name + ": case " + std::to_string(n) + "," + msg.substr(was.size());
    throw Error(msg);
  }
  // The CPU found nothing wrong where the GPU did (not expected: both sum the same floats).
  QUARRY_FAIL(call.input_name, ": case ", n, ", voxel ", index % l.voxels,
              " (flat index): the GPU found a bad value (NaN, Inf, a negative probability or a sum off 1) "
              "that the CPU check does not confirm");
}

// Blocks of the voxel kernel: enough to fill the device (8 per SM), no more than tiles; a
// committee's per-thread member scratch (20 bytes per member and thread) kept within 512 MiB.
int dense_blocks(Context& ctx, const cpu::DenseCall& call) {
  const DenseLayout& l = call.layout;
  const std::int64_t tiles = l.cases * ((l.voxels + kTile - 1) / kTile);
  const int sms = ctx.props().multiProcessorCount > 0 ? ctx.props().multiProcessorCount : 1;
  std::int64_t blocks = std::min<std::int64_t>(tiles, static_cast<std::int64_t>(sms) * 8);
  if (call.committee) blocks = std::min<std::int64_t>(blocks, (std::int64_t{512} << 20) / (20 * l.members * kThreads));
  return static_cast<int>(std::max<std::int64_t>(1, blocks));
}

}  // namespace

void dense_on_device(Context& ctx, const cpu::DenseCall& call, const void* d_input, const void* d_mask,
                     float* d_out, float* d_map) {
  const DenseLayout& l = call.layout;
  const std::int64_t N = l.cases, V = l.voxels, M = l.members;
  if (N == 0 || V == 0) return;
  QUARRY_EXPECTS(l.classes <= (1 << 30), call.input_name, ": ", l.classes, " classes: too many for the CUDA backend");
  ctx.activate();
  const int how = reduction_code(call.reduce.how);
  const bool slices = call.slice_axis >= 0;
  const std::int64_t S = l.slices(call.slice_axis);
  std::int64_t inner = 1;
  if (slices)
    for (std::size_t ax = static_cast<std::size_t>(call.slice_axis) + 1; ax < l.spatial.size(); ++ax) inner *= l.spatial[ax];
  const bool keep = slices || how == 3;
  const std::int64_t tpc = (V + kTile - 1) / kTile;
  const std::int64_t tiles = N * tpc;
  const int blocks = dense_blocks(ctx, call);

  DeviceBuffer<float> d_weights;
  if (call.weights) {
    d_weights = DeviceBuffer<float>(ctx, static_cast<std::size_t>(l.classes), "the class weights");
    copy_to_device(ctx, d_weights.data(), call.weights, static_cast<std::size_t>(l.classes) * sizeof(float));
  }
  DeviceBuffer<float> d_kept, d_scratch;
  DeviceBuffer<int> d_iscratch;
  DeviceBuffer<Partial> d_parts;
  if (keep) d_kept = DeviceBuffer<float>(ctx, static_cast<std::size_t>(N * V), "the voxel scores");
  else d_parts = DeviceBuffer<Partial>(ctx, static_cast<std::size_t>(tiles), "the per-tile partial reductions");
  if (call.committee) {
    d_scratch = DeviceBuffer<float>(ctx, static_cast<std::size_t>(4 * M) * blocks * kThreads, "the committee scratch");
    d_iscratch = DeviceBuffer<int>(ctx, static_cast<std::size_t>(M) * blocks * kThreads, "the committee scratch");
  }
  DeviceBuffer<unsigned long long> d_fault(ctx, 1, "fault word");
  QUARRY_CUDA_CHECK(cudaMemsetAsync(d_fault.data(), 0xff, sizeof(unsigned long long), ctx.stream()));

  Args a;
  a.data = d_input;
  a.M = M;
  a.N = N;
  a.V = V;
  a.C = static_cast<int>(l.classes);
  a.logits = call.logits;
  a.committee = call.committee;
  a.acq = call.acquisition;
  a.tol = call.tol;
  a.bg = call.reduce.how == Reduction::foreground_mean ? call.background : -1;
  a.weights = d_weights.data();
  a.mask = call.ignore ? d_mask : nullptr;
  a.mask_dtype = call.ignore ? call.ignore->dtype : DType::u8;
  a.map = d_map;
  a.kept = d_kept.data();
  a.parts = d_parts.data();
  a.tiles_per_case = tpc;
  a.fault = d_fault.data();
  a.scratch = d_scratch.data();
  a.iscratch = d_iscratch.data();
  switch (call.dtype) {
    case DType::f32: launch_voxels<F32>(ctx, a, l.channels_last, blocks); break;
    case DType::f64: launch_voxels<F64>(ctx, a, l.channels_last, blocks); break;
    case DType::f16: launch_voxels<F16>(ctx, a, l.channels_last, blocks); break;
    case DType::bf16: launch_voxels<BF16>(ctx, a, l.channels_last, blocks); break;
    default: QUARRY_FAIL(call.input_name, ": dense scores need float32, float64, float16 or bfloat16, got ", dtype_name(call.dtype));
  }
  unsigned long long fault = kNoFault;
  copy_to_host(ctx, &fault, d_fault.data(), sizeof fault);
  if (fault != kNoFault) {
    if (call.data) report_bad_voxel(call, static_cast<std::int64_t>(fault));
    QUARRY_FAIL(call.input_name, ": case ", static_cast<std::int64_t>(fault) / V, ", voxel ",
                static_cast<std::int64_t>(fault) % V, " (flat index): NaN, Inf, a negative probability or a sum off 1");
  }

  const int rblocks = static_cast<int>(std::min<std::int64_t>(static_cast<std::int64_t>(N * S), 65535));
  if (keep) {
    segment_kernel<<<rblocks, kThreads, 0, ctx.stream()>>>(d_kept.data(), N, V, S, slices ? inner : V, how,
                                                           call.reduce.q, d_out);
    QUARRY_CUDA_LAUNCH_CHECK("dense segment_kernel");
  } else {
    case_kernel<<<rblocks, kThreads, 0, ctx.stream()>>>(d_parts.data(), N, tpc, how, d_out);
    QUARRY_CUDA_LAUNCH_CHECK("dense case_kernel");
  }
}

void score_dense(const cpu::DenseCall& call, float* out, int device) {
  const DenseLayout& l = call.layout;
  const std::int64_t N = l.cases, V = l.voxels, M = l.members;
  if (N == 0 || V == 0) return;
  Context& ctx = context(device);
  ctx.activate();
  const bool keep = call.slice_axis >= 0 || call.reduce.how == Reduction::topq;
  const std::int64_t tiles = N * ((V + kTile - 1) / kTile);
  const int blocks = dense_blocks(ctx, call);
  const std::size_t in_bytes = static_cast<std::size_t>(M * N * l.classes * V) * dtype_size(call.dtype);
  const std::size_t mask_bytes = call.ignore ? static_cast<std::size_t>(N * V) * dtype_size(call.ignore->dtype) : 0;
  const std::size_t map_bytes = call.voxel_map ? static_cast<std::size_t>(N * V) * sizeof(float) : 0;
  const std::size_t kept_bytes = keep ? static_cast<std::size_t>(N * V) * sizeof(float) : 0;
  const std::size_t part_bytes = keep ? 0 : static_cast<std::size_t>(tiles) * sizeof(Partial);
  const std::size_t scratch_bytes =
      call.committee ? static_cast<std::size_t>(20 * M) * static_cast<std::size_t>(blocks) * kThreads : 0;
  const std::size_t out_n = static_cast<std::size_t>(N * l.slices(call.slice_axis));
  ctx.expect_fits(in_bytes + mask_bytes + map_bytes + kept_bytes + part_bytes + scratch_bytes + out_n * 4 + (64u << 20),
                  "scoring dense outputs " + call.input_name + " (" + std::to_string(N) + " cases of " +
                      std::to_string(M * l.classes * V) + " " + dtype_name(call.dtype) + " values, " +
                      format_bytes(in_bytes) + ")");
  DeviceBuffer<unsigned char> d_in(ctx, in_bytes, "the dense outputs");
  copy_to_device(ctx, d_in.data(), call.data, in_bytes);
  DeviceBuffer<unsigned char> d_mask;
  if (call.ignore) {
    d_mask = DeviceBuffer<unsigned char>(ctx, mask_bytes, "the ignore mask");
    copy_to_device(ctx, d_mask.data(), call.ignore->data, mask_bytes);
  }
  DeviceBuffer<float> d_map, d_out(ctx, out_n, "the dense scores");
  if (call.voxel_map) d_map = DeviceBuffer<float>(ctx, static_cast<std::size_t>(N * V), "the voxel map");
  dense_on_device(ctx, call, d_in.data(), d_mask.data(), d_out.data(), d_map.data());
  copy_to_host(ctx, out, d_out.data(), out_n * sizeof(float));
  if (call.voxel_map) copy_to_host(ctx, call.voxel_map, d_map.data(), map_bytes);
}

}  // namespace quarry::cuda
