// The labeling project: the helpers its files share (paths, JSON files, the lock, state.json, the
// pool fingerprint) and opening a project: project.json, manifest.csv, state.json and the journal
// read into a Project. Init, repair, label, next and export are in project_*.cpp beside it (see
// include/quarry/project.hpp for the layout and the durability rules).
#include "quarry/project.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "project/project_internal.hpp"
#include "quarry/dataset.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "io/files.hpp"
#include "project/journal.hpp"
#include "simulate/strategy.hpp"

namespace quarry {
namespace project_detail {

// DIR/NAME.
std::string path_in(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// Now, UTC, ISO 8601.
std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A whole text file, bounded (read_text_file).
std::string read_text(const std::string& path) { return read_text_file(path); }

// A JSON file of the project's own `format` and version.
json read_json(const std::string& path, const char* format) {
  json j;
  try {
    j = json::parse(read_text(path));
  } catch (const json::exception& e) {
    QUARRY_FAIL(path, ": not valid JSON: ", e.what());
  }
  const bool ok = j.is_object() && j.contains("format") && j["format"] == format && j.contains("version") &&
                  j["version"] == kVersion;
  QUARRY_EXPECTS(ok, path, ": expected a ", format, " file of version ", kVersion);
  return j;
}

// The project's own files are rewritten after being read: they may replace an input.
void write_json(const std::string& path, const json& j) {
  const std::string text = j.dump(1, ' ', false, json::error_handler_t::replace) + "\n";
  write_file_atomic(path, {text}, true);
}

namespace {

// A journal mark as state.json records it.
json mark_json(const JournalMark& m) {
  return {{"records", m.records}, {"bytes", m.bytes}, {"crc32", fmt::format("{:08x}", m.crc)}};
}

}  // namespace

// One writer at a time: flock on DIR/.lock, exclusive for writers, shared for readers.
Lock::Lock(const std::string& dir, bool exclusive, double wait_seconds, bool optional) {
  const std::string path = path_in(dir, ".lock");
  fd_ = ::open(path.c_str(), exclusive ? O_RDWR | O_CREAT | O_CLOEXEC : O_RDONLY | O_CLOEXEC, 0644);
  if (fd_ < 0 && optional) return;  // a read-only folder, or a lock file not made yet: read unlocked
  QUARRY_EXPECTS(fd_ >= 0, path, ": cannot open the project lock: ", std::strerror(errno));
  wait_seconds = std::min(std::max(wait_seconds, 0.0), 1e6);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(wait_seconds));
  while (::flock(fd_, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EINTR) continue;
    if (err != EWOULDBLOCK || std::chrono::steady_clock::now() >= deadline) {
      if (optional && err == EWOULDBLOCK) {
        ::close(fd_);
        fd_ = -1;
        return;
      }
      std::string holder;
      if (err == EWOULDBLOCK) {
        char buf[32] = {};
        const ssize_t r = ::pread(fd_, buf, sizeof buf - 1, 0);
        if (r > 0) holder = fmt::format(" (pid {})", std::string(buf, static_cast<std::size_t>(r)));
      }
      ::close(fd_);
      QUARRY_EXPECTS(err == EWOULDBLOCK, path, ": cannot lock the project: ", std::strerror(err));
      QUARRY_FAIL(dir, ": another quarry command", holder, " is writing to this project",
                  wait_seconds > 0 ? fmt::format(" and did not finish within {} s", wait_seconds) : std::string(),
                  "; wait for it, or pass --wait SECONDS");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (exclusive) {  // for the message of a waiting writer; not needed for correctness
    const std::string pid = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, pid.data(), pid.size(), 0);
  }
}

Lock::~Lock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

// Without leading and trailing spaces and tabs.
std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
  std::size_t b = 0;
  while (b < s.size() && (s[b] == ' ' || s[b] == '\t')) ++b;
  return s.substr(b);
}

// A whole decimal integer (optional sign), or nothing.
std::optional<std::int64_t> parse_int(const std::string& text) {
  const std::string s = trim(text);
  if (s.empty() || s.size() > 20) return std::nullopt;
  const char* b = s.data() + (s[0] == '+' ? 1 : 0);
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(b, s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;  // not an integer, or out of range
  return v;
}

// The first kMaxListedErrors problems, one a line, after `msg`.
void fail_listing(std::string msg, const std::vector<std::string>& bad) {
  for (std::size_t i = 0; i < bad.size() && i < kMaxListedErrors; ++i) msg += "\n  " + bad[i];
  if (bad.size() > kMaxListedErrors) msg += fmt::format("\n  ... and {} more", bad.size() - kMaxListedErrors);
  QUARRY_FAIL(msg);
}

// state.json: the batches and the current model (its label digest and validation metrics).
json state_json(const std::vector<BatchInfo>& batches, const std::string& model_digest, std::int64_t model_labels,
                const std::optional<double>& val_accuracy, const std::optional<double>& val_balanced_accuracy,
                int models_trained, const JournalMark& journal, std::int64_t labels,
                const ProjectConfig& config, const std::vector<ModelRound>& rounds) {
  json state;
  state["format"] = kStateFormat;
  state["version"] = kVersion;
  // What the labels mean: class ids name these classes, indices these items.
  state["classes"] = config.classes;
  state["pool_size"] = config.pool_size;
  // The journal this state was written with: a later journal must extend it.
  json jm = mark_json(journal);
  jm["labels"] = labels;
  state["journal"] = std::move(jm);
  state["batches"] = json::array();
  for (const auto& b : batches) {
    json jb = {{"number", b.number},   {"created", b.created}, {"state", b.state},
               {"strategy", b.strategy}, {"index", b.index},     {"score", b.score}};
    if (!b.predicted.empty()) {
      jb["predicted"] = b.predicted;
      jb["confidence"] = b.confidence;
    }
    state["batches"].push_back(std::move(jb));
  }
  auto optional_number = [](const std::optional<double>& v) { return v ? json(*v) : json(nullptr); };
  state["rounds"] = json::array();
  for (const auto& r : rounds) {
    json jr = {{"labels", r.labels},
               {"time", r.time},
               {"val_accuracy", optional_number(r.val_accuracy)},
               {"val_balanced_accuracy", optional_number(r.val_balanced_accuracy)}};
    if (r.stop_kappa) jr["stop_kappa"] = *r.stop_kappa;
    state["rounds"].push_back(std::move(jr));
  }
  if (model_digest.empty()) {
    state["model"] = nullptr;
  } else {
    json m = {{"digest", model_digest}, {"labels", model_labels}};
    m["val_accuracy"] = val_accuracy ? json(*val_accuracy) : json(nullptr);
    m["val_balanced_accuracy"] = val_balanced_accuracy ? json(*val_balanced_accuracy) : json(nullptr);
    state["model"] = std::move(m);
  }
  state["models_trained"] = models_trained;
  return state;
}

// "N:FNV-1a" of the (index, class) pairs: which labels a model was trained on.
std::string labels_digest(const std::map<std::int64_t, std::int32_t>& labels) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  auto add = [&h](std::uint64_t v) {
    for (int b = 0; b < 8; ++b) h = (h ^ ((v >> (8 * b)) & 0xFF)) * 0x100000001B3ull;
  };
  for (const auto& [index, label] : labels) {
    add(static_cast<std::uint64_t>(index));
    add(static_cast<std::uint64_t>(static_cast<std::uint32_t>(label)));
  }
  return fmt::format("{}:{:016x}", labels.size(), h);
}

// The pool as the model sees it: rows, sample shape, a checksum of up to 256 evenly spaced rows
// of the converted samples, and the sizes of the files it came from. A pool file replaced,
// re-exported with another layout or cropped differently changes it.
json pool_fingerprint(const Dataset& data) {
  const std::int64_t rows = data.train.size(), numel = data.sample_numel();
  std::uint32_t crc = 0;
  const std::int64_t samples = std::min<std::int64_t>(rows, 256);
  for (std::int64_t k = 0; k < samples; ++k) {
    const std::int64_t r = samples > 1 ? k * (rows - 1) / (samples - 1) : 0;
    const float* x = data.train.x.data() + r * numel;
    crc = crc32_update(crc, x, static_cast<std::size_t>(numel) * sizeof(float));
  }
  json files = json::array();
  for (const std::string& f : dataset_files(data.spec)) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    files.push_back({{"path", f}, {"bytes", ec ? json(nullptr) : json(size)}});
  }
  return {{"rows", rows}, {"sample_shape", data.sample_shape}, {"sample_crc32", fmt::format("{:08x}", crc)},
          {"files", files}};
}

// The journal mark state.json was written with, or nothing (an older project's state).
std::optional<std::pair<JournalMark, std::int64_t>> recorded_mark(const json& s, const std::string& state_path,
                                                                  const std::string& dir) {
  if (!s.contains("journal") || !s["journal"].is_object()) return std::nullopt;
  try {
    const json& m = s["journal"];
    JournalMark want;
    want.records = m.at("records").get<std::int64_t>();
    want.bytes = m.at("bytes").get<std::uint64_t>();
    const std::string crc = m.at("crc32").get<std::string>();
    QUARRY_EXPECTS(crc.size() == 8 && crc.find_first_not_of("0123456789abcdef") == std::string::npos, "crc32 '",
                   quote_input(crc), "' is not 8 hex digits");
    want.crc = static_cast<std::uint32_t>(std::stoul(crc, nullptr, 16));
    return std::make_pair(want, m.value("labels", std::int64_t{0}));
  } catch (const std::exception& e) {
    QUARRY_FAIL(state_path, ": its journal record is unreadable (", e.what(), "); `quarry project repair ", dir,
                "` rebuilds it");
  }
}

// A batch whose items are all labeled is closed.
void close_labeled_batches(std::vector<BatchInfo>& batches, const std::map<std::int64_t, std::int32_t>& labels) {
  for (auto& b : batches)
    if (b.state == "open" &&
        std::all_of(b.index.begin(), b.index.end(), [&](std::int64_t i) { return labels.count(i) > 0; }))
      b.state = "closed";
}

}  // namespace project_detail

using namespace project_detail;

// ------------------------------------------------------------------ open

Project::Project(std::string dir, double read_lock_wait_seconds, bool labels_only) : dir_(std::move(dir)) {
  std::error_code ec;
  QUARRY_EXPECTS(fs::exists(path_in(dir_, "project.json"), ec), dir_,
                 ": not a quarry project (no project.json; create one with `quarry project init`)");
  Lock lock(dir_, false, read_lock_wait_seconds, true);
  reload(labels_only);
  if (!torn_.empty() && !lock.held())
    torn_ += " (read without the project lock: another command may be importing right now)";
}

void Project::refresh(double read_lock_wait_seconds) {
  Lock lock(dir_, false, read_lock_wait_seconds, true);
  reload();
  if (!torn_.empty() && !lock.held())
    torn_ += " (read without the project lock: another command may be importing right now)";
}

void Project::read_config() {
  const json j = read_json(path_in(dir_, "project.json"), kConfigFormat);
  pool_print_ = j.contains("pool") && j["pool"].is_object() ? j["pool"].dump() : std::string();
  try {
    config_.dataset = j.at("dataset").get<std::string>();
    config_.model = j.at("model").get<std::string>();
    config_.strategy = j.at("strategy").get<std::string>();
    config_.committee = j.at("committee").get<std::string>();
    config_.balance_target = j.value("balance_target", std::string());
    QUARRY_EXPECTS(!j.contains("batchbald_restart") || j["batchbald_restart"].is_number(), path_in(dir_, "project.json"),
                   ": batchbald_restart must be a number from 0 to 1, got ", j["batchbald_restart"].dump());
    config_.batchbald_restart = j.value("batchbald_restart", 0.5);
    config_.seed_strategy = j.value("seed_strategy", std::string("random"));
    config_.seed_embeddings = j.value("seed_embeddings", std::string());
    config_.seed_embeddings_crc32 = j.value("seed_embeddings_crc32", std::string());
    config_.classes = j.at("classes").get<std::vector<std::string>>();
    config_.seed = j.at("seed").get<std::uint64_t>();
    config_.device = j.at("device").get<std::string>();
    config_.threads = j.at("threads").get<int>();
    config_.pool_size = j.at("pool_size").get<std::int64_t>();
    config_.has_manifest = j.at("manifest").get<bool>();
  } catch (const json::exception& e) {
    QUARRY_FAIL(path_in(dir_, "project.json"), ": ", e.what());
  }
  QUARRY_EXPECTS(config_.pool_size > 0 && config_.classes.size() >= 2, path_in(dir_, "project.json"),
                 ": a project needs a pool and at least 2 classes");
  QUARRY_EXPECTS(config_.batchbald_restart >= 0 && config_.batchbald_restart <= 1, path_in(dir_, "project.json"),
                 ": batchbald_restart ", config_.batchbald_restart, " is out of range (expected 0 to 1)");
  QUARRY_EXPECTS(config_.threads >= 0 && config_.threads <= 4096, path_in(dir_, "project.json"), ": threads ",
                 config_.threads, " is out of range (0 for all cores, at most 4096)");
  if (!config_.has_manifest) {
    manifest_.clear();
    id_index_.clear();
    manifest_stamp_.clear();
  } else {
    // manifest.csv is written once, by init: read again only when the file is another.
    const std::string m = path_in(dir_, "manifest.csv");
    struct stat st{};
    const std::string stamp = ::stat(m.c_str(), &st) == 0
                                  ? fmt::format("{}:{}:{}:{}.{}", st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec,
                                                st.st_mtim.tv_nsec)
                                  : std::string();
    if (!stamp.empty() && stamp == manifest_stamp_ &&
        manifest_.size() == static_cast<std::size_t>(config_.pool_size))
      return;
    manifest_stamp_.clear();
    id_index_.clear();
    manifest_ = parse_manifest(csv::parse(read_text(m), m), m, config_.pool_size);
    manifest_stamp_ = stamp;
    for (std::size_t i = 0; i < manifest_.size(); ++i)
      if (manifest_[i]) id_index_.emplace(manifest_[i]->id, static_cast<std::int64_t>(i));
  }
}

// state.json's batches and model, checked against the pool.
void ProjectFiles::read_state(Project& p, const json& s) {
  p.batches_.clear();
  try {
    for (const auto& b : s.at("batches")) {
      BatchInfo info;
      info.number = b.at("number").get<int>();
      info.created = b.value("created", "");
      info.state = b.at("state").get<std::string>();
      info.strategy = b.value("strategy", "");
      info.index = b.at("index").get<std::vector<std::int64_t>>();
      info.score = b.at("score").get<std::vector<float>>();
      if (b.contains("predicted")) {
        info.predicted = b.at("predicted").get<std::vector<std::int32_t>>();
        info.confidence = b.at("confidence").get<std::vector<float>>();
      }
      p.batches_.push_back(std::move(info));
    }
    p.rounds_.clear();
    auto optional_number = [](const json& v) { return v.is_number() ? std::optional<double>(v.get<double>()) : std::nullopt; };
    for (const auto& r : s.value("rounds", json::array())) {
      ModelRound mr;
      mr.labels = r.at("labels").get<std::int64_t>();
      mr.time = r.value("time", "");
      mr.val_accuracy = optional_number(r.value("val_accuracy", json()));
      mr.val_balanced_accuracy = optional_number(r.value("val_balanced_accuracy", json()));
      mr.stop_kappa = optional_number(r.value("stop_kappa", json()));
      p.rounds_.push_back(std::move(mr));
    }
    p.stop_predictions_ = s.value("stop_predictions", std::vector<std::int32_t>{});
    p.stop_digest_ = s.value("stop_predictions_labels", std::string());
    p.models_trained_ = s.value("models_trained", 0);
    p.model_digest_.clear();
    p.model_labels_ = 0;
    p.val_accuracy_.reset();
    p.val_balanced_accuracy_.reset();
    if (s.contains("model") && s["model"].is_object()) {
      const auto& m = s["model"];
      p.model_digest_ = m.at("digest").get<std::string>();
      p.model_labels_ = m.at("labels").get<std::int64_t>();
      if (m.contains("val_accuracy") && m["val_accuracy"].is_number()) p.val_accuracy_ = m["val_accuracy"].get<double>();
      if (m.contains("val_balanced_accuracy") && m["val_balanced_accuracy"].is_number())
        p.val_balanced_accuracy_ = m["val_balanced_accuracy"].get<double>();
    }
  } catch (const json::exception& e) {
    QUARRY_FAIL(path_in(p.dir_, "state.json"), ": ", e.what(), "; `quarry project repair ", p.dir_,
                "` rebuilds it from the label journal and the batch files");
  }
  for (const auto& b : p.batches_) {
    QUARRY_EXPECTS(b.index.size() == b.score.size(), path_in(p.dir_, "state.json"), ": batch ", b.number, " has ",
                   b.index.size(), " items but ", b.score.size(), " scores");
    QUARRY_EXPECTS(b.predicted.empty() || (b.predicted.size() == b.index.size() && b.confidence.size() == b.index.size()),
                   path_in(p.dir_, "state.json"), ": batch ", b.number, " has ", b.index.size(), " items but ",
                   b.predicted.size(), " predictions and ", b.confidence.size(), " confidences");
    for (const auto c : b.predicted)
      QUARRY_EXPECTS(c >= 0 && c < static_cast<std::int32_t>(p.config_.classes.size()), path_in(p.dir_, "state.json"),
                     ": batch ", b.number, " predicts the class ", c, ", not one of the ", p.config_.classes.size(),
                     " classes");
    for (const auto i : b.index)
      QUARRY_EXPECTS(i >= 0 && i < p.config_.pool_size, path_in(p.dir_, "state.json"), ": batch ", b.number,
                     " lists the index ", i, ", outside the pool of ", p.config_.pool_size);
  }
}

void Project::reload(bool labels_only) {
  read_config();
  const std::string state_path = path_in(dir_, "state.json");
  json s;
  std::string state_problem;
  try {
    s = read_json(state_path, kStateFormat);
    ProjectFiles::read_state(*this, s);
  } catch (const Error& e) {
    if (!labels_only)
      QUARRY_FAIL(e.what(), std::string(e.what()).find("project repair") == std::string::npos
                                ? fmt::format("; `quarry project repair {}` rebuilds state.json from the label "
                                              "journal and the batch files", dir_)
                                : std::string());
    state_problem = e.what();
    s = json::object();
    batches_.clear();
    model_digest_.clear();
  }
  // The classes and the pool the labels were given for: project.json edited afterwards (classes
  // reordered, renamed, dropped) would silently change what every label means.
  if (s.contains("classes") && s["classes"].is_array()) {
    const std::string was = s["classes"].dump(), now = json(config_.classes).dump();
    QUARRY_EXPECTS(was == now, path_in(dir_, "project.json"), ": the classes are ", quote_input(now, 200),
                   " but the labels were given for ", quote_input(was, 200),
                   " (state.json): class ids name classes by position, so nothing was changed; restore "
                   "project.json, or accept it with `quarry project repair ", dir_, "`");
  }
  if (s.contains("pool_size") && s["pool_size"].is_number_integer())
    QUARRY_EXPECTS(s["pool_size"].get<std::int64_t>() == config_.pool_size, path_in(dir_, "project.json"),
                   ": pool_size is ", config_.pool_size, " but the project was made for ",
                   s["pool_size"].get<std::int64_t>(), " (state.json); nothing was changed");
  const std::string journal_path = path_in(dir_, "labels.journal");
  const LabelJournal journal = LabelJournal::read(journal_path, &torn_);
  journal_mark_ = journal.mark();
  // The journal must extend what state.json was written with: labels are never silently lost.
  if (const auto rec = recorded_mark(s, state_path, dir_)) {
    const auto& [want, want_labels] = *rec;
    const std::string expected = fmt::format("state.json records {} import{} ({} labels, {} bytes)", want.records,
                                             want.records == 1 ? "" : "s", want_labels, want.bytes);
    const std::string advice = fmt::format(
        "nothing was changed. Restore labels.journal from a backup; or, to continue with the journal as it is "
        "now and lose what is missing, run `quarry project repair {}`", dir_);
    QUARRY_EXPECTS(journal.exists() || want.records == 0, journal_path, ": the label journal is missing, but ",
                   expected, ": ", advice);
    const auto have = journal.mark_at(want.records);
    QUARRY_EXPECTS(have, journal_path, ": the label journal holds ", journal.records().size(), " whole import",
                   journal.records().size() == 1 ? "" : "s", " (", journal.valid_bytes(), " bytes), but ", expected,
                   ": it was cut short or replaced; ", advice);
    QUARRY_EXPECTS(have->bytes == want.bytes && have->crc == want.crc, journal_path, ": the first ", want.records,
                   " imports of the label journal are not those ", expected,
                   " (their checksum differs): it was replaced or edited; ", advice);
  }
  if (!state_problem.empty())
    torn_ += (torn_.empty() ? "" : "; ") + state_problem + " (the labels come from the journal alone)";
  take_labels(journal);
}

void Project::take_labels(const LabelJournal& journal) {
  labels_ = journal.labels();
  label_order_.clear();
  {
    std::set<std::int64_t> seen;
    for (const auto& r : journal.records())
      for (const auto& [index, label] : r.labels)
        if (seen.insert(index).second) label_order_.push_back(index);
  }
  for (const auto& [index, label] : labels_)
    QUARRY_EXPECTS(index >= 0 && index < config_.pool_size && label >= 0 &&
                       label < static_cast<std::int32_t>(config_.classes.size()),
                   path_in(dir_, "labels.journal"), ": the label ", label, " of index ", index,
                   " does not fit this project (", config_.pool_size, " items, ", config_.classes.size(), " classes)");
  // A batch whose items are all labeled is closed.
  close_labeled_batches(batches_, labels_);
}

void Project::write_state() const {
  json state = state_json(batches_, model_digest_, model_labels_, val_accuracy_, val_balanced_accuracy_,
                          models_trained_, journal_mark_, static_cast<std::int64_t>(labels_.size()), config_, rounds_);
  // The last model's predictions on the stop set: the next model's kappa is read against them.
  if (!stop_predictions_.empty()) {
    state["stop_predictions"] = stop_predictions_;
    state["stop_predictions_labels"] = stop_digest_;
  }
  write_json(path_in(dir_, "state.json"), state);
}

std::vector<std::int64_t> project_stop_set(std::int64_t pool_size, std::uint64_t seed) {
  // Floyd's sampling: k draws whatever the pool's size (no pool-sized array).
  const std::int64_t k = std::min(kProjectStopSet, pool_size);
  std::mt19937_64 rng(loop::mix(seed, 0x570950ull));
  std::set<std::int64_t> chosen;
  for (std::int64_t j = pool_size - k; j < pool_size; ++j) {
    const auto t = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(j + 1));
    if (!chosen.insert(t).second) chosen.insert(j);
  }
  return {chosen.begin(), chosen.end()};
}

std::optional<std::size_t> project_stop_round(const std::vector<ModelRound>& rounds, const StopRule& rule) {
  std::vector<double> kappas;
  std::optional<std::size_t> since;
  for (std::size_t i = 0; i < rounds.size(); ++i) {
    if (!rounds[i].stop_kappa) continue;
    kappas.push_back(*rounds[i].stop_kappa);
    if (!stop_rule_fires(rule, kappas))
      since.reset();  // the models moved again
    else if (!since)
      since = i;
  }
  return since;
}

}  // namespace quarry
