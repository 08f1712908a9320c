// CUDA backend of quarry::score: one pass over the pool, each row through the shared per-row
// math of include/quarry/detail/row_math.hpp. The launch shape follows the number of classes C:
//   C <= 32     a thread per row; a block stages a tile of 128 rows into shared memory with
//               16-byte loads (the tile is contiguous), then each thread scores its row there;
//   C <= 1024   a warp per row (WarpLanes), the row staged into the warp's shared slab;
//   larger C    a block per row (BlockLanes), staged where the row fits in shared memory and
//               read from global memory otherwise (C up to 2^31-1).
// Committees [M, N, C] go the same three ways by C, a sample (its M member rows) per thread,
// warp or block, with the committee mean and votes as scratch of the group. egl and badge-norm
// read the sample's embedding row in the same kernel.
#include <cuda_fp16.h>

#include <algorithm>
#include <vector>

#include "core/rows.hpp"
#include "kernels/cuda_backend.hpp"
#include "kernels/device_api.cuh"
#include "kernels/elem.cuh"
#include "kernels/lanes.cuh"
#include "quarry/detail/row_math.hpp"

namespace quarry::cuda {
namespace {

using detail::RowStats;

// Embeddings may have any float dtype, independent of the input's.
struct EmbArgs {
  const void* data = nullptr;
  DType dtype = DType::f32;
  std::int64_t d = 0;
};

__device__ __forceinline__ float load_any(const void* p, DType t, std::int64_t i) {
  switch (t) {
    case DType::f64: return static_cast<float>(static_cast<const double*>(p)[i]);
    case DType::f16: return F16::get(static_cast<const unsigned short*>(p), i);
    case DType::bf16: return BF16::get(static_cast<const unsigned short*>(p), i);
    default: return static_cast<const float*>(p)[i];
  }
}

// This thread's part of ||h_row||^2 (double: a float sum of squares overflows for |h| > 1.8e19)
// and whether its values are finite.
__device__ __forceinline__ double embedding_part(const EmbArgs& e, std::int64_t row, int first,
                                                 int step, unsigned* bad) {
  double s = 0.0;
  const std::int64_t base = row * e.d;
  for (std::int64_t j = first; j < e.d; j += step) {
    const float x = load_any(e.data, e.dtype, base + j);
    *bad |= detail::out_of_range(x, -detail::kFloatMax);
    s += static_cast<double>(x) * x;
  }
  return s;
}

// ||h|| from the group's combined sum, or -1 for a bad embedding row.
__device__ __forceinline__ float embedding_norm(double sum, unsigned bad) {
  const float norm = static_cast<float>(sqrt(sum));
  return (bad == 0 && norm <= detail::kFloatMax) ? norm : -1.0f;
}

// Copies `bytes` from global `src` to shared memory at `slab` (16-byte aligned, bytes + 16 long)
// with 16-byte loads for the aligned body. The copy keeps src's alignment modulo 16, so the
// body's stores are aligned too; returns where the data starts. Threads tid of nthreads take
// part; the caller synchronises before reading.
__device__ __forceinline__ const char* stage(char* slab, const char* src, std::size_t bytes, int tid,
                                             int nthreads) {
  const std::size_t mis = reinterpret_cast<std::uintptr_t>(src) & 15u;
  char* dst = slab + mis;
  const std::size_t head = min(bytes, (16 - mis) & 15u);
  for (std::size_t i = tid; i < head; i += nthreads) dst[i] = src[i];
  const std::size_t body = (bytes - head) / 16;
  const uint4* s4 = reinterpret_cast<const uint4*>(src + head);
  uint4* d4 = reinterpret_cast<uint4*>(dst + head);
  for (std::size_t i = tid; i < body; i += nthreads) d4[i] = __ldcs(s4 + i);  // read once: stream
  for (std::size_t i = head + body * 16 + tid; i < bytes; i += nthreads) dst[i] = src[i];
  return dst;
}

__device__ __forceinline__ void report(unsigned long long* fault, std::int64_t row) {
  atomicMin(fault, static_cast<unsigned long long>(row));
}

constexpr int kTileRows = 128;  // thread-per-row kernels: rows (= threads) per block
constexpr int kSmallC = 32;     // up to this C, a thread per row
constexpr int kWarpC = 1024;    // up to this C, a warp per row
constexpr int kWarpsPerBlock = 4;
constexpr int kBlockThreads = 256;

// ------------------------------------------------------------------ single model, C <= 32
template <class E, unsigned Need>
__global__ void __launch_bounds__(kTileRows)
score_tile_kernel(const typename E::T* in, std::int64_t n, int C, Acquisition acq, bool logits,
                  float tol, EmbArgs emb, float* out, unsigned long long* fault) {
  using T = typename E::T;
  extern __shared__ __align__(16) unsigned char smem[];
  float* hnorm = reinterpret_cast<float*>(smem);                     // kTileRows floats
  char* slab = reinterpret_cast<char*>(smem) + kTileRows * sizeof(float);  // 512: 16-aligned
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * kTileRows; r0 < n;
       r0 += static_cast<std::int64_t>(gridDim.x) * kTileRows) {
    const int rows = static_cast<int>(n - r0 < kTileRows ? n - r0 : kTileRows);
    __syncthreads();  // the previous tile is no longer read
    const T* tile = reinterpret_cast<const T*>(
        stage(slab, reinterpret_cast<const char*>(in + r0 * C), static_cast<std::size_t>(rows) * C * sizeof(T),
              threadIdx.x, blockDim.x));
    if (emb.data) {  // a warp per embedding row: coalesced reads of the row
      for (int j = warp; j < rows; j += warps) {
        unsigned bad = 0;
        const double part = embedding_part(emb, r0 + j, lane, 32, &bad);
        const WarpLanes L{lane};
        const double sum = L.sumd(part);
        bad = L.any(bad);
        if (lane == 0) hnorm[j] = embedding_norm(sum, bad);
      }
    }
    __syncthreads();
    if (threadIdx.x < rows) {
      const T* row = tile + threadIdx.x * C;
      auto ld = [row](int c) { return E::get(row, c); };
      const std::int64_t r = r0 + threadIdx.x;
      const RowStats st = detail::row_stats<Need>(ld, C, logits);
      const int e = detail::check_row(st, logits, tol);
      const float h = emb.data ? hnorm[threadIdx.x] : 1.0f;
      if (e != detail::kRowOk || !(h >= 0.0f)) {
        report(fault, r);
        out[r] = __int_as_float(0x7fc00000);
      } else {
        out[r] = detail::single_model_score(acq, st, ld, C, logits, h);
      }
    }
  }
}

// The shared memory a group of lanes works in, and its lanes policy.
template <class Lanes>
struct Group;

template <>
struct Group<WarpLanes> {
  __device__ static int per_block() { return blockDim.x >> 5; }
  __device__ static int index() { return threadIdx.x >> 5; }
  __device__ static WarpLanes lanes(unsigned char*) { return WarpLanes{static_cast<int>(threadIdx.x & 31)}; }
  __device__ static void sync() { __syncwarp(); }
  static constexpr std::size_t kLanesBytes = 0;
};

template <>
struct Group<BlockLanes> {
  __device__ static int per_block() { return 1; }
  __device__ static int index() { return 0; }
  __device__ static BlockLanes lanes(unsigned char* smem) { return BlockLanes{reinterpret_cast<double*>(smem)}; }
  __device__ static void sync() { __syncthreads(); }
  static constexpr std::size_t kLanesBytes = 32 * sizeof(double);
};

// ------------------------------------------------------------------ single model, C > 32
// A warp or a block per row. Staged: the row is copied to the group's slab of `slab_bytes`
// first (16-byte loads); otherwise the lanes read it from global memory.
template <class E, unsigned Need, class Lanes, bool Staged>
__global__ void
score_rows_kernel(const typename E::T* in, std::int64_t n, int C, Acquisition acq, bool logits,
                  float tol, EmbArgs emb, float* out, unsigned long long* fault,
                  std::size_t slab_bytes) {
  using T = typename E::T;
  using G = Group<Lanes>;
  extern __shared__ __align__(16) unsigned char smem[];
  const Lanes L = G::lanes(smem);
  char* slab = reinterpret_cast<char*>(smem) + G::kLanesBytes + G::index() * slab_bytes;
  const std::int64_t groups = static_cast<std::int64_t>(gridDim.x) * G::per_block();
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * G::per_block() + G::index(); r < n;
       r += groups) {
    const T* row = in + r * C;
    if (Staged) {
      G::sync();  // the previous row is no longer read
      row = reinterpret_cast<const T*>(stage(slab, reinterpret_cast<const char*>(row),
                                             static_cast<std::size_t>(C) * sizeof(T), L.first(), L.step()));
      G::sync();
    }
    auto ld = [row](int c) { return E::get(row, c); };
    float h = 1.0f;
    if (emb.data) {
      unsigned bad = 0;
      const double sum = L.sumd(embedding_part(emb, r, L.first(), L.step(), &bad));
      h = embedding_norm(sum, L.any(bad));
    }
    const RowStats st = detail::row_stats<Need>(ld, C, logits, L);
    const int e = detail::check_row(st, logits, tol);
    const bool ok = e == detail::kRowOk && h >= 0.0f;
    // Every lane takes part in the combines of single_model_score, then lane 0 writes.
    const float s = ok ? detail::single_model_score(acq, st, ld, C, logits, h, L) : 0.0f;
    if (L.first() == 0) {
      if (ok) {
        out[r] = s;
      } else {
        report(fault, r);
        out[r] = __int_as_float(0x7fc00000);
      }
    }
  }
}

// ------------------------------------------------------------------ committees
// A sample per thread (Serial, C <= 32, scratch in registers/local memory), per warp or per
// block (scratch pbar/votes of 2C floats in shared memory, or in `global_scratch` at 2C floats
// per block when it does not fit).
template <class E, class Lanes>
__global__ void
committee_kernel(const typename E::T* in, int M, std::int64_t n, int C, Acquisition acq,
                 bool logits, float tol, EmbArgs emb, float* out, unsigned long long* fault,
                 float* global_scratch) {
  using T = typename E::T;
  extern __shared__ __align__(16) unsigned char smem[];
  const std::int64_t stride = n * C;  // between members
  if constexpr (std::is_same<Lanes, detail::Serial>::value) {
    float pbar[kSmallC], votes[kSmallC];
    const WarpLanes W{static_cast<int>(threadIdx.x & 31)};
    for (std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * blockDim.x; r0 < n;
         r0 += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
      const std::int64_t r = r0 + threadIdx.x;
      // Embedding norms a warp per row (coalesced), handed to the row's thread by shuffle.
      float my_h = 1.0f;
      if (emb.data) {
        const std::int64_t w0 = r - W.lane;  // this warp's first sample
        for (int j = 0; j < 32; ++j) {
          unsigned bad = 0;
          const bool live = w0 + j < n;  // uniform across the warp
          const double part = live ? embedding_part(emb, w0 + j, W.lane, 32, &bad) : 0.0;
          const double sum = W.sumd(part);
          bad = W.any(bad);
          if (W.lane == j) my_h = embedding_norm(sum, bad);
        }
      }
      if (r >= n) continue;
      const T* row0 = in + r * C;
      auto ld = [row0, stride](int m, int c) { return E::get(row0 + m * stride, c); };
      float s = 0.0f;
      const detail::CommitteeCheck chk =
          detail::committee_score(acq, ld, M, C, logits, tol, my_h, pbar, votes, &s);
      if (chk.error != detail::kRowOk || !(my_h >= 0.0f)) {
        report(fault, r);
        out[r] = __int_as_float(0x7fc00000);
      } else {
        out[r] = s;
      }
    }
  } else {
    using G = Group<Lanes>;
    const Lanes L = G::lanes(smem);
    float* scratch = global_scratch
                         ? global_scratch + static_cast<std::int64_t>(blockIdx.x) * 2 * C
                         : reinterpret_cast<float*>(smem + G::kLanesBytes) + G::index() * 2 * C;
    float* pbar = scratch;
    float* votes = scratch + C;
    const std::int64_t groups = static_cast<std::int64_t>(gridDim.x) * G::per_block();
    for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * G::per_block() + G::index(); r < n;
         r += groups) {
      const T* row0 = in + r * C;
      auto ld = [row0, stride](int m, int c) { return E::get(row0 + m * stride, c); };
      float h = 1.0f;
      if (emb.data) {
        unsigned bad = 0;
        const double sum = L.sumd(embedding_part(emb, r, L.first(), L.step(), &bad));
        h = embedding_norm(sum, L.any(bad));
      }
      float s = 0.0f;
      const detail::CommitteeCheck chk =
          detail::committee_score(acq, ld, M, C, logits, tol, h, pbar, votes, &s, L);
      if (L.first() == 0) {
        if (chk.error != detail::kRowOk || !(h >= 0.0f)) {
          report(fault, r);
          out[r] = __int_as_float(0x7fc00000);
        } else {
          out[r] = s;
        }
      }
    }
  }
}

// ------------------------------------------------------------------ launching
// Blocks for a grid-stride kernel: enough to fill every SM as far as occupancy allows, no more
// than the work needs.
template <class Kernel>
int grid_for(Context& ctx, Kernel kernel, int threads, std::size_t smem, std::int64_t blocks_needed) {
  int per_sm = 0;
  QUARRY_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  const std::int64_t most = static_cast<std::int64_t>(std::max(per_sm, 1)) * ctx.props().multiProcessorCount;
  return static_cast<int>(std::max<std::int64_t>(1, std::min(blocks_needed, most)));
}

template <class Kernel>
void allow_smem(Kernel kernel, std::size_t smem) {
  if (smem > 48 * 1024)
    QUARRY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
}

std::size_t round16(std::size_t b) { return (b + 15) / 16 * 16; }

template <class E, unsigned Need>
void launch_single(Context& ctx, const ScoreCall& call, const EmbArgs& emb, unsigned long long* fault) {
  using T = typename E::T;
  const int C = static_cast<int>(call.c);
  const auto* in = static_cast<const T*>(call.input);
  cudaStream_t st = ctx.stream();
  const std::size_t optin = ctx.props().sharedMemPerBlockOptin;
  if (C <= kSmallC) {
    auto kernel = score_tile_kernel<E, Need>;
    const std::size_t smem = kTileRows * sizeof(float) + round16(kTileRows * C * sizeof(T)) + 16;
    allow_smem(kernel, smem);
    const int grid = grid_for(ctx, kernel, kTileRows, smem, (call.n + kTileRows - 1) / kTileRows);
    kernel<<<grid, kTileRows, smem, st>>>(in, call.n, C, call.acq, call.logits, call.tol, emb, call.out, fault);
    QUARRY_CUDA_LAUNCH_CHECK("score_tile_kernel");
  } else if (C <= kWarpC) {
    auto kernel = score_rows_kernel<E, Need, WarpLanes, true>;
    const std::size_t slab = round16(C * sizeof(T)) + 16;
    const std::size_t smem = kWarpsPerBlock * slab;
    const int threads = 32 * kWarpsPerBlock;
    allow_smem(kernel, smem);
    const int grid = grid_for(ctx, kernel, threads, smem, (call.n + kWarpsPerBlock - 1) / kWarpsPerBlock);
    kernel<<<grid, threads, smem, st>>>(in, call.n, C, call.acq, call.logits, call.tol, emb, call.out, fault, slab);
    QUARRY_CUDA_LAUNCH_CHECK("score_rows_kernel<warp>");
  } else {
    const std::size_t slab = round16(static_cast<std::size_t>(C) * sizeof(T)) + 16;
    const std::size_t staged_smem = Group<BlockLanes>::kLanesBytes + slab;
    if (staged_smem <= optin) {
      auto kernel = score_rows_kernel<E, Need, BlockLanes, true>;
      allow_smem(kernel, staged_smem);
      const int grid = grid_for(ctx, kernel, kBlockThreads, staged_smem, call.n);
      kernel<<<grid, kBlockThreads, staged_smem, st>>>(in, call.n, C, call.acq, call.logits, call.tol, emb,
                                                       call.out, fault, slab);
    } else {
      auto kernel = score_rows_kernel<E, Need, BlockLanes, false>;
      const std::size_t smem = Group<BlockLanes>::kLanesBytes;
      const int grid = grid_for(ctx, kernel, kBlockThreads, smem, call.n);
      kernel<<<grid, kBlockThreads, smem, st>>>(in, call.n, C, call.acq, call.logits, call.tol, emb,
                                                call.out, fault, 0);
    }
    QUARRY_CUDA_LAUNCH_CHECK("score_rows_kernel<block>");
  }
}

template <class E>
void launch_committee(Context& ctx, const ScoreCall& call, const EmbArgs& emb, unsigned long long* fault) {
  using T = typename E::T;
  const int C = static_cast<int>(call.c), M = static_cast<int>(call.m);
  const auto* in = static_cast<const T*>(call.input);
  cudaStream_t st = ctx.stream();
  const std::size_t optin = ctx.props().sharedMemPerBlockOptin;
  if (C <= kSmallC) {
    auto kernel = committee_kernel<E, detail::Serial>;
    const int threads = 128;
    const int grid = grid_for(ctx, kernel, threads, 0, (call.n + threads - 1) / threads);
    kernel<<<grid, threads, 0, st>>>(in, M, call.n, C, call.acq, call.logits, call.tol, emb, call.out, fault, nullptr);
    QUARRY_CUDA_LAUNCH_CHECK("committee_kernel<thread>");
  } else if (C <= kWarpC) {
    auto kernel = committee_kernel<E, WarpLanes>;
    const int threads = 32 * kWarpsPerBlock;
    const std::size_t smem = kWarpsPerBlock * 2 * C * sizeof(float);
    allow_smem(kernel, smem);
    const int grid = grid_for(ctx, kernel, threads, smem, (call.n + kWarpsPerBlock - 1) / kWarpsPerBlock);
    kernel<<<grid, threads, smem, st>>>(in, M, call.n, C, call.acq, call.logits, call.tol, emb, call.out, fault, nullptr);
    QUARRY_CUDA_LAUNCH_CHECK("committee_kernel<warp>");
  } else {
    auto kernel = committee_kernel<E, BlockLanes>;
    const std::size_t shared_scratch = Group<BlockLanes>::kLanesBytes + 2 * static_cast<std::size_t>(C) * sizeof(float);
    if (shared_scratch <= optin) {
      allow_smem(kernel, shared_scratch);
      const int grid = grid_for(ctx, kernel, kBlockThreads, shared_scratch, call.n);
      kernel<<<grid, kBlockThreads, shared_scratch, st>>>(in, M, call.n, C, call.acq, call.logits, call.tol, emb,
                                                          call.out, fault, nullptr);
    } else {  // scratch in global memory, 2C floats per block
      const std::size_t smem = Group<BlockLanes>::kLanesBytes;
      const int grid = grid_for(ctx, kernel, kBlockThreads, smem, call.n);
      DeviceBuffer<float> scratch(ctx, static_cast<std::size_t>(grid) * 2 * C, "committee scratch");
      kernel<<<grid, kBlockThreads, smem, st>>>(in, M, call.n, C, call.acq, call.logits, call.tol, emb,
                                                call.out, fault, scratch.data());
      // `scratch` is freed in stream order, after the kernel.
    }
    QUARRY_CUDA_LAUNCH_CHECK("committee_kernel<block>");
  }
}

template <class E>
void launch_typed(Context& ctx, const ScoreCall& call, unsigned long long* fault) {
  EmbArgs emb;
  if (call.emb) emb = EmbArgs{call.emb->data, call.emb->dtype, call.emb->shape[1]};
  if (call.m > 0) return launch_committee<E>(ctx, call, emb, fault);
  switch (detail::single_model_need(call.acq)) {
    case detail::kNeedTop2: return launch_single<E, detail::kNeedTop2>(ctx, call, emb, fault);
    case detail::kNeedEntropy: return launch_single<E, detail::kNeedEntropy>(ctx, call, emb, fault);
    default: return launch_single<E, detail::kNeedSquares | detail::kNeedArgmax>(ctx, call, emb, fault);
  }
}

__global__ void gather_kernel(const float* scores, const std::int64_t* index, std::int64_t k, float* out) {
  for (std::int64_t j = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; j < k;
       j += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[j] = scores[index[j]];
}

// The pool on the device: input, embeddings and a fault word, copied from the host.
struct DevicePool {
  DeviceBuffer<unsigned char> input, emb;
  ArrayView emb_view;
  DeviceBuffer<unsigned long long> fault;
  ScoreCall call;
};

// A resident pool (the caller's device memory) is used in place: nothing is allocated or copied.
DevicePool upload(Context& ctx, const ScoreCall& host, std::size_t extra_bytes, const Residence& where) {
  ctx.wait_for(where.stream);
  const std::size_t in_bytes = where.on_device ? 0 : static_cast<std::size_t>(host.work()) * dtype_size(host.dtype);
  const std::size_t emb_bytes = host.emb && !where.on_device ? host.emb->nbytes() : 0;
  ctx.expect_fits(in_bytes + emb_bytes + extra_bytes + (64u << 20),
                  "scoring " + *host.input_name + " (" + std::to_string(host.work()) + " values of " +
                      dtype_name(host.dtype) + ")");
  DevicePool p;
  p.call = host;
  if (where.on_device) {
    p.fault = DeviceBuffer<unsigned long long>(ctx, 1, "fault word");
    QUARRY_CUDA_CHECK(cudaMemsetAsync(p.fault.data(), 0xff, sizeof(unsigned long long), ctx.stream()));
    return p;
  }
  p.input = DeviceBuffer<unsigned char>(ctx, in_bytes, "the pool's model outputs");
  copy_to_device(ctx, p.input.data(), host.input, in_bytes);
  p.call.input = p.input.data();
  if (host.emb) {
    p.emb = DeviceBuffer<unsigned char>(ctx, emb_bytes, "the pool's embeddings");
    copy_to_device(ctx, p.emb.data(), host.emb->data, emb_bytes);
    p.emb_view = ArrayView{p.emb.data(), host.emb->dtype, host.emb->shape};
    p.call.emb = &p.emb_view;
  }
  p.fault = DeviceBuffer<unsigned long long>(ctx, 1, "fault word");
  QUARRY_CUDA_CHECK(cudaMemsetAsync(p.fault.data(), 0xff, sizeof(unsigned long long), ctx.stream()));
  return p;
}

// After the scoring kernel: a bad row is reported in the CPU backend's words.
// A resident pool's bad row is diagnosed from a host copy of that one row (and its member rows).
void check_fault(Context& ctx, const DevicePool& p, const ScoreCall& host, bool on_device) {
  unsigned long long fault = kNoFault;
  copy_to_host(ctx, &fault, p.fault.data(), sizeof fault);
  if (fault == kNoFault) return;
  const auto row = static_cast<std::int64_t>(fault);
  if (!on_device) diagnose_row(host, row);
  const std::size_t es = dtype_size(host.dtype);
  const std::int64_t members = host.m > 0 ? host.m : 1;
  std::vector<unsigned char> rows(static_cast<std::size_t>(members * host.c) * es);
  for (std::int64_t j = 0; j < members; ++j)
    copy_to_host(ctx, rows.data() + static_cast<std::size_t>(j * host.c) * es,
                 static_cast<const unsigned char*>(host.input) + static_cast<std::size_t>(j * host.stride_m() + row * host.c) * es,
                 static_cast<std::size_t>(host.c) * es);
  ScoreCall one = host;  // the row alone: [1, C] or [M, 1, C], keeping its global index
  one.input = rows.data();
  one.n = 1;
  one.member_stride = host.c;
  one.row_offset = host.row_offset + row;
  std::vector<unsigned char> emb_row;
  ArrayView emb_view;
  if (host.emb) {
    const std::size_t eb = static_cast<std::size_t>(host.emb->shape[1]) * dtype_size(host.emb->dtype);
    emb_row.resize(eb);
    copy_to_host(ctx, emb_row.data(), static_cast<const unsigned char*>(host.emb->data) + static_cast<std::size_t>(row) * eb, eb);
    emb_view = ArrayView{emb_row.data(), host.emb->dtype, {1, host.emb->shape[1]}};
    one.emb = &emb_view;
  }
  diagnose_row(one, 0);
}

}  // namespace

void launch_score(Context& ctx, const ScoreCall& call, unsigned long long* d_fault) {
  if (call.n == 0) return;
  ctx.activate();
  switch (call.dtype) {
    case DType::f32: return launch_typed<F32>(ctx, call, d_fault);
    case DType::f64: return launch_typed<F64>(ctx, call, d_fault);
    case DType::f16: return launch_typed<F16>(ctx, call, d_fault);
    case DType::bf16: return launch_typed<BF16>(ctx, call, d_fault);
    default: QUARRY_FAIL(*call.input_name, ": unsupported dtype ", dtype_name(call.dtype));
  }
}

void launch_gather(Context& ctx, const float* d_scores, const std::int64_t* d_index, std::int64_t k,
                   float* d_out) {
  if (k <= 0) return;
  ctx.activate();
  gather_kernel<<<static_cast<int>(std::min<std::int64_t>((k + 255) / 256, 4096)), 256, 0, ctx.stream()>>>(
      d_scores, d_index, k, d_out);
  QUARRY_CUDA_LAUNCH_CHECK("gather_kernel");
}

void score(const ScoreCall& call, int device, const Residence& where) {
  if (call.n == 0) return;
  Context& ctx = context(device);
  DevicePool p = upload(ctx, call, where.out_on_device ? 0 : static_cast<std::size_t>(call.n) * sizeof(float), where);
  DeviceBuffer<float> out;
  if (!where.out_on_device) out = DeviceBuffer<float>(ctx, static_cast<std::size_t>(call.n), "scores");
  p.call.out = where.out_on_device ? call.out : out.data();
  launch_score(ctx, p.call, p.fault.data());
  check_fault(ctx, p, call, where.on_device);
  if (!where.out_on_device)
    copy_to_host(ctx, call.out, out.data(), static_cast<std::size_t>(call.n) * sizeof(float));
}

std::vector<std::int64_t> score_select(const ScoreCall& call, std::int64_t k, bool power, float beta,
                                       std::uint64_t seed, const std::vector<std::uint8_t>& excluded,
                                       int device, std::vector<float>* selected_scores,
                                       const Residence& where) {
  selected_scores->clear();
  if (call.n == 0) return {};
  Context& ctx = context(device);
  // Scores, keys (power), the exclusion bitmask and the selection next to the pool.
  const std::size_t n = static_cast<std::size_t>(call.n);
  DevicePool p = upload(ctx, call, n * sizeof(float) * (power ? 2 : 1) + n / 8 + 16 * static_cast<std::size_t>(k), where);
  DeviceBuffer<float> scores(ctx, n, "scores");
  p.call.out = scores.data();
  launch_score(ctx, p.call, p.fault.data());
  check_fault(ctx, p, call, where.on_device);
  if (k == 0) return {};
  DeviceBuffer<std::uint32_t> mask = upload_exclusions(ctx, excluded, call.n);
  DeviceBuffer<float> keys;
  const float* rank_by = scores.data();
  if (power) {
    keys = DeviceBuffer<float>(ctx, n, "power-sampling keys");
    gumbel_keys_checked(ctx, scores.data(), call.n, beta, seed, keys.data());
    rank_by = keys.data();
  }
  DeviceBuffer<std::int64_t> index(ctx, static_cast<std::size_t>(k), "selected indices");
  DeviceBuffer<float> chosen(ctx, static_cast<std::size_t>(k), "selected scores");
  topk_device(ctx, rank_by, call.n, k, mask.data(), index.data(), chosen.data());
  if (power) {  // the selection reports the scores, not the keys
    gather_kernel<<<static_cast<int>(std::min<std::int64_t>((k + 255) / 256, 4096)), 256, 0, ctx.stream()>>>(
        scores.data(), index.data(), k, chosen.data());
    QUARRY_CUDA_LAUNCH_CHECK("gather_kernel");
  }
  std::vector<std::int64_t> out(static_cast<std::size_t>(k));
  selected_scores->resize(static_cast<std::size_t>(k));
  copy_to_host(ctx, out.data(), index.data(), out.size() * sizeof(std::int64_t));
  copy_to_host(ctx, selected_scores->data(), chosen.data(), selected_scores->size() * sizeof(float));
  return out;
}

}  // namespace quarry::cuda
