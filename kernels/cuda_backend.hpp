// The CUDA backend as the dispatchers in src/core/ call it: plain C++ (no CUDA header), host
// memory in and out. Compiled only where QUARRY_BUILD_CUDA is 1; the kernels and their device-
// pointer entry points are in kernels/*.cu and kernels/device_api.cuh.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/score_call.hpp"

namespace quarry::cuda {

/// Scores a host-resident pool on `device`: copies the input (and embeddings) to the device,
/// runs the scoring kernel, copies the N scores back to call.out. A bad row is an Error with
/// the same message as the CPU backend's; a pool that does not fit in device memory is an Error
/// naming the sizes.
void score(const ScoreCall& call, int device);

/// Exact top-k of n host scores on the device; `excluded` as in cpu::topk (empty: none).
/// Indices in rank order (score descending, lower index first), identical to cpu::topk.
std::vector<std::int64_t> topk(const float* scores, std::int64_t n, std::int64_t k,
                               const std::vector<std::uint8_t>& excluded, int device);

/// Power sampling on the device: the Gumbel keys of detail::gumbel_key (bit-identical to the
/// CPU's), then topk of the keys. Same selection as the CPU for the same seed.
std::vector<std::int64_t> power(const float* scores, std::int64_t n, std::int64_t k, float beta,
                                std::uint64_t seed, const std::vector<std::uint8_t>& excluded,
                                int device);

/// Scores and selects without the scores leaving the device (call.out is ignored). `power`
/// false: top-k by score; true: power sampling with beta and seed. Returns the selected
/// indices in rank order and their scores in *selected_scores.
std::vector<std::int64_t> score_select(const ScoreCall& call, std::int64_t k, bool power,
                                       float beta, std::uint64_t seed,
                                       const std::vector<std::uint8_t>& excluded, int device,
                                       std::vector<float>* selected_scores);

/// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB, driver 13.0)" for --version and benchmarks.
std::string device_description(int device);

}  // namespace quarry::cuda
