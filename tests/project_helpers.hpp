// Shared by test_project.cpp and test_project_journal.cpp (one executable): running the
// quarry command, CSV in and out, synthetic manifests and label files, and the ProjectTest
// fixture (a fresh folder per test).
#pragma once

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

namespace project_test {

namespace fs = std::filesystem;
using quarry_test::crc32;
using quarry_test::expect_error;
using quarry_test::message_of;
using quarry_test::read_file;
using quarry_test::test_tmp;
using quarry_test::write_file;
using Labels = std::map<std::int64_t, std::int32_t>;
using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---------------------------------------------------------------- running the command

struct Result {
  int rc;
  std::string out, err;
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `quarry args...` to completion; stdout and stderr are kept.
inline Result quarry(const std::vector<std::string>& args) {
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
inline pid_t spawn(const std::vector<std::string>& args, const std::string& err_path = "") {
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
inline int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

// ---------------------------------------------------------------- CSV in and out

// RFC 4180 (quotes, "" escapes, separators and line breaks inside quotes, CRLF); blank lines
// are skipped. An independent reader for the files the project writes.
inline std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
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

inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> v;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) v.push_back(l);
  return v;
}

// ---------------------------------------------------------------- projects

inline const std::vector<std::string> kClasses{"cat", "dog", "bird", "fish"};
inline const char* const kClassList = "cat,dog,bird,fish";

inline std::string item_id(std::int64_t i) {
  char b[32];
  std::snprintf(b, sizeof b, "img-%04lld", static_cast<long long>(i));
  return b;
}
// Item 7 has a comma, quotes and a space in its URL (a quoted manifest field).
inline std::string item_url(std::int64_t i) {
  if (i == 7) return "s3://bucket/odd, name \"7\".png";
  return "https://example.org/pool/" + item_id(i) + ".png";
}

// A manifest of every item, newest first (the order must not matter).
inline std::string manifest_csv(std::int64_t pool) {
  std::string s = "index,id,path_or_url\n";
  for (std::int64_t i = pool - 1; i >= 0; --i)
    s += std::to_string(i) + "," + item_id(i) + "," + csv_field(item_url(i)) + "\n";
  return s;
}

// `index,label` rows with class names.
inline std::string label_csv(const Labels& labels, const std::vector<std::string>& classes = kClasses) {
  std::string s = "index,label\n";
  for (const auto& [i, c] : labels) s += std::to_string(i) + "," + classes[static_cast<std::size_t>(c)] + "\n";
  return s;
}

// What `export --format csv` prints for `labels`.
inline std::string export_of(const Labels& labels, const std::vector<std::string>& classes = kClasses) {
  return label_csv(labels, classes);
}

inline Labels merged(Labels a, const Labels& b) {
  for (const auto& [i, c] : b) a[i] = c;
  return a;
}

inline std::string describe(const Labels& l) {
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
inline std::size_t differences(const Labels& a, const Labels& b) {
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
inline bool mentions(const std::string& msg, const std::string& word, std::int64_t n, const std::string& file = "") {
  if (!file.empty() && msg.find(file + ":" + std::to_string(n) + ":") != std::string::npos) return true;
  return std::regex_search(msg, std::regex(word + " " + std::to_string(n) + "([^0-9]|$)"));
}

inline std::string lower(std::string s) {
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
inline std::vector<std::int64_t> per_class_of(const nlohmann::json& j, const std::vector<std::string>& classes) {
  std::vector<std::int64_t> v;
  const auto& pc = j.at("per_class");
  if (pc.is_array()) {
    for (const auto& x : pc) v.push_back(x.is_object() ? x.at("labeled").get<std::int64_t>() : x.get<std::int64_t>());
  } else {
    for (const std::string& c : classes) v.push_back(pc.at(c).get<std::int64_t>());
  }
  return v;
}

inline std::vector<std::int64_t> counts_of(const Labels& labels, int classes) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(classes), 0);
  for (const auto& [i, c] : labels) ++v.at(static_cast<std::size_t>(c));
  return v;
}

inline nlohmann::json ls_annotation(const std::string& choice, bool cancelled) {
  return {{"id", 1},
          {"was_cancelled", cancelled},
          {"result",
           nlohmann::json::array({{{"from_name", "label"},
                                   {"to_name", "image"},
                                   {"type", "choices"},
                                   {"value", {{"choices", nlohmann::json::array({choice})}}}}})}};
}

}  // namespace project_test
