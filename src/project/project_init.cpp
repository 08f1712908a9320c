// `quarry project init`: the configuration checked and completed (dataset, classes, model), the
// manifest validated, and the project folder made under a temporary name and renamed into place
// (a failed init leaves nothing behind). Also the manifest reader that opening a project uses.
#include "quarry/project.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "project/journal.hpp"
#include "project/project_internal.hpp"
#include "quarry/dataset.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/train.hpp"
#include "simulate/strategy.hpp"
#include "simulate/xml.hpp"
#include "io/files.hpp"
#include "core/rows.hpp"

namespace quarry {
namespace project_detail {

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
  if (!bad.empty())
    fail_listing(fmt::format("{}: {} bad manifest row{}:", name, bad.size(), bad.size() == 1 ? "" : "s"), bad);
  return items;
}

std::string embeddings_crc32(const Array& e) {
  return fmt::format("{:08x}", crc32_update(0, e.data(), e.nbytes()));
}

Array read_seed_embeddings(const std::string& path, std::int64_t pool, const std::string& crc32) {
  // The project's own setting (project.json's seed_embeddings) once init has checked it.
  const std::string whose = crc32.empty() ? "" : " (the project's seed_embeddings, in project.json)";
  std::error_code ec;
  QUARRY_EXPECTS(fs::is_regular_file(path, ec), path, whose, ": the cold start's embeddings are gone (",
                 fs::exists(path, ec) ? "not a regular file" : "no such file",
                 "); restore the file the project was made with");
  Array e = read_npy(path);
  QUARRY_EXPECTS(e.rank() == 2 && e.shape()[0] == pool && e.shape()[1] >= 1, path, whose,
                 ": expected the cold start's embeddings [", pool, ", D] of the pool (one row per item, in pool "
                 "order), got shape ", shape_string(e.shape()));
  QUARRY_EXPECTS(e.dtype() == DType::f32 || e.dtype() == DType::f64 || e.dtype() == DType::f16 || e.dtype() == DType::bf16,
                 path, whose, ": expected float embeddings, got ", dtype_name(e.dtype()));
  if (crc32.empty()) {
    float_rows(e.view(), path);  // every value finite, checked at init (with the row that is not)
  } else {
    const std::string now = embeddings_crc32(e);
    QUARRY_EXPECTS(now == crc32, path, whose, ": the file changed since `project init` (crc32 ", crc32, ", now ",
                   now, "): the cold start would pick by embeddings the project was not made with; restore the "
                   "file the project was made with");
  }
  return e;
}

}  // namespace project_detail

using namespace project_detail;

// ------------------------------------------------------------------ init

// The Label Studio labeling config of the classes (labelstudio.xml).
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

// DIR must be missing or an empty folder.
void check_init_folder(const std::string& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    QUARRY_EXPECTS(fs::is_directory(dir, ec), dir, ": exists and is not a folder");
    QUARRY_EXPECTS(fs::is_empty(dir, ec), dir, ": the folder is not empty (a project needs a new or empty folder)");
  }
}

// The class names: the dataset's class ids where none are given; at least 2, trimmed, none twice.
void complete_classes(ProjectConfig& config, const Dataset& data) {
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
}

// Checks the options and fills in what the dataset tells (pool size, classes) and absolute
// paths; returns the dataset, loaded once.
Dataset complete_config(ProjectConfig& config) {
  loop::parse_strategy(config.strategy, "--strategy");
  parse_committee(config.committee);
  QUARRY_USAGE_EXPECTS(config.seed_strategy == "random" || config.seed_strategy == "typiclust" ||
                           config.seed_strategy == "probcover",
                       "--seed-strategy '", quote_input(config.seed_strategy), "': expected random, typiclust or probcover");
  QUARRY_USAGE_EXPECTS(config.seed_embeddings.empty() || config.seed_strategy != "random" ||
                           loop::parse_strategy(config.strategy).kind == loop::Strategy::Kind::automatic,
                       "--seed-embeddings is for --seed-strategy typiclust or probcover, or the strategy auto");
  if (!config.model.empty()) parse_model_spec(config.model);
  parse_device(config.device);
  config.dataset = absolute_spec(config.dataset);
  DatasetOptions dopt;
  dopt.seed = config.seed;
  Dataset data = load_dataset(config.dataset, dopt);
  config.pool_size = data.train.size();
  QUARRY_EXPECTS(config.pool_size > 0, config.dataset, ": the pool is empty");
  complete_classes(config, data);
  if (!config.seed_embeddings.empty()) {
    expect_regular_file(config.seed_embeddings);
    config.seed_embeddings = fs::absolute(config.seed_embeddings).lexically_normal().string();
    // Checked now, not at the first batch; its checksum goes into project.json.
    config.seed_embeddings_crc32 = embeddings_crc32(read_seed_embeddings(config.seed_embeddings, config.pool_size));
  }
  QUARRY_USAGE_EXPECTS(config.batchbald_restart >= 0 && config.batchbald_restart <= 1,
                       "--batchbald-restart must be in [0, 1], got ", config.batchbald_restart);
  if (!config.balance_target.empty()) {
    QUARRY_USAGE_EXPECTS(loop::parse_strategy(config.strategy).balanced, "--balance-target is for a balanced:NAME ",
                         "strategy, not ", config.strategy);
    loop::parse_balance_target(config.balance_target, static_cast<int>(config.classes.size()), "--balance-target");
  }
  // A TorchScript model is found from any working folder, as the dataset is.
  if (config.model.rfind("torchscript:", 0) == 0) {
    const std::string path = config.model.substr(12);
    expect_regular_file(path);
    config.model = "torchscript:" + fs::absolute(path).lexically_normal().string();
  }
  return data;
}

// project.json: the configuration, with what init learned of the dataset.
json config_json(const ProjectConfig& config, const Dataset& data) {
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
  if (!config.balance_target.empty()) j["balance_target"] = config.balance_target;
  if (loop::parse_strategy(config.strategy).kind == loop::Strategy::Kind::batchbald)
    j["batchbald_restart"] = config.batchbald_restart + 0.0;  // -0 kept as 0
  if (config.seed_strategy != "random") j["seed_strategy"] = config.seed_strategy;
  if (!config.seed_embeddings.empty()) {
    j["seed_embeddings"] = config.seed_embeddings;
    j["seed_embeddings_crc32"] = config.seed_embeddings_crc32;
  }
  j["classes"] = config.classes;
  j["seed"] = config.seed;
  j["device"] = config.device;
  j["threads"] = config.threads;
  j["pool_size"] = config.pool_size;
  j["manifest"] = config.has_manifest;
  return j;
}

// Writes the project's files into the folder `t`: manifest.csv, labelstudio.xml, state.json, project.json.
void write_project_files(const std::string& t, const ProjectConfig& config, const Dataset& data,
                         const std::string& manifest_text) {
  if (config.has_manifest) write_file_atomic(path_in(t, "manifest.csv"), {manifest_text});
  const json j = config_json(config, data);
  write_file_atomic(path_in(t, "labelstudio.xml"), {Project::labelstudio_config(config.classes)});
  write_json(path_in(t, "state.json"), state_json({}, "", 0, std::nullopt, std::nullopt, 0, JournalMark{}, 0, config, {}));
  write_json(path_in(t, "project.json"), j);
}

// Makes the project under a temporary name beside DIR and renames it into place last: a failed
// init (a full disk, a crash) leaves no half-made project that would block the retry.
void make_project_folder(const std::string& dir, const ProjectConfig& config, const Dataset& data,
                         const std::string& manifest_text) {
  std::error_code ec;
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
  write_project_files(t, config, data, manifest_text);
  // rename(2) replaces an empty folder; a folder that gained files meanwhile is refused.
  if (::rename(t.c_str(), final_dir.c_str()) != 0) {
    const int err = errno;
    QUARRY_FAIL(dir, ": cannot create the project folder: ", std::strerror(err),
                err == ENOTEMPTY || err == EEXIST ? " (the folder is no longer empty)" : "");
  }
  cleanup.keep = true;
  (void)fsync_parent_folder(final_dir.string());
}

}  // namespace

void Project::init(const std::string& dir, ProjectConfig config, const std::string& manifest_csv) {
  check_init_folder(dir);
  // Everything is checked before the folder is made: a failed init leaves nothing behind.
  const Dataset data = complete_config(config);
  std::string manifest_text;
  if (!manifest_csv.empty()) {
    manifest_text = read_text(manifest_csv);
    parse_manifest(csv::parse(manifest_text, manifest_csv), manifest_csv, config.pool_size);
    config.has_manifest = true;
  }
  make_project_folder(dir, config, data, manifest_text);
}

}  // namespace quarry
