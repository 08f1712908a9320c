// `quarry project status` and `quarry project export`: what a project holds (labels per class,
// batches, pending items, the model and its validation metrics), and its labels written out as
// index,label CSV or as an [labels, 2] int64 .npy.
#include "quarry/project.hpp"

#include <fmt/format.h>

#include "project/csv.hpp"
#include "project/project_internal.hpp"
#include "quarry/array.hpp"
#include "quarry/io.hpp"

namespace quarry {

using namespace project_detail;

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
  s.rounds = rounds_;
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
