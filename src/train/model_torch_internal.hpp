// Internal to the LibTorch model (model_torch.cpp: the model, inference, saving and loading;
// model_torch_train.cpp: training): the built-in networks, the members of a model (a network
// or a TorchScript module) and Model::Impl, with the helpers both files use.
#pragma once
#include <torch/script.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "quarry/device.hpp"
#include "quarry/train.hpp"

namespace quarry {
namespace torch_detail {

inline constexpr double kDropout = 0.5;
inline constexpr std::int64_t kEmbeddingDim = 128;

/// LibTorch's message without its backtrace.
std::string torch_message(const c10::Error& e);
/// LibTorch's CPU threads: `threads`, or all hardware threads for 0.
void set_threads(int threads);
/// The device a DeviceSpec names; an Error where LibTorch has no such device.
torch::Device torch_device(const DeviceSpec& d);
/// Turns the exception being handled into a quarry::Error prefixed by `what`: LibTorch's
/// c10::Error, the TorchScript interpreter's std::runtime_error (a user model failing on the
/// data), std::bad_alloc; a quarry::Error passes through.
[[noreturn]] void fail_from_current(const std::string& what);
/// "cpu", "cuda:0".
std::string device_name(const torch::Device& d);

// ------------------------------------------------------------------ built-in networks

// A trunk ending in the embeddings, then dropout and the classifier. Dropout is only here, so
// MC-dropout samples need the trunk once per image.
struct NativeNet : torch::nn::Module {
  torch::nn::Linear classifier{nullptr};
  virtual torch::Tensor trunk(const torch::Tensor& x) = 0;
  torch::Tensor head(const torch::Tensor& h, bool dropout) {
    return classifier(torch::dropout(h, kDropout, dropout));
  }
  /// The classifier on embeddings times a dropout mask (entries 0 or 1 / (1 - p)).
  torch::Tensor head_masked(const torch::Tensor& h, const torch::Tensor& mask) { return classifier(h * mask); }
};

// Two conv(3x3, same) + ReLU + 2x2 max-pool blocks (16, 32 channels), an adaptive average pool
// to 7x7 (28x28 inputs pass through unchanged; larger ones are pooled down), a 128-unit ReLU
// layer: the embeddings.
struct CnnNet : NativeNet {
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc{nullptr};
  CnnNet(std::int64_t channels, std::int64_t classes) {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 16, 3).padding(1)));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).padding(1)));
    fc = register_module("fc", torch::nn::Linear(32 * 7 * 7, kEmbeddingDim));
    classifier = register_module("classifier", torch::nn::Linear(kEmbeddingDim, classes));
  }
  torch::Tensor trunk(const torch::Tensor& x) override {
    auto h = torch::max_pool2d(torch::relu(conv1(x)), 2);
    h = torch::max_pool2d(torch::relu(conv2(h)), 2);
    h = torch::adaptive_avg_pool2d(h, {7, 7});
    return torch::relu(fc(h.flatten(1)));
  }
};

// Standardised features (the pool's mean and standard deviation, kept as buffers), two 256-unit
// ReLU layers, a 128-unit ReLU layer: the embeddings.
struct MlpNet : NativeNet {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  torch::Tensor mean, inv_std;
  MlpNet(std::int64_t features, std::int64_t classes) {
    fc1 = register_module("fc1", torch::nn::Linear(features, 256));
    fc2 = register_module("fc2", torch::nn::Linear(256, 256));
    fc3 = register_module("fc3", torch::nn::Linear(256, kEmbeddingDim));
    classifier = register_module("classifier", torch::nn::Linear(kEmbeddingDim, classes));
    mean = register_buffer("mean", torch::zeros({features}));
    inv_std = register_buffer("inv_std", torch::ones({features}));
  }
  torch::Tensor trunk(const torch::Tensor& x) override {
    auto h = (x.flatten(1) - mean) * inv_std;  // images: their pixels as features
    h = torch::relu(fc1(h));
    h = torch::relu(fc2(h));
    return torch::relu(fc3(h));
  }
};

// ------------------------------------------------------------------ members

class Member {
 public:
  virtual ~Member() = default;
  virtual std::vector<torch::Tensor> parameters() = 0;
  /// Parameters and buffers: what a best-weights snapshot copies.
  virtual std::vector<torch::Tensor> state() = 0;
  virtual void set_training(bool on) = 0;
  /// Logits in the current mode.
  virtual torch::Tensor logits(const torch::Tensor& x) = 0;
  /// Eval-mode embeddings and logits of a batch.
  virtual std::pair<torch::Tensor, torch::Tensor> embed_and_logits(const torch::Tensor& x) = 0;
  /// Built-in nets: the classifier on embeddings times a dropout mask.
  virtual bool has_head() const { return false; }
  virtual torch::Tensor head_masked(const torch::Tensor&, const torch::Tensor&) { return {}; }
  virtual void save(torch::serialize::OutputArchive& archive, const std::string& key) = 0;
  std::int64_t parameter_count() {
    std::int64_t n = 0;
    for (const auto& p : parameters()) n += p.numel();
    return n;
  }
};

class NativeMember : public Member {
 public:
  explicit NativeMember(std::shared_ptr<NativeNet> net) : net_(std::move(net)) {}
  std::vector<torch::Tensor> parameters() override { return net_->parameters(); }
  std::vector<torch::Tensor> state() override {
    auto s = net_->parameters();
    for (const auto& b : net_->buffers()) s.push_back(b);
    return s;
  }
  void set_training(bool on) override { net_->train(on); }
  torch::Tensor logits(const torch::Tensor& x) override {
    return net_->head(net_->trunk(x), net_->is_training());
  }
  std::pair<torch::Tensor, torch::Tensor> embed_and_logits(const torch::Tensor& x) override {
    auto h = net_->trunk(x);
    return {h, net_->head(h, false)};
  }
  bool has_head() const override { return true; }
  torch::Tensor head_masked(const torch::Tensor& h, const torch::Tensor& mask) override {
    return net_->head_masked(h, mask);
  }
  void save(torch::serialize::OutputArchive& archive, const std::string& key) override {
    torch::serialize::OutputArchive sub;
    net_->save(sub);
    archive.write(key, sub);
  }
  NativeNet& net() { return *net_; }

 private:
  std::shared_ptr<NativeNet> net_;
};

class ScriptMember : public Member {
 public:
  explicit ScriptMember(torch::jit::Module module) : module_(std::move(module)) {
    has_embed_ = module_.find_method("embed").has_value();
    // A module scripted or saved without gradients (requires_grad false) still trains.
    for (auto p : module_.parameters()) p.requires_grad_(true);
  }
  std::vector<torch::Tensor> parameters() override {
    std::vector<torch::Tensor> v;
    for (const auto& p : module_.parameters()) v.push_back(p);
    return v;
  }
  std::vector<torch::Tensor> state() override {
    auto v = parameters();
    for (const auto& b : module_.buffers()) v.push_back(b);
    return v;
  }
  void set_training(bool on) override { module_.train(on); }
  // A user's module gets its own copy of the batch: an in-place op in its forward must not
  // rewrite the caller's pool (the batch may wrap the dataset's memory).
  torch::Tensor logits(const torch::Tensor& x) override {
    return module_.forward({x.clone()}).toTensor();
  }
  std::pair<torch::Tensor, torch::Tensor> embed_and_logits(const torch::Tensor& x) override {
    auto l = module_.forward({x.clone()}).toTensor();
    // Without an embed method the logits stand in for the embeddings.
    auto h = has_embed_ ? module_.get_method("embed")({x.clone()}).toTensor() : l;
    return {h, l};
  }
  std::vector<torch::Tensor> buffers() {
    std::vector<torch::Tensor> v;
    for (const auto& b : module_.buffers()) v.push_back(b);
    return v;
  }
  void save(torch::serialize::OutputArchive& archive, const std::string& key) override {
    std::ostringstream os;
    module_.save(os);
    const std::string bytes = os.str();
    auto t = torch::empty({static_cast<std::int64_t>(bytes.size())}, torch::kUInt8);
    std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
    archive.write(key + "_script", t);
  }
  bool has_embed() const { return has_embed_; }

 private:
  torch::jit::Module module_;
  bool has_embed_ = false;
};

}  // namespace torch_detail

// ------------------------------------------------------------------ the model

struct Model::Impl {
  ModelSpec spec;
  CommitteeSpec committee;
  std::vector<std::int64_t> sample_shape;
  int num_classes = 0;
  std::int64_t embedding_dim = 0;
  torch::Device device{torch::kCPU};
  std::vector<std::unique_ptr<torch_detail::Member>> members;
  std::vector<float> feature_mean, feature_inv_std;  // mlp: the pool's standardisation

  std::int64_t sample_numel() const {
    std::int64_t n = 1;
    for (auto d : sample_shape) n *= d;
    return n;
  }

  /// A fresh member (initialised from the current torch seed).
  std::unique_ptr<torch_detail::Member> make_member() const;
  /// Runs a member on two zero samples to learn its output and embedding widths.
  void probe(torch_detail::Member& m);
  /// The metadata saved with the model (JSON).
  std::string meta_json() const;
};

}  // namespace quarry
