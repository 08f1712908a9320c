// Instance-level model outputs: object detections (a ragged set of boxes per image, each with a
// class probability row) and multi-label outputs (an independent sigmoid probability per label).
// Each box or label is scored with the acquisition math of docs/acquisition.md and the scores of
// one image (one sample) are reduced to one score. The definitions are docs/detections.md's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"
#include "quarry/dense.hpp"  // Reduction

namespace quarry {

/// The acquisitions defined per box: the single-model scores of a probability row
/// (least-confidence, margin, ratio, entropy).
bool acquisition_is_box(Acquisition a);
/// The acquisitions defined per label of a multi-label output: least-confidence, margin, ratio
/// and entropy, and with a committee (`committee` true) also consensus-entropy, bald,
/// vote-entropy, kl-max and variation-ratio.
bool acquisition_is_multilabel(Acquisition a, bool committee);

struct BoxOptions {
  /// How the box scores of an image become one score: mean, max or sum (anything else is a
  /// UsageError).
  Reduction reduce = Reduction::mean;
  /// `probs` holds logits (a softmax per box).
  bool logits = false;
  /// Allowed |sum - 1| of a box's probabilities; negative: 1e-3 (1e-2 for float16/bfloat16).
  double sum_tolerance = -1.0;
  /// The score of an image without boxes (finite).
  float empty_score = 0.0f;
  /// Where given: every box's own score (after objectness), B floats.
  float* box_scores = nullptr;
  /// Used in error messages: "dets.npz: probs: image 4, box 2 (row 17): ...".
  std::string input_name = "detections";
  std::string offsets_name = "offsets", probs_name = "probs", objectness_name = "objectness";
};

/// Scores N images of detections. `offsets` is [N + 1] of any integer dtype, non-decreasing,
/// offsets[0] = 0 and offsets[N] = B: the boxes of image i are rows offsets[i] .. offsets[i+1]
/// of `probs` [B, C] (float32/float16/bfloat16/float64 class probabilities, or logits).
/// `objectness` (optional) is [B] in [0, 1]: each box's score is multiplied by it.
/// Returns N floats: the reduction of each image's box scores, `empty_score` for an image
/// without boxes. Bad offsets, a bad probability row or an objectness outside [0, 1] is an
/// Error naming the member, the image and the box; a committee acquisition (or egl,
/// badge-norm) is a UsageError. Host memory only.
std::vector<float> score_boxes(const ArrayView& offsets, const ArrayView& probs, const ArrayView* objectness,
                               Acquisition acquisition, const BoxOptions& options = {});

/// Detections read from an .npz archive: members `offsets` [N + 1], `probs` [B, C] and,
/// optionally, `objectness` [B] (a missing member is an Error naming the file and listing its
/// members). The shapes are checked by score_boxes.
struct Detections {
  Array offsets, probs, objectness;
  bool has_objectness = false;
  std::int64_t images() const { return offsets.rank() == 1 && offsets.shape()[0] > 0 ? offsets.shape()[0] - 1 : 0; }
};
Detections read_detections(const std::string& path);

struct MultilabelOptions {
  /// How the label scores of a sample become one score: mean, max or sum.
  Reduction reduce = Reduction::mean;
  /// The input holds logits (a sigmoid per label).
  bool logits = false;
  /// Used in error messages: "labels.npy: row 3, label 5: ...".
  std::string input_name = "input";
};

/// Scores N samples of multi-label outputs: [N, L] sigmoid probabilities (or logits), or a
/// committee [M, N, L] (the rank decides, as for quarry::score; the single-model scores of a
/// committee are taken on the members' mean probability). Each label is the binary distribution
/// (p, 1 - p) and is scored by the acquisition's definition on it; the L label scores of a
/// sample are reduced to one (0 when L = 0). A probability outside [0, 1] (or a NaN or Inf,
/// also among logits) is an Error naming the row, the member and the label.
std::vector<float> score_multilabel(const ArrayView& probs, Acquisition acquisition,
                                    const MultilabelOptions& options = {});

}  // namespace quarry
