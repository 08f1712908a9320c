// Internal to the labeling project (src/project/project*.cpp): the helpers its files share (paths,
// JSON files, the lock, state.json, the pool fingerprint, the manifest) and ProjectFiles, the
// friend of Project that reads state.json into it and holds the steps of `next` that change it.
// See include/quarry/project.hpp for the folder's layout and the durability rules.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "project/csv.hpp"
#include "quarry/dataset.hpp"
#include "quarry/project.hpp"
#include "quarry/select.hpp"
#include "quarry/train.hpp"
#include "simulate/strategy.hpp"

namespace quarry {
namespace project_detail {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kConfigFormat = "quarry-project";
constexpr const char* kStateFormat = "quarry-project-state";
constexpr int kVersion = 1;
constexpr std::size_t kMaxListedErrors = 20;

// ------------------------------------------------------------------ files (project.cpp)

/// DIR/NAME.
std::string path_in(const std::string& dir, const std::string& name);
/// The time now, UTC, ISO 8601.
std::string utc_now();
/// A whole text file (read_text_file).
std::string read_text(const std::string& path);
/// A JSON file of the project's own `format` and version; an Error naming it otherwise.
json read_json(const std::string& path, const char* format);
/// Writes `j` to `path` atomically (fsync'd, renamed into place).
void write_json(const std::string& path, const json& j);

/// One writer at a time: flock on DIR/.lock, exclusive for writers, shared for readers.
class Lock {
 public:
  /// Readers (`exclusive` false) with `optional`: when the lock is not had within the wait, go on
  /// without it (every file but the journal is replaced by rename, and only `label` appends).
  Lock(const std::string& dir, bool exclusive, double wait_seconds, bool optional = false);
  bool held() const { return fd_ >= 0; }
  ~Lock();
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

 private:
  int fd_ = -1;
};

// ------------------------------------------------------------------ values (project.cpp)

/// `s` without leading and trailing spaces and tabs.
std::string trim(std::string s);
/// A whole decimal integer (optional sign), or nothing.
std::optional<std::int64_t> parse_int(const std::string& text);

/// Throws an Error: `msg` followed by the first kMaxListedErrors of `bad`, one a line.
[[noreturn]] void fail_listing(std::string msg, const std::vector<std::string>& bad);

// ------------------------------------------------------------------ state (project.cpp)

/// state.json: the batches and the current model (its label digest and validation metrics).
json state_json(const std::vector<BatchInfo>& batches, const std::string& model_digest, std::int64_t model_labels,
                const std::optional<double>& val_accuracy, const std::optional<double>& val_balanced_accuracy,
                int models_trained, const JournalMark& journal, std::int64_t labels,
                const ProjectConfig& config, const std::vector<ModelRound>& rounds);
/// "N:hash" of the labels: which labels a model was trained on.
std::string labels_digest(const std::map<std::int64_t, std::int32_t>& labels);
/// The journal mark state.json was written with, and its label count, or nothing (an older
/// project's state); an Error when it is there but unreadable.
std::optional<std::pair<JournalMark, std::int64_t>> recorded_mark(const json& s, const std::string& state_path,
                                                                  const std::string& dir);
/// Open batches whose items are all labeled become closed.
void close_labeled_batches(std::vector<BatchInfo>& batches, const std::map<std::int64_t, std::int32_t>& labels);

/// The pool as the model sees it: rows, sample shape, a checksum of up to 256 evenly spaced rows
/// of the converted samples, and the sizes of the files it came from.
json pool_fingerprint(const Dataset& data);

/// The cold start's embeddings file: a float .npy [pool, D]; an Error naming the file otherwise.
/// The cold start's embeddings file: [pool, D] floats. `crc32` "": at init (every value must be
/// finite); else the checksum init recorded, which the file must still have.
Array read_seed_embeddings(const std::string& path, std::int64_t pool, const std::string& crc32 = "");
/// A checksum of the embeddings' values (zlib's crc32, 8 hex digits).
std::string embeddings_crc32(const Array& e);

// ------------------------------------------------------------------ manifest (project_init.cpp)

/// Reads and validates a manifest: index,id[,path_or_url]; returns the items by pool index.
std::vector<std::optional<ManifestItem>> parse_manifest(const std::vector<csv::Row>& rows, const std::string& name,
                                                        std::int64_t pool);

// ------------------------------------------------------------------ images (project_images.cpp)

/// A batch item's image: its PNG bytes and its path relative to the project folder.
struct BatchImage {
  std::string relative, png;
};
/// Pool item `index` of an image dataset as a PNG (1 channel: gray, 3: RGB; values in [0, 1]
/// scaled to 0..255, other ranges stretched to the image's own).
std::string image_png(const Dataset& data, std::int64_t index);
/// Writes DIR/batches/NNNN/INDEX.png for every item of a batch.
std::vector<BatchImage> write_batch_images(const std::string& dir, int number, const Dataset& data,
                                           const std::vector<std::int64_t>& index);
/// RFC 4648 base64 (for data: URIs).
std::string base64(const std::string& bytes);

}  // namespace project_detail

/// Steps that read or change a Project's private state (a friend of Project).
struct ProjectFiles {
  using json = nlohmann::json;
  /// Reads state.json's batches and model into `p` (project.cpp).
  static void read_state(Project& p, const json& s);
  /// next: the batch the strategy chooses with the model, trained anew where the labels
  /// changed, on the pool `data` (loaded again), with the model's prediction of each item
  /// (project_next.cpp).
  static void model_selection(Project& p, Dataset& data, const loop::Strategy& strategy,
                              const loop::StepOptions& so, const NextOptions& o, const ProjectLogFn& log,
                              NextResult& res, BatchInfo& batch);
  /// next: the model of the current labels: model.pt where it was trained on them, else a new one.
  static Model current_model(Project& p, const Dataset& data, const std::vector<std::int64_t>& labeled,
                             std::int64_t held_out, const loop::Strategy& strategy, const loop::StepOptions& so,
                             const NextOptions& o, const ProjectLogFn& log, NextResult& res);
  /// next: trains a model on `labeled`, saves it to model.pt and records it (with its validation
  /// metrics) as the model of the labels `digest`.
  static Model train_model(Project& p, const Dataset& data, const std::vector<std::int64_t>& labeled,
                           std::int64_t held_out, const TrainOptions& to, const std::string& digest,
                           const ProjectLogFn& log, NextResult& res);
};

}  // namespace quarry
