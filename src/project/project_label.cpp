// `quarry project label`: a label file read (CSV index,label or id,label; or a Label Studio JSON
// export), every row checked against the pool, the classes, the manifest, the file's other rows
// and the labels already given, and appended to the journal as one record (all or nothing).
#include "quarry/project.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "project/csv.hpp"
#include "project/project_internal.hpp"
#include "quarry/error.hpp"
#include "project/journal.hpp"

namespace quarry {

using namespace project_detail;

// ------------------------------------------------------------------ label

namespace {

struct Parsed {
  std::int64_t rows = 0, skipped = 0;
  std::vector<std::pair<std::int64_t, std::int32_t>> labels;  // file order
  std::vector<std::string> where;                             // "FILE:LINE" / "FILE: task N", per label
  std::vector<std::string> bad;
};

// What a label file is read against (the project's classes, pool and manifest), and what was read.
struct LabelReader {
  LabelReader(const ProjectConfig& config, const std::map<std::string, std::int64_t>& id_index,
              const std::vector<std::optional<ManifestItem>>& manifest)
      : config(config), id_index(id_index), manifest(manifest) {
    const auto& classes = config.classes;
    // Class ids stand for classes only where no class name is itself an integer ("10,20": is
    // "1" a typo or an id?).
    ids_allowed =
        std::none_of(classes.begin(), classes.end(), [](const std::string& c) { return parse_int(c).has_value(); });
    class_list = fmt::format("{}", fmt::join(classes, ", "));
  }

  // The class a label names (a class name, or a class id where ids are allowed), or -1.
  std::int32_t class_of(const std::string& raw) const {
    const auto& classes = config.classes;
    const std::string name = trim(raw);
    for (std::size_t c = 0; c < classes.size(); ++c)
      if (classes[c] == name) return static_cast<std::int32_t>(c);
    if (const auto id = parse_int(name); ids_allowed && id && *id >= 0 && *id < static_cast<std::int64_t>(classes.size()))
      return static_cast<std::int32_t>(*id);
    return -1;
  }

  // The pool index of an item id (through the manifest; without one an item's id is its index).
  std::optional<std::int64_t> index_of_id(const std::string& id) const {
    if (config.has_manifest) {
      const auto it = id_index.find(trim(id));
      if (it != id_index.end()) return it->second;
      return std::nullopt;
    }
    return parse_int(id);  // without a manifest an item's id is its index
  }

  // A row that imports nothing: counted, and its problem listed.
  void bad(const std::string& what) {
    ++p.rows;
    p.bad.push_back(what);
  }

  // Checks an (index, class) pair and appends it or a bad row.
  void take(const std::string& where, std::optional<std::int64_t> index, const std::string& index_text, bool by_id,
            const std::string& label_text) {
    ++p.rows;
    if (!index) {
      p.bad.push_back(where + (by_id ? ": unknown id '" + quote_input(index_text) + "'"
                                     : ": index '" + quote_input(index_text) + "' is not an integer in range"));
      return;
    }
    if (*index < 0 || *index >= config.pool_size) {
      p.bad.push_back(fmt::format("{}: index {} is outside the pool (0..{})", where, *index, config.pool_size - 1));
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
  }

  const ProjectConfig& config;
  const std::map<std::string, std::int64_t>& id_index;
  const std::vector<std::optional<ManifestItem>>& manifest;
  bool ids_allowed = false;
  std::string class_list;
  Parsed p;
};

// Whether a label file is JSON (its first character, after a byte-order mark and spaces, opens
// an array or an object) rather than CSV.
bool looks_like_json(const std::string& text) {
  std::size_t first = text.rfind("\xEF\xBB\xBF", 0) == 0 ? 3 : 0;  // a byte-order mark
  while (first < text.size() && std::isspace(static_cast<unsigned char>(text[first]))) ++first;
  return first < text.size() && (text[first] == '[' || text[first] == '{');
}

// ------------------------------------------------------------------ label: Label Studio JSON

// The item a task names, as far as it was found, or why it cannot be taken.
struct TaskIndex {
  std::optional<std::int64_t> index;
  std::string text, problem;
  bool by_id = false, found = false;
};

// The quarry_index and quarry_id of one holder of a task (its data, its meta or the task itself).
void index_in_holder(const LabelReader& in, const json& h, const char* holder, TaskIndex& ti) {
  for (const char* key : {"quarry_index", "quarry_id"}) {
    if (!h.contains(key)) continue;
    const json& v = h[key];
    const bool is_id = std::string(key) == "quarry_id";
    std::optional<std::int64_t> here;
    std::string text;
    if (is_id) {
      if (!v.is_string()) {
        ti.problem = std::string(holder) + ".quarry_id is not a string";
        return;
      }
      text = v.get<std::string>();
      here = in.index_of_id(text);
      if (!here) {
        ti.problem = "unknown id '" + quote_input(text) + "'";
        return;
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
        ti.problem = std::string(*holder ? holder : "the task") + "'s quarry_index '" + quote_input(text) +
                     "' is not a whole number";
        return;
      }
    }
    if (ti.found && here != ti.index) {
      ti.problem = fmt::format("it names two items: index {} and {} ({}.{})", *ti.index, *here,
                               *holder ? holder : "task", key);
      return;
    }
    if (!ti.found) {
      ti.index = here;
      ti.text = text;
      ti.by_id = is_id;
      ti.found = true;
    }
  }
}

// The quarry index of a task: data.quarry_index, meta.quarry_index (top level in JSON-MIN), or
// quarry_id through the manifest. Every place that names the item must name the same one: data
// and meta disagreeing (a task copied between batches, an edited export) is an error, not a guess.
TaskIndex task_index(const LabelReader& in, const json& task) {
  TaskIndex ti;
  for (const char* holder : {"data", "meta", ""}) {
    if (*holder && task.contains(holder) && !task[holder].is_object() && !task[holder].is_null()) {
      ti.problem = std::string("its \"") + holder + "\" is not an object";
      break;
    }
    const json* h = *holder ? (task.contains(holder) && task[holder].is_object() ? &task[holder] : nullptr) : &task;
    if (!h) continue;
    index_in_holder(in, *h, holder, ti);
    if (!ti.problem.empty()) break;
  }
  return ti;
}

// The label of a task, or why it has none that can be taken (no choice and no problem: not annotated).
struct TaskChoice {
  std::optional<std::string> choice;
  std::string problem;
};

// The last annotation that was not cancelled (null where there is none); sets `problem` for an
// annotation that is not an object.
const json* last_annotation(const json& annotations, std::string& problem) {
  const json* chosen = nullptr;
  for (const auto& a : annotations) {
    if (!a.is_object()) {
      problem = "an annotation is not an object";
      break;
    }
    const bool cancelled = a.contains("was_cancelled") && a["was_cancelled"].is_boolean() &&
                           a["was_cancelled"].get<bool>();
    if (!cancelled) chosen = &a;
  }
  return chosen;
}

// The choice of an annotation's result: from the control named "label" (quarry's labeling
// config; any single Choices control where none has that name); exactly one is expected.
void annotation_choice(const json& annotation, TaskChoice& tc) {
  std::vector<const json*> controls;
  bool named = false;
  for (const auto& r : annotation["result"]) {
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
      if (c.is_string()) tc.choice = c.get<std::string>();
    }
  }
  if (n > 1) tc.problem = fmt::format("the annotation has {} choices (one class per item expected)", n);
  else if (n == 1 && !tc.choice) tc.problem = "the choice is not a string";
  else if (n == 0) tc.problem = "the annotation has no choice";
}

// The label: the last annotation that was not cancelled, its choice (annotation_choice).
// JSON-MIN exports: the "label" field.
TaskChoice task_choice(const json& task) {
  TaskChoice tc;
  if (task.contains("annotations") && !task["annotations"].is_array()) {
    tc.problem = "its \"annotations\" is not a list";
  } else if (task.contains("annotations")) {
    const json* chosen = last_annotation(task["annotations"], tc.problem);
    if (tc.problem.empty() && chosen && (!chosen->contains("result") || !(*chosen)["result"].is_array())) {
      tc.problem = "its annotation's \"result\" is missing or not a list";
    } else if (tc.problem.empty() && chosen) {
      annotation_choice(*chosen, tc);
    }
  } else if (task.contains("label")) {
    if (task["label"].is_string()) tc.choice = task["label"].get<std::string>();
    else tc.problem = "its \"label\" is not a string";
  }
  return tc;
}

// "FILE: task N (id ID)": where a task's problems are said to be.
std::string task_where(const json& task, const std::string& file, std::size_t t) {
  std::string where = fmt::format("{}: task {}", file, t + 1);
  if (task.is_object() && task.contains("id") && (task["id"].is_number() || task["id"].is_string()))
    where += " (id " + quote_input(task["id"].is_string() ? task["id"].get<std::string>() : task["id"].dump()) + ")";
  return where;
}

// One task: its item and its label taken, skipped (not annotated), or a bad row.
void read_task(LabelReader& in, const json& task, const std::string& where) {
  if (!task.is_object()) {
    in.bad(where + ": not an object");
    return;
  }
  const TaskIndex ti = task_index(in, task);
  if (!ti.problem.empty()) {
    in.bad(where + ": " + ti.problem);
    return;
  }
  if (!ti.found) {
    in.bad(where + ": no quarry_index in its data or meta (was it made from a quarry batch?)");
    return;
  }
  const TaskChoice tc = task_choice(task);
  if (!tc.problem.empty()) {
    in.bad(where + ": " + tc.problem);
    return;
  }
  if (!tc.choice) {
    ++in.p.skipped;  // not annotated (or only cancelled annotations)
    return;
  }
  in.take(where, ti.index, ti.text, ti.by_id, *tc.choice);
}

// A Label Studio JSON export (an array of tasks), task by task.
void read_label_studio(LabelReader& in, const std::string& text, const std::string& file) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    QUARRY_FAIL(file, ": not valid JSON (a Label Studio export was expected): ", e.what());
  }
  QUARRY_EXPECTS(j.is_array(), file, ": expected a Label Studio JSON export (an array of tasks)");
  for (std::size_t t = 0; t < j.size(); ++t) {
    const json& task = j[t];
    const std::string where = task_where(task, file, t);
    try {
      read_task(in, task, where);
    } catch (const json::exception& e) {
      in.bad(where + ": unexpected content (" + e.what() + ")");
    }
  }
}

// ------------------------------------------------------------------ label: CSV

// The columns of a label CSV: index and/or id, and label.
struct LabelColumns {
  int index = -1, id = -1, label = -1;
  std::size_t need = 0;  // fields a row needs
};

// Reads the header: no column named twice, an index (or id) column and a label column.
LabelColumns label_columns(const csv::Row& header, const std::string& file) {
  for (const char* name : {"index", "id", "label"}) {
    int count = 0;
    for (const auto& f : header.fields) count += trim(f) == name;
    QUARRY_EXPECTS(count <= 1, file, ":", header.line, ": the header names the column '", name, "' ", count,
                   " times");
  }
  LabelColumns c;
  c.index = csv::column(header, "index");
  c.id = csv::column(header, "id");
  c.label = csv::column(header, "label");
  QUARRY_EXPECTS((c.index >= 0 || c.id >= 0) && c.label >= 0, file, ":", header.line,
                 ": the header must name an index (or id) column and a label column, found '",
                 quote_input(fmt::format("{}", fmt::join(header.fields, ",")), 200), "'");
  c.need = static_cast<std::size_t>(std::max({c.index, c.id, c.label}) + 1);
  return c;
}

// Where a row has both an index and an id: why they do not name the same item ("" when they do).
std::string index_id_conflict(const LabelReader& in, const csv::Row& row, const LabelColumns& c,
                              const std::optional<std::int64_t>& index, const std::string& where) {
  const ProjectConfig& config = in.config;
  if (index && c.id >= 0 && config.has_manifest && *index >= 0 && *index < config.pool_size) {
    const std::string id = trim(row.fields[static_cast<std::size_t>(c.id)]);
    const auto& item = in.manifest[static_cast<std::size_t>(*index)];
    if (!id.empty() && item && item->id != id)
      return fmt::format("{}: index {} is '{}' in the manifest, not '{}'", where, *index, quote_input(item->id),
                         quote_input(id));
  } else if (index && c.id >= 0 && !config.has_manifest) {
    // Without a manifest an item's id is its index: both columns must name the same item.
    const std::string id = trim(row.fields[static_cast<std::size_t>(c.id)]);
    if (!id.empty() && parse_int(id) != index)
      return fmt::format("{}: the index {} and the id '{}' name different items (without a "
                         "manifest an item's id is its index)", where, *index, quote_input(id));
  }
  return {};
}

// One CSV row: its item (by index, else by id) and its label taken, or a bad row.
void read_csv_row(LabelReader& in, const csv::Row& row, const LabelColumns& c, const std::string& file) {
  const std::string where = fmt::format("{}:{}", file, row.line);
  if (row.fields.size() < c.need) {
    in.bad(fmt::format("{}: expected at least {} fields, found {}", where, c.need, row.fields.size()));
    return;
  }
  if (c.index >= 0) {
    const std::string& it = row.fields[static_cast<std::size_t>(c.index)];
    const auto index = parse_int(it);
    const std::string conflict = index_id_conflict(in, row, c, index, where);
    if (!conflict.empty()) {
      in.bad(conflict);
      return;
    }
    in.take(where, index, trim(it), false, row.fields[static_cast<std::size_t>(c.label)]);
  } else {
    const std::string id = trim(row.fields[static_cast<std::size_t>(c.id)]);
    in.take(where, in.index_of_id(id), id, true, row.fields[static_cast<std::size_t>(c.label)]);
  }
}

// A label CSV (a header index,label or id,label), row by row.
void read_label_csv(LabelReader& in, const std::string& text, const std::string& file) {
  const auto rows = csv::parse(text, file);
  QUARRY_EXPECTS(!rows.empty(), file, ": empty (expected a CSV with a header index,label or id,label)");
  const LabelColumns c = label_columns(rows[0], file);
  for (std::size_t r = 1; r < rows.size(); ++r) read_csv_row(in, rows[r], c, file);
}

// ------------------------------------------------------------------ label: the import

// Conflicts, within the file and with the labels already given (bad rows), and the counts of
// `sum`; returns the labels to write (index -> class).
std::map<std::int64_t, std::int32_t> label_changes(Parsed& p, const std::map<std::int64_t, std::int32_t>& labels,
                                                   const std::vector<std::string>& classes, bool allow_relabel,
                                                   ImportSummary& sum) {
  std::map<std::int64_t, std::pair<std::int32_t, std::size_t>> in_file;  // index -> (class, first label)
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
    const auto old = labels.find(index);
    if (old == labels.end()) {
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
  return changes;
}

// Appends the changes to the journal as one record, fsync'd; returns the journal as written.
LabelJournal append_labels(const std::string& dir, const std::string& file,
                           const std::map<std::int64_t, std::int32_t>& changes) {
  JournalRecord rec;
  rec.time = utc_now();
  rec.source = file;
  rec.labels.assign(changes.begin(), changes.end());
  LabelJournal journal = LabelJournal::read(path_in(dir, "labels.journal"));
  journal.append(path_in(dir, "labels.journal"), std::move(rec));
  return journal;
}

}  // namespace

ImportSummary Project::label(const std::string& file, bool allow_relabel, double lock_wait_seconds) {
  Lock lock(dir_, true, lock_wait_seconds);
  reload();
  const std::string torn_found = torn_;
  // Every row read and checked on its own; a bad one is listed, never imported.
  LabelReader in(config_, id_index_, manifest_);
  const std::string text = read_text(file);
  if (looks_like_json(text))
    read_label_studio(in, text, file);
  else
    read_label_csv(in, text, file);
  Parsed& p = in.p;
  // Conflicts: within the file, and with the labels already given.
  ImportSummary sum;
  sum.torn = torn_found;
  sum.rows = p.rows;
  sum.skipped = p.skipped;
  const auto changes = label_changes(p, labels_, config_.classes, allow_relabel, sum);
  if (!p.bad.empty())
    fail_listing(fmt::format("{}: {} bad row{}, nothing imported:", file, p.bad.size(), p.bad.size() == 1 ? "" : "s"),
                 p.bad);
  if (changes.empty()) return sum;  // a repeated import: nothing to write
  save_labels(file, changes, sum);
  return sum;
}

ImportSummary Project::label_rows(const std::vector<LabelRow>& rows, const std::string& source,
                                  double lock_wait_seconds) {
  Lock lock(dir_, true, lock_wait_seconds);
  reload();
  ImportSummary sum;
  sum.torn = torn_;
  sum.rows = static_cast<std::int64_t>(rows.size());
  const auto classes = static_cast<std::int32_t>(config_.classes.size());
  std::vector<std::string> bad;
  std::map<std::int64_t, std::size_t> row_of;  // index -> its row
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const LabelRow& row = rows[r];
    if (row.index < 0 || row.index >= config_.pool_size)
      bad.push_back(fmt::format("row {}: index {} is outside the pool (0..{})", r + 1, row.index, config_.pool_size - 1));
    else if (row.label < 0 || row.label >= classes)
      bad.push_back(fmt::format("row {}: class id {} is not one of the {} classes (0..{})", r + 1, row.label, classes,
                                classes - 1));
    else if (const auto [it, fresh] = row_of.emplace(row.index, r); !fresh)
      bad.push_back(fmt::format("row {}: index {} is labeled again (row {}); give each item once", r + 1, row.index,
                                it->second + 1));
  }
  if (!bad.empty())
    fail_listing(fmt::format("{}: {} bad row{}, nothing saved:", source, bad.size(), bad.size() == 1 ? "" : "s"), bad);
  std::map<std::int64_t, std::int32_t> changes;
  for (const LabelRow& row : rows) {
    const auto old = labels_.find(row.index);
    if (old == labels_.end()) {
      ++sum.added;
      changes[row.index] = row.label;
    } else if (old->second == row.label) {
      ++sum.unchanged;
    } else if (row.allow_relabel) {
      ++sum.relabeled;
      changes[row.index] = row.label;
    } else {
      sum.conflicts.push_back({row.index, old->second, row.label});
    }
  }
  if (!changes.empty()) save_labels(source, changes, sum);
  return sum;
}

void Project::save_labels(const std::string& source, const std::map<std::int64_t, std::int32_t>& changes,
                          ImportSummary& sum) {
  const LabelJournal journal = append_labels(dir_, source, changes);
  sum.seq = journal.records().back().seq;
  torn_.clear();
  labels_ = journal.labels();
  journal_mark_ = journal.mark();
  // The labels are durable now; state.json learns the journal's new mark (and which batches the
  // import closed). Should this fail, the journal still extends the old mark: nothing is lost.
  close_labeled_batches(batches_, labels_);
  try {
    write_state();
  } catch (const Error& e) {
    sum.torn += std::string(sum.torn.empty() ? "" : "; ") + "the labels were saved, but state.json was not updated (" +
                e.what() + "); the next command catches up";
  }
}

}  // namespace quarry
