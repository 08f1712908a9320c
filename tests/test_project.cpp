// `quarry project`, the human-in-the-loop labeling project, end to end: the command line
// (init, next, label, status, export) and the library (quarry::Project, quarry::LabelJournal).
// Label imports are all-or-nothing and validated row by row; the label journal survives a
// torn last record and refuses a corrupt middle one; a killed import leaves exactly the labels
// before it or after it; one writer at a time.
//
// Training needs LibTorch: where a test needs a trained model it uses the entropy strategy with
// LibTorch and the random strategy without (the AddressSanitizer build has no LibTorch).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "file_builders.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/project.hpp"
#include "quarry/train.hpp"

namespace {

namespace fs = std::filesystem;
using quarry_test::crc32;
using quarry_test::expect_error;
using quarry_test::message_of;
using quarry_test::read_file;
using quarry_test::test_tmp;
using quarry_test::write_file;
using Labels = std::map<std::int64_t, std::int32_t>;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---------------------------------------------------------------- running the command

struct Result {
  int rc;
  std::string out, err;
};

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `quarry args...` to completion; stdout and stderr are kept.
Result quarry(const std::vector<std::string>& args) {
  static int counter = 0;
  const std::string base = test_tmp("project") + "/cli_" + std::to_string(counter++);
  std::string cmd = shell_quote(QUARRY_CLI_PATH);
  for (const std::string& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(base + ".out") + " 2>" + shell_quote(base + ".err");
  const int status = std::system(cmd.c_str());
  Result r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(base + ".out"), read_file(base + ".err")};
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  return r;
}

// Starts `quarry args...` without waiting (stdout to /dev/null, stderr to `err_path` or
// /dev/null). Only async-signal-safe calls between fork and exec.
pid_t spawn(const std::vector<std::string>& args, const std::string& err_path = "") {
  std::vector<std::string> all{QUARRY_CLI_PATH};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const char* err_file = err_path.empty() ? "/dev/null" : err_path.c_str();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open("/dev/null", O_WRONLY);
    const int err = ::open(err_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0 || err < 0) ::_exit(126);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// The exit status of a child; 128 + signal when a signal ended it.
int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

// ---------------------------------------------------------------- CSV in and out

// RFC 4180 (quotes, "" escapes, separators and line breaks inside quotes, CRLF); blank lines
// are skipped. An independent reader for the files the project writes.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  auto end_row = [&] {
    row.push_back(field);
    field.clear();
    if (!(row.size() == 1 && row[0].empty() && !any)) rows.push_back(row);
    row.clear();
    any = false;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = any = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
      any = true;
    } else if (c == '\r') {
    } else if (c == '\n') {
      end_row();
    } else {
      field += c;
      any = true;
    }
  }
  if (any || !row.empty() || !field.empty()) end_row();
  return rows;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> v;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) v.push_back(l);
  return v;
}

// ---------------------------------------------------------------- projects

const std::vector<std::string> kClasses{"cat", "dog", "bird", "fish"};
const char* const kClassList = "cat,dog,bird,fish";

std::string item_id(std::int64_t i) {
  char b[32];
  std::snprintf(b, sizeof b, "img-%04lld", static_cast<long long>(i));
  return b;
}
// Item 7 has a comma, quotes and a space in its URL (a quoted manifest field).
std::string item_url(std::int64_t i) {
  if (i == 7) return "s3://bucket/odd, name \"7\".png";
  return "https://example.org/pool/" + item_id(i) + ".png";
}

// A manifest of every item, newest first (the order must not matter).
std::string manifest_csv(std::int64_t pool) {
  std::string s = "index,id,path_or_url\n";
  for (std::int64_t i = pool - 1; i >= 0; --i)
    s += std::to_string(i) + "," + item_id(i) + "," + csv_field(item_url(i)) + "\n";
  return s;
}

// `index,label` rows with class names.
std::string label_csv(const Labels& labels, const std::vector<std::string>& classes = kClasses) {
  std::string s = "index,label\n";
  for (const auto& [i, c] : labels) s += std::to_string(i) + "," + classes[static_cast<std::size_t>(c)] + "\n";
  return s;
}

// What `export --format csv` prints for `labels`.
std::string export_of(const Labels& labels, const std::vector<std::string>& classes = kClasses) {
  return label_csv(labels, classes);
}

Labels merged(Labels a, const Labels& b) {
  for (const auto& [i, c] : b) a[i] = c;
  return a;
}

std::string describe(const Labels& l) {
  std::string s = "{";
  int n = 0;
  for (const auto& [i, c] : l) {
    if (n++ == 12) {
      s += " ... (" + std::to_string(l.size()) + " in all)";
      break;
    }
    s += " " + std::to_string(i) + ":" + std::to_string(c);
  }
  return s + " }";
}

// The number of indices where two label sets differ (missing on one side counts).
std::size_t differences(const Labels& a, const Labels& b) {
  std::size_t n = 0;
  for (const auto& [i, c] : a) {
    const auto it = b.find(i);
    n += it == b.end() || it->second != c;
  }
  for (const auto& [i, c] : b) n += a.count(i) == 0;
  return n;
}

// True when `msg` names row `n` of `file`: "FILE:N:" (CSV lines), or "line N" / "task N" (not
// "line N0").
bool mentions(const std::string& msg, const std::string& word, std::int64_t n, const std::string& file = "") {
  if (!file.empty() && msg.find(file + ":" + std::to_string(n) + ":") != std::string::npos) return true;
  return std::regex_search(msg, std::regex(word + " " + std::to_string(n) + "([^0-9]|$)"));
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

class ProjectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = test_tmp("project");
    fs::remove_all(base_);
    fs::create_directories(base_);
    dir_ = base_ + "/proj";
  }
  std::string path(const std::string& name) const { return base_ + "/" + name; }
  std::string journal() const { return dir_ + "/labels.journal"; }

  // `quarry project init` with the given dataset, and the classes and a manifest unless told.
  void init(const std::string& dataset, const std::string& strategy, bool with_manifest = true,
            bool with_classes = true, std::int64_t pool = 0) {
    std::vector<std::string> args{"project", "init", dir_, "--dataset", dataset, "--model", "cnn",
                                  "--strategy", strategy, "--seed", "3", "--threads", "2"};
    if (with_classes) args.insert(args.end(), {"--classes", kClassList});
    if (with_manifest) {
      write_file(path("items.csv"), manifest_csv(pool));
      args.insert(args.end(), {"--manifest", path("items.csv")});
    }
    const Result r = quarry(args);
    ASSERT_EQ(r.rc, 0) << r.err;
  }

  // Writes `text` to base/name and imports it with `quarry project label`.
  Result label(const std::string& name, const std::string& text, bool allow_relabel = false) {
    write_file(path(name), text);
    std::vector<std::string> args{"project", "label", dir_, path(name)};
    if (allow_relabel) args.push_back("--allow-relabel");
    return quarry(args);
  }

  Labels labels() const { return quarry::Project(dir_).labels(); }

  // The indices of batch `n` as its CSV lists them.
  std::vector<std::int64_t> batch_indices(int n) const {
    char name[32];
    std::snprintf(name, sizeof name, "/batches/%04d.csv", n);
    const auto rows = parse_csv(read_file(dir_ + name));
    std::vector<std::int64_t> v;
    for (std::size_t r = 1; r < rows.size(); ++r) v.push_back(std::stoll(rows[r].at(0)));
    return v;
  }

  std::string base_, dir_;
};

// per_class of `status --format json`: an array in class order or an object by class name.
std::vector<std::int64_t> per_class_of(const nlohmann::json& j, const std::vector<std::string>& classes) {
  std::vector<std::int64_t> v;
  const auto& pc = j.at("per_class");
  if (pc.is_array()) {
    for (const auto& x : pc) v.push_back(x.is_object() ? x.at("labeled").get<std::int64_t>() : x.get<std::int64_t>());
  } else {
    for (const std::string& c : classes) v.push_back(pc.at(c).get<std::int64_t>());
  }
  return v;
}

std::vector<std::int64_t> counts_of(const Labels& labels, int classes) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(classes), 0);
  for (const auto& [i, c] : labels) ++v.at(static_cast<std::size_t>(c));
  return v;
}

nlohmann::json ls_annotation(const std::string& choice, bool cancelled) {
  return {{"id", 1},
          {"was_cancelled", cancelled},
          {"result",
           nlohmann::json::array({{{"from_name", "label"},
                                   {"to_name", "image"},
                                   {"type", "choices"},
                                   {"value", {{"choices", nlohmann::json::array({choice})}}}}})}};
}

// ---------------------------------------------------------------- the whole cycle

TEST_F(ProjectTest, FullCycleOnSyntheticImages) {
  const bool torch = quarry::have_torch();
  const std::string strategy = torch ? "entropy" : "random";
  init("synthetic:600", strategy, true, true, 600);
  EXPECT_TRUE(fs::exists(dir_ + "/project.json"));
  EXPECT_TRUE(fs::exists(dir_ + "/manifest.csv"));
  EXPECT_EQ(read_file(dir_ + "/labelstudio.xml"), quarry::Project::labelstudio_config(kClasses));
  for (const std::string& c : kClasses)
    EXPECT_NE(read_file(dir_ + "/labelstudio.xml").find(c), std::string::npos) << c;
  {
    const quarry::Project p(dir_);
    EXPECT_EQ(p.config().classes, kClasses);
    EXPECT_EQ(p.config().pool_size, 600);
    EXPECT_EQ(p.config().strategy, strategy);
    EXPECT_EQ(p.config().seed, 3u);
    EXPECT_TRUE(p.config().has_manifest);
    EXPECT_TRUE(p.labels().empty());
    EXPECT_TRUE(p.batches().empty());
    EXPECT_TRUE(p.torn().empty());
  }

  // 1. The cold start: no labels, a random batch of 20.
  Result r = quarry({"project", "next", dir_, "-k", "20"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto rows = parse_csv(read_file(dir_ + "/batches/0001.csv"));
  ASSERT_EQ(rows.size(), 21u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"index", "id", "path_or_url", "score"}));
  std::vector<std::int64_t> b1;
  for (std::size_t k = 1; k < rows.size(); ++k) {
    ASSERT_EQ(rows[k].size(), 4u) << k;
    const std::int64_t i = std::stoll(rows[k][0]);
    b1.push_back(i);
    EXPECT_GE(i, 0);
    EXPECT_LT(i, 600);
    EXPECT_EQ(rows[k][1], item_id(i));
    EXPECT_EQ(rows[k][2], item_url(i));
    EXPECT_NO_THROW((void)std::stod(rows[k][3])) << rows[k][3];
  }
  EXPECT_EQ(std::set<std::int64_t>(b1.begin(), b1.end()).size(), 20u) << "an item twice in one batch";
  const auto tasks = nlohmann::json::parse(read_file(dir_ + "/batches/0001.labelstudio.json"));
  ASSERT_TRUE(tasks.is_array());
  ASSERT_EQ(tasks.size(), 20u);
  for (std::size_t t = 0; t < 20; ++t) {
    const auto& task = tasks[t];
    EXPECT_EQ(task.at("data").at("image"), item_url(b1[t]));
    EXPECT_EQ(task.at("data").at("quarry_index").get<std::int64_t>(), b1[t]);
    EXPECT_EQ(task.at("data").at("quarry_id"), item_id(b1[t]));
    EXPECT_EQ(task.at("meta").at("quarry_index").get<std::int64_t>(), b1[t]);
    EXPECT_EQ(task.at("meta").at("quarry_batch").get<int>(), 1);
    EXPECT_TRUE(task.at("meta").at("quarry_score").is_number());
  }
  {
    const quarry::Project p(dir_);
    ASSERT_EQ(p.batches().size(), 1u);
    EXPECT_EQ(p.batches()[0].number, 1);
    EXPECT_EQ(p.batches()[0].state, "open");
    EXPECT_EQ(p.batches()[0].index, b1);
    EXPECT_NE(p.batches()[0].strategy.find("random"), std::string::npos) << p.batches()[0].strategy;
    const quarry::ProjectStatus s = p.status();
    EXPECT_EQ(s.pool_size, 600);
    EXPECT_EQ(s.labeled, 0);
    EXPECT_EQ(s.pending, 20);
    EXPECT_EQ(s.batches, 1);
    EXPECT_EQ(s.open_batch, std::optional<int>(1));
  }

  // 2. Items 0-7 of the batch from its own CSV with a label column (class names).
  Labels expected;
  std::string csv = "index,id,path_or_url,score,label\n";
  for (std::size_t t = 0; t < 8; ++t) {
    csv += rows[t + 1][0] + "," + rows[t + 1][1] + "," + csv_field(rows[t + 1][2]) + "," + rows[t + 1][3] + "," +
           kClasses[t % 4] + "\n";
    expected[b1[t]] = static_cast<std::int32_t>(t % 4);
  }
  r = label("first.csv", csv);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(labels(), expected);
  EXPECT_EQ(quarry::Project(dir_).status().pending, 12);

  // 3. Items 8-15 from a Label Studio export of the batch's tasks: item 8 annotated twice (the
  // last counts), item 9 with a cancelled second annotation (the first counts), items 14 and 15
  // without a usable annotation (skipped).
  auto exported = nlohmann::json::array();
  for (std::size_t t = 8; t < 16; ++t) {
    auto task = tasks[t];
    task["id"] = 1000 + t;
    auto ann = nlohmann::json::array();
    const std::string name = kClasses[(t + 1) % 4];
    if (t == 8) ann.push_back(ls_annotation(kClasses[t % 4], false));
    if (t < 14) ann.push_back(ls_annotation(name, false));
    if (t == 9 || t == 14) ann.push_back(ls_annotation(kClasses[t % 4], true));
    task["annotations"] = ann;
    exported.push_back(task);
    if (t < 14) expected[b1[t]] = static_cast<std::int32_t>((t + 1) % 4);
  }
  r = label("export.json", exported.dump(2));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(labels(), expected);

  // 4. Items 14-19 by manifest id, with integer class ids.
  csv = "id,label\n";
  for (std::size_t t = 14; t < 20; ++t) {
    csv += item_id(b1[t]) + "," + std::to_string(t % 3) + "\n";
    expected[b1[t]] = static_cast<std::int32_t>(t % 3);
  }
  r = label("by_id.csv", csv);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(labels(), expected);
  ASSERT_EQ(expected.size(), 20u);
  {
    const quarry::Project p(dir_);
    EXPECT_EQ(p.batches().at(0).state, "closed");
    const quarry::ProjectStatus s = p.status();
    EXPECT_EQ(s.labeled, 20);
    EXPECT_EQ(s.pending, 0);
    EXPECT_FALSE(s.open_batch.has_value());
    EXPECT_EQ(s.per_class, counts_of(expected, 4));
  }
  // The journal: one checksummed record per import, seq 1..3, sources as given.
  {
    const auto lines = lines_of(read_file(journal()));
    ASSERT_EQ(lines.size(), 3u);
    const std::vector<std::string> sources{path("first.csv"), path("export.json"), path("by_id.csv")};
    for (std::size_t k = 0; k < 3; ++k) {
      ASSERT_GT(lines[k].size(), 9u);
      char hex[16];
      std::snprintf(hex, sizeof hex, "%08x", crc32(lines[k].substr(9)));
      EXPECT_EQ(lines[k].substr(0, 9), std::string(hex) + " ") << lines[k];
      const auto j = nlohmann::json::parse(lines[k].substr(9));
      EXPECT_EQ(j.at("seq").get<int>(), static_cast<int>(k) + 1);
      EXPECT_EQ(j.at("source"), sources[k]);
      EXPECT_TRUE(std::regex_match(j.at("time").get<std::string>(),
                                   std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00))")))
          << j.at("time");
      EXPECT_EQ(j.at("labels").size(), k == 0 ? 8u : 6u);
    }
  }

  // 5. The next batch: a model (with LibTorch) or random; never a labeled item.
  r = quarry({"project", "next", dir_, "-k", "15"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::vector<std::int64_t> b2 = batch_indices(2);
  ASSERT_EQ(b2.size(), 15u);
  EXPECT_EQ(std::set<std::int64_t>(b2.begin(), b2.end()).size(), 15u);
  for (std::int64_t i : b2) EXPECT_EQ(expected.count(i), 0u) << "labeled item " << i << " proposed again";
  {
    const quarry::Project p(dir_);
    ASSERT_EQ(p.batches().size(), 2u);
    const quarry::BatchInfo& b = p.batches()[1];
    EXPECT_EQ(b.index, b2);
    EXPECT_EQ(b.state, "open");
    const quarry::ProjectStatus s = p.status();
    if (torch) {
      EXPECT_EQ(b.strategy.find("cold"), std::string::npos) << b.strategy;
      ASSERT_EQ(b.score.size(), 15u);
      for (std::size_t k = 1; k < b.score.size(); ++k)
        EXPECT_GE(b.score[k - 1], b.score[k]) << "not in rank order at " << k;
      EXPECT_TRUE(fs::exists(dir_ + "/model.pt"));
      EXPECT_EQ(s.models_trained, 1);
      EXPECT_TRUE(s.model_current);
      EXPECT_EQ(s.model_labels, 20);
      EXPECT_TRUE(s.val_accuracy.has_value());
    }
    EXPECT_EQ(s.pending, 15);
    EXPECT_EQ(s.open_batch, std::optional<int>(2));
  }

  // 6. status, as text and JSON.
  r = quarry({"project", "status", dir_});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("20"), std::string::npos) << r.out;
  r = quarry({"project", "status", dir_, "--format", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  {
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("labeled").get<std::int64_t>(), 20) << r.out;
    EXPECT_EQ(j.at("pool_size").get<std::int64_t>(), 600) << r.out;
    EXPECT_EQ(j.at("pending").get<std::int64_t>(), 15) << r.out;
    EXPECT_EQ(per_class_of(j, kClasses), counts_of(expected, 4)) << r.out;
  }

  // 7. export: CSV to stdout and to a file, and NPY.
  r = quarry({"project", "export", dir_, "--format", "csv"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, export_of(expected));
  EXPECT_EQ(quarry::Project(dir_).export_csv(), export_of(expected));
  r = quarry({"project", "export", dir_, "--format", "csv", "--output", path("out.csv")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(read_file(path("out.csv")), export_of(expected));
  r = quarry({"project", "export", dir_, "--format", "npy", "--output", path("out.npy")});
  ASSERT_EQ(r.rc, 0) << r.err;
  const quarry::Array a = quarry::read_npy(path("out.npy"));
  ASSERT_EQ(a.dtype(), quarry::DType::i64);
  ASSERT_EQ(a.shape(), (std::vector<std::int64_t>{20, 2}));
  std::size_t k = 0;
  for (const auto& [i, c] : expected) {
    EXPECT_EQ(a.as<std::int64_t>()[2 * k], i) << k;
    EXPECT_EQ(a.as<std::int64_t>()[2 * k + 1], c) << k;
    ++k;
  }
}

TEST_F(ProjectTest, WithoutClassesOrManifestClassesAreNumbersAndIdsAreIndices) {
  init("synthetic:100", "random", false, false);
  const quarry::Project p0(dir_);
  EXPECT_EQ(p0.config().classes, (std::vector<std::string>{"0", "1", "2", "3"}));
  EXPECT_FALSE(p0.config().has_manifest);
  EXPECT_EQ(p0.config().pool_size, 100);

  Result r = quarry({"project", "next", dir_, "-k", "6"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto rows = parse_csv(read_file(dir_ + "/batches/0001.csv"));
  ASSERT_EQ(rows.size(), 7u);
  for (std::size_t k = 1; k < rows.size(); ++k) EXPECT_EQ(rows[k].at(1), rows[k].at(0)) << "id = the index";
  const auto tasks = nlohmann::json::parse(read_file(dir_ + "/batches/0001.labelstudio.json"));
  ASSERT_EQ(tasks.size(), 6u);
  EXPECT_EQ(tasks[0].at("data").at("quarry_id"), rows[1][0]);

  // Labels are the class names "0".."3"; ids are the indices as text.
  const std::int64_t a = std::stoll(rows[1][0]), b = std::stoll(rows[2][0]);
  r = label("l.csv", "index,label\n" + rows[1][0] + ",3\n");
  ASSERT_EQ(r.rc, 0) << r.err;
  r = label("m.csv", "id,label\n" + rows[2][0] + ",1\n");
  ASSERT_EQ(r.rc, 0) << r.err;
  const Labels expected{{a, 3}, {b, 1}};
  EXPECT_EQ(labels(), expected);
  r = quarry({"project", "export", dir_, "--format", "csv"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, export_of(expected, {"0", "1", "2", "3"}));
  r = label("bad.csv", "index,label\n5,4\n");
  EXPECT_EQ(r.rc, 1) << "class 4 of 4 classes";
  EXPECT_EQ(labels(), expected);
}

TEST_F(ProjectTest, InitRejectsBadManifestsAndNonEmptyFolders) {
  struct Case {
    std::string name, text;
    std::int64_t line;  // the bad row (0: none)
    std::string what;
  };
  const std::vector<Case> cases{
      {"dup_index.csv", "index,id,path_or_url\n0,a,x\n1,b,y\n0,c,z\n", 4, "twice"},
      {"dup_id.csv", "index,id,path_or_url\n0,a,x\n1,b,y\n2,a,z\n", 4, "'a'"},
      {"outside.csv", "index,id,path_or_url\n0,a,x\n100,b,y\n", 3, "100"},
      {"negative.csv", "index,id,path_or_url\n-1,a,x\n", 2, "-1"},
      {"not_int.csv", "index,id,path_or_url\n0,a,x\nsix,b,y\n", 3, "six"},
      {"no_id.csv", "index,path_or_url\n0,x\n", 0, "id"},
      {"partial.csv", "index,id,path_or_url\n0,a,x\n1,b,y\n", 0, "no row for 98 of the 100"},
  };
  for (const Case& c : cases) {
    write_file(path(c.name), c.text);
    const std::string dir = path("p_" + c.name);
    const Result r = quarry({"project", "init", dir, "--dataset", "synthetic:100", "--strategy", "random",
                             "--manifest", path(c.name)});
    EXPECT_EQ(r.rc, 1) << c.name;
    EXPECT_NE(r.err.find("quarry: error:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.name), std::string::npos) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.what), std::string::npos) << c.name << ": " << r.err;
    if (c.line > 0) {
      EXPECT_TRUE(mentions(r.err, "line", c.line, path(c.name))) << c.name << ": " << r.err;
    }
    EXPECT_FALSE(fs::exists(dir + "/project.json")) << c.name;
  }
  // A failed init leaves a folder that a corrected init accepts (the folder must be missing or
  // empty).
  write_file(path("bad.csv"), "index,id,path_or_url\n0,a,x\n0,b,y\n");
  Result r = quarry({"project", "init", dir_, "--dataset", "synthetic:100", "--strategy", "random", "--manifest",
                     path("bad.csv")});
  ASSERT_EQ(r.rc, 1);
  // (A manifest names every pool item; quoted fields may hold commas and quotes.)
  std::string good = "index,id,path_or_url\n0,a,x\n\"1\",\"b,c\",\"y \"\"z\"\"\"\n";
  for (int i = 2; i < 100; ++i) good += std::to_string(i) + ",id" + std::to_string(i) + ",\n";
  write_file(path("good.csv"), good);
  r = quarry({"project", "init", dir_, "--dataset", "synthetic:100", "--strategy", "random", "--manifest",
              path("good.csv")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(quarry::Project(dir_).config().has_manifest);
  // The folder is not empty now: a second init refuses and changes nothing.
  const std::string config = read_file(dir_ + "/project.json");
  r = quarry({"project", "init", dir_, "--dataset", "synthetic:200", "--strategy", "random"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(dir_), std::string::npos) << r.err;
  EXPECT_EQ(read_file(dir_ + "/project.json"), config);
  EXPECT_EQ(quarry::Project(dir_).config().pool_size, 100);
  // A folder with someone else's file in it.
  write_file(path("other/keep.txt"), "mine");
  r = quarry({"project", "init", path("other"), "--dataset", "synthetic:100"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(read_file(path("other/keep.txt")), "mine");
  EXPECT_FALSE(fs::exists(path("other/project.json")));
}

TEST_F(ProjectTest, UsageErrorsExitTwo) {
  init("synthetic:100", "random", false);
  EXPECT_EQ(quarry({"project", "label", dir_}).rc, 2);                     // no FILE
  EXPECT_EQ(quarry({"project", "next", dir_, "-k", "many"}).rc, 2);        // not a number
  EXPECT_EQ(quarry({"project", "init", path("p2")}).rc, 2);                // no --dataset
  EXPECT_EQ(quarry({"project", "frobnicate", dir_}).rc, 2);                // no such command
  const Result r = quarry({"project", "label", dir_, path("missing.csv")});  // a missing file: exit 1
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("missing.csv"), std::string::npos) << r.err;
  EXPECT_EQ(quarry({"project", "status", path("nowhere")}).rc, 1);        // not a project
}

// ---------------------------------------------------------------- imports

TEST_F(ProjectTest, EveryKindOfBadImportIsRejectedWithNothingImported) {
  init("synthetic:600", "random", true, true, 600);
  const Labels first{{1, 0}, {2, 1}, {3, 2}};
  Result r = label("first.csv", label_csv(first));
  ASSERT_EQ(r.rc, 0) << r.err;

  struct Case {
    std::string name, text;
    std::vector<std::int64_t> bad;  // the bad rows: CSV lines / Label Studio tasks
    std::vector<std::int64_t> good;  // rows that must not be named
    std::string also;               // another word the message must hold
  };
  auto task = [](std::int64_t index, const std::string& choice) {
    return nlohmann::json{{"id", index + 1},
                          {"data", {{"image", "x.png"}, {"quarry_index", index}}},
                          {"annotations", nlohmann::json::array({ls_annotation(choice, false)})}};
  };
  const std::vector<Case> cases{
      {"not_int.csv", "index,label\n10,cat\nabc,dog\n11,cat\n12.5,dog\n13,fish\n", {3, 5}, {2, 4, 6}, "abc"},
      {"outside.csv", "index,label\n10,cat\n600,dog\n-1,cat\n11,bird\n", {3, 4}, {2, 5}, "600"},
      {"unknown_id.csv", "id,label\nimg-0010,cat\nimg-9999,dog\n", {3}, {2}, "img-9999"},
      {"unknown_class.csv", "index,label\n10,cat\n11,zebra\n12,7\n13,-1\n14,dog\n", {3, 4, 5}, {2, 6}, "zebra"},
      {"relabel.csv", "index,label\n10,cat\n1,dog\n2,dog\n", {3}, {2, 4}, ""},
      {"twice.csv", "index,label\n10,cat\n11,dog\n10,bird\n", {4}, {3}, ""},
      {"short_row.csv", "index,id,path_or_url,score,label\n10,img-0010,u,0.5,cat\n11,img-0011\n12,img-0012,u,0.4,dog\n",
       {3}, {2, 4}, ""},
      // A quoted field with a line break: rows are named by the line they start on.
      {"multiline.csv", "index,path_or_url,label\n10,\"a\nb\",cat\n600,x,dog\n", {4}, {}, ""},
      {"ls_bad.json",
       nlohmann::json::array({task(10, "cat"), task(600, "dog"), task(11, "zebra"), task(12, "bird")}).dump(),
       {2, 3}, {1, 4}, ""},
  };
  const std::string journal_before = read_file(journal());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    r = label(c.name, c.text);
    EXPECT_EQ(r.rc, 1) << r.err;
    EXPECT_NE(r.err.find("quarry: error:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(path(c.name)), std::string::npos) << r.err;
    const std::string word = c.name.find(".json") != std::string::npos ? "task" : "line";
    for (std::int64_t n : c.bad)
      EXPECT_TRUE(mentions(r.err, word, n, path(c.name))) << word << " " << n << " not in: " << r.err;
    for (std::int64_t n : c.good)
      EXPECT_FALSE(mentions(r.err, word, n, path(c.name))) << "good " << word << " " << n << ": " << r.err;
    if (!c.also.empty()) {
      EXPECT_NE(r.err.find(c.also), std::string::npos) << r.err;
    }
    EXPECT_EQ(read_file(journal()), journal_before) << "a rejected file changed the journal";
    EXPECT_EQ(labels(), first);
  }
  // Files without the columns needed.
  for (const std::string& text : {std::string("index,name\n10,cat\n"), std::string("label,score\ncat,1\n"),
                                  std::string("{\"not\": \"an export\"}")}) {
    r = label(text[0] == '{' ? "odd.json" : "odd.csv", text);
    EXPECT_EQ(r.rc, 1) << text;
    EXPECT_NE(r.err.find(path(text[0] == '{' ? "odd.json" : "odd.csv")), std::string::npos) << r.err;
  }
  EXPECT_EQ(read_file(journal()), journal_before);

  // The library: the same error.
  write_file(path("lib.csv"), "index,label\n20,cat\n21,wolf\n");
  expect_error([&] { quarry::Project(dir_).label(path("lib.csv"), false); }, {path("lib.csv"), "wolf"});
  EXPECT_TRUE(mentions(message_of([&] { quarry::Project(dir_).label(path("lib.csv"), false); }), "line", 3,
                       path("lib.csv")));
  EXPECT_EQ(read_file(journal()), journal_before);

  // The same index twice with the same label is fine; the next record is seq 2.
  r = label("same_twice.csv", "index,label\n10,cat\n10,cat\n1,cat\n");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(labels(), merged(first, {{10, 0}}));
  const auto lines = lines_of(read_file(journal()));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines[1].substr(9)).at("seq"), 2);
}

TEST_F(ProjectTest, ImportingTheSameFileTwiceChangesNothing) {
  init("synthetic:600", "random", true, true, 600);
  Labels l;
  for (std::int64_t i = 0; i < 30; ++i) l[i * 7 % 600] = static_cast<std::int32_t>(i % 4);
  Result r = label("l.csv", label_csv(l));
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string journal1 = read_file(journal());
  const std::string export1 = quarry::Project(dir_).export_csv();
  EXPECT_EQ(export1, export_of(l));
  r = quarry({"project", "label", dir_, path("l.csv")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(read_file(journal()), journal1) << "a repeated import wrote a record";
  EXPECT_EQ(lines_of(journal1).size(), 1u);
  EXPECT_EQ(quarry::Project(dir_).export_csv(), export1);

  // The library's summary of a repeated import.
  quarry::Project p(dir_);
  const quarry::ImportSummary s = p.label(path("l.csv"), false);
  EXPECT_EQ(s.rows, 30);
  EXPECT_EQ(s.added, 0);
  EXPECT_EQ(s.relabeled, 0);
  EXPECT_EQ(s.unchanged, 30);
  EXPECT_EQ(s.seq, 0);
  EXPECT_EQ(read_file(journal()), journal1);

  // A Label Studio export twice, through the library: skipped tasks are counted both times.
  auto tasks = nlohmann::json::array();
  for (std::int64_t i = 100; i < 105; ++i) {
    nlohmann::json t{{"id", i}, {"data", {{"image", "u"}, {"quarry_index", i}}}, {"meta", {{"quarry_batch", 1}}}};
    t["annotations"] = i == 104 ? nlohmann::json::array() : nlohmann::json::array({ls_annotation("dog", false)});
    tasks.push_back(t);
  }
  write_file(path("ls.json"), tasks.dump());
  quarry::Project p2(dir_);
  const quarry::ImportSummary s1 = p2.label(path("ls.json"), false);
  EXPECT_EQ(s1.added, 4);
  EXPECT_EQ(s1.skipped, 1);
  EXPECT_EQ(s1.seq, 2);
  const std::string journal2 = read_file(journal());
  const quarry::ImportSummary s2 = quarry::Project(dir_).label(path("ls.json"), false);
  EXPECT_EQ(s2.added, 0);
  EXPECT_EQ(s2.unchanged, 4);
  EXPECT_EQ(s2.skipped, 1);
  EXPECT_EQ(s2.seq, 0);
  EXPECT_EQ(read_file(journal()), journal2);
  EXPECT_EQ(labels(), merged(l, {{100, 1}, {101, 1}, {102, 1}, {103, 1}}));
}

TEST_F(ProjectTest, ARelabelNeedsAllowRelabel) {
  init("synthetic:600", "random", true, true, 600);
  Result r = label("a.csv", "index,label\n5,cat\n6,dog\n");
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string before = read_file(journal());
  r = label("b.csv", "index,label\n7,bird\n5,dog\n");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(path("b.csv")), std::string::npos) << r.err;
  EXPECT_TRUE(mentions(r.err, "line", 3, path("b.csv"))) << r.err;
  EXPECT_FALSE(mentions(r.err, "line", 2, path("b.csv"))) << r.err;
  EXPECT_NE(lower(r.err).find("relabel"), std::string::npos) << "the message should name --allow-relabel: " << r.err;
  EXPECT_EQ(read_file(journal()), before);
  EXPECT_EQ(labels(), (Labels{{5, 0}, {6, 1}}));

  r = quarry({"project", "label", dir_, path("b.csv"), "--allow-relabel"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(labels(), (Labels{{5, 1}, {6, 1}, {7, 2}}));
  EXPECT_EQ(lines_of(read_file(journal())).size(), 2u);

  write_file(path("c.csv"), "index,label\n5,bird\n6,dog\n8,fish\n");
  const quarry::ImportSummary s = quarry::Project(dir_).label(path("c.csv"), true);
  EXPECT_EQ(s.rows, 3);
  EXPECT_EQ(s.relabeled, 1);
  EXPECT_EQ(s.unchanged, 1);
  EXPECT_EQ(s.added, 1);
  EXPECT_EQ(s.seq, 3);
  EXPECT_EQ(labels(), (Labels{{5, 2}, {6, 1}, {7, 2}, {8, 3}}));
  // The export follows the last label.
  EXPECT_EQ(quarry::Project(dir_).export_csv(), "index,label\n5,bird\n6,dog\n7,bird\n8,fish\n");
}

// ---------------------------------------------------------------- batches

TEST_F(ProjectTest, LabeledAndPendingItemsAreNeverProposedAgain) {
  // A pool of 100 and the random strategy (no LibTorch needed): the batches must cover it.
  init("synthetic:100", "random", false);
  ASSERT_EQ(quarry::Project(dir_).config().pool_size, 100);
  Result r = quarry({"project", "next", dir_, "-k", "20"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto b1 = batch_indices(1);
  ASSERT_EQ(b1.size(), 20u);
  Labels l;
  for (std::size_t t = 0; t < 10; ++t) l[b1[t]] = static_cast<std::int32_t>(t % 4);
  r = label("l.csv", label_csv(l));
  ASSERT_EQ(r.rc, 0) << r.err;

  std::set<std::int64_t> seen(b1.begin(), b1.end());
  for (int n = 2; n <= 3; ++n) {
    r = quarry({"project", "next", dir_, "-k", "20"});
    ASSERT_EQ(r.rc, 0) << r.err;
    const auto b = batch_indices(n);
    ASSERT_EQ(b.size(), 20u);
    for (std::int64_t i : b) EXPECT_TRUE(seen.insert(i).second) << "batch " << n << " proposes " << i << " again";
  }
  ASSERT_EQ(seen.size(), 60u);
  {
    const quarry::Project p(dir_);
    const quarry::ProjectStatus s = p.status();
    EXPECT_EQ(s.labeled, 10);
    EXPECT_EQ(s.pending, 50);
    EXPECT_EQ(s.open_batch, std::optional<int>(3));
    for (const quarry::BatchInfo& b : p.batches()) EXPECT_EQ(b.state, "open") << b.number;
  }

  // --replace-pending: the 50 pending items may be proposed again, the 10 labeled never; the
  // pool has 90 unlabeled items, so a batch of 90 is exactly them.
  r = quarry({"project", "next", dir_, "-k", "90", "--replace-pending"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto b4 = batch_indices(4);
  ASSERT_EQ(b4.size(), 90u);
  std::set<std::int64_t> want;
  for (std::int64_t i = 0; i < 100; ++i)
    if (!l.count(i)) want.insert(i);
  EXPECT_EQ(std::set<std::int64_t>(b4.begin(), b4.end()), want);
  {
    const quarry::Project p(dir_);
    ASSERT_EQ(p.batches().size(), 4u);
    for (int k = 0; k < 3; ++k) EXPECT_EQ(p.batches()[static_cast<std::size_t>(k)].state, "dropped") << k + 1;
    EXPECT_EQ(p.batches()[3].state, "open");
    const quarry::ProjectStatus s = p.status();
    EXPECT_EQ(s.pending, 90);
    EXPECT_EQ(s.open_batch, std::optional<int>(4));
  }

  // The library: the next --replace-pending reports the items it released; labeled ones stay out.
  Labels l2;
  for (std::size_t t = 0; t < 5; ++t) l2[b4[t]] = 1;
  r = label("l2.csv", label_csv(l2));
  ASSERT_EQ(r.rc, 0) << r.err;
  quarry::NextOptions o;
  o.k = 10;
  o.replace_pending = true;
  const quarry::NextResult nr = quarry::Project(dir_).next(o);
  EXPECT_EQ(nr.dropped, 85);
  EXPECT_EQ(nr.batch.number, 5);
  ASSERT_EQ(nr.batch.index.size(), 10u);
  for (std::int64_t i : nr.batch.index) {
    EXPECT_EQ(l.count(i), 0u) << i;
    EXPECT_EQ(l2.count(i), 0u) << i;
  }
  EXPECT_TRUE(fs::exists(nr.csv_path)) << nr.csv_path;
  EXPECT_TRUE(fs::exists(nr.labelstudio_path)) << nr.labelstudio_path;
}

// ---------------------------------------------------------------- the journal

TEST(LabelJournal, LinesAreChecksummedJsonAndReadBack) {
  const std::string path = test_tmp("project", "j.journal");
  fs::remove(path);
  std::string torn = "x";
  EXPECT_TRUE(quarry::LabelJournal::read(path, &torn).records().empty()) << "a missing file is an empty journal";
  EXPECT_TRUE(torn.empty());

  quarry::LabelJournal j;
  quarry::JournalRecord r1;
  r1.time = "2026-01-02T03:04:05Z";
  r1.source = "a \"quoted\" name.csv";
  r1.labels = {{3, 1}, {5, 0}};
  j.append(path, r1);
  quarry::JournalRecord r2;
  r2.time = "2026-01-02T03:04:06Z";
  r2.source = "b.json";
  r2.labels = {{5, 2}, {9, 3}};
  j.append(path, r2);
  EXPECT_EQ(j.records().size(), 2u);
  EXPECT_EQ(j.records()[1].seq, 2);

  const std::string text = read_file(path);
  EXPECT_EQ(j.valid_bytes(), text.size());
  const auto lines = lines_of(text);
  ASSERT_EQ(lines.size(), 2u);
  for (std::size_t k = 0; k < 2; ++k) {
    EXPECT_TRUE(std::regex_match(lines[k].substr(0, 9), std::regex("[0-9a-f]{8} "))) << lines[k];
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08x", crc32(lines[k].substr(9)));
    EXPECT_EQ(lines[k].substr(0, 8), hex);
    const auto js = nlohmann::json::parse(lines[k].substr(9));
    EXPECT_EQ(js.at("seq"), k + 1);
  }
  const auto js = nlohmann::json::parse(lines[0].substr(9));
  EXPECT_EQ(js.at("source"), r1.source);
  EXPECT_EQ(js.at("time"), r1.time);
  EXPECT_EQ(js.at("labels"), nlohmann::json::parse("[[3,1],[5,0]]"));
  r1.seq = 1;
  EXPECT_EQ(quarry::journal_line(r1), lines[0] + "\n");

  const quarry::LabelJournal back = quarry::LabelJournal::read(path, &torn);
  EXPECT_TRUE(torn.empty()) << torn;
  ASSERT_EQ(back.records().size(), 2u);
  EXPECT_EQ(back.records()[0].source, r1.source);
  EXPECT_EQ(back.records()[1].labels, r2.labels);
  EXPECT_EQ(back.labels(), (Labels{{3, 1}, {5, 2}, {9, 3}}));  // the last record wins
}

TEST_F(ProjectTest, ATornLastRecordIsIgnoredAndCutOffByTheNextImport) {
  init("synthetic:600", "random", true, true, 600);
  const Labels a{{1, 0}, {2, 1}, {3, 2}, {4, 3}, {500, 1}};
  const Labels b{{10, 3}, {11, 2}, {12, 1}, {13, 0}, {14, 0}, {15, 1}};
  const Labels c{{20, 1}, {21, 1}};
  Result r = label("a.csv", label_csv(a));
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::size_t first_line = read_file(journal()).size();
  const std::string state_after_a = read_file(dir_ + "/state.json");
  r = label("b.csv", label_csv(b));
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string whole = read_file(journal());
  ASSERT_EQ(lines_of(whole).size(), 2u);
  // A crash during the second import: its record torn, and state.json not yet told of it (it is
  // written after the append; a torn record that state.json recorded would be tampering).
  write_file(dir_ + "/state.json", state_after_a);

  // The last line cut by 3 bytes (no newline), or a digit of its labels changed (a checksum
  // mismatch on a line that ends with a newline), or cut to its checksum.
  std::string flipped = whole;
  const std::size_t at = flipped.find("\"labels\":[[", first_line);
  ASSERT_NE(at, std::string::npos) << whole;
  char& digit = flipped[at + 11];
  ASSERT_TRUE(digit >= '0' && digit <= '9') << whole;
  digit = digit == '9' ? '8' : static_cast<char>(digit + 1);
  const std::vector<std::pair<std::string, std::string>> cases{
      {"truncated", whole.substr(0, whole.size() - 3)},
      {"flipped", flipped},
      {"checksum only", whole.substr(0, first_line + 6)},
  };
  for (const auto& [name, broken] : cases) {
    SCOPED_TRACE(name);
    write_file(journal(), broken);
    write_file(dir_ + "/state.json", state_after_a);  // as the crash left it
    std::string torn;
    const quarry::LabelJournal j = quarry::LabelJournal::read(journal(), &torn);
    EXPECT_EQ(j.records().size(), 1u);
    EXPECT_EQ(j.labels(), a);
    EXPECT_EQ(j.valid_bytes(), first_line);
    EXPECT_FALSE(torn.empty());
    {
      const quarry::Project p(dir_);
      EXPECT_EQ(p.labels(), a);
      EXPECT_FALSE(p.torn().empty());
      const quarry::ProjectStatus s = p.status();
      EXPECT_EQ(s.labeled, 5);
      EXPECT_FALSE(s.torn.empty());
    }
    r = quarry({"project", "status", dir_});
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.err.find("torn"), std::string::npos) << r.err;
    r = quarry({"project", "export", dir_, "--format", "csv"});
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out, export_of(a));
    EXPECT_EQ(read_file(journal()), broken) << "a reader changed the journal";

    // The next import cuts the torn tail off and appends a whole record.
    r = label("c.csv", label_csv(c));
    ASSERT_EQ(r.rc, 0) << r.err;
    const std::string healed = read_file(journal());
    ASSERT_FALSE(healed.empty());
    EXPECT_EQ(healed.back(), '\n');
    EXPECT_EQ(healed.substr(0, first_line), whole.substr(0, first_line));
    const auto lines = lines_of(healed);
    ASSERT_EQ(lines.size(), 2u) << healed;
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08x", crc32(lines[1].substr(9)));
    EXPECT_EQ(lines[1].substr(0, 8), hex);
    const auto rec = nlohmann::json::parse(lines[1].substr(9));
    EXPECT_EQ(rec.at("seq"), 2);
    EXPECT_EQ(rec.at("source"), path("c.csv"));
    torn = "x";
    EXPECT_EQ(quarry::LabelJournal::read(journal(), &torn).labels(), merged(a, c));
    EXPECT_TRUE(torn.empty()) << torn;
    EXPECT_EQ(labels(), merged(a, c));
    r = quarry({"project", "status", dir_});
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.err.find("torn"), std::string::npos) << r.err;
  }
}

TEST_F(ProjectTest, ACorruptRecordBeforeWholeOnesIsAnError) {
  init("synthetic:600", "random", true, true, 600);
  for (int k = 0; k < 3; ++k) {
    const Result r = label("l" + std::to_string(k) + ".csv", label_csv({{k, 1}, {k + 10, 2}}));
    ASSERT_EQ(r.rc, 0) << r.err;
  }
  std::string text = read_file(journal());
  const std::size_t second = text.find('\n') + 1;
  const std::size_t at = text.find("\"labels\":[[", second);
  ASSERT_LT(at, text.find('\n', second));
  text[at + 11] = text[at + 11] == '1' ? '7' : '1';  // the index of its first label
  write_file(journal(), text);

  expect_error([&] { quarry::LabelJournal::read(journal()); }, {journal(), "line 2"});
  expect_error([&] { quarry::Project p(dir_); }, {journal(), "line 2"});
  Result r = quarry({"project", "status", dir_});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("quarry: error:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;
  r = quarry({"project", "export", dir_, "--format", "csv"});
  EXPECT_EQ(r.rc, 1);
  r = label("more.csv", "index,label\n50,cat\n");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;
  r = quarry({"project", "next", dir_, "-k", "5"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(read_file(journal()), text) << "a writer changed a corrupt journal";

  // Garbage that is not a record at all, between whole records.
  std::string lines = read_file(journal());
  lines.insert(second, "hello world\n");
  write_file(journal(), lines);
  expect_error([&] { quarry::LabelJournal::read(journal()); }, {journal(), "line 2"});
}

// ---------------------------------------------------------------- crashes

// Imports killed at random moments (SIGKILL): after each, the project opens (library and
// `status`) and its labels are exactly those before the import or those after it.
//
// Two kinds of trial: a quarter run the command (fork and exec `quarry project label`); the others
// fork this test process, whose child calls quarry::Project::label (what the command runs) and
// exits. The command spends most of its run starting (loading LibTorch: about half a second on a
// busy machine), where a kill hits nothing; the forked child starts working at once, so its kills
// land in the import itself (and the test stays near half a minute). Delays are drawn from 0 to
// a little past the typical runtime of each kind, measured first and again every 20 trials (the
// journal grows). The odd-numbered forked imports are instead killed the moment the journal's
// size changes, to catch the append half done (a torn record). QUARRY_PROJECT_CRASH_TRIALS sets the
// number of trials (default 100); scripts/stress_project.sh is the long run of the command.
TEST_F(ProjectTest, KilledImportsLeaveTheLabelsBeforeOrAfter) {
  const std::int64_t pool = 20000;
  const auto t_init = Clock::now();
  init("synthetic:20000", "random", false, true);
  const double init_seconds = seconds_since(t_init);
  EXPECT_LT(init_seconds, 20.0) << "init of synthetic:20000 is slow";
  int trials = 100;
  if (const char* e = std::getenv("QUARRY_PROJECT_CRASH_TRIALS")) trials = std::max(1, std::atoi(e));

  std::mt19937_64 rng(20261124);
  std::vector<std::int64_t> order(static_cast<std::size_t>(pool));
  std::iota(order.begin(), order.end(), 0);
  const std::string file = path("trial.csv");
  const std::string err_file = path("trial.err");

  // One import's file: `relabel` trials give random labels to random items; the others label
  // unlabeled items (and repeat some labels unchanged), so that every import changes the set.
  // Smaller files under AddressSanitizer (a Debug build: JSON and CSV parsing are ten times slower).
#if defined(__SANITIZE_ADDRESS__)
  const std::int64_t rows_min = 500, rows_max = 1500;
#else
  const std::int64_t rows_min = 4000, rows_max = 12000;
#endif
  auto make_file = [&](const Labels& before, bool& relabel, Labels& after) {
    const std::int64_t n = std::uniform_int_distribution<std::int64_t>(rows_min, rows_max)(rng);
    std::shuffle(order.begin(), order.end(), rng);
    after = before;
    std::string text = "index,label\n";
    text.reserve(static_cast<std::size_t>(n) * 12);
    if (!relabel && pool - static_cast<std::int64_t>(before.size()) < 100) relabel = true;
    std::int64_t written = 0;
    std::int64_t repeats = 0;
    for (std::int64_t i : order) {
      if (written == n) break;
      const auto it = before.find(i);
      std::int32_t c = static_cast<std::int32_t>(rng() % 4);
      if (!relabel && it != before.end()) {
        if (repeats * 4 >= n) continue;  // a quarter at most of unchanged repeats
        c = it->second;
        ++repeats;
      }
      after[i] = c;
      text += std::to_string(i) + "," + kClasses[static_cast<std::size_t>(c)] + "\n";
      ++written;
    }
    write_file(file, text);
  };
  // Starts one import: the command, or a fork of this process that calls the library.
  auto start = [&](bool exec, bool relabel) -> pid_t {
    if (exec) {
      std::vector<std::string> a{"project", "label", dir_, file, "--wait", "5"};
      if (relabel) a.push_back("--allow-relabel");
      return spawn(a, err_file);
    }
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      int rc = 0;
      try {
        quarry::Project(dir_).label(file, relabel, 5);
      } catch (const std::exception& e) {
        write_file(err_file, e.what());
        rc = 1;
      }
      ::_exit(rc);
    }
    return pid;
  };

  // The typical runtimes: the command's start (--version), a whole import of each kind.
  auto t0 = Clock::now();
  ASSERT_EQ(wait_for(spawn({"--version"})), 0);
  const double startup = seconds_since(t0);
  Labels before;
  double runtime[2] = {0, 0};  // [fork, exec]
  for (int exec = 0; exec < 2; ++exec) {
    bool relabel = false;
    Labels after;
    make_file(before, relabel, after);
    t0 = Clock::now();
    ASSERT_EQ(wait_for(start(exec, relabel)), 0) << read_file(err_file);
    runtime[exec] = seconds_since(t0);
    ASSERT_EQ(labels(), after);
    before = after;
  }

  int as_before = 0, as_after = 0, torn = 0, finished = 0, execs = 0, snipes = 0;
  const auto t_trials = Clock::now();
  for (int trial = 0; trial < trials; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const bool exec = trial % 4 == 0;
    execs += exec;
    bool relabel = trial % 4 != 0;
    Labels after;
    make_file(before, relabel, after);
    // The command: half the delays anywhere in its run, half after its start (where it works).
    const double lo = exec && trial % 2 == 1 ? std::min(startup, runtime[1]) * 0.8 : 0.0;
    const double delay = std::uniform_real_distribution<double>(lo, runtime[exec] * 1.1)(rng);
    const bool measure = trial % 20 == 16 || trial % 20 == 18;  // one of each kind runs to the end
    const bool snipe = !exec && !measure && trial % 2 == 1;
    std::error_code ec;
    const auto journal_size = fs::file_size(journal(), ec);
    t0 = Clock::now();
    fs::remove(err_file);
    const pid_t pid = start(exec, relabel);
    ASSERT_GT(pid, 0);
    if (snipe) {
      // Kill as soon as the journal changes (or after twice the typical runtime).
      while (seconds_since(t0) < 2 * runtime[0] && fs::file_size(journal(), ec) == journal_size)
        std::this_thread::yield();  // the child may need this core
      ::kill(pid, SIGKILL);
      ++snipes;
    } else if (!measure) {
      std::this_thread::sleep_for(std::chrono::duration<double>(delay));
      ::kill(pid, SIGKILL);
    }
    const int rc = wait_for(pid);
    if (measure) runtime[exec] = seconds_since(t0);
    if (rc != 128 + SIGKILL) {
      ASSERT_EQ(rc, 0) << "the import failed: " << read_file(err_file);
    }

    std::string torn_text;
    Labels now;
    try {
      const quarry::Project p(dir_);
      now = p.labels();
      torn_text = p.torn();
    } catch (const quarry::Error& e) {
      FAIL() << "the project does not open after a kill at " << delay << " s: " << e.what();
    }
    if (now == after) {
      ++as_after;
    } else if (now == before) {
      ASSERT_NE(rc, 0) << "the import succeeded but the labels are those before it";
      ++as_before;
    } else {
      FAIL() << (exec ? "the command" : "the forked import") << " killed after "
             << (snipe ? seconds_since(t0) : delay) << " s (rc " << rc
             << "): the labels are neither those before (" << before.size() << ", " << differences(now, before)
             << " differ) nor after (" << after.size() << ", " << differences(now, after)
             << " differ): " << describe(now);
    }
    finished += rc == 0;
    torn += !torn_text.empty();
    // `status` now and then (the command takes half a second to start), and on the first torn tails.
    if (trial % 10 == 9 || (!torn_text.empty() && torn <= 3) || trial == trials - 1) {
      const Result s = quarry({"project", "status", dir_, "--format", "json"});
      ASSERT_EQ(s.rc, 0) << s.err;
      EXPECT_EQ(nlohmann::json::parse(s.out).at("labeled").get<std::size_t>(), now.size());
      if (!torn_text.empty()) {
        EXPECT_NE(s.err.find("torn"), std::string::npos) << s.err;
      }
    }
    before = std::move(now);
  }
  const double took = seconds_since(t_trials);
  std::printf("[ crash    ] %d trials (%d of the command, %d killed as the journal changed) in %.1f s (init %.2f s, "
              "start %.3f s, import %.3f s, forked %.3f s): %d before, %d after (%d finished), %d torn tails\n",
              trials, execs, snipes, took, init_seconds, startup, runtime[1], runtime[0], as_before, as_after,
              finished, torn);
  RecordProperty("trials_before", as_before);
  RecordProperty("trials_after", as_after);
  RecordProperty("torn", torn);
  if (trials >= 50) {
    EXPECT_GT(as_before, 0) << "no kill landed before the append";
  }
  // The project is whole again after one more import.
  Labels after;
  bool relabel = true;
  make_file(before, relabel, after);
  ASSERT_EQ(wait_for(start(true, true)), 0) << read_file(err_file);
  std::string torn_text = "x";
  EXPECT_EQ(quarry::LabelJournal::read(journal(), &torn_text).labels(), after);
  EXPECT_TRUE(torn_text.empty()) << torn_text;
}

// ---------------------------------------------------------------- the lock

TEST_F(ProjectTest, OneWriterAtATime) {
  init("synthetic:600", "random", true, true, 600);
  write_file(path("f.csv"), "index,label\n1,cat\n2,dog\n");
  const int fd = ::open((dir_ + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);

  Result r = quarry({"project", "label", dir_, path("f.csv"), "--wait", "0"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("quarry: error:"), std::string::npos) << r.err;
  const std::string msg = lower(r.err);
  EXPECT_TRUE(msg.find("lock") != std::string::npos || msg.find("another") != std::string::npos) << r.err;
  EXPECT_TRUE(quarry::LabelJournal::read(journal()).labels().empty());  // Project would wait for the lock
  r = quarry({"project", "next", dir_, "-k", "5", "--wait", "0"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_FALSE(fs::exists(dir_ + "/batches/0001.csv"));
  // The library, too (another open file description of the lock in this process).
  const std::string lib = lower(message_of([&] { quarry::Project(dir_).label(path("f.csv"), false, 0); }));
  EXPECT_TRUE(lib.find("lock") != std::string::npos || lib.find("another") != std::string::npos) << lib;

  // --wait 1 gives up after about a second.
  auto t0 = Clock::now();
  r = quarry({"project", "label", dir_, path("f.csv"), "--wait", "1"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_GE(seconds_since(t0), 0.9);
  EXPECT_TRUE(quarry::LabelJournal::read(journal()).labels().empty());  // Project would wait for the lock

  // --wait 2 and the lock released after 0.5 s: it waits, then imports.
  t0 = Clock::now();
  const pid_t pid = spawn({"project", "label", dir_, path("f.csv"), "--wait", "2"}, path("wait.err"));
  ASSERT_GT(pid, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, WNOHANG), 0) << "it did not wait for the lock";
  ASSERT_EQ(::flock(fd, LOCK_UN), 0);
  ::close(fd);
  EXPECT_EQ(wait_for(pid), 0) << read_file(path("wait.err"));
  EXPECT_EQ(labels(), (Labels{{1, 0}, {2, 1}}));
}

}  // namespace
