// What every command checks before it works: that no output is an input, another output, a
// folder or a labeling project's own file; and that every number on the command line is a plain
// decimal within a human bound.
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cli.hpp"
#include "quarry/dataset.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "io/files.hpp"

namespace quarry::cli {

namespace fs = std::filesystem;

namespace {

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool has_glob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

std::vector<std::string> glob_files(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g{};
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0)
    for (std::size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  return out;
}

// The regular files directly inside a folder (an idx:DIR dataset reads some of them).
std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) out.push_back(it->path().string());
  return out;
}

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

// A labeling project's folder: it holds a project.json of quarry's format.
bool is_project_folder(const fs::path& dir) {
  const std::string config = (dir / "project.json").string();
  struct stat st {};
  if (::stat(config.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 20)) return false;
  try {
    return read_text_file(config, 1 << 20).find("\"quarry-project\"") != std::string::npos;
  } catch (const Error&) {
    return false;
  }
}

// The labeling project whose own file `path` is (project.json, state.json, labels.journal,
// manifest.csv, model.pt, labelstudio.xml, serve.token, .lock, anything in batches/ and its
// folders of images), links followed; "" if none.
std::string project_owning(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::absolute(fs::path(path), ec);
  if (ec) return {};
  const fs::path resolved = fs::weakly_canonical(p, ec);
  p = ec ? p.lexically_normal() : resolved;
  const fs::path dir = p.parent_path();
  const std::string name = p.filename().string();
  static const char* const kOwn[] = {"project.json", "state.json", "labels.journal", "manifest.csv",
                                     "model.pt",     "labelstudio.xml", "serve.token", ".lock"};
  if (std::find(std::begin(kOwn), std::end(kOwn), name) != std::end(kOwn) && is_project_folder(dir))
    return dir.string();
  if (dir.filename() == "batches" && is_project_folder(dir.parent_path())) return dir.parent_path().string();
  const fs::path up = dir.parent_path();  // batches/NNNN/INDEX.png
  if (up.filename() == "batches" && is_project_folder(up.parent_path())) return up.parent_path().string();
  return {};
}

}  // namespace

std::vector<std::string> input_files(const std::string& spec) {
  if (spec.empty()) return {};
  if (exists(spec)) return is_dir(spec) ? files_in(spec) : std::vector<std::string>{spec};
  // Dataset specs: idx:DIR, npz:FILE, npy:X,Y, pool:X.
  for (const char* prefix : {"idx:", "npz:", "npy:", "pool:"})
    if (starts_with(spec, prefix)) return dataset_files(spec);
  // FILE.npz:member
  const std::size_t colon = spec.rfind(".npz:");
  if (colon != std::string::npos && exists(spec.substr(0, colon + 4))) return {spec.substr(0, colon + 4)};
  // Shards: a glob or a comma-separated list.
  std::vector<std::string> out;
  for (const std::string& part : split_commas(spec, false)) {
    if (has_glob(part)) {
      for (const std::string& f : glob_files(part)) out.push_back(f);
    } else if (exists(part)) {
      out.push_back(part);
    }
  }
  return out;
}

void check_outputs(const std::vector<Named>& outputs, const std::vector<Named>& inputs) {
  struct In {
    std::string flag, spec, file;
    FileIdentity id;
  };
  std::vector<In> in;
  for (const Named& i : inputs)
    for (const std::string& f : input_files(i.path))
      if (const auto id = file_identity(f)) in.push_back({i.flag, i.path, f, *id});
  std::vector<std::pair<const Named*, std::string>> seen;  // outputs so far, by absolute path
  for (const Named& o : outputs) {
    if (o.path.empty()) continue;
    const std::string shown = quote_input(o.path, 200);
    QUARRY_USAGE_EXPECTS(!is_dir(o.path), o.flag, " ", shown, " is a folder; give a file name");
    const std::string owner = project_owning(o.path);
    QUARRY_USAGE_EXPECTS(owner.empty(), o.flag, " ", shown, " is a file of the labeling project ", owner,
                         ", which only `quarry project` commands may write; write the output elsewhere");
    const auto id = file_identity(o.path);
    if (id)
      for (const In& i : in)
        QUARRY_USAGE_EXPECTS(!(*id == i.id), o.flag, " ", shown, " is ",
                             i.file == o.path ? std::string("also") : "the same file as " + i.file + ", given as",
                             " the input ", i.flag, " ", quote_input(i.spec, 200),
                             ": refusing to overwrite an input; write the output to another file");
    std::error_code ec;
    // Where the output lands: a link that leads to a file not written yet still names that file.
    const std::string abs = fs::weakly_canonical(fs::absolute(write_target(o.path), ec), ec).string();
    for (const auto& [other, other_abs] : seen) {
      const auto other_id = file_identity(other->path);
      const bool same = (id && other_id && *id == *other_id) || (!ec && abs == other_abs);
      QUARRY_USAGE_EXPECTS(!same, o.flag, " ", shown, " and ", other->flag, " ", quote_input(other->path, 200),
                           " are the same file; give each output its own");
    }
    seen.emplace_back(&o, abs);
  }
}

void expect_output_folder(const Named& o) {
  if (o.path.empty()) return;
  const std::string target = write_target(o.path);
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) return;  // a device or a pipe: written in place
  std::error_code ec;
  const fs::path parent = fs::absolute(target, ec).parent_path();
  const std::string via = target == o.path ? "" : " (where its link leads: " + quote_input(target, 200) + ")";
  QUARRY_USAGE_EXPECTS(!ec && fs::is_directory(parent, ec), o.flag, " ", quote_input(o.path, 200), via,
                       ": the folder ", parent.string(), " does not exist");
  QUARRY_USAGE_EXPECTS(::access(parent.c_str(), W_OK) == 0, o.flag, " ", quote_input(o.path, 200), via,
                       ": the folder ", parent.string(), " cannot be written: ", std::strerror(errno));
}

void expect_folder_arg(const std::string& flag, const std::string& dir) {
  std::error_code ec;
  QUARRY_USAGE_EXPECTS(!fs::exists(dir, ec) || fs::is_directory(dir, ec), flag, " ", quote_input(dir, 200),
                       " is a file; it names a folder for the outputs");
  // Walks up to the nearest path that exists, which must be a folder; a link met on the way
  // leads to nothing that exists (or under a file), so the folder could not be made through it.
  for (fs::path p = fs::absolute(dir, ec); !ec; p = p.parent_path()) {
    std::error_code e;
    const bool there = fs::exists(p, e);
    QUARRY_USAGE_EXPECTS(there || !fs::is_symlink(fs::symlink_status(p, e)), flag, " ", quote_input(dir, 200), ": ",
                         quote_input(p.string(), 200), " is a link to ", quote_input(fs::read_symlink(p, e).string(), 200),
                         ", which does not exist; give a folder, or a path where one can be made");
    if (there) {
      QUARRY_USAGE_EXPECTS(fs::is_directory(p, e), flag, " ", quote_input(dir, 200), " is under ",
                           quote_input(p.string(), 200), ", a file; it names a folder for the outputs");
      break;
    }
    if (p == p.parent_path()) break;
  }
}

MadeFolder::MadeFolder(const std::string& flag, const std::string& dir) : dir_(dir), exceptions_(std::uncaught_exceptions()) {
  std::error_code ec;
  QUARRY_USAGE_EXPECTS(!fs::exists(dir, ec) || fs::is_directory(dir, ec), flag, " ", quote_input(dir, 200),
                       " is a file; it names a folder for the outputs");
  made_ = !fs::exists(dir, ec);
  fs::create_directories(dir, ec);
  QUARRY_EXPECTS(!ec, dir, ": cannot create the folder: ", ec.message());
}

MadeFolder::~MadeFolder() {
  if (!made_ || std::uncaught_exceptions() <= exceptions_) return;
  std::error_code ec;
  if (fs::is_empty(dir_, ec) && !ec) fs::remove(dir_, ec);
}

// ------------------------------------------------------------------ numbers on the command line

namespace {

// "--threads", "-k" or the positional name of an option, for messages.
std::string option_name(const CLI::Option* o) {
  std::string n = o->get_name(false, true);
  const auto comma = n.find(',');
  return comma == std::string::npos ? n : n.substr(0, comma);
}

bool decimal_integer(const std::string& s) {
  std::size_t i = s.size() > 0 && (s[0] == '+' || s[0] == '-') ? 1 : 0;
  if (i >= s.size()) return false;
  for (; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// A plain decimal number: digits, an optional fraction and exponent; no hexadecimal, no
// inf or nan.
bool decimal_real(const std::string& s) {
  std::size_t i = s.size() > 0 && (s[0] == '+' || s[0] == '-') ? 1 : 0;
  std::size_t digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    std::size_t exp = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++exp;
    if (exp == 0) return false;
  }
  return i == s.size();
}

}  // namespace

namespace {
CLI::Validator bound(bool strict) {
  return CLI::Validator(
      [strict](std::string& value) -> std::string {
        if (!decimal_real(value)) return {};  // the number check names that
        const double v = std::strtod(value.c_str(), nullptr);
        if (strict ? v > 0 : v >= 0) return {};
        return std::string("must be ") + (strict ? "> 0" : ">= 0") + ", got " + quote_input(value, 40);
      },
      strict ? "POSITIVE" : "NONNEGATIVE");
}
}  // namespace

CLI::Validator non_negative() { return bound(false); }
CLI::Validator positive() { return bound(true); }

int max_threads() {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<int>(std::max(64u, 8 * cores));
}

void add_number_checks(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    add_number_checks(*sub);
    for (CLI::Option* o : sub->get_options()) {
      // The value's type, without the descriptions of the validators already on it ("INT:POSITIVE").
      std::string type = o->get_type_name();
      type = type.substr(0, type.find(':'));
      const bool integer = type == "INT" || type == "UINT", real = type == "FLOAT";
      if (type == "TEXT") {  // a path, a name, a list: given, it is not empty
        o->check(CLI::Validator(
            [](std::string& value) -> std::string { return value.empty() ? "an empty value" : std::string(); }, "",
            "not empty"));
        continue;
      }
      if (!integer && !real) continue;
      const std::string name = option_name(o);
      const bool is_threads = name == "--threads";
      o->check(CLI::Validator(
          [integer, type, is_threads](std::string& value) -> std::string {
            const std::string shown = quote_input(value, 40);
            if (integer) {
              if (!decimal_integer(value)) return "'" + shown + "' is not a whole decimal number";
              if (type == "UINT" && value[0] == '-') return "'" + shown + "' is negative";
              long double v = std::strtold(value.c_str(), nullptr);
              if (v > static_cast<long double>(std::numeric_limits<std::int64_t>::max()) ||
                  v < static_cast<long double>(std::numeric_limits<std::int64_t>::min()))
                return "'" + shown + "' is too large (at most 9223372036854775807)";
              if (is_threads && v < 0) return "'" + shown + "' is negative (0 for all cores)";
              if (is_threads && v > max_threads())
                return fmt::format("{} threads is more than this machine can use (at most {}: 8 per core, "
                                   "0 for all cores)", shown, max_threads());
              return {};
            }
            if (!decimal_real(value)) return "'" + shown + "' is not a decimal number";
            const double v = std::strtod(value.c_str(), nullptr);
            if (!std::isfinite(v)) return "'" + shown + "' is out of range";
            return {};
          },
          "", "decimal"));
    }
  }
}

}  // namespace quarry::cli
