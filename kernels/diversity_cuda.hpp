// The CUDA backend of the diversity strategies, as src/engine/diversity.cpp calls it: plain C++
// (no CUDA header), host memory in and out, the same signatures as the CPU backend
// (src/cpu/diversity_cpu.hpp) plus the device, so that the dispatcher calls either with the
// inputs it has already validated and prepared. Compiled only where QUARRY_BUILD_CUDA is 1.
//
// Every function returns exactly what its cpu:: twin returns for the same inputs (same picks,
// same order, same scores, same k-means labels and centroids): see kernels/diversity.cu for
// why the picks are identical.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rows.hpp"

namespace quarry::cuda {

/// As cpu::kcenter (k-center greedy; `labeled` sorted and unique are the initial centres).
Selection kcenter(const FloatRows& x, const std::vector<std::int64_t>& labeled, std::int64_t k,
                   const ProgressFn& progress, int device);

/// As cpu::badge (a = p - e_yhat [n, c] in double, h [n, d]; excluded empty: none).
Selection badge(const std::vector<double>& a, std::int64_t c, const FloatRows& h,
                 const std::vector<std::uint8_t>& excluded, std::int64_t k, std::uint64_t seed,
                 const ProgressFn& progress, int device);

/// As cpu::kmeans (k-means++ seeding, then Lloyd iterations; 1 <= clusters <= n).
KMeansOut kmeans(const FloatRows& x, std::int64_t clusters, int iterations, std::uint64_t seed,
                      const ProgressFn& progress, int device);

}  // namespace quarry::cuda
