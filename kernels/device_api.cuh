// Device-pointer entry points of the CUDA backend, for the host entry points
// (kernels/cuda_backend.hpp), the benchmarks and the future streaming/MPI paths. Everything is
// enqueued on ctx.stream(); nothing here copies the pool to or from the host.
#pragma once

#include <cstdint>
#include <vector>

#include "core/score_call.hpp"
#include "cpu/dense_cpu.hpp"
#include "kernels/context.cuh"

namespace quarry::cuda {

/// No bad row seen (the initial value of a fault word).
constexpr unsigned long long kNoFault = ~0ull;

/// Launches the scoring kernels for a validated call whose input, embeddings (call.emb->data)
/// and output (call.out) are device pointers. A bad row (NaN/Inf, negative probability, sum
/// off, bad embedding) lowers *d_fault, a device word the caller set to kNoFault, to that row's
/// index: the caller checks it after the stream and reports the row (diagnose_row says
/// why). Asynchronous.
void launch_score(Context& ctx, const ScoreCall& call, unsigned long long* d_fault);

/// out[j] = d_scores[d_index[j]] for j < k (the scores of a selection made on other keys).
/// Asynchronous.
void launch_gather(Context& ctx, const float* d_scores, const std::int64_t* d_index, std::int64_t k,
                   float* d_out);

/// The exclusion mask (excluded[i] != 0: never select i; empty: none) as the device bitmask
/// topk_device takes; an empty buffer (null data) when nothing is excluded.
DeviceBuffer<std::uint32_t> upload_exclusions(Context& ctx, const std::vector<std::uint8_t>& excluded,
                                              std::int64_t n);

/// Exact top-k of n device scores: writes the k winners' indices and scores, in rank order
/// (score descending, lower index first: identical to cpu::topk), to d_index[k] and d_score[k]
/// (d_score may be null: indices only).
/// `d_excluded` is a device bitmask of ceil(n/32) words (bit i%32 of word i/32 set: index i is
/// never selected) or null. Requires 0 < k <= selectable and n < 2^32. A NaN score is an Error
/// naming the lowest NaN index. Synchronises the stream (the select passes read small counts
/// back to the host).
void topk_device(Context& ctx, const float* d_scores, std::int64_t n, std::int64_t k,
                 const std::uint32_t* d_excluded, std::int64_t* d_index, float* d_score);

/// Gumbel-top-k keys of power sampling, keys[i] = detail::gumbel_key(scores[i], beta, seed,
/// first_index + i) (the global index: a chunk of a pool gets its rows' keys), bit-identical to
/// the CPU's cpu::gumbel_keys. A score that is NaN, negative or infinite lowers *d_fault to its
/// local index i (as launch_score). Asynchronous.
void launch_gumbel_keys(Context& ctx, const float* d_scores, std::int64_t n, float beta,
                        std::uint64_t seed, float* d_keys, unsigned long long* d_fault,
                        std::int64_t first_index = 0);

/// launch_gumbel_keys with its own fault word, checked: a bad score is the CPU's Error
/// ("score at index first_index + I is V; power sampling needs finite scores >= 0").
/// Synchronises.
void gumbel_keys_checked(Context& ctx, const float* d_scores, std::int64_t n, float beta,
                         std::uint64_t seed, float* d_keys, std::int64_t first_index = 0);

/// Dense scores of a validated call (kernels/dense.cu) whose input (d_input, the layout of
/// call.layout), ignore mask (d_mask, where call.ignore is set: its dtype) and voxel map (d_map,
/// where not null) are device memory; writes N (or N * S) scores to d_out. call.data is the host
/// copy of the input used to word a bad voxel as the CPU does (null: a shorter message).
/// Synchronises the stream (the fault word is read back).
void dense_on_device(Context& ctx, const cpu::DenseCall& call, const void* d_input, const void* d_mask,
                     float* d_out, float* d_map);

}  // namespace quarry::cuda
