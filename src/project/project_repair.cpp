// `quarry project repair`: state.json rebuilt from the label journal (taken as it is, a torn tail
// cut off) and the batch files in batches/, keeping what the old state.json says of them where it
// is readable; the model is forgotten, so that the next `quarry project next` retrains.
#include "quarry/project.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <set>

#include <fmt/format.h>

#include "project/project_internal.hpp"
#include "quarry/error.hpp"
#include "project/journal.hpp"

namespace quarry {

using namespace project_detail;

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

// Notes where the journal as it is does not extend what the old state.json recorded.
void note_journal_mismatch(const json& old, const std::string& state_path, const std::string& dir,
                           const LabelJournal& journal, RepairReport& rep) {
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
std::vector<BatchInfo> recover_batch_files(const std::string& dir, const std::vector<BatchInfo>& batches,
                                           std::int64_t pool, RepairReport& rep) {
  std::set<int> known;
  for (const auto& b : batches) known.insert(b.number);
  std::vector<BatchInfo> found;
  std::error_code ec;
  for (fs::directory_iterator it(path_in(dir, "batches"), ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() != 8 || name.substr(4) != ".csv" || name.find_first_not_of("0123456789") != 4) continue;
    const int number = std::stoi(name.substr(0, 4));
    if (number < 1 || known.count(number)) continue;
    std::string why;
    if (auto b = read_batch_file(it->path(), number, pool, &why)) {
      found.push_back(std::move(*b));
      rep.actions.push_back(fmt::format("batch {:04d}: recovered from {} ({} items)", number, it->path().string(),
                                        found.back().index.size()));
    } else {
      rep.actions.push_back(fmt::format("batch {:04d}: {} is unreadable ({}): left out", number, it->path().string(), why));
    }
  }
  return found;
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
  if (have_old) note_journal_mismatch(old, state_path, dir, journal, rep);
  for (auto& b : recover_batch_files(dir, p.batches_, p.config_.pool_size, rep)) p.batches_.push_back(std::move(b));
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

}  // namespace quarry
