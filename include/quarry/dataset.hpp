// Labeled data sets for the training loop: MNIST-family IDX folders, MedMNIST .npz files,
// feature vectors as NPY, and a built-in synthetic image pool. No LibTorch here: the readers
// work (and are tested) in every build.
//
// Dataset specs (quarry::load_dataset, and --dataset on the command line):
//   idx:DIR          train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
//                    t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]
//                    (images [N,H,W] or [N,H,W,3]; no validation split in the layout:
//                    one is held out of train, see DatasetOptions::val_fraction)
//   npz:FILE         MedMNIST layout: train_images, train_labels, val_images, val_labels,
//                    test_images, test_labels (images [N,H,W] grayscale or [N,H,W,3] RGB,
//                    uint8; labels [N] or [N,1]); a missing val split is held out of train
//   npy:X.npy,y.npy  feature vectors X [N,D] (any dtype) and integer labels y [N] or [N,1];
//                    validation and test splits are held out (val_fraction, test_fraction)
//   pool:X.npy       an unlabeled pool (what `quarry project` labels): features [N, D] of any
//                    dtype, or images [N, H, W] / [N, H, W, 3]; labels -1, no val/test split,
//                    num_classes 0
//   synthetic[:N]    a generated image pool of N training images (default 4000), see
//                    synthetic_images()
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quarry/io.hpp"

namespace quarry {

/// One split: `size` samples, each of Dataset::sample_numel() float32 values, row-major.
struct Split {
  std::vector<float> x;        // [size, sample_numel]: images scaled to [0, 1], features as read
  std::vector<std::int32_t> y; // [size]: class ids in [0, num_classes)
  /// [size]: the row of each sample in its source (the file's split), where held-out splits or
  /// a pool limit removed rows; empty means the identity. Pool indices (--labeled, the rows of
  /// infer's outputs, selections) are positions in this split, not file rows.
  std::vector<std::int64_t> rows;
  std::int64_t size() const { return static_cast<std::int64_t>(y.size()); }
  std::int64_t source_row(std::int64_t i) const { return rows.empty() ? i : rows[static_cast<std::size_t>(i)]; }
};

struct Dataset {
  std::string spec;   // as given ("npz:data/pneumoniamnist.npz")
  std::string name;   // short name for reports ("pneumoniamnist", "mnist", "synthetic")
  /// {channels, height, width} for images, {features} for feature vectors.
  std::vector<std::int64_t> sample_shape;
  int num_classes = 0;
  /// The pool (the training split; its labels are the oracle of a simulation), the validation
  /// split (early stopping) and the test split (reported metrics).
  Split train, val, test;

  bool is_image() const { return sample_shape.size() == 3; }
  std::int64_t sample_numel() const;
  /// "3882 train / 524 val / 624 test, 1x28x28, 2 classes"
  std::string describe() const;
  /// Samples of each class in `split`.
  std::vector<std::int64_t> class_counts(const Split& split) const;
};

/// The samples `rows` of `s` (each of `numel` values), in that order; `rows` of the result name
/// the source rows.
Split take_rows(const Split& s, std::int64_t numel, const std::vector<std::int64_t>& rows);

struct DatasetOptions {
  /// Seed of every random choice the loader makes (held-out splits, pool subsets, the
  /// synthetic pool's content).
  std::uint64_t seed = 0;
  /// Keep at most this many training samples (a stratified-by-chance random subset, the same
  /// for a seed); 0 keeps all. The validation split is held out before the limit applies.
  std::int64_t pool_limit = 0;
  /// Fraction of the training split held out for validation where the layout has none.
  double val_fraction = 0.1;
  /// Fraction held out for testing where the layout has no test split (npy).
  double test_fraction = 0.2;
};

/// Loads a dataset from a spec (see the top of this header). Errors (quarry::Error) name the
/// file and what was wrong: a missing file, images and labels of different lengths, a label
/// outside [0, 65535], an image that is not 2-D or 3-channel, a feature file that is not 2-D.
/// The number of classes is the largest label + 1 over all splits.
Dataset load_dataset(const std::string& spec, const DatasetOptions& options = {});

/// The built-in image pool: `n` training images (plus n/8 validation and n/4 test images) of
/// 28x28 grayscale shapes in 4 imbalanced classes (about 50/25/15/10 percent): a ring, a cross,
/// a filled square and a diagonal bar, drawn at random positions and sizes with noise, clutter
/// and partial occlusion, so that a share of the images is genuinely ambiguous. Deterministic
/// for a seed on any machine.
Dataset synthetic_images(std::int64_t n, std::uint64_t seed);

}  // namespace quarry
