// Training and inference with LibTorch (the only translation unit that includes it: its
// headers are slow to compile). Kept to the C++ API shared by LibTorch 1.13 (Debian) and 2.x.
//
// A Model is one or more members (an ensemble); a member is either a built-in network (cnn,
// mlp: a trunk that ends in the embeddings, dropout, a linear classifier) or a TorchScript
// module. Training: Adam, class-weighted cross-entropy, early stopping on the validation loss
// with the best weights kept. Inference: one pass over the pool giving probabilities,
// embeddings and the committee's outputs.
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/train.hpp"

namespace quarry {

bool have_torch() { return true; }

namespace {

constexpr double kDropout = 0.5;
constexpr std::int64_t kEmbeddingDim = 128;
constexpr const char* kFormat = "quarry-model";
constexpr int kFormatVersion = 1;

std::string torch_message(const c10::Error& e) { return e.what_without_backtrace(); }

void set_threads(int threads) {
  const int t = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (torch::get_num_threads() != t) torch::set_num_threads(t);
}

torch::Device torch_device(const DeviceSpec& d) {
  const bool cuda = torch::cuda::is_available();
  switch (d.kind) {
    case DeviceKind::automatic:
      return cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    case DeviceKind::cpu: return torch::Device(torch::kCPU);
    case DeviceKind::cuda:
      QUARRY_EXPECTS(cuda, "training on ", device_string(d),
                     " asked for, but this LibTorch has no CUDA device (LibTorch ",
                     TORCH_VERSION, "); use --device cpu");
      QUARRY_EXPECTS(d.index < static_cast<int>(torch::cuda::device_count()), "training on ",
                     device_string(d), " asked for, but LibTorch sees ",
                     torch::cuda::device_count(), " CUDA device(s)");
      return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(d.index));
  }
  return torch::Device(torch::kCPU);
}

// Turns the exception being handled into a quarry::Error prefixed by `what`: LibTorch's
// c10::Error, the TorchScript interpreter's std::runtime_error (a user model failing on the
// data), std::bad_alloc; a quarry::Error passes through.
[[noreturn]] void fail_from_current(const std::string& what) {
  try {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    QUARRY_FAIL(what, ": ", torch_message(e));
  } catch (const std::bad_alloc&) {
    QUARRY_FAIL(what, ": out of memory");
  } catch (const std::exception& e) {
    QUARRY_FAIL(what, ": ", e.what());
  }
}

std::string device_name(const torch::Device& d) {
  return d.is_cuda() ? "cuda:" + std::to_string(d.index()) : "cpu";
}

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

// The MC-dropout mask of sample `s` for pool rows [first, first + rows) and `dim` units: unit j
// of row i is kept (scaled by 1 / (1 - p)) when a Philox draw keyed by (seed, s, i, j) falls
// below 1 - p. A pure function of those: the same masks for any batch size, device or thread.
torch::Tensor dropout_mask(std::uint64_t seed, int s, std::int64_t first, std::int64_t rows, std::int64_t dim) {
  auto mask = torch::empty({rows, dim}, torch::kFloat32);
  float* m = mask.data_ptr<float>();
  const float keep = static_cast<float>(1.0 / (1.0 - kDropout));
  const std::uint32_t threshold = static_cast<std::uint32_t>((1.0 - kDropout) * 16777216.0);
  for (std::int64_t i = 0; i < rows; ++i) {
    const std::uint64_t row = static_cast<std::uint64_t>(first + i);
    for (std::int64_t j = 0; j < dim; j += 4) {
      const detail::Philox4 r = detail::philox4x32_10(
          static_cast<std::uint32_t>(row), static_cast<std::uint32_t>(row >> 32),
          static_cast<std::uint32_t>(j), static_cast<std::uint32_t>(s) ^ (0xD50Bu << 16),
          static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
      for (std::int64_t q = 0; q < 4 && j + q < dim; ++q) m[i * dim + j + q] = (r.v[q] >> 8) < threshold ? keep : 0.0f;
    }
  }
  return mask;
}

torch::Tensor batch_tensor(const float* x, std::int64_t rows, const std::vector<std::int64_t>& shape,
                           const torch::Device& device) {
  std::vector<std::int64_t> dims{rows};
  dims.insert(dims.end(), shape.begin(), shape.end());
  auto t = torch::from_blob(const_cast<float*>(x), dims, torch::kFloat32);
  return device.is_cpu() ? t : t.to(device);
}

}  // namespace

// ------------------------------------------------------------------ the model

struct Model::Impl {
  ModelSpec spec;
  CommitteeSpec committee;
  std::vector<std::int64_t> sample_shape;
  int num_classes = 0;
  std::int64_t embedding_dim = 0;
  torch::Device device{torch::kCPU};
  std::vector<std::unique_ptr<Member>> members;
  std::vector<float> feature_mean, feature_inv_std;  // mlp: the pool's standardisation

  std::int64_t sample_numel() const {
    std::int64_t n = 1;
    for (auto d : sample_shape) n *= d;
    return n;
  }

  // A fresh member (initialised from the current torch seed).
  std::unique_ptr<Member> make_member() const {
    if (spec.kind == ModelSpec::Kind::cnn) {
      QUARRY_EXPECTS(sample_shape.size() == 3, "model cnn needs images, but the samples are ",
                     shape_string(sample_shape), " feature vectors: use --model mlp");
      QUARRY_EXPECTS(sample_shape[1] >= 8 && sample_shape[2] >= 8 && sample_shape[1] <= 512 &&
                         sample_shape[2] <= 512,
                     "model cnn takes images of 8x8 to 512x512 pixels, not ", sample_shape[1], "x",
                     sample_shape[2]);
      auto net = std::make_shared<CnnNet>(sample_shape[0], num_classes);
      net->to(device);
      return std::make_unique<NativeMember>(net);
    }
    if (spec.kind == ModelSpec::Kind::mlp) {
      std::int64_t features = sample_numel();
      auto net = std::make_shared<MlpNet>(features, num_classes);
      if (!feature_mean.empty()) {
        net->mean.copy_(torch::from_blob(const_cast<float*>(feature_mean.data()), {features}));
        net->inv_std.copy_(torch::from_blob(const_cast<float*>(feature_inv_std.data()), {features}));
      }
      net->to(device);
      return std::make_unique<NativeMember>(net);
    }
    torch::jit::Module module;
    try {
      expect_regular_file(spec.path);
      module = torch::jit::load(spec.path, device);
    } catch (const c10::Error& e) {
      QUARRY_FAIL(spec.path, ": not a TorchScript model LibTorch can load: ", torch_message(e));
    } catch (const std::exception& e) {
      QUARRY_FAIL(spec.path, ": cannot load the TorchScript model: ", e.what());
    }
    return std::make_unique<ScriptMember>(std::move(module));
  }

  // Runs a member on two zero samples to learn its output and embedding widths.
  void probe(Member& m) {
    torch::NoGradGuard guard;
    m.set_training(false);
    std::vector<float> zeros(static_cast<std::size_t>(2 * sample_numel()), 0.0f);
    torch::Tensor h, l;
    try {
      std::tie(h, l) = m.embed_and_logits(batch_tensor(zeros.data(), 2, sample_shape, device));
    } catch (const c10::Error& e) {
      QUARRY_FAIL(model_spec_string(spec), ": fails on a batch of shape [2, ", shape_string(sample_shape).substr(1),
                  ": ", torch_message(e));
    } catch (const std::exception& e) {  // the TorchScript interpreter's errors
      QUARRY_FAIL(model_spec_string(spec), ": fails on a batch of shape [2, ", shape_string(sample_shape).substr(1),
                  " (the data's samples): ", e.what());
    }
    QUARRY_EXPECTS(l.dim() == 2 && l.size(0) == 2 && l.size(1) == num_classes,
                   model_spec_string(spec), ": forward returned ", shape_string(l.sizes().vec()),
                   " for a batch of 2, expected [2, ", num_classes, "] logits");
    QUARRY_EXPECTS(h.dim() == 2 && h.size(0) == 2, model_spec_string(spec),
                   ": embed returned ", shape_string(h.sizes().vec()), " for a batch of 2, expected [2, D]");
    embedding_dim = h.size(1);
  }

  std::string meta_json() const {
    nlohmann::json j;
    j["format"] = kFormat;
    j["version"] = kFormatVersion;
    j["model"] = model_spec_string(spec);
    j["kind"] = spec.kind == ModelSpec::Kind::cnn ? "cnn" : spec.kind == ModelSpec::Kind::mlp ? "mlp" : "torchscript";
    j["committee"] = committee_string(committee);
    j["members"] = members.size();
    j["sample_shape"] = sample_shape;
    j["num_classes"] = num_classes;
    j["embedding_dim"] = embedding_dim;
    j["torch"] = TORCH_VERSION;
    return j.dump();
  }
};

Model::Model() = default;
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

namespace {

// Inverse-frequency class weights of the labeled set, normalised so the weighted mean of a
// balanced set equals the plain mean; classes absent from the labeled set get weight 1.
torch::Tensor class_weights(const std::vector<std::int32_t>& y, int classes, bool on) {
  std::vector<float> w(static_cast<std::size_t>(classes), 1.0f);
  if (on) {
    std::vector<std::int64_t> count(static_cast<std::size_t>(classes), 0);
    for (auto c : y) ++count[static_cast<std::size_t>(c)];
    std::int64_t present = 0;
    for (auto c : count) present += c > 0;
    for (int c = 0; c < classes; ++c)
      if (count[c] > 0)
        w[c] = static_cast<float>(static_cast<double>(y.size()) / (static_cast<double>(present) * count[c]));
  }
  return torch::from_blob(w.data(), {classes}, torch::kFloat32).clone();
}

// The gathered samples and labels of `rows` of a split, as tensors on `device`.
std::pair<torch::Tensor, torch::Tensor> gather(const Split& split, std::int64_t numel,
                                               const std::vector<std::int64_t>& rows,
                                               const std::vector<std::int64_t>& shape,
                                               const torch::Device& device) {
  std::vector<std::int64_t> dims{static_cast<std::int64_t>(rows.size())};
  dims.insert(dims.end(), shape.begin(), shape.end());
  auto x = torch::empty(dims, torch::kFloat32);
  auto y = torch::empty({static_cast<std::int64_t>(rows.size())}, torch::kInt64);
  float* xp = x.data_ptr<float>();
  auto* yp = y.data_ptr<std::int64_t>();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(xp + i * numel, split.x.data() + rows[i] * numel, sizeof(float) * numel);
    yp[i] = split.y[static_cast<std::size_t>(rows[i])];
  }
  return {x.to(device), y.to(device)};
}

// Fisher-Yates with a fully specified generator: the same order on every platform.
void shuffle(std::vector<std::int64_t>& v, std::mt19937_64& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
}

std::uint64_t member_seed(std::uint64_t seed, int member) {
  return seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull * static_cast<std::uint64_t>(member + 1);
}

}  // namespace

Model Model::train(const Dataset& data, const std::vector<std::int64_t>& labeled,
                   const TrainOptions& options, TrainReport* report, const TrainProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  QUARRY_EXPECTS(!labeled.empty(), "training needs at least one labeled sample");
  QUARRY_EXPECTS(data.num_classes >= 2, data.spec, ": training needs at least 2 classes, the data has ",
                 data.num_classes);
  QUARRY_EXPECTS(options.max_epochs >= 1 && options.batch_size >= 1 && options.learning_rate > 0,
                 "training options: max_epochs and batch_size must be >= 1 and the learning rate > 0");
  {
    std::vector<char> seen(static_cast<std::size_t>(data.train.size()), 0);
    for (auto i : labeled) {
      QUARRY_EXPECTS(i >= 0 && i < data.train.size(), "labeled index ", i, " is outside the pool [0, ",
                     data.train.size(), ")");
      QUARRY_EXPECTS(!seen[static_cast<std::size_t>(i)], "labeled index ", i, " is listed twice");
      seen[static_cast<std::size_t>(i)] = 1;
    }
  }
  Model model;
  try {
  set_threads(options.threads);

  model.impl_ = std::make_unique<Impl>();
  Impl& m = *model.impl_;
  m.spec = options.model;
  m.committee = options.committee;
  m.sample_shape = data.sample_shape;
  m.num_classes = data.num_classes;
  m.device = torch_device(options.device);
  const std::int64_t numel = data.sample_numel();

  if (m.spec.kind == ModelSpec::Kind::mlp) {
    // Standardise by the pool's statistics (inputs only, no labels involved).
    m.feature_mean.assign(static_cast<std::size_t>(numel), 0.0f);
    m.feature_inv_std.assign(static_cast<std::size_t>(numel), 1.0f);
    const std::int64_t n = data.train.size();
    std::vector<double> s(static_cast<std::size_t>(numel), 0.0), s2(static_cast<std::size_t>(numel), 0.0);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < numel; ++j) {
        const double v = data.train.x[static_cast<std::size_t>(i * numel + j)];
        s[j] += v;
        s2[j] += v * v;
      }
    for (std::int64_t j = 0; j < numel; ++j) {
      const double mean = s[j] / std::max<std::int64_t>(n, 1);
      const double var = std::max(0.0, s2[j] / std::max<std::int64_t>(n, 1) - mean * mean);
      m.feature_mean[j] = static_cast<float>(mean);
      m.feature_inv_std[j] = static_cast<float>(1.0 / std::sqrt(var + 1e-8));
    }
  }

  std::vector<std::int32_t> labels;
  for (auto i : labeled) labels.push_back(data.train.y[static_cast<std::size_t>(i)]);
  auto [x, y] = gather(data.train, numel, labeled, m.sample_shape, m.device);
  const auto weights = class_weights(labels, m.num_classes, options.class_weights).to(m.device);

  // Validation: at most 1000 samples, evenly strided over the split.
  torch::Tensor vx, vy;
  const std::int64_t nval = std::min<std::int64_t>(data.val.size(), 1000);
  if (nval > 0) {
    std::vector<std::int64_t> rows;
    for (std::int64_t i = 0; i < nval; ++i) rows.push_back(i * data.val.size() / nval);
    std::tie(vx, vy) = gather(data.val, numel, rows, m.sample_shape, m.device);
  }

  const int members = options.committee.kind == CommitteeSpec::Kind::ensemble ? options.committee.members : 1;
  const std::int64_t n = static_cast<std::int64_t>(labeled.size());
  const std::int64_t steps_per_epoch = (n + options.batch_size - 1) / options.batch_size;
  // An "epoch" is at least min_steps / max_epochs steps: tiny labeled sets still get trained.
  const std::int64_t steps_per_check =
      std::max<std::int64_t>(steps_per_epoch, (options.min_steps + options.max_epochs - 1) / options.max_epochs);
  TrainReport rep;
  rep.device = device_name(m.device);

  for (int mi = 0; mi < members; ++mi) {
    const std::uint64_t seed = member_seed(options.seed, mi);
    torch::manual_seed(seed);
    std::unique_ptr<Member> member;
    try {
      member = m.make_member();
      if (mi == 0) m.probe(*member);
    } catch (const c10::Error& e) {
      QUARRY_FAIL(model_spec_string(m.spec), ": ", torch_message(e));
    }
    torch::optim::Adam opt(member->parameters(),
                           torch::optim::AdamOptions(options.learning_rate).weight_decay(options.weight_decay));
    std::mt19937_64 rng(seed);
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    std::size_t cursor = order.size();
    double best = std::numeric_limits<double>::infinity(), best_bacc = -1.0;
    int best_epoch = 0;
    std::vector<torch::Tensor> best_state;
    int epoch = 0;
    try {
      for (epoch = 1; epoch <= options.max_epochs; ++epoch) {
        member->set_training(true);
        for (std::int64_t s = 0; s < steps_per_check; ++s) {
          if (cursor >= order.size()) {
            for (std::int64_t i = 0; i < n; ++i) order[i] = i;
            shuffle(order, rng);
            cursor = 0;
          }
          const std::size_t take = std::min<std::size_t>(options.batch_size, order.size() - cursor);
          auto idx = torch::from_blob(order.data() + cursor, {static_cast<std::int64_t>(take)}, torch::kInt64)
                         .to(m.device);
          cursor += take;
          opt.zero_grad();
          auto loss = torch::nn::functional::cross_entropy(
              member->logits(x.index_select(0, idx)), y.index_select(0, idx),
              torch::nn::functional::CrossEntropyFuncOptions().weight(weights));
          loss.backward();
          opt.step();
        }
        if (nval == 0) {  // no validation split: train for max_epochs and keep the last weights
          if (progress) progress("epoch", epoch, options.max_epochs);
          continue;
        }
        // The validation check: balanced accuracy (what imbalanced pools are judged by), ties
        // broken by the class-weighted loss. Selecting on the loss alone keeps, on imbalanced
        // pools, early epochs whose loss is low but which predict one class.
        double val_loss = 0, val_bacc = 0;
        {
          torch::NoGradGuard guard;
          member->set_training(false);
          double sum = 0, wsum = 0;
          std::vector<std::int64_t> hit(static_cast<std::size_t>(m.num_classes), 0),
              total(static_cast<std::size_t>(m.num_classes), 0);
          for (std::int64_t b = 0; b < nval; b += 1024) {
            const std::int64_t e = std::min(nval, b + 1024);
            auto logits = member->logits(vx.slice(0, b, e));
            auto target = vy.slice(0, b, e);
            auto w = weights.index_select(0, target);
            auto nll = torch::nn::functional::cross_entropy(
                logits, target, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
            sum += (nll * w).sum().item<double>();
            wsum += w.sum().item<double>();
            const auto pred = logits.argmax(1).to(torch::kCPU).contiguous();
            const auto truth = target.to(torch::kCPU).contiguous();
            const auto* pp = pred.data_ptr<std::int64_t>();
            const auto* tp = truth.data_ptr<std::int64_t>();
            for (std::int64_t i = 0; i < e - b; ++i) {
              ++total[static_cast<std::size_t>(tp[i])];
              hit[static_cast<std::size_t>(tp[i])] += pp[i] == tp[i];
            }
          }
          val_loss = sum / std::max(wsum, 1e-30);
          int present = 0;
          for (int c = 0; c < m.num_classes; ++c)
            if (total[c] > 0) {
              val_bacc += static_cast<double>(hit[c]) / static_cast<double>(total[c]);
              ++present;
            }
          val_bacc /= std::max(present, 1);
        }
        QUARRY_EXPECTS(std::isfinite(val_loss), model_spec_string(m.spec), ": the validation loss became ",
                       val_loss, " at epoch ", epoch, " (diverged: try a lower learning rate)");
        if (val_bacc > best_bacc || (val_bacc == best_bacc && val_loss < best)) {
          best = val_loss;
          best_bacc = val_bacc;
          best_epoch = epoch;
          best_state.clear();
          for (const auto& t : member->state()) best_state.push_back(t.detach().clone());
        } else if (epoch - best_epoch >= options.patience && epoch * steps_per_check >= options.min_steps) {
          break;  // patience ran out, and at least min_steps steps were taken
        }
        if (progress) progress("epoch", epoch, options.max_epochs);
      }
    } catch (const c10::Error& e) {
      QUARRY_FAIL(model_spec_string(m.spec), ": training failed: ", torch_message(e));
    }
    rep.epochs += std::min(epoch, options.max_epochs);
    if (!best_state.empty()) {
      torch::NoGradGuard guard;
      auto state = member->state();
      for (std::size_t i = 0; i < state.size(); ++i) state[i].copy_(best_state[i]);
    }
    member->set_training(false);
    if (mi == 0) {
      rep.best_epoch = best_epoch;
      rep.best_val_loss = best;
      rep.best_val_balanced_accuracy = best_bacc;
    }
    m.members.push_back(std::move(member));
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (report) *report = rep;
  } catch (...) {
    fail_from_current(model_spec_string(options.model));
  }
  return model;
}

Inference Model::infer(const float* x, std::int64_t n, const InferOptions& options) const {
  QUARRY_EXPECTS(impl_, "inference on an empty model");
  const Impl& m = *impl_;
  QUARRY_EXPECTS(n >= 0, "inference over a negative number of samples");
  CommitteeSpec committee = options.committee.members < 0 ? m.committee : options.committee;
  const int trained = static_cast<int>(m.members.size());
  if (committee.kind == CommitteeSpec::Kind::ensemble) {
    QUARRY_EXPECTS(committee.members <= trained, "an ensemble committee of ", committee.members,
                   " asked for, but the model has ", trained, " member(s): train it with --committee ensemble:",
                   committee.members);
  }
  const int M = committee.kind == CommitteeSpec::Kind::none ? 0 : committee.members;
  set_threads(options.threads);
  const std::int64_t C = m.num_classes, D = m.embedding_dim, numel = m.sample_numel();

  Inference out;
  try {
  out.probs = Array::allocate(DType::f32, {n, C}, "probs");
  out.embeddings = Array::allocate(DType::f32, {n, D}, "embeddings");
  if (M > 0) out.committee = Array::allocate(DType::f32, {M, n, C}, "committee");
  auto* probs = static_cast<float*>(out.probs.mutable_data());
  auto* emb = static_cast<float*>(out.embeddings.mutable_data());
  auto* com = M > 0 ? static_cast<float*>(out.committee.mutable_data()) : nullptr;
  // Copies a [rows, width] output into dst, after checking its shape (a TorchScript model's
  // output could be anything).
  auto put = [&](const torch::Tensor& t, float* dst, std::int64_t rows, std::int64_t width) {
    auto c = t.to(torch::kCPU, torch::kFloat32).contiguous();
    QUARRY_EXPECTS(c.dim() == 2 && c.size(0) == rows && c.size(1) == width, model_spec_string(m.spec),
                   ": a batch of ", rows, " gave an output of shape ", shape_string(c.sizes().vec()),
                   ", expected [", rows, ", ", width, "]");
    std::memcpy(dst, c.data_ptr<float>(), sizeof(float) * static_cast<std::size_t>(c.numel()));
  };

  torch::NoGradGuard guard;
  torch::manual_seed(options.seed);  // the MC-dropout masks
  // Ensembles average over the members of the committee (all members without one).
  const int averaged = committee.kind == CommitteeSpec::Kind::ensemble ? M : trained;
  const std::int64_t bs = std::max(1, options.batch_size);
  try {
    for (auto& member : m.members) member->set_training(false);
    for (std::int64_t b = 0; b < n; b += bs) {
      const std::int64_t rows = std::min(bs, n - b);
      auto xb = batch_tensor(x + b * numel, rows, m.sample_shape, m.device);
      torch::Tensor mean_p;
      for (int mi = 0; mi < averaged; ++mi) {
        auto [h, l] = m.members[mi]->embed_and_logits(xb);
        auto p = torch::softmax(l.to(torch::kFloat32), 1);
        if (mi == 0) put(h, emb + b * D, rows, D);
        if (committee.kind == CommitteeSpec::Kind::ensemble) put(p, com + (mi * n + b) * C, rows, C);
        mean_p = mi == 0 ? p : mean_p + p;
        if (committee.kind == CommitteeSpec::Kind::mc && mi == 0) {
          Member& first = *m.members[0];
          if (first.has_head()) {
            for (int s = 0; s < M; ++s) {
              const auto mask = dropout_mask(options.seed, s, b, rows, D).to(h.device());
              put(torch::softmax(first.head_masked(h, mask).to(torch::kFloat32), 1), com + (s * n + b) * C, rows, C);
            }
          } else {  // a TorchScript model: whole forward passes in training mode
            // Training mode also lets batch norms update their running statistics: keep them.
            auto& script = static_cast<ScriptMember&>(first);
            std::vector<torch::Tensor> saved;
            for (const auto& t : script.buffers()) saved.push_back(t.clone());
            first.set_training(true);
            for (int s = 0; s < M; ++s)
              put(torch::softmax(first.logits(xb).to(torch::kFloat32), 1), com + (s * n + b) * C, rows, C);
            first.set_training(false);
            auto now = script.buffers();
            for (std::size_t i = 0; i < now.size(); ++i) now[i].copy_(saved[i]);
          }
        }
      }
      put(averaged > 1 ? mean_p / static_cast<double>(averaged) : mean_p, probs + b * C, rows, C);
    }
  } catch (const c10::Error& e) {
    QUARRY_FAIL(model_spec_string(m.spec), ": inference failed: ", torch_message(e));
  }
  } catch (...) {
    fail_from_current(model_spec_string(m.spec) + ": inference");
  }
  return out;
}

std::vector<std::int32_t> Model::predict(const Split& split, int threads) const {
  InferOptions o;
  o.committee = CommitteeSpec{};  // none: plain probabilities (ensembles: the members' mean)
  o.threads = threads;
  const Inference inf = infer(split, o);
  const std::int64_t C = impl_->num_classes;
  const float* p = inf.probs.as<float>();
  std::vector<std::int32_t> out(static_cast<std::size_t>(split.size()));
  for (std::int64_t i = 0; i < split.size(); ++i) {
    std::int32_t best = 0;  // ties to the lower class
    for (std::int64_t c = 1; c < C; ++c)
      if (p[i * C + c] > p[i * C + best]) best = static_cast<std::int32_t>(c);
    out[static_cast<std::size_t>(i)] = best;
  }
  return out;
}

void Model::save(const std::string& path) const {
  QUARRY_EXPECTS(impl_, "saving an empty model");
  std::ostringstream os;
  try {
    torch::serialize::OutputArchive archive;
    archive.write("quarry_meta", c10::IValue(impl_->meta_json()));
    for (std::size_t i = 0; i < impl_->members.size(); ++i)
      impl_->members[i]->save(archive, "member" + std::to_string(i));
    archive.save_to(os);
  } catch (const c10::Error& e) {
    QUARRY_FAIL(path, ": cannot serialise the model: ", torch_message(e));
  }
  const std::string bytes = os.str();
  write_file_atomic(path, {bytes});
}

Model Model::load(const std::string& path, const DeviceSpec& device) {
  expect_regular_file(path);  // a FIFO or a device would block or never end inside LibTorch
  Model model;
  try {
  model.impl_ = std::make_unique<Impl>();
  Impl& m = *model.impl_;
  m.device = torch_device(device);
  torch::serialize::InputArchive archive;
  nlohmann::json meta;
  try {
    archive.load_from(path, m.device);
    c10::IValue v;
    QUARRY_EXPECTS(archive.try_read("quarry_meta", v) && v.isString(), path,
                   ": a LibTorch archive, but not a quarry model (no quarry_meta record); a TorchScript "
                   "model is given as --model torchscript:FILE");
    meta = nlohmann::json::parse(v.toStringRef());
  } catch (const c10::Error& e) {
    QUARRY_FAIL(path, ": not a quarry model file: ", torch_message(e));
  } catch (const nlohmann::json::exception& e) {
    QUARRY_FAIL(path, ": damaged model metadata: ", e.what());
  }
  try {
    QUARRY_EXPECTS(meta.value("format", "") == kFormat && meta.value("version", 0) == kFormatVersion, path,
                   ": unsupported model format ", meta.value("format", "?"), " version ",
                   meta.value("version", 0), " (this quarry reads ", kFormat, " version ", kFormatVersion, ")");
    m.spec = parse_model_spec(meta.at("model").get<std::string>());
    m.committee = parse_committee(meta.at("committee").get<std::string>());
    m.sample_shape = meta.at("sample_shape").get<std::vector<std::int64_t>>();
    m.num_classes = meta.at("num_classes").get<int>();
    m.embedding_dim = meta.at("embedding_dim").get<std::int64_t>();
    const int members = meta.at("members").get<int>();
    QUARRY_EXPECTS(members >= 1 && members <= 1000 && m.num_classes >= 2, path, ": damaged model metadata");
    for (int i = 0; i < members; ++i) {
      const std::string key = "member" + std::to_string(i);
      if (m.spec.kind == ModelSpec::Kind::torchscript) {
        torch::Tensor bytes;
        archive.read(key + "_script", bytes);
        bytes = bytes.to(torch::kCPU).contiguous();
        std::istringstream is(std::string(static_cast<const char*>(bytes.data_ptr()),
                                          static_cast<std::size_t>(bytes.numel())));
        m.members.push_back(std::make_unique<ScriptMember>(torch::jit::load(is, m.device)));
      } else {
        auto member = m.make_member();
        torch::serialize::InputArchive sub;
        archive.read(key, sub);
        static_cast<NativeMember&>(*member).net().load(sub);
        static_cast<NativeMember&>(*member).net().to(m.device);
        m.members.push_back(std::move(member));
      }
      m.members.back()->set_training(false);
    }
    // The metadata must describe the nets it came with (a damaged or edited file).
    const std::int64_t dim = m.embedding_dim;
    m.probe(*m.members[0]);
    QUARRY_EXPECTS(m.embedding_dim == dim, path, ": the metadata says ", dim, "-d embeddings, the model gives ",
                   m.embedding_dim);
  } catch (const c10::Error& e) {
    QUARRY_FAIL(path, ": damaged model: ", torch_message(e));
  } catch (const nlohmann::json::exception& e) {
    QUARRY_FAIL(path, ": damaged model metadata: ", e.what());
  }
  } catch (...) {
    fail_from_current(path);
  }
  return model;
}

bool Model::empty() const { return !impl_ || impl_->members.empty(); }
int Model::num_classes() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  return impl_->num_classes; }
std::int64_t Model::embedding_dim() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  return impl_->embedding_dim; }
const std::vector<std::int64_t>& Model::sample_shape() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  return impl_->sample_shape; }
const ModelSpec& Model::spec() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  return impl_->spec; }
const CommitteeSpec& Model::committee() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  return impl_->committee; }

std::string Model::describe() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  const Impl& m = *impl_;
  std::string shape;
  for (std::size_t i = 0; i < m.sample_shape.size(); ++i)
    shape += (i ? "x" : "") + std::to_string(m.sample_shape[i]);
  std::int64_t params = 0;
  for (const auto& mem : m.members) params += mem->parameter_count();
  std::string s = model_spec_string(m.spec) + ", " + shape + " -> " + std::to_string(m.num_classes) +
                  " classes, " + std::to_string(m.embedding_dim) + "-d embeddings, ";
  s += m.members.size() == 1 ? std::string("1 model") : "ensemble of " + std::to_string(m.members.size());
  s += ", " + std::to_string(params) + " parameters";
  if (m.committee.kind == CommitteeSpec::Kind::mc) s += ", committee " + committee_string(m.committee);
  s += ", on " + device_name(m.device);
  return s;
}

}  // namespace quarry
