// Training with LibTorch (Model::train): Adam on the class-weighted cross-entropy, one member
// at a time (ensembles: several, each from its own seed), early stopping on the validation
// split with the best epoch's weights kept. The networks, the members and the rest of the model
// are in model_torch_internal.hpp and model_torch.cpp.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "quarry/error.hpp"
#include "quarry/train.hpp"
#include "train/model_torch_internal.hpp"

namespace quarry {

using namespace torch_detail;

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


// The checks on the labeled set and the options, before anything is built.
void check_training_input(const Dataset& data, const std::vector<std::int64_t>& labeled,
                          const TrainOptions& options) {
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
}

// Standardisation by the pool's statistics (inputs only, no labels involved): the mean and
// 1 / standard deviation of each of the `numel` features over the pool.
void pool_standardisation(const Split& pool, std::int64_t numel, std::vector<float>& feature_mean,
                          std::vector<float>& feature_inv_std) {
  feature_mean.assign(static_cast<std::size_t>(numel), 0.0f);
  feature_inv_std.assign(static_cast<std::size_t>(numel), 1.0f);
  const std::int64_t n = pool.size();
  std::vector<double> s(static_cast<std::size_t>(numel), 0.0), s2(static_cast<std::size_t>(numel), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < numel; ++j) {
      const double v = pool.x[static_cast<std::size_t>(i * numel + j)];
      s[j] += v;
      s2[j] += v * v;
    }
  for (std::int64_t j = 0; j < numel; ++j) {
    const double mean = s[j] / std::max<std::int64_t>(n, 1);
    const double var = std::max(0.0, s2[j] / std::max<std::int64_t>(n, 1) - mean * mean);
    feature_mean[j] = static_cast<float>(mean);
    feature_inv_std[j] = static_cast<float>(1.0 / std::sqrt(var + 1e-8));
  }
}

// What every member trains and is checked on, on the model's device.
struct TrainingSet {
  torch::Tensor x, y;      // the labeled samples and their labels
  torch::Tensor weights;   // the loss's class weights
  torch::Tensor vx, vy;    // the validation samples and labels (nval of them)
  std::int64_t n = 0, nval = 0;
  std::int64_t steps_per_check = 0;  // optimiser steps between validation checks (an "epoch")
};

TrainingSet training_set(const Dataset& data, const std::vector<std::int64_t>& labeled,
                         const TrainOptions& options, const Model::Impl& m) {
  TrainingSet d;
  const std::int64_t numel = data.sample_numel();
  std::vector<std::int32_t> labels;
  for (auto i : labeled) labels.push_back(data.train.y[static_cast<std::size_t>(i)]);
  std::tie(d.x, d.y) = gather(data.train, numel, labeled, m.sample_shape, m.device);
  d.weights = class_weights(labels, m.num_classes, options.class_weights).to(m.device);

  // Validation: at most 1000 samples, evenly strided over the split.
  d.nval = std::min<std::int64_t>(data.val.size(), 1000);
  if (d.nval > 0) {
    std::vector<std::int64_t> rows;
    for (std::int64_t i = 0; i < d.nval; ++i) rows.push_back(i * data.val.size() / d.nval);
    std::tie(d.vx, d.vy) = gather(data.val, numel, rows, m.sample_shape, m.device);
  }

  d.n = static_cast<std::int64_t>(labeled.size());
  const std::int64_t steps_per_epoch = (d.n + options.batch_size - 1) / options.batch_size;
  // An "epoch" is at least min_steps / max_epochs steps: tiny labeled sets still get trained.
  d.steps_per_check =
      std::max<std::int64_t>(steps_per_epoch, (options.min_steps + options.max_epochs - 1) / options.max_epochs);
  return d;
}

struct Validation {
  double loss = 0, balanced_accuracy = 0;
};

// The validation check: balanced accuracy (what imbalanced pools are judged by), and the
// class-weighted loss that breaks its ties. Leaves the member in eval mode.
Validation validate(Member& member, const TrainingSet& d, int num_classes) {
  Validation v;
  torch::NoGradGuard guard;
  member.set_training(false);
  double sum = 0, wsum = 0;
  std::vector<std::int64_t> hit(static_cast<std::size_t>(num_classes), 0),
      total(static_cast<std::size_t>(num_classes), 0);
  for (std::int64_t b = 0; b < d.nval; b += 1024) {
    const std::int64_t e = std::min(d.nval, b + 1024);
    auto logits = member.logits(d.vx.slice(0, b, e));
    auto target = d.vy.slice(0, b, e);
    auto w = d.weights.index_select(0, target);
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
  v.loss = sum / std::max(wsum, 1e-30);
  int present = 0;
  for (int c = 0; c < num_classes; ++c)
    if (total[c] > 0) {
      v.balanced_accuracy += static_cast<double>(hit[c]) / static_cast<double>(total[c]);
      ++present;
    }
  v.balanced_accuracy /= std::max(present, 1);
  return v;
}

// How a member's training went.
struct MemberFit {
  int epochs = 0;  // epochs run
  int best_epoch = 0;
  double best_val_loss = 0, best_val_balanced_accuracy = 0;
};

// Trains a fresh member (Adam; batches drawn from a shuffle seeded by `seed`) until early
// stopping or max_epochs, then restores the best epoch's weights; leaves it in eval mode.
MemberFit fit_member(Member& member, const TrainingSet& d, const Model::Impl& m,
                     const TrainOptions& options, std::uint64_t seed,
                     const ProgressFn& progress) {
  torch::optim::Adam opt(member.parameters(),
                         torch::optim::AdamOptions(options.learning_rate).weight_decay(options.weight_decay));
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> order(static_cast<std::size_t>(d.n));
  std::size_t cursor = order.size();
  double best = std::numeric_limits<double>::infinity(), best_bacc = -1.0;
  int best_epoch = 0;
  std::vector<torch::Tensor> best_state;
  int epoch = 0;
  try {
    for (epoch = 1; epoch <= options.max_epochs; ++epoch) {
      member.set_training(true);
      for (std::int64_t s = 0; s < d.steps_per_check; ++s) {
        if (cursor >= order.size()) {
          for (std::int64_t i = 0; i < d.n; ++i) order[i] = i;
          shuffle(order, rng);
          cursor = 0;
        }
        const std::size_t take = std::min<std::size_t>(options.batch_size, order.size() - cursor);
        auto idx = torch::from_blob(order.data() + cursor, {static_cast<std::int64_t>(take)}, torch::kInt64)
                       .to(m.device);
        cursor += take;
        opt.zero_grad();
        auto loss = torch::nn::functional::cross_entropy(
            member.logits(d.x.index_select(0, idx)), d.y.index_select(0, idx),
            torch::nn::functional::CrossEntropyFuncOptions().weight(d.weights));
        loss.backward();
        opt.step();
      }
      if (d.nval == 0) {  // no validation split: train for max_epochs and keep the last weights
        if (progress) progress({"epoch", epoch, options.max_epochs});
        continue;
      }
      // Selecting on the loss alone keeps, on imbalanced pools, early epochs whose loss is low
      // but which predict one class.
      const Validation val = validate(member, d, m.num_classes);
      const double val_loss = val.loss, val_bacc = val.balanced_accuracy;
      QUARRY_EXPECTS(std::isfinite(val_loss), model_spec_string(m.spec), ": the validation loss became ",
                     val_loss, " at epoch ", epoch, " (diverged: try a lower learning rate)");
      if (val_bacc > best_bacc || (val_bacc == best_bacc && val_loss < best)) {
        best = val_loss;
        best_bacc = val_bacc;
        best_epoch = epoch;
        best_state.clear();
        for (const auto& t : member.state()) best_state.push_back(t.detach().clone());
      } else if (epoch - best_epoch >= options.patience && epoch * d.steps_per_check >= options.min_steps) {
        break;  // patience ran out, and at least min_steps steps were taken
      }
      if (progress) progress({"epoch", epoch, options.max_epochs});
    }
  } catch (const c10::Error& e) {
    QUARRY_FAIL(model_spec_string(m.spec), ": training failed: ", torch_message(e));
  }
  MemberFit fit;
  fit.epochs = std::min(epoch, options.max_epochs);
  fit.best_epoch = best_epoch;
  fit.best_val_loss = best;
  fit.best_val_balanced_accuracy = best_bacc;
  if (!best_state.empty()) {
    torch::NoGradGuard guard;
    auto state = member.state();
    for (std::size_t i = 0; i < state.size(); ++i) state[i].copy_(best_state[i]);
  }
  member.set_training(false);
  return fit;
}

}  // namespace

Model Model::train(const Dataset& data, const std::vector<std::int64_t>& labeled,
                   const TrainOptions& options, TrainReport* report, const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  check_training_input(data, labeled, options);
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
  if (m.spec.kind == ModelSpec::Kind::mlp)
    pool_standardisation(data.train, data.sample_numel(), m.feature_mean, m.feature_inv_std);
  const TrainingSet d = training_set(data, labeled, options, m);

  const int members = options.committee.kind == CommitteeSpec::Kind::ensemble ? options.committee.members : 1;
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
    const MemberFit fit = fit_member(*member, d, m, options, seed, progress);
    rep.epochs += fit.epochs;
    if (mi == 0) {
      rep.best_epoch = fit.best_epoch;
      rep.best_val_loss = fit.best_val_loss;
      rep.best_val_balanced_accuracy = fit.best_val_balanced_accuracy;
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

}  // namespace quarry
