// The CPU backend of quarry::score_dense (src/engine/dense.cpp validates the call first).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quarry/dense.hpp"

namespace quarry::cpu {

struct DenseCall {
  const void* data = nullptr;  // contiguous host memory
  DType dtype = DType::f32;
  DenseLayout layout;          // members >= 1 here (1 for a single model)
  bool committee = false;
  Acquisition acquisition = Acquisition::entropy;
  bool logits = false;
  float tol = 1e-3f;
  ReduceSpec reduce;
  int background = 0;
  const float* weights = nullptr;  // C, or null
  const ArrayView* ignore = nullptr;  // contiguous host, N * voxels elements
  int slice_axis = -1;
  std::vector<std::int64_t> patch;  // DenseOptions::patch
  float* voxel_map = nullptr;
  std::string input_name;
};

/// Scores every case (or slice, or patch) into `out` (N, or N * S); an Error names the first bad
/// voxel.
void score_dense(const DenseCall& call, float* out);

}  // namespace quarry::cpu
