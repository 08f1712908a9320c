// The labeling project: configuration, manifest, batches, label imports and the model, in one
// folder (see include/quarry/project.hpp for the layout and the durability rules).
#include "quarry/project.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <zlib.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "project/csv.hpp"
#include "quarry/dataset.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/loop.hpp"
#include "quarry/train.hpp"
#include "simulate/strategy.hpp"
#include "simulate/xml.hpp"

namespace quarry {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kConfigFormat = "quarry-project";
constexpr const char* kStateFormat = "quarry-project-state";
constexpr int kVersion = 1;
constexpr std::size_t kMaxListedErrors = 20;
constexpr std::int64_t kHoldOutFrom = 200, kHoldOutMost = 1000;

std::string path_in(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string read_text(const std::string& path) { return read_text_file(path); }

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

json mark_json(const JournalMark& m) {
  return {{"records", m.records}, {"bytes", m.bytes}, {"crc32", fmt::format("{:08x}", m.crc)}};
}

// One writer at a time: flock on DIR/.lock, exclusive for writers, shared for readers.
class Lock {
 public:
  /// Readers (`exclusive` false) with `optional`: when the lock is not had within the wait, go on
  /// without it (every file but the journal is replaced by rename, and only `label` appends).
  Lock(const std::string& dir, bool exclusive, double wait_seconds, bool optional = false) {
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
  bool held() const { return fd_ >= 0; }
  ~Lock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the flock
  }
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

 private:
  int fd_ = -1;
};

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

// Dataset paths made absolute, so that the project works from any working folder.
std::string absolute_spec(const std::string& spec) {
  for (const char* prefix : {"idx:", "npz:", "npy:", "pool:"}) {
    const std::string p = prefix;
    if (spec.rfind(p, 0) != 0) continue;
    std::string out = p, rest = spec.substr(p.size());
    std::size_t start = 0;
    while (true) {
      const std::size_t comma = rest.find(',', start);
      const std::string part = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      out += fs::absolute(part).lexically_normal().string();
      if (comma == std::string::npos) break;
      out += ',';
      start = comma + 1;
    }
    return out;
  }
  return spec;
}

// state.json: the batches and the current model (its label digest and validation metrics).
json state_json(const std::vector<BatchInfo>& batches, const std::string& model_digest, std::int64_t model_labels,
                const std::optional<double>& val_accuracy, const std::optional<double>& val_balanced_accuracy,
                int models_trained, const JournalMark& journal, std::int64_t labels,
                const ProjectConfig& config) {
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
  for (const auto& b : batches)
    state["batches"].push_back({{"number", b.number},
                                {"created", b.created},
                                {"state", b.state},
                                {"strategy", b.strategy},
                                {"index", b.index},
                                {"score", b.score}});
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
    crc = static_cast<std::uint32_t>(::crc32(crc, reinterpret_cast<const Bytef*>(x),
                                             static_cast<uInt>(static_cast<std::size_t>(numel) * sizeof(float))));
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

}  // namespace

// ------------------------------------------------------------------ init

std::string Project::labelstudio_config(const std::vector<std::string>& classes) {
  const auto& escape = loop::xml_escape;
  std::string x =
      "<View>\n"
      "  <Image name=\"image\" value=\"$image\"/>\n"
      "  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInLine=\"true\">\n";
  for (const auto& c : classes) x += "    <Choice value=\"" + escape(c) + "\"/>\n";
  x += "  </Choices>\n</View>\n";
  return x;
}

namespace {

// Reads and validates a manifest: index,id[,path_or_url]; returns the items by pool index.
std::vector<std::optional<ManifestItem>> parse_manifest(const std::vector<csv::Row>& rows, const std::string& name,
                                                        std::int64_t pool) {
  QUARRY_EXPECTS(!rows.empty(), name, ": the manifest is empty (expected a header index,id,path_or_url)");
  const int ci = csv::column(rows[0], "index"), cid = csv::column(rows[0], "id"),
            cp = csv::column(rows[0], "path_or_url");
  QUARRY_EXPECTS(ci >= 0 && cid >= 0, name, ": line ", rows[0].line,
                 ": the header must name the columns index and id (and path_or_url), found '",
                 quote_input(fmt::format("{}", fmt::join(rows[0].fields, ",")), 200), "'");
  std::vector<std::optional<ManifestItem>> items(static_cast<std::size_t>(pool));
  std::map<std::string, std::int64_t> ids;
  std::vector<std::string> bad;
  const std::size_t need = static_cast<std::size_t>(std::max({ci, cid, cp}) + 1);
  for (std::size_t r = 1; r < rows.size(); ++r) {
    const auto& row = rows[r];
    auto fail = [&](const std::string& why) { bad.push_back(fmt::format("{}:{}: {}", name, row.line, why)); };
    if (row.fields.size() < need) {
      fail(fmt::format("expected {} fields, found {}", need, row.fields.size()));
      continue;
    }
    const auto index = parse_int(row.fields[static_cast<std::size_t>(ci)]);
    const std::string id = trim(row.fields[static_cast<std::size_t>(cid)]);
    if (!index) {
      fail("index '" + quote_input(row.fields[static_cast<std::size_t>(ci)]) + "' is not an integer");
    } else if (*index < 0 || *index >= pool) {
      fail(fmt::format("index {} is outside the pool (0..{})", *index, pool - 1));
    } else if (items[static_cast<std::size_t>(*index)]) {
      fail(fmt::format("index {} appears twice", *index));
    } else if (id.empty()) {
      fail("the id is empty");
    } else if (!ids.emplace(id, *index).second) {
      fail(fmt::format("id '{}' appears twice (also index {})", quote_input(id), ids[id]));
    } else {
      items[static_cast<std::size_t>(*index)] =
          ManifestItem{id, cp >= 0 ? row.fields[static_cast<std::size_t>(cp)] : std::string()};
    }
  }
  if (bad.empty()) {
    std::int64_t missing = 0, first = -1;
    for (std::size_t i = 0; i < items.size(); ++i)
      if (!items[i]) {
        if (first < 0) first = static_cast<std::int64_t>(i);
        ++missing;
      }
    QUARRY_EXPECTS(missing == 0, name, ": the manifest has no row for ", missing, " of the ", pool,
                   " pool items (the first: index ", first, "); it needs one row per item");
  }
  if (!bad.empty()) {
    std::string msg = fmt::format("{}: {} bad manifest row{}:", name, bad.size(), bad.size() == 1 ? "" : "s");
    for (std::size_t i = 0; i < bad.size() && i < kMaxListedErrors; ++i) msg += "\n  " + bad[i];
    if (bad.size() > kMaxListedErrors) msg += fmt::format("\n  ... and {} more", bad.size() - kMaxListedErrors);
    QUARRY_FAIL(msg);
  }
  return items;
}

}  // namespace

void Project::init(const std::string& dir, ProjectConfig config, const std::string& manifest_csv) {
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    QUARRY_EXPECTS(fs::is_directory(dir, ec), dir, ": exists and is not a folder");
    QUARRY_EXPECTS(fs::is_empty(dir, ec), dir, ": the folder is not empty (a project needs a new or empty folder)");
  }
  // Everything is checked before the folder is made: a failed init leaves nothing behind.
  loop::parse_strategy(config.strategy);
  parse_committee(config.committee);
  if (!config.model.empty()) parse_model_spec(config.model);
  parse_device(config.device);
  config.dataset = absolute_spec(config.dataset);
  DatasetOptions dopt;
  dopt.seed = config.seed;
  const Dataset data = load_dataset(config.dataset, dopt);
  config.pool_size = data.train.size();
  QUARRY_EXPECTS(config.pool_size > 0, config.dataset, ": the pool is empty");
  if (config.classes.empty()) {
    QUARRY_EXPECTS(data.num_classes >= 2, config.dataset,
                   ": the dataset names no classes; give them with --classes a,b,c");
    for (int c = 0; c < data.num_classes; ++c) config.classes.push_back(std::to_string(c));
  }
  QUARRY_USAGE_EXPECTS(config.classes.size() >= 2, "a project needs at least 2 classes, got ", config.classes.size());
  {
    std::set<std::string> seen;
    for (auto& c : config.classes) {
      c = trim(c);
      QUARRY_USAGE_EXPECTS(!c.empty(), "--classes: a class name is empty");
      QUARRY_USAGE_EXPECTS(seen.insert(c).second, "--classes: '", quote_input(c), "' is listed twice");
    }
  }
  // A TorchScript model is found from any working folder, as the dataset is.
  if (config.model.rfind("torchscript:", 0) == 0) {
    const std::string path = config.model.substr(12);
    expect_regular_file(path);
    config.model = "torchscript:" + fs::absolute(path).lexically_normal().string();
  }
  std::string manifest_text;
  if (!manifest_csv.empty()) {
    manifest_text = read_text(manifest_csv);
    parse_manifest(csv::parse(manifest_text, manifest_csv), manifest_csv, config.pool_size);
    config.has_manifest = true;
  }

  // Made under a temporary name beside DIR and renamed into place last: a failed init (a full
  // disk, a crash) leaves no half-made project that would block the retry.
  const fs::path final_dir = fs::absolute(fs::path(dir), ec).lexically_normal();
  QUARRY_EXPECTS(!ec, dir, ": ", ec.message());
  const fs::path parent = final_dir.has_filename() ? final_dir.parent_path() : final_dir.parent_path().parent_path();
  const std::string base = final_dir.has_filename() ? final_dir.filename().string()
                                                    : final_dir.parent_path().filename().string();
  fs::create_directories(parent, ec);
  QUARRY_EXPECTS(!ec, dir, ": cannot create the folder above it: ", ec.message());
  const fs::path tmp = parent / ("." + base + ".init." + std::to_string(::getpid()));
  struct Cleanup {
    fs::path path;
    bool keep = false;
    ~Cleanup() {
      std::error_code ignore;
      if (!keep) fs::remove_all(path, ignore);
    }
  } cleanup{tmp};
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp / "batches", ec);
  QUARRY_EXPECTS(!ec, dir, ": cannot create the project folder: ", ec.message());
  const std::string t = tmp.string();
  if (config.has_manifest) write_file_atomic(path_in(t, "manifest.csv"), {manifest_text});
  json j;
  j["format"] = kConfigFormat;
  j["version"] = kVersion;
  j["created"] = utc_now();
  j["dataset"] = config.dataset;
  j["dataset_description"] = data.describe();
  j["pool"] = pool_fingerprint(data);
  j["model"] = config.model.empty() ? model_spec_string(default_model(data)) : config.model;
  j["strategy"] = config.strategy;
  j["committee"] = config.committee;
  j["classes"] = config.classes;
  j["seed"] = config.seed;
  j["device"] = config.device;
  j["threads"] = config.threads;
  j["pool_size"] = config.pool_size;
  j["manifest"] = config.has_manifest;
  write_file_atomic(path_in(t, "labelstudio.xml"), {labelstudio_config(config.classes)});
  write_json(path_in(t, "state.json"), state_json({}, "", 0, std::nullopt, std::nullopt, 0, JournalMark{}, 0, config));
  write_json(path_in(t, "project.json"), j);
  // rename(2) replaces an empty folder; a folder that gained files meanwhile is refused.
  if (::rename(t.c_str(), final_dir.c_str()) != 0) {
    const int err = errno;
    QUARRY_FAIL(dir, ": cannot create the project folder: ", std::strerror(err),
                err == ENOTEMPTY || err == EEXIST ? " (the folder is no longer empty)" : "");
  }
  cleanup.keep = true;
  (void)fsync_parent_folder(final_dir.string());
}

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

void Project::read_config() {
  const json j = read_json(path_in(dir_, "project.json"), kConfigFormat);
  pool_print_ = j.contains("pool") && j["pool"].is_object() ? j["pool"].dump() : std::string();
  try {
    config_.dataset = j.at("dataset").get<std::string>();
    config_.model = j.at("model").get<std::string>();
    config_.strategy = j.at("strategy").get<std::string>();
    config_.committee = j.at("committee").get<std::string>();
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
  QUARRY_EXPECTS(config_.threads >= 0 && config_.threads <= 4096, path_in(dir_, "project.json"), ": threads ",
                 config_.threads, " is out of range (0 for all cores, at most 4096)");
  manifest_.clear();
  id_index_.clear();
  if (config_.has_manifest) {
    const std::string m = path_in(dir_, "manifest.csv");
    manifest_ = parse_manifest(csv::parse(read_text(m), m), m, config_.pool_size);
    for (std::size_t i = 0; i < manifest_.size(); ++i)
      if (manifest_[i]) id_index_.emplace(manifest_[i]->id, static_cast<std::int64_t>(i));
  }
}

struct ProjectFiles {
  static void read_state(Project& p, const json& s);
};

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
      p.batches_.push_back(std::move(info));
    }
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
    for (const auto i : b.index)
      QUARRY_EXPECTS(i >= 0 && i < p.config_.pool_size, path_in(p.dir_, "state.json"), ": batch ", b.number,
                     " lists the index ", i, ", outside the pool of ", p.config_.pool_size);
  }
}

namespace {

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

}  // namespace

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
  for (auto& b : batches_)
    if (b.state == "open" &&
        std::all_of(b.index.begin(), b.index.end(), [&](std::int64_t i) { return labels_.count(i) > 0; }))
      b.state = "closed";
}

// ------------------------------------------------------------------ repair

namespace {

// A batch file batches/NNNN.csv (index,id,path_or_url,score) read back.
std::optional<BatchInfo> read_batch_file(const fs::path& file, int number, std::int64_t pool, std::string* why) {
  try {
    const auto rows = csv::parse(read_text(file.string()), file.string());
    QUARRY_EXPECTS(!rows.empty(), "empty");
    const int ci = csv::column(rows[0], "index"), cs = csv::column(rows[0], "score");
    QUARRY_EXPECTS(ci >= 0, "no index column");
    BatchInfo b;
    b.number = number;
    b.state = "open";
    b.strategy = "unknown (rebuilt by repair)";
    std::error_code ec;
    const auto t = fs::last_write_time(file, ec);
    if (!ec) {
      const auto sys = std::chrono::time_point_cast<std::chrono::seconds>(
          t - fs::file_time_type::clock::now() + std::chrono::system_clock::now());
      const std::time_t tt = std::chrono::system_clock::to_time_t(sys);
      std::tm tm{};
      gmtime_r(&tt, &tm);
      char buf[32];
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
      b.created = buf;
    }
    for (std::size_t r = 1; r < rows.size(); ++r) {
      const auto& f = rows[r].fields;
      const auto index = ci < static_cast<int>(f.size()) ? parse_int(f[static_cast<std::size_t>(ci)]) : std::nullopt;
      QUARRY_EXPECTS(index && *index >= 0 && *index < pool, "line ", rows[r].line, ": no index within the pool");
      b.index.push_back(*index);
      float score = 0.0f;
      if (cs >= 0 && cs < static_cast<int>(f.size())) {
        char* end = nullptr;
        const std::string& t2 = f[static_cast<std::size_t>(cs)];
        score = std::strtof(t2.c_str(), &end);
        if (!end || *end != '\0' || !std::isfinite(score)) score = 0.0f;
      }
      b.score.push_back(score);
    }
    return b;
  } catch (const Error& e) {
    *why = e.what();
    return std::nullopt;
  }
}

}  // namespace

RepairReport Project::repair(const std::string& dir, double lock_wait_seconds) {
  std::error_code ec;
  QUARRY_EXPECTS(fs::exists(path_in(dir, "project.json"), ec), dir,
                 ": not a quarry project (no project.json; create one with `quarry project init`)");
  Lock lock(dir, true, lock_wait_seconds);
  RepairReport rep;
  Project p(dir, NoLoad{});
  p.read_config();
  const std::string state_path = path_in(dir, "state.json");
  json old;
  bool have_old = false;
  try {
    old = read_json(state_path, kStateFormat);
    ProjectFiles::read_state(p, old);
    have_old = true;
  } catch (const Error& e) {
    rep.actions.push_back(std::string("state.json could not be used (") + e.what() + "): rebuilt from batches/");
    p.batches_.clear();
  }
  std::string torn;
  const LabelJournal journal = LabelJournal::read(path_in(dir, "labels.journal"), &torn);
  if (!journal.exists()) rep.actions.push_back("labels.journal does not exist: the project has no labels");
  if (!torn.empty()) rep.actions.push_back(torn);
  if (have_old && old.contains("classes") && old["classes"] != json(p.config_.classes))
    rep.actions.push_back("the classes of project.json (" + quote_input(json(p.config_.classes).dump(), 200) +
                          ") differ from those the labels were given for (" + quote_input(old["classes"].dump(), 200) +
                          "): project.json's are taken");
  if (have_old) {
    std::optional<std::pair<JournalMark, std::int64_t>> rec;
    try {
      rec = recorded_mark(old, state_path, dir);
    } catch (const Error& e) {
      rep.actions.push_back(e.what());
    }
    if (rec) {
      const auto have = journal.mark_at(rec->first.records);
      if (!have || have->bytes != rec->first.bytes || have->crc != rec->first.crc)
        rep.actions.push_back(fmt::format(
            "the journal ({} imports, {} labels) does not extend what state.json recorded ({} imports, {} labels): "
            "taken as it is",
            journal.records().size(), journal.labels().size(), rec->first.records, rec->second));
    }
  }
  // Batch files that state.json does not list (or all of them, without a usable state.json).
  std::set<int> known;
  for (const auto& b : p.batches_) known.insert(b.number);
  std::vector<BatchInfo> found;
  for (fs::directory_iterator it(path_in(dir, "batches"), ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() != 8 || name.substr(4) != ".csv" || name.find_first_not_of("0123456789") != 4) continue;
    const int number = std::stoi(name.substr(0, 4));
    if (number < 1 || known.count(number)) continue;
    std::string why;
    if (auto b = read_batch_file(it->path(), number, p.config_.pool_size, &why)) {
      found.push_back(std::move(*b));
      rep.actions.push_back(fmt::format("batch {:04d}: recovered from {} ({} items)", number, it->path().string(),
                                        found.back().index.size()));
    } else {
      rep.actions.push_back(fmt::format("batch {:04d}: {} is unreadable ({}): left out", number, it->path().string(), why));
    }
  }
  for (auto& b : found) p.batches_.push_back(std::move(b));
  std::sort(p.batches_.begin(), p.batches_.end(), [](const BatchInfo& a, const BatchInfo& b) { return a.number < b.number; });
  if (!p.model_digest_.empty() || fs::exists(path_in(dir, "model.pt"), ec)) {
    rep.actions.push_back("the model is forgotten: the next `quarry project next` trains a new one");
    p.model_digest_.clear();
    p.model_labels_ = 0;
    p.val_accuracy_.reset();
    p.val_balanced_accuracy_.reset();
  }
  p.journal_mark_ = journal.mark();
  p.take_labels(journal);
  p.write_state();
  rep.actions.push_back(fmt::format("wrote state.json: {} batch{}, the journal's {} import{} ({} labels)",
                                    p.batches_.size(), p.batches_.size() == 1 ? "" : "es", journal.records().size(),
                                    journal.records().size() == 1 ? "" : "s", p.labels_.size()));
  return rep;
}

// ------------------------------------------------------------------ label

namespace {

struct Parsed {
  std::int64_t rows = 0, skipped = 0;
  std::vector<std::pair<std::int64_t, std::int32_t>> labels;  // file order
  std::vector<std::string> where;                             // "FILE:LINE" / "FILE: task N", per label
  std::vector<std::string> bad;
};

}  // namespace

ImportSummary Project::label(const std::string& file, bool allow_relabel, double lock_wait_seconds) {
  Lock lock(dir_, true, lock_wait_seconds);
  reload();
  const std::string torn_found = torn_;
  const auto& classes = config_.classes;
  // Class ids stand for classes only where no class name is itself an integer ("10,20": is
  // "1" a typo or an id?).
  const bool ids_allowed =
      std::none_of(classes.begin(), classes.end(), [](const std::string& c) { return parse_int(c).has_value(); });
  auto class_of = [&](const std::string& raw) -> std::int32_t {
    const std::string name = trim(raw);
    for (std::size_t c = 0; c < classes.size(); ++c)
      if (classes[c] == name) return static_cast<std::int32_t>(c);
    if (const auto id = parse_int(name); ids_allowed && id && *id >= 0 && *id < static_cast<std::int64_t>(classes.size()))
      return static_cast<std::int32_t>(*id);
    return -1;
  };
  const std::string class_list = fmt::format("{}", fmt::join(classes, ", "));
  auto index_of_id = [&](const std::string& id) -> std::optional<std::int64_t> {
    if (config_.has_manifest) {
      const auto it = id_index_.find(trim(id));
      if (it != id_index_.end()) return it->second;
      return std::nullopt;
    }
    return parse_int(id);  // without a manifest an item's id is its index
  };

  Parsed p;
  const std::string text = read_text(file);
  std::size_t first = text.rfind("\xEF\xBB\xBF", 0) == 0 ? 3 : 0;  // a byte-order mark
  while (first < text.size() && std::isspace(static_cast<unsigned char>(text[first]))) ++first;
  const bool is_json = first < text.size() && (text[first] == '[' || text[first] == '{');

  // Checks an (index, class) pair and appends it or a bad row.
  auto take = [&](const std::string& where, std::optional<std::int64_t> index, const std::string& index_text,
                  bool by_id, const std::string& label_text) {
    ++p.rows;
    if (!index) {
      p.bad.push_back(where + (by_id ? ": unknown id '" + quote_input(index_text) + "'"
                                     : ": index '" + quote_input(index_text) + "' is not an integer in range"));
      return;
    }
    if (*index < 0 || *index >= config_.pool_size) {
      p.bad.push_back(fmt::format("{}: index {} is outside the pool (0..{})", where, *index, config_.pool_size - 1));
      return;
    }
    const std::int32_t c = class_of(label_text);
    if (c < 0) {
      p.bad.push_back(fmt::format("{}: unknown class '{}' (classes: {})", where, quote_input(trim(label_text)),
                                  quote_input(class_list, 200)));
      return;
    }
    p.labels.emplace_back(*index, c);
    p.where.push_back(where);
  };

  if (is_json) {
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {
      QUARRY_FAIL(file, ": not valid JSON (a Label Studio export was expected): ", e.what());
    }
    QUARRY_EXPECTS(j.is_array(), file, ": expected a Label Studio JSON export (an array of tasks)");
    for (std::size_t t = 0; t < j.size(); ++t) {
      const json& task = j[t];
      std::string where = fmt::format("{}: task {}", file, t + 1);
      if (task.is_object() && task.contains("id") && (task["id"].is_number() || task["id"].is_string()))
        where += " (id " + quote_input(task["id"].is_string() ? task["id"].get<std::string>() : task["id"].dump()) + ")";
      try {
        if (!task.is_object()) {
          ++p.rows;
          p.bad.push_back(where + ": not an object");
          continue;
        }
        // The quarry index: data.quarry_index, meta.quarry_index (top level in JSON-MIN), or
        // quarry_id through the manifest.
        // Every place that names the item must name the same one: data and meta disagreeing
        // (a task copied between batches, an edited export) is an error, not a guess.
        std::optional<std::int64_t> index;
        std::string index_text, disagree;
        bool by_id = false, found = false;
        for (const char* holder : {"data", "meta", ""}) {
          if (*holder && task.contains(holder) && !task[holder].is_object() && !task[holder].is_null()) {
            disagree = std::string("its \"") + holder + "\" is not an object";
            break;
          }
          const json* h = *holder ? (task.contains(holder) && task[holder].is_object() ? &task[holder] : nullptr) : &task;
          if (!h) continue;
          for (const char* key : {"quarry_index", "quarry_id"}) {
            if (!h->contains(key)) continue;
            const json& v = (*h)[key];
            const bool is_id = std::string(key) == "quarry_id";
            std::optional<std::int64_t> here;
            std::string text;
            if (is_id) {
              if (!v.is_string()) {
                disagree = std::string(holder) + ".quarry_id is not a string";
                break;
              }
              text = v.get<std::string>();
              here = index_of_id(text);
              if (!here) {
                disagree = "unknown id '" + quote_input(text) + "'";
                break;
              }
            } else {
              text = v.is_string() ? v.get<std::string>() : v.dump();
              if (v.is_number_unsigned())
                here = v.get<std::uint64_t>() <= static_cast<std::uint64_t>(INT64_MAX)
                           ? std::optional<std::int64_t>(static_cast<std::int64_t>(v.get<std::uint64_t>()))
                           : std::nullopt;
              else if (v.is_number_integer())
                here = v.get<std::int64_t>();
              else if (v.is_string())
                here = parse_int(text);
              if (!here) {
                disagree = std::string(*holder ? holder : "the task") + "'s quarry_index '" + quote_input(text) +
                           "' is not a whole number";
                break;
              }
            }
            if (found && here != index) {
              disagree = fmt::format("it names two items: index {} and {} ({}.{})", *index, *here,
                                     *holder ? holder : "task", key);
              break;
            }
            if (!found) {
              index = here;
              index_text = text;
              by_id = is_id;
              found = true;
            }
          }
          if (!disagree.empty()) break;
        }
        if (!disagree.empty()) {
          ++p.rows;
          p.bad.push_back(where + ": " + disagree);
          continue;
        }
        if (!found) {
          ++p.rows;
          p.bad.push_back(where + ": no quarry_index in its data or meta (was it made from a quarry batch?)");
          continue;
        }
        // The label: the last annotation that was not cancelled, its choice from the control
        // named "label" (quarry's labeling config; any single Choices control where none has
        // that name). JSON-MIN exports: the "label" field.
        std::optional<std::string> choice;
        std::string problem;
        if (task.contains("annotations") && !task["annotations"].is_array()) {
          problem = "its \"annotations\" is not a list";
        } else if (task.contains("annotations")) {
          const json* chosen = nullptr;
          for (const auto& a : task["annotations"]) {
            if (!a.is_object()) {
              problem = "an annotation is not an object";
              break;
            }
            const bool cancelled = a.contains("was_cancelled") && a["was_cancelled"].is_boolean() &&
                                   a["was_cancelled"].get<bool>();
            if (!cancelled) chosen = &a;
          }
          if (problem.empty() && chosen && (!chosen->contains("result") || !(*chosen)["result"].is_array())) {
            problem = "its annotation's \"result\" is missing or not a list";
          } else if (problem.empty() && chosen) {
            std::vector<const json*> controls;
            bool named = false;
            for (const auto& r : (*chosen)["result"]) {
              if (!r.is_object() || !r.contains("type") || r["type"] != "choices") continue;
              const bool is_label = r.contains("from_name") && r["from_name"] == "label";
              if (is_label && !named) controls.clear();
              if (is_label || !named) controls.push_back(&r);
              named = named || is_label;
            }
            int n = 0;
            for (const json* r : controls) {
              const json* v = r->contains("value") ? &(*r)["value"] : nullptr;
              if (!v || !v->is_object() || !v->contains("choices") || !(*v)["choices"].is_array()) continue;
              for (const auto& c : (*v)["choices"]) {
                ++n;
                if (c.is_string()) choice = c.get<std::string>();
              }
            }
            if (n > 1) problem = fmt::format("the annotation has {} choices (one class per item expected)", n);
            else if (n == 1 && !choice) problem = "the choice is not a string";
            else if (n == 0) problem = "the annotation has no choice";
          }
        } else if (task.contains("label")) {
          if (task["label"].is_string()) choice = task["label"].get<std::string>();
          else problem = "its \"label\" is not a string";
        }
        if (!problem.empty()) {
          ++p.rows;
          p.bad.push_back(where + ": " + problem);
          continue;
        }
        if (!choice) {
          ++p.skipped;  // not annotated (or only cancelled annotations)
          continue;
        }
        take(where, index, index_text, by_id, *choice);
      } catch (const json::exception& e) {
        ++p.rows;
        p.bad.push_back(where + ": unexpected content (" + e.what() + ")");
      }
    }
  } else {
    const auto rows = csv::parse(text, file);
    QUARRY_EXPECTS(!rows.empty(), file, ": empty (expected a CSV with a header index,label or id,label)");
    const auto& header = rows[0];
    for (const char* name : {"index", "id", "label"}) {
      int count = 0;
      for (const auto& f : header.fields) count += trim(f) == name;
      QUARRY_EXPECTS(count <= 1, file, ":", header.line, ": the header names the column '", name, "' ", count,
                     " times");
    }
    const int ci = csv::column(header, "index"), cid = csv::column(header, "id"), cl = csv::column(header, "label");
    QUARRY_EXPECTS((ci >= 0 || cid >= 0) && cl >= 0, file, ":", header.line,
                   ": the header must name an index (or id) column and a label column, found '",
                   quote_input(fmt::format("{}", fmt::join(header.fields, ",")), 200), "'");
    const std::size_t need = static_cast<std::size_t>(std::max({ci, cid, cl}) + 1);
    for (std::size_t r = 1; r < rows.size(); ++r) {
      const auto& row = rows[r];
      const std::string where = fmt::format("{}:{}", file, row.line);
      if (row.fields.size() < need) {
        ++p.rows;
        p.bad.push_back(fmt::format("{}: expected at least {} fields, found {}", where, need, row.fields.size()));
        continue;
      }
      if (ci >= 0) {
        const std::string& it = row.fields[static_cast<std::size_t>(ci)];
        const auto index = parse_int(it);
        if (index && cid >= 0 && config_.has_manifest && *index >= 0 && *index < config_.pool_size) {
          const std::string id = trim(row.fields[static_cast<std::size_t>(cid)]);
          const auto& item = manifest_[static_cast<std::size_t>(*index)];
          if (!id.empty() && item && item->id != id) {
            ++p.rows;
            p.bad.push_back(fmt::format("{}: index {} is '{}' in the manifest, not '{}'", where, *index,
                                        quote_input(item->id), quote_input(id)));
            continue;
          }
        } else if (index && cid >= 0 && !config_.has_manifest) {
          // Without a manifest an item's id is its index: both columns must name the same item.
          const std::string id = trim(row.fields[static_cast<std::size_t>(cid)]);
          if (!id.empty() && parse_int(id) != index) {
            ++p.rows;
            p.bad.push_back(fmt::format("{}: the index {} and the id '{}' name different items (without a "
                                        "manifest an item's id is its index)", where, *index, quote_input(id)));
            continue;
          }
        }
        take(where, index, trim(it), false, row.fields[static_cast<std::size_t>(cl)]);
      } else {
        const std::string id = trim(row.fields[static_cast<std::size_t>(cid)]);
        take(where, index_of_id(id), id, true, row.fields[static_cast<std::size_t>(cl)]);
      }
    }
  }

  // Conflicts: within the file, and with the labels already given.
  std::map<std::int64_t, std::pair<std::int32_t, std::size_t>> in_file;  // index -> (class, first label)
  ImportSummary sum;
  sum.torn = torn_found;
  sum.rows = p.rows;
  sum.skipped = p.skipped;
  std::map<std::int64_t, std::int32_t> changes;
  for (std::size_t i = 0; i < p.labels.size(); ++i) {
    const auto [index, c] = p.labels[i];
    const auto [it, fresh] = in_file.emplace(index, std::make_pair(c, i));
    if (!fresh) {
      if (it->second.first != c)
        p.bad.push_back(fmt::format("{}: index {} is labeled '{}' here but '{}' at {}", p.where[i], index,
                                    classes[static_cast<std::size_t>(c)],
                                    classes[static_cast<std::size_t>(it->second.first)], p.where[it->second.second]));
      continue;
    }
    const auto old = labels_.find(index);
    if (old == labels_.end()) {
      ++sum.added;
      changes[index] = c;
    } else if (old->second == c) {
      ++sum.unchanged;
    } else if (allow_relabel) {
      ++sum.relabeled;
      changes[index] = c;
    } else {
      p.bad.push_back(fmt::format("{}: index {} is already labeled '{}', not '{}' (pass --allow-relabel to change it)",
                                  p.where[i], index, classes[static_cast<std::size_t>(old->second)],
                                  classes[static_cast<std::size_t>(c)]));
    }
  }
  if (!p.bad.empty()) {
    std::string msg = fmt::format("{}: {} bad row{}, nothing imported:", file, p.bad.size(), p.bad.size() == 1 ? "" : "s");
    for (std::size_t i = 0; i < p.bad.size() && i < kMaxListedErrors; ++i) msg += "\n  " + p.bad[i];
    if (p.bad.size() > kMaxListedErrors) msg += fmt::format("\n  ... and {} more", p.bad.size() - kMaxListedErrors);
    QUARRY_FAIL(msg);
  }
  if (changes.empty()) return sum;  // a repeated import: nothing to write
  JournalRecord rec;
  rec.time = utc_now();
  rec.source = file;
  rec.labels.assign(changes.begin(), changes.end());
  LabelJournal journal = LabelJournal::read(path_in(dir_, "labels.journal"));
  journal.append(path_in(dir_, "labels.journal"), std::move(rec));
  sum.seq = journal.records().back().seq;
  torn_.clear();
  labels_ = journal.labels();
  journal_mark_ = journal.mark();
  // The labels are durable now; state.json learns the journal's new mark (and which batches the
  // import closed). Should this fail, the journal still extends the old mark: nothing is lost.
  for (auto& b : batches_)
    if (b.state == "open" &&
        std::all_of(b.index.begin(), b.index.end(), [&](std::int64_t i) { return labels_.count(i) > 0; }))
      b.state = "closed";
  try {
    write_state();
  } catch (const Error& e) {
    sum.torn += std::string(sum.torn.empty() ? "" : "; ") + "the labels were saved, but state.json was not updated (" +
                e.what() + "); the next command catches up";
  }
  return sum;
}

void Project::write_state() const {
  write_json(path_in(dir_, "state.json"),
             state_json(batches_, model_digest_, model_labels_, val_accuracy_, val_balanced_accuracy_, models_trained_,
                        journal_mark_, static_cast<std::int64_t>(labels_.size()), config_));
}

// ------------------------------------------------------------------ next

NextResult Project::next(const NextOptions& o, const ProjectLogFn& log, double lock_wait_seconds) {
  QUARRY_EXPECTS(o.k >= 1, "next: -k must be >= 1");
  Lock lock(dir_, true, lock_wait_seconds);
  reload();
  auto say = [&](const std::string& s) {
    if (log) log(s);
  };
  NextResult res;
  for (auto& b : batches_)
    if (b.state == "open" && o.replace_pending) {
      for (auto i : b.index) res.dropped += labels_.count(i) ? 0 : 1;
      b.state = "dropped";
    }
  std::vector<std::int64_t> exclude;
  std::vector<char> taken(static_cast<std::size_t>(config_.pool_size), 0);
  for (const auto& [index, label] : labels_) taken[static_cast<std::size_t>(index)] = 1;
  for (const auto& b : batches_)
    if (b.state == "open")
      for (auto i : b.index) taken[static_cast<std::size_t>(i)] = 1;
  for (std::int64_t i = 0; i < config_.pool_size; ++i)
    if (taken[static_cast<std::size_t>(i)]) exclude.push_back(i);
  QUARRY_EXPECTS(static_cast<std::int64_t>(exclude.size()) < config_.pool_size, dir_,
                 ": every pool item is labeled or awaiting labels; nothing left to propose",
                 o.replace_pending ? "" : " (--replace-pending releases the open batches)");

  const std::int64_t selectable = config_.pool_size - static_cast<std::int64_t>(exclude.size());
  QUARRY_USAGE_EXPECTS(o.k <= selectable, "next: -k ", o.k, ": only ", selectable,
                       " items are neither labeled nor awaiting labels; ask for at most ", selectable);
  const int number = batches_.empty() ? 1 : batches_.back().number + 1;
  {
    // Files of a batch that state.json does not list (an older state.json put back): never
    // overwritten, they may be with annotators.
    std::error_code ec;
    const std::string name = path_in(path_in(dir_, "batches"), fmt::format("{:04d}", number));
    for (const std::string& f : {name + ".csv", name + ".labelstudio.json"})
      QUARRY_EXPECTS(!fs::exists(f, ec), f, " exists, but state.json does not list batch ", number,
                     "; nothing was changed. `quarry project repair ", dir_, "` takes it back into state.json");
  }
  std::set<std::int32_t> present;
  for (const auto& [index, label] : labels_) present.insert(label);
  const loop::Strategy strategy = loop::parse_strategy(config_.strategy);
  res.cold_start = strategy.kind != loop::Strategy::Kind::random && present.size() < 2;
  loop::StepOptions so;
  so.k = o.k;
  so.exclude = exclude;
  so.committee = parse_committee(config_.committee);
  so.seed = loop::mix(config_.seed, static_cast<std::uint64_t>(number));
  so.device = parse_device(config_.device);
  so.threads = config_.threads;
  Selection sel;
  BatchInfo batch;
  batch.number = number;
  batch.created = utc_now();
  if (strategy.kind == loop::Strategy::Kind::random || res.cold_start) {
    if (res.cold_start)
      say(fmt::format("labels of {} class{} so far: a random batch (cold start) until two classes are labeled",
                      present.size(), present.size() == 1 ? "" : "es"));
    // No dataset needed: a seeded draw among the items neither labeled nor awaiting labels. The
    // pool's files must still be those of init (their sizes); --retrain checks and accepts them.
    if (!pool_print_.empty()) {
      const json was = json::parse(pool_print_);
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
      if (!changed.empty()) {
        QUARRY_EXPECTS(o.retrain, config_.dataset, ": the pool changed since the project was made: ", changed,
                       ". Nothing was done. If its rows are still the same items in the same order, run "
                       "`quarry project next ", dir_, " --retrain` to accept it; otherwise make a new project for it");
        DatasetOptions dopt;
        dopt.seed = config_.seed;
        const Dataset data = load_dataset(config_.dataset, dopt);
        QUARRY_EXPECTS(data.train.size() == config_.pool_size, config_.dataset, ": the pool has ", data.train.size(),
                       " items, but the project was made for ", config_.pool_size,
                       ": labels name items by their row; make a new project for this pool");
        json pj = read_json(path_in(dir_, "project.json"), kConfigFormat);
        pj["pool"] = pool_fingerprint(data);
        write_json(path_in(dir_, "project.json"), pj);
        pool_print_ = pj["pool"].dump();
        say("the pool changed (" + changed + "): accepted (--retrain)");
      }
    }
    std::vector<std::int64_t> rest;
    for (std::int64_t i = 0; i < config_.pool_size; ++i)
      if (!taken[static_cast<std::size_t>(i)]) rest.push_back(i);
    sel.index = loop::sample_without_replacement(std::move(rest), o.k, so.seed);
    sel.score.assign(sel.index.size(), 0.0f);
    batch.strategy = res.cold_start ? "random (cold start)" : "random";
  } else {
    DatasetOptions dopt;
    dopt.seed = config_.seed;
    say("loading " + config_.dataset);
    Dataset data = load_dataset(config_.dataset, dopt);
    QUARRY_EXPECTS(data.train.size() == config_.pool_size, config_.dataset, ": the pool has ", data.train.size(),
                   " items, but the project was made for ", config_.pool_size,
                   " (the dataset changed). Labels name items by their row: make a new project for this pool "
                   "(`quarry project init`), and bring the labels that still apply over with `quarry project "
                   "export` and `quarry project label`");
    // The pool must be the one the labels and the model were made on.
    const json now = pool_fingerprint(data);
    bool pool_changed = false;
    if (!pool_print_.empty()) {
      const std::string changes = pool_changes(json::parse(pool_print_), now);
      if (!changes.empty()) {
        QUARRY_EXPECTS(o.retrain, config_.dataset, ": the pool changed since the project was made: ", changes,
                       ". Nothing was done. If its rows are still the same items in the same order (re-exported, "
                       "converted), run `quarry project next ", dir_, " --retrain` to accept it and train a new "
                       "model; otherwise make a new project for it");
        say("the pool changed (" + changes + "): accepted (--retrain), a new model is trained");
        pool_changed = true;
      }
    }
    // The project's labels replace the dataset's: only what people labeled is trained on.
    const int num_classes = static_cast<int>(config_.classes.size());
    std::fill(data.train.y.begin(), data.train.y.end(), -1);
    std::vector<std::int64_t> labeled;
    for (const auto& [index, label] : labels_) {
      data.train.y[static_cast<std::size_t>(index)] = label;
      labeled.push_back(index);
    }
    // The dataset's own validation split (a labeled hold-out) is used when its classes match.
    const bool val = data.val.size() > 0 && data.num_classes == num_classes &&
                     std::all_of(data.val.y.begin(), data.val.y.end(), [&](std::int32_t y) { return y >= 0 && y < num_classes; });
    if (!val) data.val = Split{};
    data.test = Split{};
    data.num_classes = num_classes;
    // Without one, a validation set is held out of the labels (from kHoldOutFrom labels on: one
    // in ten, at most kHoldOutMost, chosen by a hash of the index, so a label stays where it
    // is as labels are added): early stopping and the status's metrics need it.
    std::int64_t held_out = 0;
    if (!val && static_cast<std::int64_t>(labeled.size()) >= kHoldOutFrom) {
      std::vector<std::int64_t> train_part;
      const std::int64_t numel = data.sample_numel();
      // In the order the labels came: the first kHoldOutMost chosen stay held out for good.
      for (const std::int64_t i : label_order_) {
        if (held_out < kHoldOutMost && loop::mix(config_.seed ^ 0x5EED, static_cast<std::uint64_t>(i)) % 10 == 0) {
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
    }

    const std::string digest = labels_digest(labels_);
    const std::string model_path = path_in(dir_, "model.pt");
    std::error_code ec;
    Model model;
    const DeviceSpec device = parse_device(config_.device);
    if (digest == model_digest_ && fs::exists(model_path, ec) && !o.retrain) {
      say(fmt::format("the labels are unchanged since the last model ({} labels): reusing it", labels_.size()));
      model = Model::load(model_path, device);
      // Checked before any inference: a model of another width would read past its rows.
      QUARRY_EXPECTS(model.sample_shape() == data.sample_shape && model.num_classes() == num_classes, model_path,
                     ": the model takes samples of shape ", shape_string(model.sample_shape()), " and ",
                     model.num_classes(), " classes, but the pool ", config_.dataset, " has samples of shape ",
                     shape_string(data.sample_shape), " and the project ", num_classes,
                     " classes. Nothing was done; run `quarry project next ", dir_, " --retrain` to train a new one");
    } else {
      TrainOptions to;
      to.model = parse_model_spec(config_.model);
      to.committee = so.committee.kind == CommitteeSpec::Kind::ensemble && strategy.committee() ? so.committee
                                                                                                : CommitteeSpec{};
      to.seed = config_.seed;
      to.device = device;
      to.threads = config_.threads;
      say(fmt::format("training {} on {} labels", config_.model, labeled.size()));
      TrainReport tr;
      model = Model::train(data, labeled, to, &tr);
      // The state forgets the old model before model.pt is replaced: a crash in between must
      // not pair the new file with the old labels' digest.
      if (!model_digest_.empty()) {
        model_digest_.clear();
        model_labels_ = 0;
        write_state();
      }
      model.save(model_path);
      res.retrained = true;
      model_digest_ = digest;
      model_labels_ = static_cast<std::int64_t>(labels_.size());
      ++models_trained_;
      val_accuracy_.reset();
      val_balanced_accuracy_.reset();
      if (data.val.size() > 0) {
        const Metrics m = evaluate_predictions(data.val.y, model.predict(data.val, config_.threads), num_classes);
        val_accuracy_ = m.accuracy;
        val_balanced_accuracy_ = m.balanced_accuracy;
        say(fmt::format("trained in {:.1f} s ({} epochs); validation accuracy {:.1f}%, balanced {:.1f}% ({})",
                        tr.seconds, tr.epochs, 100 * m.accuracy, 100 * m.balanced_accuracy,
                        held_out > 0 ? fmt::format("{} labels held out", held_out)
                                     : fmt::format("the dataset's {} validation samples", data.val.size())));
      } else {
        say(fmt::format("trained in {:.1f} s ({} epochs; no validation split)", tr.seconds, tr.epochs));
      }
    }
    if (pool_changed || pool_print_.empty()) {  // the accepted pool (or an older project's first fingerprint)
      json pj = read_json(path_in(dir_, "project.json"), kConfigFormat);
      pj["pool"] = now;
      write_json(path_in(dir_, "project.json"), pj);
      pool_print_ = now.dump();
    }
    say(fmt::format("scoring {} pool items with {}", config_.pool_size, config_.strategy));
    sel = loop::select_step(strategy, model, data.train, so);
    batch.strategy = config_.strategy;
  }
  batch.index = sel.index;
  batch.score = sel.score;

  // The batch files, then the state that lists the batch.
  const std::string name = fmt::format("{:04d}", number);
  res.csv_path = path_in(path_in(dir_, "batches"), name + ".csv");
  res.labelstudio_path = path_in(path_in(dir_, "batches"), name + ".labelstudio.json");
  std::string csv_text = "index,id,path_or_url,score\n";
  json tasks = json::array();
  for (std::size_t r = 0; r < batch.index.size(); ++r) {
    const std::int64_t i = batch.index[r];
    const auto& item = manifest_.empty() ? std::optional<ManifestItem>() : manifest_[static_cast<std::size_t>(i)];
    const std::string id = item ? item->id : std::to_string(i);
    const std::string path = item ? item->path_or_url : std::string();
    csv_text += fmt::format("{},{},{},{}\n", i, csv::field(id), csv::field(path), batch.score[r]);
    json task;
    task["data"] = {{"image", path}, {"quarry_index", i}, {"quarry_id", id}};
    task["meta"] = {{"quarry_index", i}, {"quarry_batch", number}, {"quarry_score", batch.score[r]}};
    tasks.push_back(std::move(task));
  }
  std::error_code ec;
  fs::create_directories(path_in(dir_, "batches"), ec);
  write_file_atomic(res.csv_path, {csv_text}, true);
  write_file_atomic(res.labelstudio_path, {tasks.dump(1, ' ', false, json::error_handler_t::replace) + "\n"}, true);
  batches_.push_back(batch);

  try {
    write_state();
  } catch (const Error&) {
    // Unlisted batch files would be taken for a batch that was never sent: remove them.
    std::error_code ignore;
    fs::remove(res.csv_path, ignore);
    fs::remove(res.labelstudio_path, ignore);
    throw;
  }
  res.batch = std::move(batch);
  return res;
}

// ------------------------------------------------------------------ status, export

ProjectStatus Project::status() const {
  ProjectStatus s;
  s.pool_size = config_.pool_size;
  s.labeled = static_cast<std::int64_t>(labels_.size());
  s.per_class.assign(config_.classes.size(), 0);
  for (const auto& [index, label] : labels_) ++s.per_class[static_cast<std::size_t>(label)];
  s.batches = static_cast<int>(batches_.size());
  s.models_trained = models_trained_;
  for (const auto& b : batches_)
    if (b.state == "open") {
      s.open_batch = b.number;
      for (auto i : b.index) s.pending += labels_.count(i) ? 0 : 1;
    }
  s.model_current = !model_digest_.empty() && model_digest_ == labels_digest(labels_);
  s.model_labels = model_labels_;
  s.val_accuracy = val_accuracy_;
  s.val_balanced_accuracy = val_balanced_accuracy_;
  s.torn = torn_;
  return s;
}

std::string Project::export_csv() const {
  std::string out = "index,label\n";
  for (const auto& [index, label] : labels_)
    out += fmt::format("{},{}\n", index, csv::field(config_.classes[static_cast<std::size_t>(label)]));
  return out;
}

void Project::export_npy(const std::string& path) const {
  std::vector<std::int64_t> rows;
  rows.reserve(2 * labels_.size());
  for (const auto& [index, label] : labels_) {
    rows.push_back(index);
    rows.push_back(label);
  }
  write_npy(path, ArrayView{rows.data(), DType::i64, {static_cast<std::int64_t>(labels_.size()), 2}});
}

}  // namespace quarry
