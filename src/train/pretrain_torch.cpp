// Self-supervised pretraining with LibTorch (pretrain_embeddings): SimCLR-style contrastive
// learning on an unlabeled image pool, for the cold start's embeddings. The encoder, the
// augmentations and the loss are described in include/quarry/train.hpp.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "quarry/error.hpp"
#include "quarry/train.hpp"
#include "train/model_torch_internal.hpp"

namespace quarry {

using namespace torch_detail;

namespace {

constexpr std::int64_t kWidth[3] = {16, 32, 64};  // the encoder's channels
constexpr std::int64_t kGrid = 7;                  // the last block's map is pooled to kGrid x kGrid
constexpr std::int64_t kDim = 128;                 // the embeddings
constexpr std::int64_t kProjection = 64;           // the projection head's output
constexpr std::int64_t kMaxSide = 32;              // larger images are pooled down to this

struct Block : torch::nn::Module {
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d norm{nullptr};
  Block(std::int64_t in, std::int64_t out) {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(false)));
    norm = register_module("norm", torch::nn::BatchNorm2d(out));
  }
  torch::Tensor forward(const torch::Tensor& x) { return torch::relu(norm(conv(x))); }
};

struct Encoder : torch::nn::Module {
  std::shared_ptr<Block> b1, b2, b3;
  torch::nn::Linear fc{nullptr}, p1{nullptr}, p2{nullptr};
  std::int64_t side_h, side_w;
  Encoder(std::int64_t channels, std::int64_t h, std::int64_t w)
      : side_h(std::min(h, kMaxSide)), side_w(std::min(w, kMaxSide)) {
    b1 = register_module("b1", std::make_shared<Block>(channels, kWidth[0]));
    b2 = register_module("b2", std::make_shared<Block>(kWidth[0], kWidth[1]));
    b3 = register_module("b3", std::make_shared<Block>(kWidth[1], kWidth[2]));
    fc = register_module("fc", torch::nn::Linear(kWidth[2] * kGrid * kGrid, kDim));
    p1 = register_module("p1", torch::nn::Linear(kDim, kDim));
    p2 = register_module("p2", torch::nn::Linear(kDim, kProjection));
  }
  // Normalised images [B, C, H, W] -> embeddings [B, 128], before the ReLU that feeds the
  // projection head (so no image's row is all zero). The last map keeps its layout (flattened,
  // not averaged): where a stroke is tells digits and shapes apart.
  torch::Tensor encode(torch::Tensor x) {
    x = shrink(x);
    x = torch::max_pool2d(b1->forward(x), 2);
    x = torch::max_pool2d(b2->forward(x), 2);
    x = torch::adaptive_avg_pool2d(b3->forward(x), {kGrid, kGrid});
    return fc(x.flatten(1));
  }
  // Images above kMaxSide pooled down to the encoder's input size (before augmenting too: the
  // views of a large scan then cost what those of a small image cost).
  torch::Tensor shrink(const torch::Tensor& x) const {
    return x.size(2) != side_h || x.size(3) != side_w ? torch::adaptive_avg_pool2d(x, {side_h, side_w}) : x;
  }
  // Batch-norm statistics of the clean pool: reset, then averaged over every batch of `pool`
  // (equal weights), so the embeddings are normalised by what they are computed on, and a
  // pool of a few batches does not keep the statistics half at their initial values.
  void recompute_norms(const torch::Tensor& pool, const torch::Tensor& mean, const torch::Tensor& stdev,
                       const torch::Device& device, std::int64_t batch) {
    torch::NoGradGuard guard;
    for (auto* b : {b1.get(), b2.get(), b3.get()}) {
      b->norm->reset_running_stats();
      b->norm->options.momentum(c10::nullopt);
    }
    train();
    const std::int64_t n = pool.size(0);
    for (std::int64_t s = 0; s < n; s += batch) {
      // The last batch joins its predecessor rather than counting as one of its own.
      const std::int64_t e = n - (s + batch) < batch ? n : s + batch;
      encode((pool.slice(0, s, e).to(device) - mean) / stdev);
      if (e == n) break;
    }
    eval();
  }
  torch::Tensor project(const torch::Tensor& h) { return p2(torch::relu(p1(torch::relu(h)))); }
};

// Uniform draws in [lo, hi), [n] (from LibTorch's generator, seeded).
torch::Tensor uniform(std::int64_t n, double lo, double hi, const torch::Device& device) {
  return torch::rand({n}, torch::TensorOptions().device(device)) * (hi - lo) + lo;
}

// One random view of each image of x [B, C, H, W] (pixels in [0, 1]), before normalisation:
// a random affine warp (rotation within +-20 degrees, scale 0.8-1.2, aspect within 10%, shift
// within 10% of the side), brightness and contrast (x * a + b, a in [0.6, 1.4], b within
// +-0.2, clamped to [0, 1]), and with probability 1/4 a rectangle of 10-50% of each side set to 0.
torch::Tensor augment(const torch::Tensor& x) {
  const auto dev = x.device();
  const std::int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  const auto angle = uniform(B, -20.0, 20.0, dev) * (M_PI / 180.0);
  const auto scale = uniform(B, 0.8, 1.2, dev), aspect = uniform(B, 0.9, 1.1, dev);
  const auto tx = uniform(B, -0.2, 0.2, dev), ty = uniform(B, -0.2, 0.2, dev);
  const auto c = torch::cos(angle) / scale, s = torch::sin(angle) / scale;
  const auto theta = torch::stack({torch::stack({c * aspect, -s, tx}, 1), torch::stack({s, c / aspect, ty}, 1)}, 1);
  const auto grid = torch::nn::functional::affine_grid(theta, {B, x.size(1), H, W}, false);
  auto y = torch::nn::functional::grid_sample(
      x, grid, torch::nn::functional::GridSampleFuncOptions().align_corners(false));
  const auto gain = uniform(B, 0.6, 1.4, dev).view({B, 1, 1, 1});
  const auto bias = uniform(B, -0.2, 0.2, dev).view({B, 1, 1, 1});
  y = (y * gain + bias).clamp(0.0, 1.0);
  const auto eh = uniform(B, 0.1, 0.5, dev).view({B, 1, 1}) * static_cast<double>(H);
  const auto ew = uniform(B, 0.1, 0.5, dev).view({B, 1, 1}) * static_cast<double>(W);
  const auto cy = uniform(B, 0.0, static_cast<double>(H), dev).view({B, 1, 1});
  const auto cx = uniform(B, 0.0, static_cast<double>(W), dev).view({B, 1, 1});
  const auto on = (uniform(B, 0.0, 1.0, dev) < 0.25).view({B, 1, 1});
  const auto rows = torch::arange(H, torch::TensorOptions().device(dev).dtype(torch::kFloat32)).view({1, H, 1});
  const auto cols = torch::arange(W, torch::TensorOptions().device(dev).dtype(torch::kFloat32)).view({1, 1, W});
  const auto erase = ((rows - cy).abs() < eh / 2) & ((cols - cx).abs() < ew / 2) & on;
  return y.masked_fill(erase.unsqueeze(1), 0.0);
}

// NT-Xent over the projections z [2B, P] of B pairs (row i and row i + B are twins).
torch::Tensor contrastive_loss(const torch::Tensor& z, double temperature) {
  const std::int64_t n = z.size(0), B = n / 2;
  const auto u = torch::nn::functional::normalize(z, torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto sim = torch::matmul(u, u.t()) / temperature;
  sim = sim.masked_fill(torch::eye(n, torch::TensorOptions().device(z.device()).dtype(torch::kBool)), -1e9);
  const auto idx = torch::arange(n, torch::TensorOptions().device(z.device()).dtype(torch::kInt64));
  const auto twin = torch::remainder(idx + B, n);
  return torch::nn::functional::cross_entropy(sim, twin);
}

}  // namespace

Array pretrain_embeddings(const float* x, std::int64_t n, const std::vector<std::int64_t>& sample_shape,
                          const PretrainOptions& options, PretrainReport* report, const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  QUARRY_EXPECTS(sample_shape.size() == 3, "pretraining needs images, but the samples are ",
                 shape_string(sample_shape),
                 " feature vectors (give feature vectors to the cold start as embeddings directly)");
  QUARRY_EXPECTS(sample_shape[1] >= 8 && sample_shape[2] >= 8, "pretraining takes images of at least 8x8 pixels, not ",
                 sample_shape[1], "x", sample_shape[2]);
  QUARRY_EXPECTS(n >= 2, "pretraining needs at least 2 images, the pool has ", n);
  QUARRY_USAGE_EXPECTS(options.epochs >= 1 && options.batch_size >= 2 && options.learning_rate > 0 &&
                           options.learning_rate <= 1 && options.temperature >= 0.01 && options.temperature <= 10,
                       "pretraining options: epochs must be >= 1, the batch size >= 2, the learning rate in (0, 1] "
                       "and the temperature in [0.01, 10]");
  const std::int64_t C = sample_shape[0], H = sample_shape[1], W = sample_shape[2];
  const std::int64_t per = C * H * W;
  for (std::int64_t i = 0; i < n * per; ++i)
    QUARRY_EXPECTS(std::isfinite(x[i]), "pretraining: image ", i / per, ", value ", i % per, " is ", x[i],
                   ", expected a finite pixel value");
  Array out = Array::allocate(DType::f32, {n, kDim}, "pretrained embeddings");
  PretrainReport rep;
  try {
    set_threads(options.threads);
    const torch::Device device = torch_device(options.device);
    rep.device = device_name(device);
    torch::manual_seed(options.seed);
    if (device.is_cuda()) torch::cuda::manual_seed_all(options.seed);
    auto pool = torch::from_blob(const_cast<float*>(x), {n, C, H, W}, torch::kFloat32);
    // Normalisation by the pool's per-channel mean and standard deviation; a channel without
    // spread (constant, or nearly) keeps its scale, where dividing would blow augmentation
    // noise up into the loss.
    const auto mean = pool.mean({0, 2, 3}, true);
    auto stdev = pool.std({0, 2, 3}, true, true);
    stdev = torch::where(stdev < 1e-3, torch::ones_like(stdev), stdev);
    const auto dmean = mean.to(device), dstd = stdev.to(device);

    auto net = std::make_shared<Encoder>(C, H, W);
    net->to(device);
    for (const auto& p : net->parameters()) rep.parameters += p.numel();
    torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(options.learning_rate).weight_decay(1e-6));

    // A batch never exceeds the pool; the last partial batch of an epoch is dropped (batch-norm
    // statistics of a handful of images are noise), except when the pool is smaller than a batch.
    const std::int64_t B = std::min<std::int64_t>(options.batch_size, n);
    std::mt19937_64 rng(options.seed ^ 0x5EEDC0DEull);
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    for (int epoch = 1; epoch <= options.epochs; ++epoch) {
      for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
      for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
      net->train();
      double sum = 0;
      std::int64_t steps = 0;
      for (std::int64_t b = 0; b + B <= n; b += B) {
        auto idx = torch::from_blob(order.data() + b, {B}, torch::kInt64);
        const auto batch = net->shrink(pool.index_select(0, idx).to(device));
        const auto views = (torch::cat({augment(batch), augment(batch)}) - dmean) / dstd;
        opt.zero_grad();
        const auto loss = contrastive_loss(net->project(net->encode(views)), options.temperature);
        loss.backward();
        opt.step();
        sum += loss.item<double>();
        ++steps;
      }
      const double mean_loss = sum / static_cast<double>(std::max<std::int64_t>(steps, 1));
      QUARRY_EXPECTS(std::isfinite(mean_loss), "pretraining: the contrastive loss became ", mean_loss,
                     " at epoch ", epoch, " (diverged: try a lower learning rate)");
      rep.loss.push_back(mean_loss);
      if (progress) progress({"epoch", epoch, options.epochs});
    }

    // The embeddings: the encoder in eval mode (batch-norm statistics of the clean pool), unit rows.
    constexpr std::int64_t kInferBatch = 1024;
    net->recompute_norms(pool, dmean, dstd, device, kInferBatch);
    torch::NoGradGuard guard;
    float* dst = static_cast<float*>(out.mutable_data());
    for (std::int64_t b = 0; b < n; b += kInferBatch) {
      const std::int64_t e = std::min(n, b + kInferBatch);
      const auto batch = (pool.slice(0, b, e).to(device) - dmean) / dstd;
      const auto raw = net->encode(batch);
      // A dead or diverged encoder gives rows of zeros or non-finite values, which no typicality
      // can use: an error rather than a file of them.
      const auto norms = raw.norm(2, 1);
      QUARRY_EXPECTS(torch::isfinite(raw).all().item<bool>() && (norms > 1e-12).all().item<bool>(),
                     "pretraining failed: the encoder gives ",
                     torch::isfinite(raw).all().item<bool>() ? "all-zero embeddings" : "non-finite embeddings",
                     " for some images (it diverged or its units died: try a lower learning rate)");
      auto h = torch::nn::functional::normalize(raw, torch::nn::functional::NormalizeFuncOptions().dim(1))
                   .to(torch::kCPU)
                   .contiguous();
      std::memcpy(dst + b * kDim, h.data_ptr<float>(), sizeof(float) * static_cast<std::size_t>((e - b) * kDim));
    }
  } catch (...) {
    fail_from_current("pretraining");
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (report) *report = rep;
  return out;
}

}  // namespace quarry
