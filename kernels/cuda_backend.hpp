// The CUDA backend as the dispatchers in src/engine/ call it: plain C++ (no CUDA header), host
// memory in and out, or the caller's device memory read in place (Residence). Compiled only where QUARRY_BUILD_CUDA is 1; the kernels and their device-
// pointer entry points are in kernels/*.cu and kernels/device_api.cuh.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/score_call.hpp"
#include "cpu/dense_cpu.hpp"

namespace quarry::cuda {

/// Where the caller's arrays are. By default host memory: inputs are copied to the device and
/// results back. `on_device`: the inputs (the pool, its embeddings, or the scores to select
/// from) are already on the call's device and are read in place; `out_on_device`: score()
/// writes the scores straight to call.out on the device. `stream` (a cudaStream_t, or null):
/// the caller's stream; the work waits for what the caller has queued on it.
struct Residence {
  bool on_device = false;
  bool out_on_device = false;
  void* stream = nullptr;
};

/// Scores a pool on `device`: copies the input (and embeddings) to the device unless they are
/// resident, runs the scoring kernel, and copies the N scores back to call.out (or writes them
/// there, out_on_device). A bad row is an Error with the same message as the CPU backend's; a
/// pool that does not fit in device memory is an Error naming the sizes.
void score(const ScoreCall& call, int device, const Residence& where = {});

/// Exact top-k of n scores on the device; `excluded` as in cpu::topk (empty: none). Indices in
/// rank order (score descending, lower index first), identical to cpu::topk. With `chosen`, the
/// selected scores too (needed for device-resident scores, which the host cannot index).
std::vector<std::int64_t> topk(const float* scores, std::int64_t n, std::int64_t k,
                               const std::vector<std::uint8_t>& excluded, int device,
                               const Residence& where = {}, std::vector<float>* chosen = nullptr);

/// Power sampling on the device: the Gumbel keys of detail::gumbel_key (bit-identical to the
/// CPU's), keyed by the global index first_index + i, then topk of the keys. Same selection as
/// the CPU for the same seed. With `chosen`, the selected samples' scores (not their keys).
std::vector<std::int64_t> power(const float* scores, std::int64_t n, std::int64_t k, float beta,
                                std::uint64_t seed, const std::vector<std::uint8_t>& excluded,
                                int device, std::int64_t first_index = 0,
                                const Residence& where = {}, std::vector<float>* chosen = nullptr);

/// Copies `bytes` of `device` memory to the host (the documented copy of a CUDA array that a
/// host-only function receives); waits for `stream` first.
void copy_to_host(void* dst, const void* src, std::size_t bytes, int device, void* stream = nullptr);

/// Free memory of the device, in bytes (cudaMemGetInfo).
std::size_t free_memory(int device);

/// Streaming (src/engine/stream.cpp): a pool's chunks go through the device with pinned double
/// buffers and two streams, so that the host-to-device copy of chunk i+1 overlaps the scoring
/// of chunk i. chunks[i] is a host-memory call for rows [row_offset, row_offset + n) of the
/// pool: `input` points at the chunk's first row of member 0, `member_stride` is the pool
/// file's N_i * C, `emb` views the chunk's embedding rows; `out` is ignored. Source memory that
/// is already pinned (cudaHostRegister / cudaMallocHost) is copied to the device directly,
/// pageable memory is staged through the pinned buffers. Device memory: about twice the
/// largest chunk. A bad row is the CPU backend's Error for its global row.
///
/// score_chunks: done(i, scores) is called on the calling thread in chunk order, with chunk
/// i's n scores in host memory that stays valid during the call.
void score_chunks(const std::vector<ScoreCall>& chunks, int device,
                  const std::function<void(std::size_t, const float*)>& done);

/// select_chunks: every chunk is scored and its best min(k, selectable rows of the chunk) are
/// selected on the device: by score (power false) or by the Gumbel keys of power sampling keyed
/// by global index (power true). `exclude_sorted` holds global indices, sorted and unique.
/// done(i, index, key, score) gets chunk i's picks in chunk order, sorted by key descending then
/// index ascending, with global indices; key is the score for top-k.
using ChunkPicks = std::function<void(std::size_t, std::vector<std::int64_t>&&, std::vector<float>&&,
                                      std::vector<float>&&)>;
void select_chunks(const std::vector<ScoreCall>& chunks, std::int64_t k, bool power, float beta,
                   std::uint64_t seed, const std::vector<std::int64_t>& exclude_sorted, int device,
                   const ChunkPicks& done);

/// Scores and selects without the scores leaving the device (call.out is ignored). `power`
/// false: top-k by score; true: power sampling with beta and seed. Returns the selected
/// indices in rank order and their scores in *selected_scores.
std::vector<std::int64_t> score_select(const ScoreCall& call, std::int64_t k, bool power,
                                       float beta, std::uint64_t seed,
                                       const std::vector<std::uint8_t>& excluded, int device,
                                       std::vector<float>* selected_scores,
                                       const Residence& where = {});

/// Dense outputs (kernels/dense.cu): scores every case (or slice) of a validated call in host
/// memory into `out` (N, or N * S floats), as cpu::score_dense does: the group is copied to the
/// device, scored and reduced there (mean, max, sum, foreground-mean in one pass; top-q by an
/// exact select), and the scores (and call.voxel_map) copied back. A bad voxel is the CPU
/// backend's Error, word for word; a group that does not fit in device memory is an Error
/// naming the sizes.
void score_dense(const cpu::DenseCall& call, float* out, int device);

/// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB, driver 13.0)" for --version and benchmarks.
std::string device_description(int device);

}  // namespace quarry::cuda
