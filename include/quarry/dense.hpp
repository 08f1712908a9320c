// Dense model outputs: segmentation maps and volumes. A case is C class maps over a grid of
// voxels (pixels for 2D images); every acquisition of the contract that reads one probability
// row is computed per voxel, and the voxel scores are reduced per case (or per slice) in the
// same pass. The definitions are docs/dense.md's.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"
#include "quarry/device.hpp"

namespace quarry {

/// How the voxel scores of a case (or slice) become one score.
enum class Reduction : int {
  mean,             // mean over the voxels counted
  max,              // largest voxel score
  sum,              // sum of the voxel scores
  topq,             // mean of the ceil(q * n) largest voxel scores (exact)
  foreground_mean,  // mean over the voxels whose predicted class is not the background class
};

struct ReduceSpec {
  Reduction how = Reduction::mean;
  double q = 0.0;  // topq only: in (0, 1]
};

/// "mean", "max", "sum", "topq:0.01", "foreground-mean"; anything else is a UsageError naming
/// the text and the valid forms.
ReduceSpec parse_reduction(std::string_view text);
std::string reduction_name(const ReduceSpec& r);

struct DenseOptions {
  ReduceSpec reduce{};
  /// The input holds logits (softmax per voxel in the same pass).
  bool logits = false;
  /// Allowed |sum - 1| of a voxel's probabilities; negative: 1e-3 (1e-2 for float16/bfloat16).
  double sum_tolerance = -1.0;
  /// Classes on the last axis ([N, ..., C], as TensorFlow writes them) instead of axis 1
  /// ([N, C, ...], as PyTorch and MONAI write them).
  bool channels_last = false;
  /// The input is a committee [M, N, C, spatial...] (implied by a committee acquisition; with a
  /// single-model acquisition, that score of the members' mean).
  bool committee = false;
  /// A voxel whose predicted class (argmax) is this one is background for foreground-mean.
  int background = 0;
  /// Per class: a voxel's score is multiplied by the weight of its predicted class (empty: 1).
  std::vector<float> class_weights;
  /// Optional ignore mask over the voxels, [N, spatial...] (any dtype; [N, 1, spatial...] is
  /// accepted too): voxels where it is nonzero are left out of every reduction.
  const ArrayView* ignore = nullptr;
  /// Score per slice along this spatial axis (0 is the first spatial axis) instead of per
  /// case; -1: per case.
  int slice_axis = -1;
  /// Score per patch instead of per case: the patch size along each spatial axis (as many sizes
  /// as spatial axes, or one for every axis), patches tiling the grid from voxel 0 in row-major order (the last axis
  /// fastest); those at the far edges are cut to the grid. Empty: none. Not with slice_axis.
  std::vector<std::int64_t> patch;
  /// Where given: the voxel scores themselves (after class weights; 0 where ignored), as many
  /// floats as the input has voxels, in the input's voxel order.
  float* voxel_map = nullptr;
  std::string input_name = "input";
  std::string ignore_name = "ignore mask";
  /// Where it runs: cpu (the default), cuda[:N] (the group is copied to the device, scored
  /// there, its scores and voxel map copied back), or auto (CUDA where this build has it and a
  /// device is visible). The input stays host memory either way.
  DeviceSpec device{DeviceKind::cpu, 0};
};

/// The geometry of a dense input.
struct DenseLayout {
  std::int64_t members = 0;  // committee members M (0: a single model)
  std::int64_t cases = 0;    // N
  std::int64_t classes = 0;  // C
  std::vector<std::int64_t> spatial;  // the voxel grid of one case
  std::int64_t voxels = 0;   // product of spatial
  bool channels_last = false;
  /// Slices per case along `axis` (1 for axis -1).
  std::int64_t slices(int axis) const;
  /// Patches per case of size `patch` (1 where `patch` is empty).
  std::int64_t patches(const std::vector<std::int64_t>& patch) const;
  /// The outputs per case: slices along `axis`, else patches of `patch`, else 1.
  std::int64_t regions(int axis, const std::vector<std::int64_t>& patch) const {
    return axis >= 0 ? slices(axis) : patches(patch);
  }
};

/// The layout of `input` ([N,C,spatial...] or committee [M,N,C,spatial...], classes last with
/// `channels_last`); `committee` says which of the two ranks is meant when both could be.
/// A rank below 3 (or 4 for a committee) is an Error: that is an [N,C] pool, not dense output.
/// `name` (the file) begins the error message.
DenseLayout dense_layout(const ArrayView& input, bool committee, bool channels_last, const std::string& name = "");

/// True for the acquisitions defined per voxel (every one but egl and badge-norm, which need
/// embeddings of whole samples).
bool acquisition_is_dense(Acquisition a);

/// Scores every case of `input` (host memory): N floats, or N * S for slices (case-major:
/// case n's slices are out[n*S .. n*S+S)). A committee acquisition reads the input as
/// [M,N,C,spatial...]. A bad voxel (NaN, Inf, negative probability, a sum off 1) is an Error
/// naming the case, the voxel's coordinates and the value.
std::vector<float> score_dense(const ArrayView& input, Acquisition acquisition, const DenseOptions& options);

/// The first voxel (its coordinate along each spatial axis) of patch r of a grid `spatial`
/// tiled by `patch` (DenseOptions::patch).
std::vector<std::int64_t> patch_origin(const std::vector<std::int64_t>& spatial, const std::vector<std::int64_t>& patch,
                                       std::int64_t r);

/// Dense outputs stored in files, read a group of cases at a time:
///  - one array [N, C, spatial...] (committee [M, N, C, spatial...]) in an .npy file
///    (memory-mapped; the pages of a scored group leave memory) or FILE.npz:MEMBER;
///  - one file per case, as a glob (sorted by name) or a comma-separated list: NIfTI .nii or
///    .nii.gz holding the classes along its 4th dimension (or the 5th where the 4th is 1, as
///    MONAI writes vector images), read as [C, z, y, x]; or an nnU-Net --save_probabilities
///    .npz (member `probabilities`, [C, spatial...]). Cases may differ in size.
/// Ignore masks use the same forms: one array [N, spatial...], or one file per case.
class DenseFiles {
 public:
  DenseFiles() = default;
  /// `committee`: one array is [M, N, C, ...] (case files hold single models). `masks`: the
  /// files are ignore masks ([N, spatial...], or per case [spatial...]: a NIfTI of 3 dims).
  static DenseFiles open(const std::string& spec, bool committee, bool masks = false);
  std::int64_t cases() const { return cases_; }
  bool one_array() const { return paths_.empty(); }
  /// "pool.npy" case 3 is "pool.npy[3]"; a case file is its path.
  std::string case_name(std::int64_t i) const;
  /// Bytes of case i's data (an estimate for a compressed case file: its decompressed size is
  /// known only once read).
  std::size_t case_bytes(std::int64_t i) const;
  /// Cases [first, first + count) as one array ([count, C, ...], committees [M, count, C, ...]);
  /// count is 1 for case files. Valid until the next call.
  ArrayView read(std::int64_t first, std::int64_t count);
  /// Lets the pages of cases read so far leave memory (a memory-mapped array).
  void release(std::int64_t first, std::int64_t count);
  const std::string& spec() const { return spec_; }

 private:
  std::string spec_;
  bool committee_ = false, masks_ = false;
  Array whole_, current_;
  bool mapped_ = false;
  std::vector<std::string> paths_;
  std::int64_t cases_ = 0;
};

/// One case's (or slice's) score, with the case it belongs to.
struct DenseScores {
  std::vector<float> score;           // per case, or per slice of each case in case order
  std::vector<std::int64_t> case_of;  // the case of each score
  std::vector<std::int64_t> slice;    // the slice of each score (0 per case)
  std::vector<std::int64_t> slices;   // per case: its number of slices or patches (1 without)
  std::vector<std::vector<std::int64_t>> grids;  // per case: its voxel grid (spatial shape)
};

/// Scores every case of `files` in groups of at most `memory_budget` bytes (at least one case;
/// <= 0: a quarter of the available memory). `ignore` (optional) holds one mask per case, as
/// `files` does. `voxel_map` (optional; one-array inputs) receives every voxel's score.
/// `progress(done, total)` is called after each group.
DenseScores score_dense_files(DenseFiles& files, Acquisition acquisition, DenseOptions options,
                              std::int64_t memory_budget = 0, DenseFiles* ignore = nullptr,
                              const std::function<void(std::int64_t, std::int64_t)>& progress = {});

/// Selection of (case, slice) pairs: the k highest slice scores with at most `per_case` slices
/// from one case (0: no limit). Ties go to the lower (case, slice). `slice_scores` is N * S.
struct SliceSelection {
  std::vector<std::int64_t> case_index, slice;
  std::vector<float> score;
  std::int64_t size() const { return static_cast<std::int64_t>(score.size()); }
};
SliceSelection select_slices(const std::vector<float>& slice_scores, std::int64_t slices_per_case,
                             std::int64_t k, std::int64_t per_case,
                             const std::vector<std::int64_t>& exclude_cases = {});

}  // namespace quarry
