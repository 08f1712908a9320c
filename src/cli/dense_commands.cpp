// `quarry score` and `quarry select` on dense outputs (segmentation maps, volumes): the options
// --reduce, --slices, --patches, --ignore-mask, --class-weights, --background, --channels-last,
// --committee, --voxel-map and --per-case, and their outputs.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "dense_cli.hpp"
#include "io/files.hpp"
#include "quarry/dense.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/pool_files.hpp"
#include "quarry/select.hpp"

namespace quarry::cli {
namespace {

struct Scored {
  DenseFiles files;
  DenseScores scores;
  std::vector<std::int64_t> map_shape;  // of --voxel-map: [N, spatial...]
};

// "64x64", "32x32x16" or "64": the patch size per spatial axis (or one for every axis).
std::vector<std::int64_t> parse_patches(const std::string& text) {
  std::vector<std::int64_t> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t x = text.find('x', start);
    const std::string part = text.substr(start, x == std::string::npos ? std::string::npos : x - start);
    const bool digits = !part.empty() && part.size() <= 12 &&
                        std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    const long long v = digits ? std::stoll(part) : 0;
    QUARRY_USAGE_EXPECTS(digits && v >= 1, "--patches ", text,
                         ": expected sizes from 1 to 999999999999 joined by 'x', one per spatial axis (64x64) or one "
                         "for all (64)");
    out.push_back(v);
    if (x == std::string::npos) break;
    start = x + 1;
  }
  return out;
}

// The columns of a slice or patch: "slice," / "patch,start0,start1,".
std::string region_header(const DenseArgs& a, std::size_t rank) {
  if (a.slices >= 0) return "slice,";
  std::string h = "patch,";
  for (std::size_t i = 0; i < rank; ++i) h += fmt::format("start{},", i);
  return h;
}
std::string region_fields(const DenseArgs& a, const DenseScores& r, std::int64_t kase, std::int64_t region,
                          const std::vector<std::int64_t>& patch) {
  std::string f = fmt::format("{},", region);
  if (a.slices >= 0) return f;
  for (std::int64_t x : patch_origin(r.grids[static_cast<std::size_t>(kase)], patch, region)) f += fmt::format("{},", x);
  return f;
}

Scored score_all(const DenseArgs& d, const std::string& input, const std::string& acquisition, bool logits,
                 double tolerance, const std::string& device, const std::string& budget, bool verbose,
                 std::vector<float>* voxel_map) {
  const Acquisition acq = parse_acquisition(acquisition);
  DenseOptions o;
  // cpu, or cuda[:N] where asked for by name; auto stays on the CPU for dense outputs until the
  // CUDA backend of dense scores has been measured on a GPU (docs/gpu.md).
  o.device = device == "auto" ? DeviceSpec{DeviceKind::cpu, 0} : parse_device(device);
  o.reduce = parse_reduction(d.reduce);
  o.logits = logits;
  o.sum_tolerance = tolerance;
  o.channels_last = d.channels_last;
  o.committee = d.committee;
  o.background = d.background;
  o.slice_axis = d.slices;
  if (!d.patches.empty()) o.patch = parse_patches(d.patches);
  o.input_name = input;
  for (const std::string& w : split_commas(d.class_weights, true)) {
    char* end = nullptr;
    const float v = std::strtof(w.c_str(), &end);
    QUARRY_USAGE_EXPECTS(!w.empty() && end && *end == '\0', "--class-weights: '", w,
                         "' is not a number (expected one weight per class, comma-separated)");
    o.class_weights.push_back(v);
  }
  Scored s;
  s.files = DenseFiles::open(input, o.committee || acquisition_needs_committee(acq));
  DenseFiles mask;
  if (!d.ignore.empty()) mask = DenseFiles::open(d.ignore, false, true);
  if (voxel_map) {
    QUARRY_USAGE_EXPECTS(s.files.one_array(), "--voxel-map: ", input, " is read as case files; a voxel map is ",
                         "written for one array [N, C, spatial...] (.npy or FILE.npz:MEMBER) only");
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t budget_bytes = budget.empty() ? 0 : parse_bytes(budget);
  if (voxel_map) {
    const ArrayView first = s.files.read(0, std::min<std::int64_t>(1, s.files.cases()));
    const DenseLayout l = dense_layout(first, o.committee || acquisition_needs_committee(acq), o.channels_last, input);
    voxel_map->assign(static_cast<std::size_t>(l.voxels * s.files.cases()), 0.0f);
    s.map_shape = {s.files.cases()};
    s.map_shape.insert(s.map_shape.end(), l.spatial.begin(), l.spatial.end());
    o.voxel_map = voxel_map->data();
  }
  s.scores = score_dense_files(s.files, acq, o, budget_bytes, d.ignore.empty() ? nullptr : &mask,
                               [&](std::int64_t done, std::int64_t total) {
                                 if (verbose && (done == total || done % 16 == 0))
                                   std::fprintf(stderr, "quarry: scored %lld of %lld cases\n",
                                                static_cast<long long>(done), static_cast<long long>(total));
                               });
  check_mapped_inputs();
  if (verbose)
    std::fprintf(stderr, "quarry: %lld cases (%s, %s) in %.3f s\n", static_cast<long long>(s.files.cases()),
                 acquisition.c_str(), reduction_name(o.reduce).c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return s;
}

}  // namespace

void DenseArgs::add(CLI::App* cmd, bool select) {
  cmd->add_option("--reduce", reduce,
                  "Dense outputs ([N,C,spatial...], NIfTI or nnU-Net case files): score every voxel and reduce "
                  "per case: mean, max, sum, topq:Q (mean of the top Q fraction) or foreground-mean; with --boxes or "
                  "--multilabel: mean, max or sum per image or sample");
  cmd->add_option("--patches", patches,
                  "Dense outputs: a score per patch of this size (64x64; 32x32x32; one size for every axis: 64), "
                  "patches tiling the grid row-major, cut at its far edges");
  cmd->add_option("--slices", slices,
                  "Dense outputs: a score per slice along this spatial axis (0 = the first after the classes; "
                  "NIfTI files read as [C, z, y, x], so 0 is z)")
      ->check(non_negative());
  cmd->add_option("--ignore-mask", ignore,
                  "Voxels to leave out where nonzero: one array [N, spatial...] or one file per case (glob/list)");
  cmd->add_option("--class-weights", class_weights,
                  "Comma-separated weight per class; a voxel's score is multiplied by its predicted class's");
  cmd->add_option("--background", background, "The background class of foreground-mean (default 0)")
      ->check(non_negative());
  cmd->add_flag("--channels-last", channels_last, "Classes on the last axis ([N, spatial..., C])");
  cmd->add_flag("--committee", committee,
                "The input is a committee [M, N, C, spatial...] (implied by bald and the other committee scores)");
  if (select) {
    cmd->add_option("--per-case", per_case,
                    "With --slices or --patches: at most this many slices (patches) of one case (0: no limit)")
        ->check(non_negative());
  } else {
    cmd->add_option("--voxel-map", voxel_map,
                    "Also write every voxel's score here (.npy, float32 [N, spatial...]; one-array inputs)");
  }
}

bool DenseArgs::active() const { return !reduce.empty() || regional(); }

std::vector<Named> DenseArgs::inputs() const { return {{"--ignore-mask", ignore}}; }

void dense_score(const DenseArgs& d, const std::string& input, const std::string& acquisition, bool logits,
                 double tolerance, const std::string& device, const std::string& budget, const std::string& output,
                 bool verbose) {
  DenseArgs a = d;
  if (a.reduce.empty()) a.reduce = "mean";
  const bool csv = ends_with(output, ".csv");
  QUARRY_USAGE_EXPECTS(csv || ends_with(output, ".npy"), "--output ", output,
                       ": dense scores are written as .npy (float32 [N], or [N, S] with --slices or --patches) or .csv");
  QUARRY_USAGE_EXPECTS(a.voxel_map.empty() || ends_with(a.voxel_map, ".npy"), "--voxel-map ", a.voxel_map,
                       ": the voxel map is written as .npy (float32 [N, spatial...])");
  std::vector<float> map;
  const Scored s = score_all(a, input, acquisition, logits, tolerance, device, budget, verbose,
                             a.voxel_map.empty() ? nullptr : &map);
  const DenseScores& r = s.scores;
  const std::int64_t N = s.files.cases();
  // The map and the scores are both written before either is published: a failed write leaves
  // neither (a map that cannot be written does not leave the scores behind).
  std::optional<AtomicFile> map_out;
  if (!a.voxel_map.empty()) {
    map_out.emplace(a.voxel_map);
    map_out->write(npy_header(DType::f32, s.map_shape, a.voxel_map));
    map_out->write(std::string_view(reinterpret_cast<const char*>(map.data()), map.size() * sizeof(float)));
  }
  AtomicFile out(output);
  const std::vector<std::int64_t> patch = a.patches.empty() ? std::vector<std::int64_t>{} : parse_patches(a.patches);
  const std::size_t rank = r.grids.empty() ? patch.size() : r.grids[0].size();
  if (csv) {
    std::string text = "index,case," + (a.regional() ? region_header(a, rank) : std::string()) + "score\n";
    for (std::size_t i = 0; i < r.score.size(); ++i) {
      text += fmt::format("{},{},", r.case_of[i], csv_field(s.files.case_name(r.case_of[i])));
      if (a.regional()) text += region_fields(a, r, r.case_of[i], r.slice[i], patch);
      text += fmt::format("{:.9g}\n", r.score[i]);
    }
    out.write(text);
  } else {
    std::vector<std::int64_t> shape = {N};
    if (a.regional()) {
      const bool same = std::all_of(r.slices.begin(), r.slices.end(), [&](std::int64_t x) { return x == r.slices[0]; });
      QUARRY_EXPECTS(same, input, ": the cases have different numbers of ",
                     a.slices >= 0 ? "slices along axis " + std::to_string(a.slices) : std::string("patches"),
                     "; write the scores as .csv");
      shape.push_back(N > 0 ? r.slices[0] : 0);
    }
    out.write(npy_header(DType::f32, shape, output));
    out.write(std::string_view(reinterpret_cast<const char*>(r.score.data()), r.score.size() * sizeof(float)));
  }
  if (map_out) map_out->commit();
  out.commit();
}

void dense_select(const DenseArgs& d, const std::string& input, const std::string& acquisition, bool logits,
                  double tolerance, const std::string& device, const std::string& budget, std::int64_t k,
                  const std::vector<std::int64_t>& exclude, const std::string& output, std::string format,
                  bool verbose) {
  DenseArgs a = d;
  if (a.reduce.empty()) a.reduce = "mean";
  QUARRY_USAGE_EXPECTS(a.per_case == 0 || a.regional(),
                       "--per-case limits the slices or patches of a case: give --slices AXIS or --patches SIZE");
  const Scored s = score_all(a, input, acquisition, logits, tolerance, device, budget, verbose, nullptr);
  const DenseScores& r = s.scores;
  const std::int64_t N = s.files.cases();
  for (std::int64_t e : exclude)
    QUARRY_EXPECTS(e >= 0 && e < N, "--exclude: case ", e, " is not in 0..", N - 1);
  const std::vector<std::int64_t> patch = a.patches.empty() ? std::vector<std::int64_t>{} : parse_patches(a.patches);
  const std::size_t rank = r.grids.empty() ? patch.size() : r.grids[0].size();
  const char* unit = a.slices >= 0 ? "slices" : "patches";
  SliceSelection sel;
  if (a.regional()) {
    // Cases may have different numbers of slices: select over padded rows of the largest count.
    const std::int64_t S = r.slices.empty() ? 1 : *std::max_element(r.slices.begin(), r.slices.end());
    std::int64_t selectable = 0;  // the padding aside
    for (std::int64_t n = 0; n < N; ++n)
      if (std::find(exclude.begin(), exclude.end(), n) == exclude.end())
        selectable += a.per_case > 0 ? std::min(a.per_case, r.slices[static_cast<std::size_t>(n)]) : r.slices[static_cast<std::size_t>(n)];
    QUARRY_USAGE_EXPECTS(k <= selectable, "-k ", k, ": only ", selectable, " ", unit, " can be selected (", N, " cases",
                         a.per_case > 0 ? ", at most " + std::to_string(a.per_case) + " each" : std::string(),
                         exclude.empty() ? "" : ", excluded cases left out", ")");
    std::vector<float> padded(static_cast<std::size_t>(N * S), -1.0f);
    for (std::size_t i = 0; i < r.score.size(); ++i) padded[static_cast<std::size_t>(r.case_of[i] * S + r.slice[i])] = r.score[i];
    sel = select_slices(padded, S, k, a.per_case, exclude);
    for (float x : sel.score)
      QUARRY_USAGE_EXPECTS(x >= 0.0f, "-k ", k, ": more ", unit, " than the cases have (the cases differ in size)");
  } else {
    DeviceSpec cpu;
    cpu.kind = DeviceKind::cpu;
    const Selection top = select_topk(r.score.data(), N, k, exclude, cpu);
    sel.case_index = top.index;
    sel.score = top.score;
    sel.slice.assign(top.index.size(), 0);
  }
  if (format.empty()) format = ends_with(output, ".json") ? "json" : "csv";
  std::string text;
  if (format == "json") {
    nlohmann::json j;
    j["source"] = input + " (" + acquisition + ", " + reduction_name(parse_reduction(a.reduce)) + ")";
    j["k"] = sel.size();
    nlohmann::json rows = nlohmann::json::array();
    for (std::int64_t i = 0; i < sel.size(); ++i) {
      nlohmann::json row = {{"rank", i + 1}, {"index", sel.case_index[i]}, {"case", s.files.case_name(sel.case_index[i])}};
      if (a.slices >= 0) row["slice"] = sel.slice[i];
      if (!patch.empty()) {
        row["patch"] = sel.slice[i];
        row["start"] = patch_origin(r.grids[static_cast<std::size_t>(sel.case_index[i])], patch, sel.slice[i]);
      }
      row["score"] = sel.score[i];
      rows.push_back(row);
    }
    j["selected"] = rows;
    text = json_text(j);
  } else {
    text = "rank,index,case," + (a.regional() ? region_header(a, rank) : std::string()) + "score\n";
    for (std::int64_t i = 0; i < sel.size(); ++i) {
      text += fmt::format("{},{},{},", i + 1, sel.case_index[i], csv_field(s.files.case_name(sel.case_index[i])));
      if (a.regional()) text += region_fields(a, r, sel.case_index[i], sel.slice[i], patch);
      text += fmt::format("{:.9g}\n", sel.score[i]);
    }
  }
  if (output.empty()) {
    QUARRY_EXPECTS(std::fwrite(text.data(), 1, text.size(), stdout) == text.size(), "cannot write standard output");
  } else {
    write_file_atomic(output, {text});
  }
}

}  // namespace quarry::cli
