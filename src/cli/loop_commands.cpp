// The loop subcommands: train, infer, pretrain, simulate, report.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/loop.hpp"
#include "quarry/train.hpp"
#include "quarry/version.hpp"
#include "io/files.hpp"
#include "simulate/strategy.hpp"

namespace quarry::cli {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

const char* kDatasetHelp =
    "Dataset: idx:DIR (MNIST-style IDX files), npz:FILE (MedMNIST layout), npy:X.npy,y.npy "
    "(feature vectors), pool:X.npy (unlabeled features or images), synthetic[:N] (built-in image pool)";

// The file a --model spec reads ("torchscript:FILE"), or "".
std::string model_file(const std::string& spec) {
  return spec.rfind("torchscript:", 0) == 0 ? spec.substr(12) : std::string();
}

// Options every loop command shares: the dataset and how it is split.
struct DataArgs {
  std::string dataset = "synthetic";
  std::int64_t pool_limit = 0;
  std::uint64_t data_seed = 0;

  void add(CLI::App* cmd, bool required) {
    auto* o = cmd->add_option("--dataset", dataset, kDatasetHelp);
    if (required) o->required()->default_str("");  // no default to show: it must be given
    cmd->add_option("--pool-limit", pool_limit,
                    "Use a random subset of this many training samples (0: all)")->check(non_negative());
    cmd->add_option("--data-seed", data_seed,
                    "Seed of the held-out splits and of --pool-limit's subset (use the same value for "
                    "train and infer)");
  }
  Dataset load() const {
    DatasetOptions o;
    o.seed = data_seed;
    o.pool_limit = pool_limit;
    return load_dataset(dataset, o);
  }
};

// Options of training.
struct TrainArgs {
  std::string model, committee = "none", device = "auto";
  int epochs = 40, patience = 6, min_steps = 300, batch_size = 64, threads = 0;
  double lr = 1e-3, weight_decay = 1e-4;
  bool no_class_weights = false;
  std::uint64_t seed = 0;

  void add(CLI::App* cmd, bool committee_flag) {
    cmd->add_option("--model", model, "cnn, mlp or torchscript:FILE (default: cnn for images, mlp for features)");
    if (committee_flag)
      cmd->add_option("--committee", committee,
                      "none, mc:M (MC-dropout samples at inference) or ensemble:M (train M models)");
    cmd->add_option("--epochs", epochs, "Most epochs (early stopping on the validation balanced accuracy)")->check(positive());
    cmd->add_option("--patience", patience, "Epochs without a better validation balanced accuracy before stopping")
        ->check(positive());
    cmd->add_option("--min-steps", min_steps, "At least this many optimiser steps, however few the labels")
        ->check(non_negative());
    cmd->add_option("--batch-size", batch_size, "Training batch size")->check(positive());
    cmd->add_option("--lr", lr, "Adam learning rate")->check(positive());
    cmd->add_option("--weight-decay", weight_decay, "Adam weight decay")->check(non_negative());
    cmd->add_flag("--no-class-weights", no_class_weights, "Do not weight the loss by inverse class frequency");
    cmd->add_option("--seed", seed, "Seed of the initialisation, data order and dropout");
    cmd->add_option("--device", device, "Where LibTorch runs: auto, cpu, cuda or cuda:N");
    cmd->add_option("--threads", threads, "CPU threads (0: all)")->check(non_negative());
  }
  TrainOptions options(const Dataset& data) const {
    TrainOptions o;
    o.model = model.empty() ? default_model(data) : parse_model_spec(model);
    o.committee = parse_committee(committee);
    o.max_epochs = epochs;
    o.patience = patience;
    o.min_steps = min_steps;
    o.batch_size = batch_size;
    o.learning_rate = lr;
    o.weight_decay = weight_decay;
    o.class_weights = !no_class_weights;
    o.seed = seed;
    o.device = parse_device(device);
    o.threads = threads;
    return o;
  }
};

std::string percent(double v) { return fmt::format("{:.1f}%", 100.0 * v); }

std::string metrics_line(const Metrics& m) {
  std::string s = fmt::format("accuracy {}, balanced accuracy {}, macro-F1 {:.3f}", percent(m.accuracy),
                              percent(m.balanced_accuracy), m.macro_f1);
  if (m.num_classes == 2)
    s += fmt::format(", sensitivity {} / {} (class 0 / 1)", percent(m.sensitivity[0]), percent(m.sensitivity[1]));
  return s;
}

// ------------------------------------------------------------------ train
void add_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", loop_command_help("train"));
  struct Args {
    DataArgs data;
    TrainArgs train;
    std::string labeled, out;
  };
  auto a = std::make_shared<Args>();
  a->data.add(cmd, true);
  a->train.add(cmd, true);
  cmd->add_option("--labeled", a->labeled,
                  "Pool indices to train on (.npy of integers, or text/CSV with an index column); "
                  "default: the whole training split");
  cmd->add_option("--out", a->out, "Model file to write (LibTorch archive)")->required();
  cmd->callback([a] {
    check_outputs({{"--out", a->out}}, {{"--dataset", a->data.dataset},
                                        {"--labeled", a->labeled},
                                        {"--model", model_file(a->train.model)}});
    expect_output_folder({"--out", a->out});  // before minutes of training, not after
    const Dataset data = a->data.load();
    QUARRY_USAGE_EXPECTS(data.num_classes >= 2, data.spec, " has no labels (", data.describe(),
                         "): train needs a labeled dataset (idx:, npz:, npy:X,y or synthetic); to label an "
                         "unlabeled pool, make a labeling project (`quarry project init`)");
    std::vector<std::int64_t> labeled;
    if (a->labeled.empty()) {
      for (std::int64_t i = 0; i < data.train.size(); ++i) labeled.push_back(i);
    } else {
      labeled = read_index_list(a->labeled);
      for (std::size_t r = 0; r < labeled.size(); ++r)
        QUARRY_EXPECTS(labeled[r] >= 0 && labeled[r] < data.train.size(), a->labeled, ": entry ", r + 1,
                       ": index ", labeled[r], " is outside the pool [0, ", data.train.size(), ") of ",
                       data.spec);
    }
    const TrainOptions o = a->train.options(data);
    std::fprintf(stderr, "quarry: train: %s, %zu labeled\n", data.describe().c_str(), labeled.size());
    {
      std::vector<std::int64_t> count(static_cast<std::size_t>(data.num_classes), 0);
      for (auto i : labeled) ++count[static_cast<std::size_t>(data.train.y[static_cast<std::size_t>(i)])];
      std::string missing;
      for (int c = 0; c < data.num_classes; ++c)
        if (count[c] == 0) missing += (missing.empty() ? "" : ", ") + std::to_string(c);
      if (!missing.empty())
        std::fprintf(stderr, "quarry: warning: no labeled sample of class %s: the model cannot learn %s\n",
                     missing.c_str(), missing.find(',') == std::string::npos ? "it" : "them");
    }
    auto last = std::make_shared<Clock::time_point>(Clock::now());
    TrainReport rep;
    const Model model = Model::train(data, labeled, o, &rep, [last](const Progress& p) {
      if (seconds_since(*last) < 1.0) return;
      *last = Clock::now();
      std::fprintf(stderr, "quarry: train: %s %lld/%lld\n", p.phase, static_cast<long long>(p.done),
                   static_cast<long long>(p.total));
    });
    model.save(a->out);
    std::printf("model: %s\n", model.describe().c_str());
    std::printf("trained: %d epochs in %.1f s on %s (best epoch %d: validation balanced accuracy %.1f%%, "
                "loss %.4f)\n", rep.epochs, rep.seconds, rep.device.c_str(), rep.best_epoch,
                100 * rep.best_val_balanced_accuracy, rep.best_val_loss);
    if (data.val.size() > 0)
      std::printf("validation: %s\n",
                  metrics_line(evaluate_predictions(data.val.y, model.predict(data.val, o.threads), data.num_classes))
                      .c_str());
    if (data.test.size() > 0)
      std::printf("test: %s\n",
                  metrics_line(evaluate_predictions(data.test.y, model.predict(data.test, o.threads), data.num_classes))
                      .c_str());
    std::printf("wrote %s\n", a->out.c_str());
  });
}

// ------------------------------------------------------------------ pretrain
void add_pretrain(CLI::App& app) {
  auto* cmd = app.add_subcommand("pretrain", loop_command_help("pretrain"));
  struct Args {
    DataArgs data;
    PretrainOptions o;
    std::string out, labels_out, device = "auto";
  };
  auto a = std::make_shared<Args>();
  a->data.add(cmd, true);
  cmd->add_option("--out", a->out,
                  "Embeddings file to write: .npy [N, 128] float32, one row per pool sample in pool order "
                  "(simulate: give it the same --dataset, --pool-limit and --data-seed; project init: the "
                  "same --dataset, no --pool-limit, --data-seed = the project's --seed)")
      ->required();
  cmd->add_option("--labels-out", a->labels_out,
                  "Also write the pool's labels, .npy [N] int64 in the same order, for a benchmark of a model "
                  "trained on the embeddings (simulate --dataset npy:E.npy,Y.npy); pretraining reads no label");
  cmd->add_option("--epochs", a->o.epochs, "Epochs of contrastive training")->check(positive());
  cmd->add_option("--batch-size", a->o.batch_size, "Images per step (each gives two views)")
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--lr", a->o.learning_rate, "Adam learning rate, in (0, 1]")
      ->check(positive())
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--temperature", a->o.temperature, "Temperature of the contrastive (NT-Xent) loss, in [0.01, 10]")
      ->check(CLI::Range(0.01, 10.0));
  cmd->add_option("--seed", a->o.seed, "Seed of the initialisation, data order and augmentations");
  cmd->add_option("--device", a->device, "Where LibTorch runs: auto, cpu, cuda or cuda:N");
  cmd->add_option("--threads", a->o.threads, "CPU threads (0: all)")->check(non_negative());
  cmd->callback([a] {
    std::vector<Named> outs = {{"--out", a->out}};
    if (!a->labels_out.empty()) outs.push_back({"--labels-out", a->labels_out});
    check_outputs(outs, {{"--dataset", a->data.dataset}});
    for (const Named& o : outs) expect_output_folder(o);  // before minutes of training, not after
    a->o.device = parse_device(a->device);
    const Dataset data = a->data.load();
    QUARRY_USAGE_EXPECTS(data.is_image(), data.spec, " holds feature vectors (", data.describe(),
                         "), not images: pretraining learns from images; give feature vectors to the "
                         "cold start directly (--seed-embeddings)");
    QUARRY_USAGE_EXPECTS(a->labels_out.empty() || std::all_of(data.train.y.begin(), data.train.y.end(),
                                                              [](std::int32_t y) { return y >= 0; }),
                         "--labels-out: ", data.spec, " is an unlabeled pool; there are no labels to write");
    std::fprintf(stderr, "quarry: pretrain: %s: %lld unlabeled image%s, %d epoch%s\n", data.describe().c_str(),
                 static_cast<long long>(data.train.size()), data.train.size() == 1 ? "" : "s", a->o.epochs,
                 a->o.epochs == 1 ? "" : "s");
    PretrainReport rep;
    const Array e = pretrain_embeddings(data.train.x.data(), data.train.size(), data.sample_shape, a->o, &rep,
                                        [](const Progress& p) {
                                          std::fprintf(stderr, "quarry: pretrain: epoch %lld/%lld\n",
                                                       static_cast<long long>(p.done),
                                                       static_cast<long long>(p.total));
                                        });
    // Both files are written in full before either is published: a failure leaves neither
    // (an earlier pair stays a pair).
    const auto npy_bytes = [](const ArrayView& v) {
      return std::string_view(static_cast<const char*>(v.data), v.nbytes());
    };
    AtomicFile embeddings(a->out);
    embeddings.write(npy_header(e.dtype(), e.shape(), a->out));
    embeddings.write(npy_bytes(e.view()));
    std::unique_ptr<AtomicFile> labels;
    if (!a->labels_out.empty()) {
      std::vector<std::int64_t> y(data.train.y.begin(), data.train.y.end());
      const ArrayView yv{y.data(), DType::i64, {static_cast<std::int64_t>(y.size())}};
      labels = std::make_unique<AtomicFile>(a->labels_out);
      labels->write(npy_header(yv.dtype, yv.shape, a->labels_out));
      labels->write(npy_bytes(yv));
    }
    if (labels) labels->commit();
    embeddings.commit();
    std::string losses;
    for (double l : rep.loss) losses += fmt::format("{}{:.3f}", losses.empty() ? "" : " ", l);
    std::printf("pretrained: %d epoch%s in %.1f s on %s (%lld parameters); contrastive loss per epoch: %s\n",
                a->o.epochs, a->o.epochs == 1 ? "" : "s", rep.seconds, rep.device.c_str(), static_cast<long long>(rep.parameters),
                losses.c_str());
    std::printf("wrote %s %s: the embeddings of %s's pool", a->out.c_str(), shape_string(e.shape()).c_str(),
                data.spec.c_str());
    if (a->data.pool_limit > 0 || a->data.data_seed != 0)
      std::printf(" (--pool-limit %lld --data-seed %llu)", static_cast<long long>(a->data.pool_limit),
                  static_cast<unsigned long long>(a->data.data_seed));
    std::printf("; use them with --seed-strategy typiclust|probcover --seed-embeddings %s (simulate, or project "
                "init over the same pool)\n",
                a->out.c_str());
    if (!a->labels_out.empty())
      std::printf("wrote %s [%lld]: the pool's labels in the same order\n", a->labels_out.c_str(),
                  static_cast<long long>(data.train.size()));
  });
}

// ------------------------------------------------------------------ infer
void add_infer(CLI::App& app) {
  auto* cmd = app.add_subcommand("infer", loop_command_help("infer"));
  struct Args {
    DataArgs data;
    std::string model, out, split = "train", committee, device = "auto";
    std::uint64_t seed = 0;
    int batch_size = 512, threads = 0;
  };
  auto a = std::make_shared<Args>();
  a->data.add(cmd, true);
  cmd->add_option("--model", a->model, "Model file written by quarry train")->required();
  cmd->add_option("--out", a->out,
                  "Folder for probs.npy [N,C], embeddings.npy [N,D], committee.npy [M,N,C] and rows.npy [N] "
                  "(the source file's row of each pool sample)")
      ->required();
  cmd->add_option("--split", a->split, "train (the pool), val or test")->check(CLI::IsMember({"train", "val", "test"}));
  cmd->add_option("--committee", a->committee,
                  "none, mc:M or ensemble:M (default: what the model was trained with)");
  cmd->add_option("--seed", a->seed, "Seed of the MC-dropout masks");
  cmd->add_option("--batch-size", a->batch_size, "Inference batch size")->check(positive());
  cmd->add_option("--threads", a->threads, "CPU threads (0: all)")->check(non_negative());
  cmd->add_option("--device", a->device, "Where LibTorch runs: auto, cpu, cuda or cuda:N");
  cmd->callback([a] {
    const std::filesystem::path d(a->out);
    expect_folder_arg("--out", a->out);
    check_outputs({{"--out", (d / "probs.npy").string()},
                   {"--out", (d / "embeddings.npy").string()},
                   {"--out", (d / "committee.npy").string()},
                   {"--out", (d / "rows.npy").string()}},
                  {{"--dataset", a->data.dataset}, {"--model", a->model}});
    const Dataset data = a->data.load();
    const Model model = Model::load(a->model, parse_device(a->device));
    // An unlabeled pool (pool:X.npy) has no classes of its own: only its samples must fit.
    QUARRY_EXPECTS(model.sample_shape() == data.sample_shape &&
                       (data.num_classes == 0 || model.num_classes() == data.num_classes),
                   a->model,
                   ": the model takes ", shape_string(model.sample_shape()), " samples of ", model.num_classes(),
                   " classes, but ", data.spec, " has ", shape_string(data.sample_shape), " samples of ",
                   data.num_classes, " classes");
    const Split& split = a->split == "train" ? data.train : a->split == "val" ? data.val : data.test;
    InferOptions io;
    if (!a->committee.empty()) io.committee = parse_committee(a->committee);
    io.seed = a->seed;
    io.batch_size = a->batch_size;
    io.threads = a->threads;
    const auto t0 = Clock::now();
    const Inference inf = model.infer(split, io);
    const double t = seconds_since(t0);
    const MadeFolder folder("--out", a->out);
    write_npy((d / "probs.npy").string(), inf.probs.view());
    write_npy((d / "embeddings.npy").string(), inf.embeddings.view());
    // (A default Array has no shape: without a committee there is no committee.npy, and one
    // left by an earlier run into this folder is removed so that it is never read as this one's.)
    const bool has_committee = !inf.committee.shape().empty();
    if (has_committee) {
      write_npy((d / "committee.npy").string(), inf.committee.view());
    } else {
      std::error_code ec;
      std::filesystem::remove(d / "committee.npy", ec);
      QUARRY_EXPECTS(!ec, (d / "committee.npy").string(), ": cannot remove the stale file: ", ec.message());
    }
    // Pool index -> row of the source file's split (held-out samples and --pool-limit remove rows).
    std::vector<std::int64_t> rows(static_cast<std::size_t>(split.size()));
    for (std::int64_t i = 0; i < split.size(); ++i) rows[static_cast<std::size_t>(i)] = split.source_row(i);
    write_npy((d / "rows.npy").string(), ArrayView{rows.data(), DType::i64, {split.size()}});
    std::printf("model: %s\n", model.describe().c_str());
    std::printf("inferred %lld samples of the %s split in %.2f s (%.0f samples/s)\n",
                static_cast<long long>(split.size()), a->split.c_str(), t, split.size() / std::max(t, 1e-9));
    std::printf("wrote %s/probs.npy %s, rows.npy, embeddings.npy %s", a->out.c_str(), shape_string(inf.probs.shape()).c_str(),
                shape_string(inf.embeddings.shape()).c_str());
    if (has_committee) std::printf(", committee.npy %s", shape_string(inf.committee.shape()).c_str());
    std::printf("\n");
  });
}

// ------------------------------------------------------------------ simulate
void add_simulate(CLI::App& app) {
  auto* cmd = app.add_subcommand("simulate", loop_command_help("simulate"));
  struct Args {
    DataArgs data;
    TrainArgs train;
    std::string strategies = "random,entropy,margin,bald,badge", committee = "mc:10", out = "quarry-simulate",
                score_device = "auto", balance_target;
    std::int64_t seed_size = 200, batch = 100;
    int rounds = 10, repeats = 3;
    std::uint64_t seed = 0;
    std::string stop, seed_strategy = "random", seed_embeddings;
    std::int64_t stop_set = 1000;
    bool stop_early = false;
    double batchbald_restart = 0.5;
  };
  auto a = std::make_shared<Args>();
  a->data.add(cmd, false);
  a->train.add(cmd, false);
  cmd->add_option("--strategies", a->strategies,
                  "Comma-separated: random, any acquisition (entropy, margin, least-confidence, ratio, bald, "
                  "vote-entropy, kl-max, variation-ratio, consensus-entropy, egl, badge-norm) or diversity "
                  "strategy (badge, kcenter, cluster-margin, uncertain-kcenter), batchbald (needs the committee), "
                  "or balanced:NAME (NAME per predicted class, toward --balance-target)");
  cmd->add_option("--balance-target", a->balance_target,
                  "The balanced:NAME strategies' target class distribution: one weight per class, e.g. 0.5,0.5 "
                  "(normalised; default uniform)");
  cmd->add_option("--committee", a->committee, "Committee of the committee strategies: mc:M or ensemble:M");
  auto* restart = cmd->add_option("--batchbald-restart", a->batchbald_restart,
                                  "batchbald: a new joint batch starts when the best gain falls below this share of "
                                  "the best a fresh one could gain (0: one joint batch, the paper's)")
                      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed-size", a->seed_size, "Initial labeled set")->check(positive());
  cmd->add_option("--seed-strategy", a->seed_strategy,
                  "How the initial set is chosen: random, or typiclust / probcover over --seed-embeddings (the cold "
                  "start)")
      ->check(CLI::IsMember({"random", "typiclust", "probcover"}));
  cmd->add_option("--seed-embeddings", a->seed_embeddings,
                  "Embeddings [pool, D] (.npy, e.g. from quarry pretrain) for --seed-strategy and auto's typicality; "
                  "default: the pool's inputs, flattened");
  cmd->add_option("--batch", a->batch, "Labels bought per round")->check(positive());
  cmd->add_option("--rounds", a->rounds, "Selection rounds")->check(non_negative());
  cmd->add_option("--repeats", a->repeats, "Repeats (each with its own initial set and training seed)")
      ->check(positive());
  cmd->add_option("--score-device", a->score_device, "Where scoring and selection run: auto, cpu, cuda[:N]");
  cmd->add_option("--stop", a->stop,
                  "Stopping rule, reported every round: kappa:THRESHOLD:WINDOW fires when the mean Cohen's kappa "
                  "of the last WINDOW consecutive models' predictions on a fixed stop set reaches THRESHOLD "
                  "(e.g. kappa:0.99:3)");
  cmd->add_option("--stop-set", a->stop_set, "Samples of the pool in the stop set (outside the initial set)")
      ->check(positive());
  cmd->add_flag("--stop-early", a->stop_early, "End a strategy's repeat where the stopping rule fires");
  cmd->add_option("--out", a->out, "Folder for rounds.jsonl, curves.csv, summary.json, summary.md, curves.svg");
  cmd->callback([a, restart] {
    QUARRY_USAGE_EXPECTS(!a->stop_early || !a->stop.empty(), "--stop-early needs a rule: --stop kappa:THRESHOLD:WINDOW");
    std::optional<StopRule> stop;
    if (!a->stop.empty()) {
      stop = parse_stop_rule(a->stop);
      stop->set_size = a->stop_set;
    }
    const auto t0 = Clock::now();
    expect_folder_arg("--out", a->out);
    {
      const std::filesystem::path d(a->out);
      std::vector<Named> outs;
      for (const char* f : {"rounds.jsonl", "curves.csv", "summary.json", "summary.md", "curves.svg"})
        outs.push_back({"--out", (d / f).string()});
      check_outputs(outs, {{"--dataset", a->data.dataset}, {"--model", model_file(a->train.model)}, {"--seed-embeddings", a->seed_embeddings}});
    }
    const Dataset data = a->data.load();
    SimulateOptions o;
    o.strategies = split_commas(a->strategies, false);
    o.seed_size = a->seed_size;
    o.batch = a->batch;
    o.rounds = a->rounds;
    o.repeats = a->repeats;
    o.seed = a->train.seed;
    o.train = a->train.options(data);
    o.committee = parse_committee(a->committee);
    o.device = parse_device(a->score_device);
    o.stop = stop;
    o.stop_early = a->stop_early;
    o.seed_strategy = a->seed_strategy;
    o.seed_embeddings = a->seed_embeddings;
    if (!a->balance_target.empty())
      o.balance_target = loop::parse_balance_target(a->balance_target, data.num_classes, "--balance-target");
    o.batchbald_restart = a->batchbald_restart + 0.0;  // -0 recorded as 0
    const bool batchbald = std::any_of(o.strategies.begin(), o.strategies.end(), [](const std::string& s) {
      return loop::parse_strategy(s, "--strategies").kind == loop::Strategy::Kind::batchbald;
    });
    QUARRY_USAGE_EXPECTS(restart->count() == 0 || batchbald,
                         "--batchbald-restart is for the batchbald strategies, and none is listed in --strategies");
    QUARRY_EXPECTS(have_torch(), "this build of quarry has no LibTorch: simulate needs it (Debian: libtorch-dev)");
    check_simulate_options(data, o);  // impossible sizes fail here, before the folder is made

    nlohmann::json config = {
        {"dataset", data.spec},           {"dataset_description", data.describe()},
        {"model", model_spec_string(o.train.model)},
        {"committee", committee_string(o.committee)}, {"balance_target", o.balance_target},
        {"strategies", o.strategies},     {"seed_size", o.seed_size},
        {"batch", o.batch},               {"rounds", o.rounds},
        {"repeats", o.repeats},           {"seed", o.seed},
        {"pool_limit", a->data.pool_limit}, {"data_seed", a->data.data_seed},
        {"max_epochs", o.train.max_epochs}, {"patience", o.train.patience},
        {"min_steps", o.train.min_steps}, {"batch_size", o.train.batch_size},
        {"learning_rate", o.train.learning_rate}, {"weight_decay", o.train.weight_decay},
        {"class_weights", o.train.class_weights}, {"train_device", device_string(o.train.device)},
        {"score_device", device_string(o.device)}, {"threads", o.train.threads},
        {"quarry", build_info().version},  {"libtorch", build_info().torch_version}};
    config["seed_strategy"] = o.seed_strategy;
    if (!o.seed_embeddings.empty()) config["seed_embeddings"] = o.seed_embeddings;
    if (batchbald) config["batchbald_restart"] = o.batchbald_restart;
    if (o.stop) {
      config["stop"] = o.stop->describe();
      config["stop_set"] = o.stop->set_size;
      config["stop_early"] = o.stop_early;
    }

    const MadeFolder folder("--out", a->out);
    const std::string rounds_path = (std::filesystem::path(a->out) / "rounds.jsonl").string();
    auto lines = std::make_shared<std::string>();
    const std::size_t total_rounds = o.strategies.size() * static_cast<std::size_t>(o.repeats) *
                                     static_cast<std::size_t>(o.rounds + 1);
    auto done = std::make_shared<std::size_t>(0);
    std::fprintf(stderr, "quarry: simulate: %s; model %s; %zu strategies x %d repeats x %d rounds\n",
                 data.describe().c_str(), model_spec_string(o.train.model).c_str(), o.strategies.size(),
                 o.repeats, o.rounds + 1);
    o.on_round = [&, lines, done](const RoundRecord& r) {
      // rounds.jsonl grows as the run goes (rewritten atomically): a long run keeps its rounds.
      *lines += round_json(r) + "\n";
      write_file_atomic(rounds_path, {*lines});
      ++*done;
      const std::string stop_text =
          std::isnan(r.stop_kappa) ? std::string()
                                   : fmt::format(", kappa {:.3f}{}", r.stop_kappa,
                                                 r.stop_fired ? " (stopping rule fired: labels have stopped paying)" : "");
      std::fprintf(stderr,
                   "quarry: [%zu/%zu] %-18s repeat %d/%d round %2d/%d: %5lld labels, accuracy %5.1f%%, "
                   "balanced %5.1f%% (%.1f s)%s\n",
                   *done, total_rounds, r.strategy.c_str(), r.repeat + 1, o.repeats, r.round, o.rounds,
                   static_cast<long long>(r.labels), 100 * r.test.accuracy, 100 * r.test.balanced_accuracy,
                   r.round_seconds, stop_text.c_str());
    };
    const std::vector<RoundRecord> records = simulate(data, o);

    SimulationSummary header;
    header.dataset = data.spec + " (" + data.describe() + ")";
    header.model = model_spec_string(o.train.model) + ", committee strategies: " + committee_string(o.committee);
    header.seed_size = o.seed_size;
    header.batch = o.batch;
    header.rounds = o.rounds;
    header.repeats = o.repeats;
    header.num_classes = data.num_classes;
    config["seconds"] = seconds_since(t0);
    header.config_json = config.dump();
    const SimulationSummary summary = summarize(records, header);
    write_simulation_report(a->out, records, summary);

    std::printf("quarry simulate: %s, %d repeats, %lld + %d x %lld labels, %.0f s\n", data.spec.c_str(), o.repeats,
                static_cast<long long>(o.seed_size), o.rounds, static_cast<long long>(o.batch), seconds_since(t0));
    std::printf("  %-18s %16s %16s %22s %22s\n", "strategy", "final accuracy", "final balanced",
                "labels to random acc", "labels to random bal");
    auto eff = [](const Efficiency& e) {
      if (e.baseline) return std::string("(baseline)");
      if (!e.labels) return std::string("not reached");
      // Fewer labels than random print as a negative change; rounded first, so never "-0%".
      const double change = e.saving_percent ? std::round(-*e.saving_percent) + 0.0 : 0.0;
      return fmt::format("{:.0f} ({:+.0f}%)", *e.labels, change);
    };
    for (const auto& s : summary.strategies) {
      const auto& acc = s.accuracy.back();
      const auto& bal = s.balanced_accuracy.back();
      std::printf("  %-18s %8.1f ± %4.1f%% %8.1f ± %4.1f%% %22s %22s\n", s.strategy.c_str(), 100 * acc.mean,
                  100 * acc.std, 100 * bal.mean, 100 * bal.std, eff(s.accuracy_efficiency).c_str(),
                  eff(s.balanced_accuracy_efficiency).c_str());
    }
    const std::filesystem::path d(a->out);
    std::printf("summary: %s\nplot:    %s\nrounds:  %s\n", (d / "summary.md").string().c_str(),
                (d / "curves.svg").string().c_str(), rounds_path.c_str());
  });
}

// ------------------------------------------------------------------ report
void add_report(CLI::App& app) {
  auto* cmd = app.add_subcommand("report", loop_command_help("report"));
  struct Args {
    std::string dir, baseline, out;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("DIR", a->dir, "The simulate --out folder")->required();
  cmd->add_option("--baseline", a->baseline,
                  "The strategy every other is compared with (default: the run's, random): e.g. bald, to read "
                  "how many labels batchbald saves against it");
  cmd->add_option("--out", a->out, "Folder for the report's four files (default: DIR, rebuilt in place)");
  cmd->callback([a] {
    const std::filesystem::path d(a->dir);
    const std::string rounds_path = (d / "rounds.jsonl").string();
    std::error_code same_ec;
    const bool in_place = a->out.empty() || std::filesystem::equivalent(a->out, d, same_ec);
    if (!in_place) expect_folder_arg("--out", a->out);
    const std::filesystem::path o = in_place ? d : std::filesystem::path(a->out);
    // The report's own files are rebuilt; none may be rounds.jsonl (links followed), and only
    // in place may summary.json be the summary.json it reads. Elsewhere, none may be a file of
    // DIR's own report (through a link), nor go into another run's folder.
    const char* own[] = {"curves.csv", "summary.md", "curves.svg", "summary.json"};
    std::vector<Named> inputs = {{"rounds.jsonl", rounds_path}};
    if (!in_place) {
      for (const char* f : own) inputs.push_back({f, (d / f).string()});
      std::error_code ec;
      QUARRY_USAGE_EXPECTS(!std::filesystem::exists(o / "rounds.jsonl", ec), "--out ", quote_input(a->out, 200),
                           " holds another run (its rounds.jsonl): write the report to a folder of its own");
    }
    std::vector<Named> outputs;
    for (const char* f : own) outputs.push_back({f, (o / f).string()});
    std::vector<Named> read = inputs;  // what the three other files may not be
    if (in_place) read.push_back({"summary.json", (d / "summary.json").string()});
    check_outputs(std::vector<Named>(outputs.begin(), outputs.begin() + 3), read);
    check_outputs(std::vector<Named>(outputs.begin() + 3, outputs.end()), inputs);
    std::vector<RoundRecord> all;
    {
      const std::string text = read_text_file(rounds_path);
      std::size_t line = 0, start = 0;
      while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        ++line;
        const std::string l = text.substr(start, end - start);
        start = end + 1;
        if (l.empty()) continue;
        try {
          all.push_back(parse_round_json(l));
        } catch (const Error& e) {
          QUARRY_FAIL(rounds_path, ": line ", line, ": ", e.what());
        }
      }
    }
    QUARRY_EXPECTS(!all.empty(), rounds_path, ": no rounds");
    // The run's description and configuration, from the summary.json of the run where there is
    // one: its rounds (the last round a finished repeat has) and whether --stop-early ended
    // repeats where the rule fired.
    SimulationSummary header;
    int last = 0;
    for (const auto& r : all) last = std::max(last, r.round);
    bool stop_early = false;
    std::error_code ec;
    if (std::filesystem::exists(d / "summary.json", ec)) {
      const std::string text = read_text_file((d / "summary.json").string());
      const auto j = nlohmann::json::parse(text, nullptr, false);
      const auto text_of = [&](const char* key) {
        return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
      };
      if (j.is_object()) {
        header.dataset = text_of("dataset");
        header.model = text_of("model");
        if (j.contains("config") && j["config"].is_object()) {
          const auto& c = j["config"];
          header.config_json = c.dump();
          if (c.contains("rounds") && c["rounds"].is_number_integer())
            last = std::max(last, c["rounds"].get<int>());
          stop_early = c.contains("stop_early") && c["stop_early"].is_boolean() && c["stop_early"].get<bool>();
        }
      }
    }
    // Keep the (strategy, repeat) runs that reached the last round of the run, or that the
    // stopping rule ended (--stop-early).
    std::map<std::pair<std::string, int>, int> reached;
    std::map<std::pair<std::string, int>, bool> ended_by_rule;
    for (const auto& r : all) {
      int& at = reached[{r.strategy, r.repeat}];
      if (r.round >= at) ended_by_rule[{r.strategy, r.repeat}] = stop_early && r.stop_fired;
      at = std::max(at, r.round);
    }
    const auto complete = [&](const std::pair<std::string, int>& key) {
      return reached[key] == last || ended_by_rule[key];
    };
    std::vector<RoundRecord> records;
    for (auto& r : all)
      if (complete({r.strategy, r.repeat})) records.push_back(std::move(r));
    for (const auto& [key, round] : reached)
      if (!complete(key))
        std::fprintf(stderr, "quarry: report: %s repeat %d stopped at round %d of %d: left out\n", key.first.c_str(),
                     key.second + 1, round, last);
    QUARRY_EXPECTS(!records.empty(), rounds_path, ": no repeat reached the run's last round (", last,
                   "): nothing to summarise");
    header.rounds = last;
    if (!a->baseline.empty()) header.baseline = a->baseline;
    {
      std::set<std::string> names;
      for (const auto& r : records) names.insert(r.strategy);
      std::string valid;
      for (const auto& n : names) valid += (valid.empty() ? "" : ", ") + n;
      QUARRY_USAGE_EXPECTS(a->baseline.empty() || names.count(a->baseline) > 0, "--baseline ",
                           quote_input(a->baseline), ": no finished repeat of that strategy in ", rounds_path,
                           " (it has ", valid, ")");
    }
    const SimulationSummary summary = summarize(records, header);
    // The report's own files, rebuilt (summary.json was read above for the run's description).
    const MadeFolder folder("--out", o.string());
    write_file_atomic((o / "curves.csv").string(), {curves_csv(summary)});
    write_file_atomic((o / "summary.json").string(), {summary_json(summary)}, true);
    write_file_atomic((o / "summary.md").string(), {summary_markdown(summary)});
    write_file_atomic((o / "curves.svg").string(), {curves_svg(summary)});
    std::printf("summary: %s\nplot:    %s\n", (o / "summary.md").string().c_str(), (o / "curves.svg").string().c_str());
  });
}

}  // namespace

void add_loop_commands(CLI::App& app) {
  add_train(app);
  add_infer(app);
  add_pretrain(app);
  add_simulate(app);
  add_report(app);
}

}  // namespace quarry::cli
