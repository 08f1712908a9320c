// The CPU backend of quarry::score_boxes and quarry::score_multilabel (src/engine/detections.cpp
// validates the call and the offsets first, and turns a fault into an Error).
#pragma once

#include <cstdint>
#include <limits>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"
#include "quarry/dense.hpp"

namespace quarry::cpu {

constexpr std::int64_t kNoFault = std::numeric_limits<std::int64_t>::max();

/// The first bad box (lowest row) or label (lowest row, then member, then label).
struct InstanceFault {
  enum Code : int { none = 0, nonfinite = 1, bad_sum = 2, objectness = 3, out_of_unit = 4 };
  std::int64_t row = kNoFault;
  std::int64_t member = -1;  // committee member of a multi-label input, or -1
  std::int64_t label = -1;   // label of a multi-label input
  int code = none;
  float value = 0.0f;        // the row sum (bad_sum) or the offending value
  bool found() const { return code != none; }
};

struct BoxCall {
  const void* probs = nullptr;  // contiguous host [B, C]
  DType dtype = DType::f32;
  std::int64_t boxes = 0, classes = 0;
  const void* objectness = nullptr;  // contiguous host [B], or null
  DType objectness_dtype = DType::f32;
  Acquisition acquisition = Acquisition::entropy;
  bool logits = false;
  float tol = 1e-3f;
};

/// Every box's score (times its objectness) into out[B]; returns the first bad box, if any.
InstanceFault score_box_rows(const BoxCall& call, float* out);

/// out[i] = the reduction (mean, max or sum, accumulated in double in box order) of
/// box[offsets[i] .. offsets[i+1]), or `empty` where the image has no box.
void reduce_images(const std::int64_t* offsets, std::int64_t images, const float* box, Reduction how, float empty,
                   float* out);

struct MultilabelCall {
  const void* data = nullptr;  // contiguous host [N, L] or [M, N, L]
  DType dtype = DType::f32;
  std::int64_t members = 0;  // 0: a single model [N, L]
  std::int64_t rows = 0, labels = 0;
  Acquisition acquisition = Acquisition::entropy;
  bool logits = false;
  Reduction reduce = Reduction::mean;
};

/// Every sample's reduced label score into out[N]; returns the first bad value, if any.
InstanceFault score_multilabel(const MultilabelCall& call, float* out);

}  // namespace quarry::cpu
