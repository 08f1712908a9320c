// `quarry project next`: the items that may be proposed, a random batch (no model yet, or the
// random strategy) or one chosen with the model (retrained when the labels changed, on the pool
// checked against its fingerprint), written to batches/NNNN.csv and .labelstudio.json before
// state.json lists it.
#include "quarry/project.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "project/csv.hpp"
#include "project/project_internal.hpp"
#include "quarry/dataset.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/loop.hpp"
#include "quarry/train.hpp"
#include "simulate/strategy.hpp"

namespace quarry {

using namespace project_detail;

// ------------------------------------------------------------------ next

namespace {

constexpr std::int64_t kHoldOutFrom = 200, kHoldOutMost = 1000;

// A progress line, where there is someone to tell.
void say(const ProjectLogFn& log, const std::string& s) {
  if (log) log(s);
}

// What differs between two fingerprints, in words ("" when they agree on rows, shape and content).
std::string pool_changes(const json& was, const json& now) {
  std::vector<std::string> what;
  if (was.value("rows", std::int64_t{-1}) != now.value("rows", std::int64_t{-2}))
    what.push_back(fmt::format("{} items, was {}", now.value("rows", std::int64_t{0}), was.value("rows", std::int64_t{0})));
  if (was.value("sample_shape", json()) != now.value("sample_shape", json()))
    what.push_back("samples of shape " + shape_string(now.value("sample_shape", std::vector<std::int64_t>{})) +
                   ", were " + shape_string(was.value("sample_shape", std::vector<std::int64_t>{})));
  else if (was.value("sample_crc32", std::string()) != now.value("sample_crc32", std::string()))
    what.push_back("the content of its rows differs (checksum of a sample of rows " +
                   now.value("sample_crc32", std::string()) + ", was " + was.value("sample_crc32", std::string()) + ")");
  if (what.empty()) return {};
  std::string files;
  if (was.contains("files") && now.contains("files") && was["files"] != now["files"])
    for (const auto& f : now["files"]) files += (files.empty() ? "" : ", ") + f.value("path", std::string()) +
                                               " (" + (f["bytes"].is_number() ? std::to_string(f["bytes"].get<std::uint64_t>()) : "?") + " bytes)";
  return fmt::format("{}{}", fmt::join(what, "; "), files.empty() ? "" : "; files now: " + files);
}

// ------------------------------------------------------------------ next: what may be proposed

// --replace-pending: the open batches are dropped; returns their items still without a label.
std::int64_t drop_open_batches(std::vector<BatchInfo>& batches, const std::map<std::int64_t, std::int32_t>& labels) {
  std::int64_t dropped = 0;
  for (auto& b : batches)
    if (b.state == "open") {
      for (auto i : b.index) dropped += labels.count(i) ? 0 : 1;
      b.state = "dropped";
    }
  return dropped;
}

// Per pool item: 1 where it is labeled or awaiting labels in an open batch.
std::vector<char> taken_items(std::int64_t pool, const std::map<std::int64_t, std::int32_t>& labels,
                              const std::vector<BatchInfo>& batches) {
  std::vector<char> taken(static_cast<std::size_t>(pool), 0);
  for (const auto& [index, label] : labels) taken[static_cast<std::size_t>(index)] = 1;
  for (const auto& b : batches)
    if (b.state == "open")
      for (auto i : b.index) taken[static_cast<std::size_t>(i)] = 1;
  return taken;
}

// The indices of the taken items, ascending; an Error when nothing or fewer than -k are left.
std::vector<std::int64_t> excluded_items(const std::vector<char>& taken, const std::string& dir, const NextOptions& o) {
  const std::int64_t pool = static_cast<std::int64_t>(taken.size());
  std::vector<std::int64_t> exclude;
  for (std::int64_t i = 0; i < pool; ++i)
    if (taken[static_cast<std::size_t>(i)]) exclude.push_back(i);
  QUARRY_EXPECTS(static_cast<std::int64_t>(exclude.size()) < pool, dir,
                 ": every pool item is labeled or awaiting labels; nothing left to propose",
                 o.replace_pending ? "" : " (--replace-pending releases the open batches)");
  const std::int64_t selectable = pool - static_cast<std::int64_t>(exclude.size());
  QUARRY_USAGE_EXPECTS(o.k <= selectable, "next: -k ", o.k, ": only ", selectable,
                       " items are neither labeled nor awaiting labels; ask for at most ", selectable);
  return exclude;
}

// Files of a batch that state.json does not list (an older state.json put back): never
// overwritten, they may be with annotators.
void check_unlisted_batch(const std::string& dir, int number) {
  std::error_code ec;
  const std::string name = path_in(path_in(dir, "batches"), fmt::format("{:04d}", number));
  for (const std::string& f : {name + ".csv", name + ".labelstudio.json"})
    QUARRY_EXPECTS(!fs::exists(f, ec), f, " exists, but state.json does not list batch ", number,
                   "; nothing was changed. `quarry project repair ", dir, "` takes it back into state.json");
}

// The options of the selection step: -k, the items excluded, the committee, a seed per batch,
// the device and threads.
loop::StepOptions step_options(const ProjectConfig& config, std::int64_t k, const std::vector<std::int64_t>& exclude,
                               int number) {
  loop::StepOptions so;
  so.k = k;
  so.exclude = exclude;
  so.committee = parse_committee(config.committee);
  so.seed = loop::mix(config.seed, static_cast<std::uint64_t>(number));
  so.device = parse_device(config.device);
  so.threads = config.threads;
  so.batchbald_restart = config.batchbald_restart;
  if (!config.balance_target.empty())
    so.balance_target = loop::parse_balance_target(config.balance_target, static_cast<int>(config.classes.size()),
                                                   "project.json balance_target");
  return so;
}

// ------------------------------------------------------------------ next: a random batch

// The pool files of project.json's fingerprint that are missing or changed size, in words.
std::string pool_file_changes(const json& was) {
  std::string changed;
  for (const auto& f : was.value("files", json::array())) {
    std::error_code ec;
    const std::string path = f.value("path", std::string());
    const auto size = fs::file_size(path, ec);
    if (ec) changed += (changed.empty() ? "" : "; ") + path + " is missing";
    else if (f["bytes"].is_number() && f["bytes"].get<std::uint64_t>() != size)
      changed += (changed.empty() ? "" : "; ") +
                 fmt::format("{} is {} bytes, was {}", path, size, f["bytes"].get<std::uint64_t>());
  }
  return changed;
}

// No dataset needed for a random batch, but the pool's files must still be those of init (their
// sizes); --retrain checks the pool's size and accepts them (a new fingerprint in project.json).
void check_pool_files(const std::string& dir, const ProjectConfig& config, std::string& pool_print,
                      const NextOptions& o, const ProjectLogFn& log) {
  if (pool_print.empty()) return;
  const json was = json::parse(pool_print);
  const std::string changed = pool_file_changes(was);
  if (changed.empty()) return;
  QUARRY_EXPECTS(o.retrain, config.dataset, ": the pool changed since the project was made: ", changed,
                 ". Nothing was done. If its rows are still the same items in the same order, run "
                 "`quarry project next ", dir, " --retrain` to accept it; otherwise make a new project for it");
  DatasetOptions dopt;
  dopt.seed = config.seed;
  const Dataset data = load_dataset(config.dataset, dopt);
  QUARRY_EXPECTS(data.train.size() == config.pool_size, config.dataset, ": the pool has ", data.train.size(),
                 " items, but the project was made for ", config.pool_size,
                 ": labels name items by their row; make a new project for this pool");
  json pj = read_json(path_in(dir, "project.json"), kConfigFormat);
  pj["pool"] = pool_fingerprint(data);
  write_json(path_in(dir, "project.json"), pj);
  pool_print = pj["pool"].dump();
  say(log, "the pool changed (" + changed + "): accepted (--retrain)");
}

// A seeded draw of k among the items neither labeled nor awaiting labels (scores 0).
Selection random_selection(const std::vector<char>& taken, std::int64_t k, std::uint64_t seed) {
  std::vector<std::int64_t> rest;
  for (std::size_t i = 0; i < taken.size(); ++i)
    if (!taken[i]) rest.push_back(static_cast<std::int64_t>(i));
  Selection sel;
  sel.index = loop::sample_without_replacement(std::move(rest), k, seed);
  sel.score.assign(sel.index.size(), 0.0f);
  return sel;
}

// ------------------------------------------------------------------ next: the model's batch

// The dataset loaded again; its pool must have the project's number of items.
Dataset load_project_pool(const ProjectConfig& config, const ProjectLogFn& log) {
  DatasetOptions dopt;
  dopt.seed = config.seed;
  say(log, "loading " + config.dataset);
  Dataset data = load_dataset(config.dataset, dopt);
  QUARRY_EXPECTS(data.train.size() == config.pool_size, config.dataset, ": the pool has ", data.train.size(),
                 " items, but the project was made for ", config.pool_size,
                 " (the dataset changed). Labels name items by their row: make a new project for this pool "
                 "(`quarry project init`), and bring the labels that still apply over with `quarry project "
                 "export` and `quarry project label`");
  return data;
}

// The pool must be the one the labels and the model were made on: a changed fingerprint is an
// Error, or with --retrain accepted; returns whether it changed.
bool accept_pool_change(const std::string& pool_print, const json& now, const ProjectConfig& config,
                        const std::string& dir, const NextOptions& o, const ProjectLogFn& log) {
  if (pool_print.empty()) return false;
  const std::string changes = pool_changes(json::parse(pool_print), now);
  if (changes.empty()) return false;
  QUARRY_EXPECTS(o.retrain, config.dataset, ": the pool changed since the project was made: ", changes,
                 ". Nothing was done. If its rows are still the same items in the same order (re-exported, "
                 "converted), run `quarry project next ", dir, " --retrain` to accept it and train a new "
                 "model; otherwise make a new project for it");
  say(log, "the pool changed (" + changes + "): accepted (--retrain), a new model is trained");
  return true;
}

// The project's labels replace the dataset's: only what people labeled is trained on. Returns
// the labeled indices.
std::vector<std::int64_t> use_project_labels(Dataset& data, const std::map<std::int64_t, std::int32_t>& labels) {
  std::fill(data.train.y.begin(), data.train.y.end(), -1);
  std::vector<std::int64_t> labeled;
  for (const auto& [index, label] : labels) {
    data.train.y[static_cast<std::size_t>(index)] = label;
    labeled.push_back(index);
  }
  return labeled;
}

// The dataset's own validation split (a labeled hold-out) is kept when its classes match; the
// test split is dropped. Returns whether the validation split was kept.
bool keep_dataset_validation(Dataset& data, int num_classes) {
  const bool val = data.val.size() > 0 && data.num_classes == num_classes &&
                   std::all_of(data.val.y.begin(), data.val.y.end(), [&](std::int32_t y) { return y >= 0 && y < num_classes; });
  if (!val) data.val = Split{};
  data.test = Split{};
  data.num_classes = num_classes;
  return val;
}

// Without a validation split, one is held out of the labels (from kHoldOutFrom labels on: one in
// ten, at most kHoldOutMost, chosen by a hash of the index, so a label stays where it is as
// labels are added): early stopping and the status's metrics need it. Returns how many.
std::int64_t hold_out_validation(Dataset& data, std::vector<std::int64_t>& labeled,
                                 const std::vector<std::int64_t>& label_order, std::uint64_t seed) {
  std::int64_t held_out = 0;
  std::vector<std::int64_t> train_part;
  const std::int64_t numel = data.sample_numel();
  // In the order the labels came: the first kHoldOutMost chosen stay held out for good.
  for (const std::int64_t i : label_order) {
    if (held_out < kHoldOutMost && loop::mix(seed ^ 0x5EED, static_cast<std::uint64_t>(i)) % 10 == 0) {
      data.val.x.insert(data.val.x.end(), data.train.x.begin() + i * numel, data.train.x.begin() + (i + 1) * numel);
      data.val.y.push_back(data.train.y[static_cast<std::size_t>(i)]);
      ++held_out;
    } else {
      train_part.push_back(i);
    }
  }
  std::set<std::int32_t> train_classes;
  for (const std::int64_t i : train_part) train_classes.insert(data.train.y[static_cast<std::size_t>(i)]);
  if (train_classes.size() >= 2) {
    labeled = std::move(train_part);
  } else {  // too few of a class to spare any
    data.val = Split{};
    held_out = 0;
  }
  return held_out;
}

// model.pt, loaded; checked before any inference: a model of another width would read past its rows.
Model reuse_model(const std::string& model_path, const DeviceSpec& device, const Dataset& data, int num_classes,
                  const ProjectConfig& config, const std::string& dir) {
  Model model = Model::load(model_path, device);
  QUARRY_EXPECTS(model.sample_shape() == data.sample_shape && model.num_classes() == num_classes, model_path,
                 ": the model takes samples of shape ", shape_string(model.sample_shape()), " and ",
                 model.num_classes(), " classes, but the pool ", config.dataset, " has samples of shape ",
                 shape_string(data.sample_shape), " and the project ", num_classes,
                 " classes. Nothing was done; run `quarry project next ", dir, " --retrain` to train a new one");
  return model;
}

// How a new model is trained: the project's model, an ensemble where a committee strategy asks
// for one, the seed, the device and threads.
TrainOptions train_options(const ProjectConfig& config, const DeviceSpec& device, const loop::Strategy& strategy,
                           const loop::StepOptions& so) {
  TrainOptions to;
  to.model = parse_model_spec(config.model);
  to.committee = so.committee.kind == CommitteeSpec::Kind::ensemble && strategy.committee() ? so.committee
                                                                                            : CommitteeSpec{};
  to.seed = config.seed;
  to.device = device;
  to.threads = config.threads;
  return to;
}

// ------------------------------------------------------------------ next: the batch files

// Where the manifest gives an item no path or URL, its rendered image (relative to DIR) stands in.
constexpr std::size_t kMaxDataUri = 64 * 1024;  // larger PNGs go to Label Studio as paths

// Writes batches/NNNN.csv (index,id,path_or_url,score,predicted,confidence) and
// NNNN.labelstudio.json (the same items as Label Studio tasks, with the model's prediction);
// their paths go into `res`. `images` (empty, or one per item): the rendered images.
void write_batch_files(const std::string& dir, const std::vector<std::optional<ManifestItem>>& manifest,
                       const std::vector<std::string>& classes, const BatchInfo& batch,
                       const std::vector<BatchImage>& images, NextResult& res) {
  const int number = batch.number;
  const std::string name = fmt::format("{:04d}", number);
  res.csv_path = path_in(path_in(dir, "batches"), name + ".csv");
  res.labelstudio_path = path_in(path_in(dir, "batches"), name + ".labelstudio.json");
  std::string csv_text = "index,id,path_or_url,score,predicted,confidence\n";
  json tasks = json::array();
  for (std::size_t r = 0; r < batch.index.size(); ++r) {
    const std::int64_t i = batch.index[r];
    const auto& item = manifest.empty() ? std::optional<ManifestItem>() : manifest[static_cast<std::size_t>(i)];
    const std::string id = item ? item->id : std::to_string(i);
    std::string path = item ? item->path_or_url : std::string();
    // Label Studio shows a small image inline (a data: URI); a larger one by its path.
    std::string task_image = path;
    if (path.empty() && !images.empty() && !images[r].relative.empty()) {
      path = images[r].relative;
      task_image = images[r].png.size() <= kMaxDataUri ? "data:image/png;base64," + base64(images[r].png) : path;
    }
    const bool predicted = !batch.predicted.empty();
    const std::string predicted_class = predicted ? classes[static_cast<std::size_t>(batch.predicted[r])] : "";
    csv_text += fmt::format("{},{},{},{},{},{}\n", i, csv::field(id), csv::field(path), batch.score[r],
                            csv::field(predicted_class), predicted ? fmt::format("{:.4f}", batch.confidence[r]) : "");
    json task;
    task["data"] = {{"image", task_image}, {"quarry_index", i}, {"quarry_id", id}};
    task["meta"] = {{"quarry_index", i}, {"quarry_batch", number}, {"quarry_score", batch.score[r]}};
    if (predicted)  // pre-annotations: the annotator sees the model's guess
      task["predictions"] = json::array(
          {{{"model_version", batch.strategy},
            {"score", batch.confidence[r]},
            {"result", json::array({{{"from_name", "label"},
                                     {"to_name", "image"},
                                     {"type", "choices"},
                                     {"value", {{"choices", json::array({predicted_class})}}}}})}}});
    tasks.push_back(std::move(task));
  }
  std::error_code ec;
  fs::create_directories(path_in(dir, "batches"), ec);
  write_file_atomic(res.csv_path, {csv_text}, true);
  write_file_atomic(res.labelstudio_path, {tasks.dump(1, ' ', false, json::error_handler_t::replace) + "\n"}, true);
}

// Whether a batch gets images rendered: the manifest gives some item no path or URL, and the
// pool holds images (from project.json's fingerprint; an older project's pool is loaded to see).
bool wants_images(const std::vector<std::optional<ManifestItem>>& manifest, const std::vector<std::int64_t>& index,
                  const std::string& pool_print) {
  const bool some_without_path =
      manifest.empty() || std::any_of(index.begin(), index.end(), [&](std::int64_t i) {
        const auto& item = manifest[static_cast<std::size_t>(i)];
        return !item || item->path_or_url.empty();
      });
  if (!some_without_path) return false;
  if (pool_print.empty()) return true;
  return json::parse(pool_print).value("sample_shape", json::array()).size() == 3;
}

// The model's predicted class of each selected item and its probability.
void predict_batch(const Model& model, const Dataset& data, int threads, BatchInfo& batch) {
  const std::int64_t n = static_cast<std::int64_t>(batch.index.size()), numel = data.sample_numel();
  if (n == 0) return;
  std::vector<float> x(static_cast<std::size_t>(n * numel));
  for (std::int64_t r = 0; r < n; ++r)
    std::copy_n(data.train.x.begin() + batch.index[static_cast<std::size_t>(r)] * numel, numel,
                x.begin() + r * numel);
  InferOptions io;
  io.threads = threads;
  const Inference inf = model.infer(x.data(), n, io);
  const auto* p = static_cast<const float*>(inf.probs.data());
  const std::int64_t c = inf.probs.shape()[1];
  for (std::int64_t r = 0; r < n; ++r) {
    const float* row = p + r * c;
    const auto best = std::max_element(row, row + c) - row;
    batch.predicted.push_back(static_cast<std::int32_t>(best));
    batch.confidence.push_back(row[best]);
  }
}

}  // namespace

void ProjectFiles::model_selection(Project& p, Dataset& data, const loop::Strategy& strategy,
                                   const loop::StepOptions& so, const NextOptions& o, const ProjectLogFn& log,
                                   NextResult& res, BatchInfo& batch) {
  const ProjectConfig& config = p.config_;
  // The pool must be the one the labels and the model were made on.
  const json now = pool_fingerprint(data);
  const bool pool_changed = accept_pool_change(p.pool_print_, now, config, p.dir_, o, log);
  const int num_classes = static_cast<int>(config.classes.size());
  std::vector<std::int64_t> labeled = use_project_labels(data, p.labels_);
  const bool val = keep_dataset_validation(data, num_classes);
  std::int64_t held_out = 0;
  if (!val && static_cast<std::int64_t>(labeled.size()) >= kHoldOutFrom)
    held_out = hold_out_validation(data, labeled, p.label_order_, config.seed);
  const Model model = current_model(p, data, labeled, held_out, strategy, so, o, log, res);
  if (pool_changed || p.pool_print_.empty()) {  // the accepted pool (or an older project's first fingerprint)
    json pj = read_json(path_in(p.dir_, "project.json"), kConfigFormat);
    pj["pool"] = now;
    write_json(path_in(p.dir_, "project.json"), pj);
    p.pool_print_ = now.dump();
  }
  say(log, fmt::format("scoring {} pool items with {}", config.pool_size, config.strategy));
  // auto's typicality runs over the cold start's embeddings where the project has them.
  loop::StepOptions step = so;
  Array typical;
  if (strategy.kind == loop::Strategy::Kind::automatic && !config.seed_embeddings.empty()) {
    typical = read_seed_embeddings(config.seed_embeddings, data.train.size(), config.seed_embeddings_crc32);
    step.typical_embeddings = typical.view();
    step.typical_embeddings_name = config.seed_embeddings;
  }
  const Selection sel = loop::select_step(strategy, model, data.train, step);
  batch.index = sel.index;
  batch.score = sel.score;
  predict_batch(model, data, config.threads, batch);
}

Model ProjectFiles::current_model(Project& p, const Dataset& data, const std::vector<std::int64_t>& labeled,
                                  std::int64_t held_out, const loop::Strategy& strategy, const loop::StepOptions& so,
                                  const NextOptions& o, const ProjectLogFn& log, NextResult& res) {
  const std::string digest = labels_digest(p.labels_);
  const std::string model_path = path_in(p.dir_, "model.pt");
  std::error_code ec;
  const DeviceSpec device = parse_device(p.config_.device);
  if (digest == p.model_digest_ && fs::exists(model_path, ec) && !o.retrain) {
    say(log, fmt::format("the labels are unchanged since the last model ({} labels): reusing it", p.labels_.size()));
    return reuse_model(model_path, device, data, static_cast<int>(p.config_.classes.size()), p.config_, p.dir_);
  }
  const TrainOptions to = train_options(p.config_, device, strategy, so);
  return train_model(p, data, labeled, held_out, to, digest, log, res);
}

Model ProjectFiles::train_model(Project& p, const Dataset& data, const std::vector<std::int64_t>& labeled,
                                std::int64_t held_out, const TrainOptions& to, const std::string& digest,
                                const ProjectLogFn& log, NextResult& res) {
  const std::string model_path = path_in(p.dir_, "model.pt");
  say(log, fmt::format("training {} on {} labels", p.config_.model, labeled.size()));
  TrainReport tr;
  Model model = Model::train(data, labeled, to, &tr);
  // The state forgets the old model before model.pt is replaced: a crash in between must
  // not pair the new file with the old labels' digest.
  if (!p.model_digest_.empty()) {
    p.model_digest_.clear();
    p.model_labels_ = 0;
    p.write_state();
  }
  model.save(model_path);
  res.retrained = true;
  p.model_digest_ = digest;
  p.model_labels_ = static_cast<std::int64_t>(p.labels_.size());
  ++p.models_trained_;
  p.val_accuracy_.reset();
  p.val_balanced_accuracy_.reset();
  ModelRound round;
  round.labels = p.model_labels_;
  round.time = utc_now();
  if (data.val.size() > 0) {
    const int num_classes = static_cast<int>(p.config_.classes.size());
    const Metrics m = evaluate_predictions(data.val.y, model.predict(data.val, p.config_.threads), num_classes);
    p.val_accuracy_ = m.accuracy;
    p.val_balanced_accuracy_ = m.balanced_accuracy;
    say(log, fmt::format("trained in {:.1f} s ({} epochs); validation accuracy {:.1f}%, balanced {:.1f}% ({})",
                         tr.seconds, tr.epochs, 100 * m.accuracy, 100 * m.balanced_accuracy,
                         held_out > 0 ? fmt::format("{} labels held out", held_out)
                                      : fmt::format("the dataset's {} validation samples", data.val.size())));
  } else {
    say(log, fmt::format("trained in {:.1f} s ({} epochs; no validation split)", tr.seconds, tr.epochs));
  }
  round.val_accuracy = p.val_accuracy_;
  round.val_balanced_accuracy = p.val_balanced_accuracy_;
  // The stopping rule: this model's agreement with the last one on the fixed stop set.
  std::vector<std::int32_t> stop_predictions = model.predict(
      take_rows(data.train, data.sample_numel(), project_stop_set(p.config_.pool_size, p.config_.seed)),
      p.config_.threads);
  // New labels only: a model retrained on the same labels agrees with itself, which says nothing
  // about whether labels still pay.
  if (p.stop_predictions_.size() == stop_predictions.size() && p.stop_digest_ != digest)
    round.stop_kappa = cohen_kappa(p.stop_predictions_, stop_predictions, static_cast<int>(p.config_.classes.size()));
  p.stop_predictions_ = std::move(stop_predictions);
  p.stop_digest_ = digest;
  p.rounds_.push_back(std::move(round));
  return model;
}

NextResult Project::next(const NextOptions& o, const ProjectLogFn& log, double lock_wait_seconds) {
  QUARRY_EXPECTS(o.k >= 1, "next: -k must be >= 1");
  Lock lock(dir_, true, lock_wait_seconds);
  reload();
  NextResult res;
  if (o.require_labeled && !o.replace_pending) {
    const ProjectStatus st = status();
    QUARRY_EXPECTS(st.pending == 0, "batch ", fmt::format("{:04d}", st.open_batch.value_or(0)), " still has ",
                   st.pending, st.pending == 1 ? " item" : " items", " without a label");
  }
  if (o.replace_pending) res.dropped = drop_open_batches(batches_, labels_);
  // What may be proposed: neither labeled nor awaiting labels.
  const std::vector<char> taken = taken_items(config_.pool_size, labels_, batches_);
  const std::vector<std::int64_t> exclude = excluded_items(taken, dir_, o);
  const int number = batches_.empty() ? 1 : batches_.back().number + 1;
  check_unlisted_batch(dir_, number);
  std::set<std::int32_t> present;
  for (const auto& [index, label] : labels_) present.insert(label);
  const loop::Strategy strategy = loop::parse_strategy(config_.strategy);
  res.cold_start = strategy.kind != loop::Strategy::Kind::random && present.size() < 2;
  const loop::StepOptions so = step_options(config_, o.k, exclude, number);
  BatchInfo batch;
  batch.number = number;
  batch.created = utc_now();
  std::optional<Dataset> data;
  if (res.cold_start && config_.seed_strategy != "random") {
    // The cold start over the pool's inputs: the most representative items first.
    say(log, fmt::format("labels of {} class{} so far: a {} batch (cold start) until two classes are labeled",
                         present.size(), present.size() == 1 ? "" : "es", config_.seed_strategy));
    data = load_project_pool(config_, log);
    DiversityOptions d;
    d.exclude = exclude;
    d.k = std::min<std::int64_t>(o.k, data->train.size() - static_cast<std::int64_t>(exclude.size()));
    d.seed = so.seed;
    d.embeddings_name = config_.seed_embeddings.empty() ? config_.dataset : config_.seed_embeddings;
    const Array file = config_.seed_embeddings.empty() ? Array()
                                                       : read_seed_embeddings(config_.seed_embeddings, data->train.size(),
                                                                              config_.seed_embeddings_crc32);
    const Selection sel = select_diverse(
        parse_diversity_strategy(config_.seed_strategy),
        config_.seed_embeddings.empty()
            ? ArrayView(data->train.x.data(), DType::f32, {data->train.size(), data->sample_numel()})
            : file.view(),
        nullptr, d);
    batch.index = sel.index;
    batch.score = sel.score;
    batch.strategy = config_.seed_strategy + " (cold start)";
  } else if (strategy.kind == loop::Strategy::Kind::random || res.cold_start) {
    if (res.cold_start)
      say(log, fmt::format("labels of {} class{} so far: a random batch (cold start) until two classes are labeled",
                           present.size(), present.size() == 1 ? "" : "es"));
    check_pool_files(dir_, config_, pool_print_, o, log);
    const Selection sel = random_selection(taken, o.k, so.seed);
    batch.index = sel.index;
    batch.score = sel.score;
    batch.strategy = res.cold_start ? "random (cold start)" : "random";
  } else {
    data = load_project_pool(config_, log);
    ProjectFiles::model_selection(*this, *data, strategy, so, o, log, res, batch);
    batch.strategy = config_.strategy;
  }
  // The images people look at, where the manifest names none.
  std::vector<BatchImage> images;
  if (wants_images(manifest_, batch.index, pool_print_)) {
    if (!data) data = load_project_pool(config_, log);
    if (data->is_image()) {
      // Only the items the manifest names no file or URL for.
      std::vector<std::int64_t> unnamed;
      for (const std::int64_t i : batch.index)
        if (manifest_.empty() || !manifest_[static_cast<std::size_t>(i)] ||
            manifest_[static_cast<std::size_t>(i)]->path_or_url.empty())
          unnamed.push_back(i);
      say(log, fmt::format("rendering {} images", unnamed.size()));
      const std::vector<BatchImage> made = write_batch_images(dir_, number, *data, unnamed);
      images.resize(batch.index.size());
      for (std::size_t r = 0, u = 0; r < batch.index.size() && u < unnamed.size(); ++r)
        if (batch.index[r] == unnamed[u]) images[r] = made[u++];
    }
  }
  // The batch files, then the state that lists the batch.
  write_batch_files(dir_, manifest_, config_.classes, batch, images, res);
  batches_.push_back(batch);
  try {
    write_state();
  } catch (const Error&) {
    // Unlisted batch files would be taken for a batch that was never sent: remove them.
    std::error_code ignore;
    fs::remove(res.csv_path, ignore);
    fs::remove(res.labelstudio_path, ignore);
    if (!images.empty()) fs::remove_all(path_in(path_in(dir_, "batches"), fmt::format("{:04d}", number)), ignore);
    throw;
  }
  res.batch = std::move(batch);
  return res;
}

}  // namespace quarry
