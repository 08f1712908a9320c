// Training and inference with LibTorch: the model side of the active-learning loop.
// This header has no LibTorch include (the implementation is in src/train/); a build without
// LibTorch (-DQUARRY_TORCH=OFF) still declares these, and every call is then an Error saying so.
//
// Models (--model):
//   cnn                a small convolutional net for images of 28x28 to 64x64 (any channels):
//                      two conv(3x3)+ReLU+max-pool blocks (16, 32 channels), an adaptive
//                      average pool to 7x7, a 128-unit penultimate layer (the embeddings),
//                      dropout (p = 0.5) and the linear classifier
//   mlp                for feature vectors (images: their pixels, flattened): two 256-unit ReLU layers, a 128-unit penultimate
//                      layer, dropout (p = 0.5), the linear classifier
//   torchscript:FILE   a user's TorchScript model: forward(x) returns logits [B, C]; an
//                      `embed(x)` method, where present, returns the penultimate features [B, D]
//
// MC-dropout (--committee mc:M) keeps dropout on at inference. For cnn and mlp, dropout sits
// only before the classifier, so the trunk runs once per image and the M samples cost M small
// matrix products; their masks are a pure function of (seed, sample, pool row, unit), the same
// for any batch size, device or thread count. A TorchScript model is run M times in training
// mode (its masks come from LibTorch's generator, seeded).
//
// Reproducibility: the same seed gives the same model and outputs on the CPU for a given
// machine and thread count; on CUDA, cuDNN's convolution kernels may differ in the last bits.
// Ensembles (--committee ensemble:M) train M models from different initialisations and data
// orders (seed + member); the pool's probabilities are the members' mean, its embeddings those
// of member 0. (TorchScript members all start from the file's weights: they differ by data
// order and dropout only.)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "quarry/array.hpp"
#include "quarry/dataset.hpp"
#include "quarry/device.hpp"
#include "quarry/progress.hpp"

namespace quarry {

/// True when this build has LibTorch.
bool have_torch();

struct ModelSpec {
  enum class Kind { cnn, mlp, torchscript } kind = Kind::cnn;
  std::string path;  // torchscript: the file
};
/// "cnn", "mlp", "torchscript:FILE"; anything else is an Error listing the valid forms.
ModelSpec parse_model_spec(const std::string& text);
std::string model_spec_string(const ModelSpec& m);
/// The default model of a dataset: cnn for images, mlp for feature vectors.
ModelSpec default_model(const Dataset& data);

struct CommitteeSpec {
  enum class Kind { none, mc, ensemble } kind = Kind::none;
  int members = 0;
};
/// "none", "mc:M", "ensemble:M" (M >= 2).
CommitteeSpec parse_committee(const std::string& text);
std::string committee_string(const CommitteeSpec& c);

struct TrainOptions {
  ModelSpec model;
  /// ensemble:M trains M members; mc:M is an inference setting kept with the model.
  CommitteeSpec committee;
  int max_epochs = 40;
  /// Early stopping: stop after this many epochs without a better validation balanced accuracy
  /// (ties: a lower class-weighted validation loss), and keep the weights of the best epoch.
  int patience = 6;
  /// At least this many optimiser steps, whatever the labeled set's size (a 200-label set is
  /// 4 batches an epoch): epochs are lengthened to reach it.
  int min_steps = 300;
  int batch_size = 64;
  double learning_rate = 1e-3;
  double weight_decay = 1e-4;
  /// Weight the loss by inverse class frequency of the labeled set (imbalanced pools).
  bool class_weights = true;
  std::uint64_t seed = 0;
  /// Where LibTorch trains and infers: auto = CUDA where LibTorch has it, else the CPU.
  DeviceSpec device{};
  /// CPU threads of LibTorch; 0: all hardware threads.
  int threads = 0;
};

struct TrainReport {
  int epochs = 0;            // epochs run (summed over ensemble members)
  int best_epoch = 0;        // of member 0
  double best_val_loss = 0;  // of member 0, at its best epoch
  double best_val_balanced_accuracy = 0;  // of member 0, at its best epoch
  double seconds = 0;
  std::string device;        // "cpu", "cuda:0"
};

/// Host arrays, or with InferOptions::on_device and a model on CUDA, arrays in the model's CUDA
/// memory (Array::location()), which the engine reads in place.
struct Inference {
  Array probs;       // [N, C] float32 (ensembles: the members' mean)
  Array embeddings;  // [N, D] float32
  Array committee;   // [M, N, C] float32, or empty without a committee
};

struct InferOptions {
  /// Committee to draw: none, mc:M (dropout samples), ensemble:M (needs a model trained as
  /// one; M may be smaller than the members trained). Default: what the model was trained with.
  CommitteeSpec committee{CommitteeSpec::Kind::none, -1};
  std::uint64_t seed = 0;  // MC-dropout masks
  int batch_size = 512;
  int threads = 0;
  /// A model on CUDA keeps its outputs there (for the engine to score and select in place);
  /// false: host arrays whatever the device.
  bool on_device = false;
};


// ------------------------------------------------------------------ self-supervised pretraining
//
// Embeddings of an unlabeled image pool without any labels or outside model, for the cold
// start (typiclust, probcover): SimCLR-style contrastive learning (Chen et al. 2020). Two
// random views of every image of a batch (a random rotation, scale, aspect and shift; a
// brightness and contrast change; with probability 1/4 a blanked rectangle) go through a small
// convolutional encoder and a projection head; the loss (NT-Xent) asks each view's projection
// to be nearer its twin than the other 2B - 2 views of the batch. The encoder: three
// conv(3x3)+batch-norm+ReLU blocks (16, 32, 64 channels; max-pool after the first two), the
// last map pooled to 7x7 and flattened, a 128-unit linear layer; images larger than 32x32 are
// pooled down to at most 32x32 first (before augmenting). The projection head (ReLU, 128, ReLU,
// 64) serves the loss only. The embeddings are the 128 linear outputs, computed with
// batch-norm statistics re-estimated on the clean pool, scaled to unit length.

struct PretrainOptions {
  int epochs = 10;
  int batch_size = 256;            // images per step (2 x batch_size views)
  double learning_rate = 1e-3;     // Adam
  double temperature = 0.2;        // of the NT-Xent loss
  std::uint64_t seed = 0;          // initialisation, data order and augmentations
  DeviceSpec device{};             // auto = CUDA where LibTorch has it
  int threads = 0;                 // LibTorch's CPU threads; 0: all
};

struct PretrainReport {
  std::vector<double> loss;  // the mean contrastive loss of each epoch
  std::int64_t parameters = 0;
  double seconds = 0;
  std::string device;
};

/// The [n, 128] float32 embeddings (unit rows) of the n images x [n, C*H*W] (pixels in [0, 1],
/// `sample_shape` {C, H, W}), after `options.epochs` epochs of contrastive pretraining on them.
/// Reproducible for a seed on a given machine and thread count. `progress`: phase "epoch".
/// Errors: no LibTorch, feature vectors (pretraining needs images), fewer than 2 images,
/// images below 8x8, bad options, a loss or embeddings that diverged (non-finite or all zero).
Array pretrain_embeddings(const float* x, std::int64_t n, const std::vector<std::int64_t>& sample_shape,
                          const PretrainOptions& options, PretrainReport* report = nullptr,
                          const ProgressFn& progress = {});

/// A trained classifier (one model, or an ensemble).
class Model {
 public:
  Model();
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  /// Trains on the samples `labeled` (indices into data.train, with their labels) with early
  /// stopping on data.val (at most 1000 of its samples, evenly spaced). Reproducible for a seed
  /// on a given machine and thread count. `progress`: phase "epoch" after every epoch (done of
  /// at most options.max_epochs). Errors: no LibTorch, an empty labeled set, an index outside the pool, a TorchScript model
  /// that fails on the data's shape (with LibTorch's message).
  static Model train(const Dataset& data, const std::vector<std::int64_t>& labeled,
                     const TrainOptions& options, TrainReport* report = nullptr,
                     const ProgressFn& progress = {});

  /// Inference over `n` samples x [n, sample_numel] in one pass: probabilities, embeddings and
  /// the committee outputs.
  Inference infer(const float* x, std::int64_t n, const InferOptions& options = {}) const;
  Inference infer(const Split& split, const InferOptions& options = {}) const {
    return infer(split.x.data(), split.size(), options);
  }
  /// Predicted classes (argmax of the probabilities) of a split.
  std::vector<std::int32_t> predict(const Split& split, int threads = 0) const;

  /// Saves to one file (a LibTorch archive; written atomically) and loads it back.
  void save(const std::string& path) const;
  static Model load(const std::string& path, const DeviceSpec& device = {});

  /// True for a default-constructed (or moved-from) model, which has no members.
  bool empty() const;
  int num_classes() const;
  std::int64_t embedding_dim() const;
  const std::vector<std::int64_t>& sample_shape() const;
  const ModelSpec& spec() const;
  const CommitteeSpec& committee() const;
  /// "cnn, 1x28x28 -> 2 classes, 128-d embeddings, ensemble of 5, 105k parameters"
  std::string describe() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace quarry
