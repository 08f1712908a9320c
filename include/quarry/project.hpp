// The human-in-the-loop labeling project (`quarry project`): a folder that holds the
// configuration, the labels people gave (an append-only, checksummed journal), the batches sent
// to annotators and the current model.
//
//   DIR/project.json          configuration (dataset, model, strategy, classes, pool size)
//   DIR/manifest.csv          index,id,path_or_url of every pool item (a copy; optional)
//   DIR/labels.journal        the labels: one checksummed record per import, fsync'd
//   DIR/state.json            batches (open, closed, dropped) and the current model's summary
//   DIR/model.pt              the model trained on the labels of state.json's label digest
//   DIR/batches/NNNN.csv      a batch: index,id,path_or_url,score,predicted,confidence (NNNN from 0001)
//   DIR/batches/NNNN.labelstudio.json   the same batch as Label Studio tasks
//   DIR/batches/NNNN/INDEX.png          the batch's images, for pools of images held in arrays
//                                       (path_or_url of the CSV where the manifest gives none)
//   DIR/labelstudio.xml       a Label Studio labeling config matching the classes
//   DIR/.lock                 one writer at a time (flock)
//
// Durability: a command that reports success has fsync'd what it acknowledged. The journal is
// only ever appended to, one record per import (all of a file's labels or none); a torn last
// record (a crash mid-write) is detected by its checksum, ignored with a warning and cut off by
// the next writer. Every other file is written to a temporary file, fsync'd and renamed.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "quarry/loop.hpp"

namespace quarry {

// ------------------------------------------------------------------ the label journal

/// Where a journal stood after a number of whole records: their bytes and the CRC-32 of those
/// bytes. state.json keeps the mark of the journal it was written with, so that a journal that
/// went missing, was cut short or was replaced is noticed (it must extend that mark).
struct JournalMark {
  std::int64_t records = 0;
  std::uint64_t bytes = 0;
  std::uint32_t crc = 0;
};

class LabelJournal;  // src/project/journal.hpp (internal)

// ------------------------------------------------------------------ the project

struct ProjectConfig {
  std::string dataset;                 // dataset spec (see dataset.hpp); its labels are never read as labels
  std::string model;                   // "" = the dataset's default (cnn for images, mlp for features)
  std::string strategy = "entropy";    // random, an acquisition, a diversity strategy, batchbald or balanced:NAME
  std::string committee = "mc:10";     // for committee strategies (bald, batchbald, ...)
  std::string balance_target;          // balanced:NAME: one weight per class, "0.5,0.5"; "" = uniform
  double batchbald_restart = 0.5;      // batchbald: BatchBaldOptions::restart (0: one joint batch)
  std::string seed_strategy = "random";  // the batches before a model: random, typiclust or probcover
  std::string seed_embeddings;         // their embeddings: a .npy [pool, D] (absolute path); "" = the pool's inputs
  std::string seed_embeddings_crc32;   // filled in by init: the file's checksum, checked before each use
  std::vector<std::string> classes;    // class names; class id = position
  std::uint64_t seed = 0;
  std::string device = "auto";         // where training and the engine run
  int threads = 0;                     // CPU threads (0: all)
  std::int64_t pool_size = 0;          // filled in by init from the dataset
  bool has_manifest = false;
};

struct ManifestItem {
  std::string id, path_or_url;
};

struct BatchInfo {
  int number = 0;                       // 1, 2, ...
  std::string created;                  // UTC
  std::string state = "open";           // open, closed (all labeled), dropped (--replace-pending)
  std::vector<std::int64_t> index;      // in rank order
  std::vector<float> score;
  std::string strategy;                 // what chose it ("random (cold start)" without a model)
  /// The model's predicted class of each item and its probability; empty for a batch chosen
  /// without a model (cold start, random).
  std::vector<std::int32_t> predicted;
  std::vector<float> confidence;
};

/// One model trained by `next`: on how many labels, when, and its validation metrics (where
/// there was a validation split). The project keeps them all: the learning curve over rounds.
struct ModelRound {
  std::int64_t labels = 0;
  std::string time;  // UTC
  std::optional<double> val_accuracy, val_balanced_accuracy;
  /// Cohen's kappa of this model's predictions on the project's stop set against the previous
  /// model's (the stopping rule; none for the first model, for a model retrained on the labels
  /// of the previous one, and in older projects).
  std::optional<double> stop_kappa;
};

/// Items of the pool in a project's stop set: kProjectStopSet of them (all of a smaller pool),
/// chosen from the project's seed, ascending. Every model predicts them; the stopping rule
/// reads the agreement of consecutive models there.
inline constexpr std::int64_t kProjectStopSet = 1000;
std::vector<std::int64_t> project_stop_set(std::int64_t pool_size, std::uint64_t seed);

/// The model (an index into `rounds`) since which the stopping rule has fired at every model up
/// to the last one, on the models' kappas in order; none: it does not fire at the last one.
/// Rounds without a kappa (the first model, a model retrained on unchanged labels, a project
/// older than the rule) are skipped.
std::optional<std::size_t> project_stop_round(const std::vector<ModelRound>& rounds, const StopRule& rule);

/// One label given in a program (the labeling page, Python): the pool index, the class id, and
/// whether it may change a different label given earlier.
struct LabelRow {
  std::int64_t index = 0;
  std::int32_t label = 0;
  bool allow_relabel = false;
};

/// A label not written because the item already has a different one (and the row did not allow
/// a relabel).
struct LabelConflict {
  std::int64_t index = 0;
  std::int32_t current = 0, wanted = 0;
};

struct ImportSummary {
  std::int64_t rows = 0;          // label rows read
  std::int64_t added = 0;         // indices labeled for the first time
  std::int64_t relabeled = 0;     // labels changed (--allow-relabel)
  std::int64_t unchanged = 0;     // already had that label (a repeated import)
  std::int64_t skipped = 0;       // Label Studio tasks without a (non-cancelled) annotation
  std::int64_t seq = 0;           // the journal record written; 0 when nothing changed
  std::string torn;               // a torn journal tail found (cut off when a record was written)
  std::vector<LabelConflict> conflicts;  // label_rows: rows not written (another label was there)
};

struct NextOptions {
  std::int64_t k = 100;
  /// Refuse (an Error) while an open batch has items without a label, checked under the lock
  /// (the labeling page: "next batch" only once the batch is labeled).
  bool require_labeled = false;
  bool replace_pending = false;   // drop the open batches: their unlabeled items may be proposed again
  /// Train a new model even when the labels are unchanged, and accept a pool whose content or
  /// sample shape changed since init (same number of items: labels name items by row).
  bool retrain = false;
};

/// What `project repair` found and did, one line each.
struct RepairReport {
  std::vector<std::string> actions;
};

struct NextResult {
  BatchInfo batch;
  std::string csv_path, labelstudio_path;
  bool retrained = false;
  bool cold_start = false;        // no model yet (labels of fewer than 2 classes): random batch
  std::int64_t dropped = 0;       // pending items released by --replace-pending
};

struct ProjectStatus {
  std::int64_t pool_size = 0, labeled = 0;
  std::vector<std::int64_t> per_class;   // [classes]
  int batches = 0, models_trained = 0;
  std::optional<int> open_batch;          // the newest open batch
  std::int64_t pending = 0;               // items of open batches still without a label
  bool model_current = false;             // the model was trained on the current labels
  std::int64_t model_labels = 0;          // labels the model was trained on
  std::optional<double> val_accuracy, val_balanced_accuracy;  // where the dataset has a labeled validation split
  std::string torn;                       // a torn journal tail, described
  std::vector<ModelRound> rounds;         // every model trained, oldest first
};

/// Reports progress lines ("training on 300 labels", ...); may be empty.
using ProjectLogFn = std::function<void(const std::string&)>;

class Project {
 public:
  /// Creates DIR (which must be missing or empty) for `config`; loads the dataset once to learn
  /// its pool size and class count, and records the pool's fingerprint (rows, sample shape, a
  /// checksum of a sample of rows, the files' sizes). `manifest_csv` ("" for none) is validated
  /// (index,id,path_or_url; every index in [0, pool), indices and ids unique) and copied into the
  /// project. The folder is made under a temporary name and renamed into place last: a failed
  /// init leaves nothing behind.
  static void init(const std::string& dir, ProjectConfig config, const std::string& manifest_csv = "");

  /// Opens a project: reads its configuration, manifest, state and journal (not the dataset),
  /// under a shared lock when another command's exclusive one is released within
  /// `read_lock_wait_seconds` (else without it: every file but the journal is replaced by
  /// rename, and label() and next() read again under their own lock). The journal must extend
  /// the mark state.json recorded: a missing, shortened or replaced journal is an Error naming
  /// the labels state.json expected. `labels_only` (export): a missing or unreadable state.json
  /// is not an error; the labels come from the journal alone.
  explicit Project(std::string dir, double read_lock_wait_seconds = 5, bool labels_only = false);

  /// Rebuilds state.json from the journal (taken as it is, a torn tail cut off) and the batch
  /// files in batches/, keeping what the old state.json says of them where it is readable; the
  /// model is forgotten (the next `next` retrains). Takes the project lock.
  static RepairReport repair(const std::string& dir, double lock_wait_seconds = 0);

  /// Reads the project's files again (as the constructor does; an unchanged manifest is not
  /// parsed again): for a program that keeps a Project open, such as the labeling server.
  void refresh(double read_lock_wait_seconds = 0);

  const ProjectConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  /// The current labels (journal), index -> class id.
  const std::map<std::int64_t, std::int32_t>& labels() const { return labels_; }
  const std::vector<BatchInfo>& batches() const { return batches_; }
  /// What annotators see of each pool item, by index (empty without a manifest).
  const std::vector<std::optional<ManifestItem>>& manifest() const { return manifest_; }
  /// Description of a torn journal tail found on open ("" when whole).
  const std::string& torn() const { return torn_; }

  /// Validates every row of `file` (CSV index,label or id,label; or a Label Studio JSON export)
  /// and appends them to the journal as one record, fsync'd; a file with any bad row imports
  /// nothing and the Error lists the bad rows (file, row, reason). Takes the project lock,
  /// waiting up to `lock_wait_seconds` for another writer.
  ImportSummary label(const std::string& file, bool allow_relabel, double lock_wait_seconds = 0);

  /// Labels given in a program (the labeling page, Python), appended as one journal record
  /// named `source`, fsync'd. Every row must name a pool item and a class, each item at most
  /// once (an Error listing the bad rows, nothing written). A row that would change a different
  /// label already given, without allow_relabel, is not written: it is returned in
  /// `conflicts`, and the other rows are written. Takes the project lock.
  ImportSummary label_rows(const std::vector<LabelRow>& rows, const std::string& source,
                           double lock_wait_seconds = 0);

  /// Retrains if the labels changed since the last model, infers on the pool, selects the next
  /// batch and writes batches/NNNN.csv and .labelstudio.json.
  NextResult next(const NextOptions& options, const ProjectLogFn& log = {}, double lock_wait_seconds = 0);

  ProjectStatus status() const;

  /// `index,label` rows sorted by index (label = class name).
  std::string export_csv() const;
  /// [labels, 2] int64: (index, class id) rows sorted by index, written as .npy.
  void export_npy(const std::string& path) const;

  /// The Label Studio labeling config for the classes (what init writes to labelstudio.xml).
  static std::string labelstudio_config(const std::vector<std::string>& classes);

 private:
  struct NoLoad {};
  Project(std::string dir, NoLoad) : dir_(std::move(dir)) {}
  void reload(bool labels_only = false);
  void read_config();
  friend struct ProjectFiles;  // reads state.json into a Project; steps of next (src/project/project_internal.hpp)
  void take_labels(const LabelJournal& journal);
  void save_labels(const std::string& source, const std::map<std::int64_t, std::int32_t>& changes, ImportSummary& sum);
  void write_state() const;
  std::string dir_;
  ProjectConfig config_;
  std::vector<std::optional<ManifestItem>> manifest_;  // [pool] or empty
  std::string manifest_stamp_;  // manifest.csv's device, inode, size and time when it was read
  std::map<std::string, std::int64_t> id_index_;
  std::map<std::int64_t, std::int32_t> labels_;
  std::vector<std::int64_t> label_order_;  // labeled indices in the order they were first labeled
  std::vector<BatchInfo> batches_;
  std::string torn_;
  JournalMark journal_mark_;  // of the journal as read
  std::string pool_print_;    // project.json's pool fingerprint (JSON text; "" for old projects)
  // state.json: the model
  std::string model_digest_;
  std::int64_t model_labels_ = 0;
  int models_trained_ = 0;
  std::optional<double> val_accuracy_, val_balanced_accuracy_;
  std::vector<ModelRound> rounds_;
  std::vector<std::int32_t> stop_predictions_;  // the last model's predictions on the stop set
  std::string stop_digest_;                     // the labels (digest) that model was trained on
};

}  // namespace quarry
