// The quarry subcommands: score, select, info, generate, demo (train, infer, simulate: loop_commands.cpp).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli.hpp"
#include "quarry/acquisition.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/diversity.hpp"
#include "quarry/select.hpp"
#include "quarry/synthetic.hpp"

namespace quarry::cli {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string acquisition_help() {
  std::string s = "Acquisition score: ";
  for (Acquisition a : all_acquisitions()) {
    s += acquisition_name(a);
    s += a == all_acquisitions().back() ? "" : ", ";
  }
  return s + " (committee scores need an [M,N,C] input; egl and badge-norm need --embeddings)";
}

void set_threads(int threads) {
  if (threads > 0) omp_set_num_threads(threads);
}

// Options shared by `score` and `select --input`.
struct ScoreArgs {
  std::string input, embeddings, acquisition = "entropy", device = "auto";
  bool logits = false;
  double tolerance = -1.0;

  void add(CLI::App* cmd, bool input_required) {
    auto* in = cmd->add_option("--input", input,
                               "Model outputs: probabilities or logits, [N,C] or committee [M,N,C], "
                               "float32/float16/float64 .npy (or FILE.npz:member)");
    if (input_required) in->required();
    cmd->add_flag("--logits", logits, "The input holds logits (softmax taken in the same pass)");
    cmd->add_option("--acquisition,-a", acquisition, acquisition_help());
    cmd->add_option("--embeddings", embeddings, "Penultimate-layer embeddings [N,D] (egl, badge-norm)");
    cmd->add_option("--device", device, "auto, cpu, cuda or cuda:N");
    cmd->add_option("--tolerance", tolerance,
                    "Allowed |row sum - 1| of probabilities (negative: 1e-3, or 1e-2 for float16)");
  }

  // The validated inputs of a scoring call.
  struct ScoreInput {  // what load() read and parsed
    Acquisition acquisition = Acquisition::entropy;
    ScoreOptions options;
    Array input, embeddings;
  };
  ScoreInput load() const {
    ScoreInput in;
    in.acquisition = parse_acquisition(acquisition);
    in.options.logits = logits;
    in.options.sum_tolerance = tolerance;
    in.options.device = parse_device(device);
    in.options.input_name = input;
    in.options.embeddings_name = embeddings;
    in.input = read_array(input);
    if (!embeddings.empty()) in.embeddings = read_array(embeddings);
    QUARRY_EXPECTS(embeddings.empty() || acquisition_needs_embeddings(in.acquisition),
                   "--embeddings is only used by egl and badge-norm, not by ", acquisition);
    return in;
  }

  // Scores the pool.
  std::vector<float> run(bool verbose) const {
    const auto t0 = Clock::now();
    const ScoreInput in = load();
    const ArrayView ev = in.embeddings.view();
    std::vector<float> s = score(in.input.view(), in.acquisition, in.options,
                                 in.embeddings.data() ? &ev : nullptr);
    if (verbose)
      std::fprintf(stderr, "scored %zu samples (%s, %s %s) by %s on %s in %.3f s\n", s.size(),
                   shape_string(in.input.shape()).c_str(), dtype_name(in.input.dtype()),
                   logits ? "logits" : "probabilities", acquisition.c_str(),
                   device_string(resolve_device(in.options.device)).c_str(), seconds_since(t0));
    return s;
  }
};

// ------------------------------------------------------------------ score
void add_score(CLI::App& app) {
  auto* cmd = app.add_subcommand("score", "Score every sample of a pool; writes N float32 scores as .npy");
  auto args = std::make_shared<ScoreArgs>();
  auto output = std::make_shared<std::string>();
  auto threads = std::make_shared<int>(0);
  auto verbose = std::make_shared<bool>(false);
  args->add(cmd, true);
  cmd->add_option("--output,-o", *output, "Where to write the scores (.npy, float32 [N])")->required();
  cmd->add_option("--threads", *threads, "CPU threads (0: all cores)");
  cmd->add_flag("--verbose,-v", *verbose, "Print timings to stderr");
  cmd->callback([=] {
    set_threads(*threads);
    const std::vector<float> s = args->run(*verbose);
    write_npy(*output, ArrayView{s.data(), DType::f32, {static_cast<std::int64_t>(s.size())}});
  });
}

// ------------------------------------------------------------------ select
// Scores to select from: float32 scores are used where they lie (the memory-mapped file, or
// the vector scoring produced); other dtypes are converted once.
struct Scores {
  Array file;
  std::vector<float> owned;
  const float* data = nullptr;
  std::int64_t n = 0;
};

Scores load_scores(const std::string& path) {
  Scores sc;
  sc.file = read_array(path);
  const Array& a = sc.file;
  QUARRY_EXPECTS(a.rank() == 1 || (a.rank() == 2 && a.shape()[1] == 1), path,
                 ": expected scores of shape [N], got ", shape_string(a.shape()));
  QUARRY_EXPECTS(a.dtype() == DType::f32 || a.dtype() == DType::f64 || a.dtype() == DType::f16,
                 path, ": expected float scores, got ", dtype_name(a.dtype()));
  sc.n = a.shape()[0];
  if (a.dtype() == DType::f32) {
    sc.data = a.as<float>();
    return sc;
  }
  sc.owned.resize(static_cast<std::size_t>(sc.n));
  for (std::size_t i = 0; i < sc.owned.size(); ++i)
    sc.owned[i] = a.dtype() == DType::f64 ? static_cast<float>(a.as<double>()[i])
                                          : detail::half_to_float(a.as<std::uint16_t>()[i]);
  sc.data = sc.owned.data();
  return sc;
}


// Writes a selection as CSV or JSON (by --format, else by the output's extension) to the
// output file, atomically, or to standard output.
void write_selection(const Selection& sel, const std::string& strategy, const std::string& source,
                     const std::string& output, std::string format) {
  if (format.empty()) format = output.size() >= 5 && output.substr(output.size() - 5) == ".json" ? "json" : "csv";
  const std::string text = format == "json" ? selection_json(sel, strategy, source) : selection_csv(sel);
  if (output.empty()) {
    QUARRY_EXPECTS(std::fwrite(text.data(), 1, text.size(), stdout) == text.size(),
                   "cannot write standard output");
  } else {
    write_file_atomic(output, {text});
  }
}

// Progress of a long diversity selection on stderr: nothing during the first second, then at
// most one line a second.
DiversityProgressFn progress_printer(const std::string& strategy) {
  auto start = std::make_shared<Clock::time_point>(Clock::now());
  auto last = std::make_shared<double>(0.0);
  return [=](const DiversityProgress& p) {
    const double t = seconds_since(*start);
    if (t < 1.0 || t - *last < 1.0) return;
    *last = t;
    std::fprintf(stderr, "quarry: %s: %s %lld/%lld (%.1f s)\n", strategy.c_str(), p.phase,
                 static_cast<long long>(p.done), static_cast<long long>(p.total), t);
  };
}

struct SelectArgs {
  ScoreArgs score;
  std::string scores, exclude, strategy = "topk", output, format;
  std::int64_t k = -1, candidates = 0, clusters = 0;
  double beta = 1.0;
  std::uint64_t seed = 0;
  int threads = 0;
  bool verbose = false;
};

// select --strategy badge|kcenter|cluster-margin|uncertain-kcenter: over --embeddings, with the
// model outputs of --input where the strategy reads them.
Selection select_diverse_cli(const SelectArgs& a, const std::vector<std::int64_t>& exclude) {
  const DiversityStrategy strategy = parse_diversity_strategy(a.strategy);
  if (a.score.embeddings.empty())
    throw CLI::ValidationError("--strategy " + a.strategy + " needs --embeddings H.npy ([N, D])");
  if (!a.scores.empty())
    throw CLI::ValidationError("--strategy " + a.strategy + " selects from --input and --embeddings, not --scores");
  if (diversity_needs_outputs(strategy) && a.score.input.empty())
    throw CLI::ValidationError("--strategy " + a.strategy + " needs the model outputs: --input P.npy");
  DiversityOptions o;
  o.k = a.k;
  o.exclude = exclude;
  o.candidates = a.candidates;
  o.clusters = a.clusters;
  o.acquisition = parse_acquisition(a.score.acquisition);
  o.seed = a.seed;
  o.logits = a.score.logits;
  o.sum_tolerance = a.score.tolerance;
  o.device = parse_device(a.score.device);
  o.input_name = a.score.input;
  o.embeddings_name = a.score.embeddings;
  o.progress = progress_printer(a.strategy);
  const Array emb = read_array(a.score.embeddings);
  Array outputs;
  if (!a.score.input.empty()) outputs = read_array(a.score.input);
  const ArrayView ov = outputs.view();
  return select_diverse(strategy, emb.view(), a.score.input.empty() ? nullptr : &ov, o);
}

void add_select(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "select", "Select the k samples to label: from --scores, or score --input and select in one call");
  auto a = std::make_shared<SelectArgs>();
  auto* sc = cmd->add_option("--scores", a->scores, "Scores [N] (.npy) from `quarry score`");
  a->score.add(cmd, false);
  cmd->get_option("--input")->excludes(sc);
  cmd->add_option("-k", a->k, "Number of samples to select")->required()->check(CLI::NonNegativeNumber);
  cmd->add_option("--exclude", a->exclude,
                  "Already labeled indices, never selected: integer .npy, or text/CSV with one index per line");
  cmd->add_option("--strategy", a->strategy,
                  "topk (the k highest scores), power (sample k with P ~ score^beta), or a diversity "
                  "strategy over --embeddings: badge, kcenter, cluster-margin, uncertain-kcenter")
      ->check(CLI::IsMember({"topk", "power", "badge", "kcenter", "cluster-margin", "uncertain-kcenter"}));
  cmd->add_option("--beta", a->beta, "Exponent of power sampling");
  cmd->add_option("--seed", a->seed, "Seed of power sampling, badge and cluster-margin (same seed, same selection)");
  cmd->add_option("--candidates", a->candidates,
                  "cluster-margin, uncertain-kcenter: choose among this many most uncertain samples (0: 10 k)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--clusters", a->clusters, "cluster-margin: k-means clusters (0: k)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--output,-o", a->output, "Where to write the selection (standard output if absent)");
  cmd->add_option("--format", a->format, "csv (rank,index,score) or json; default: from the output's extension")
      ->check(CLI::IsMember({"csv", "json"}));
  cmd->add_option("--threads", a->threads, "CPU threads (0: all cores)");
  cmd->add_flag("--verbose,-v", a->verbose, "Print timings to stderr");
  cmd->callback([a] {
    const bool diverse = a->strategy != "topk" && a->strategy != "power";
    if (!diverse && a->scores.empty() && a->score.input.empty())  // a usage error: exit 2
      throw CLI::ValidationError("select needs --scores FILE, or --input FILE with --acquisition");
    set_threads(a->threads);
    const std::vector<std::int64_t> excl =
        a->exclude.empty() ? std::vector<std::int64_t>{} : read_index_list(a->exclude);
    const bool power = a->strategy == "power";
    const auto t0 = Clock::now();
    if (diverse) {
      const Selection sel = select_diverse_cli(*a, excl);
      if (a->verbose)
        std::fprintf(stderr, "selected %lld (%s) in %.3f s\n", static_cast<long long>(sel.size()),
                     a->strategy.c_str(), seconds_since(t0));
      write_selection(sel, a->strategy, a->score.embeddings, a->output, a->format);
      return;
    }
    const bool from_scores = !a->scores.empty();
    Scores s;
    ScoreArgs::ScoreInput in;
    if (from_scores) {
      s = load_scores(a->scores);
    } else {
      in = a->score.load();
    }
    const std::int64_t n = from_scores ? s.n : pool_size(in.input.view());
    Selection sel;
    try {
      if (from_scores) {
        const DeviceSpec device = parse_device(a->score.device);
        sel = power ? select_power(s.data, n, a->k, a->beta, a->seed, excl, device)
                    : select_topk(s.data, n, a->k, excl, device);
      } else {  // score and select in one call: on CUDA the scores stay on the device
        SelectOptions so;
        so.k = a->k;
        so.power = power;
        so.beta = a->beta;
        so.seed = a->seed;
        so.exclude = excl;
        const ArrayView ev = in.embeddings.view();
        sel = score_and_select(in.input.view(), in.acquisition, in.options, so,
                               in.embeddings.data() ? &ev : nullptr);
      }
    } catch (const Error& e) {  // name the files the selection came from
      const std::string what = e.what();
      const std::string from = from_scores ? a->scores : a->score.input;
      if (what.compare(0, from.size(), from) == 0) throw;  // the message names the file already
      QUARRY_FAIL(from, a->exclude.empty() ? "" : " with --exclude " + a->exclude, ": ", what);
    }
    if (a->verbose)
      std::fprintf(stderr, "selected %lld of %lld (%s) in %.3f s\n", static_cast<long long>(sel.size()),
                   static_cast<long long>(n), a->strategy.c_str(), seconds_since(t0));
    const std::string source = a->scores.empty() ? a->score.input + " (" + a->score.acquisition + ")" : a->scores;
    write_selection(sel, a->strategy, source, a->output, a->format);
  });
}

// ------------------------------------------------------------------ info
template <class T>
void summarise(const T* p, std::int64_t n, double* mn, double* mx, double* mean, std::int64_t* nonfinite) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo, sum = 0;
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(p[i]);
    if (!std::isfinite(x)) {
      ++bad;
      continue;
    }
    lo = std::min(lo, x);
    hi = std::max(hi, x);
    sum += x;
  }
  *mn = lo;
  *mx = hi;
  *mean = n - bad > 0 ? sum / static_cast<double>(n - bad) : 0.0;
  *nonfinite = bad;
}

std::string describe(const Array& a) {
  std::string s = fmt::format("  shape {}  dtype {}  {} bytes\n", shape_string(a.shape()),
                              dtype_name(a.dtype()), a.nbytes());
  const std::int64_t n = a.numel();
  if (n == 0) return s;
  double mn = 0, mx = 0, mean = 0;
  std::int64_t bad = 0;
  switch (a.dtype()) {
    case DType::f32: summarise(a.as<float>(), n, &mn, &mx, &mean, &bad); break;
    case DType::f64: summarise(a.as<double>(), n, &mn, &mx, &mean, &bad); break;
    case DType::u8: summarise(a.as<std::uint8_t>(), n, &mn, &mx, &mean, &bad); break;
    case DType::i8: summarise(a.as<std::int8_t>(), n, &mn, &mx, &mean, &bad); break;
    case DType::i16: summarise(a.as<std::int16_t>(), n, &mn, &mx, &mean, &bad); break;
    case DType::i32: summarise(a.as<std::int32_t>(), n, &mn, &mx, &mean, &bad); break;
    case DType::i64: summarise(a.as<std::int64_t>(), n, &mn, &mx, &mean, &bad); break;
    case DType::f16:
    case DType::bf16: {
      std::vector<float> f(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i)
        f[i] = a.dtype() == DType::f16 ? detail::half_to_float(a.as<std::uint16_t>()[i])
                                       : detail::bfloat16_to_float(a.as<std::uint16_t>()[i]);
      summarise(f.data(), n, &mn, &mx, &mean, &bad);
      break;
    }
  }
  s += fmt::format("  min {:.6g}  max {:.6g}  mean {:.6g}", mn, mx, mean);
  if (bad) s += fmt::format("  non-finite {}", bad);
  s += "\n";
  // Probability rows? Report how many sum to 1.
  if (a.rank() >= 2 && dtype_is_float(a.dtype()) && a.dtype() != DType::bf16) {
    const std::int64_t c = a.shape().back(), rows = n / c;
    std::int64_t unit = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (std::int64_t j = 0; j < c; ++j) {
        const std::int64_t i = r * c + j;
        sum += a.dtype() == DType::f32   ? a.as<float>()[i]
               : a.dtype() == DType::f64 ? a.as<double>()[i]
                                         : detail::half_to_float(a.as<std::uint16_t>()[i]);
      }
      unit += std::fabs(sum - 1.0) <= 1e-2;
    }
    s += fmt::format("  rows of the last axis summing to 1: {} of {}{}\n", unit, rows,
                     unit == rows ? " (probabilities)" : unit == 0 ? " (logits or features?)" : "");
  }
  return s;
}

void add_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Shape, dtype and a summary of NPY, NPZ and IDX files");
  auto files = std::make_shared<std::vector<std::string>>();
  cmd->add_option("files", *files, "Files (.npy, .npz, .npz:member, IDX or IDX.gz)")->required();
  cmd->callback([files] {
    for (const std::string& f : *files) {
      // FILE.npz:member names a member; the kind is that of the archive.
      const std::size_t colon = f.rfind(".npz:");
      const bool member = colon != std::string::npos && std::filesystem::is_regular_file(f.substr(0, colon + 4));
      const FileKind kind = detect_file_kind(member ? f.substr(0, colon + 4) : f);
      if (kind == FileKind::npz && !member) {
        std::printf("%s: npz archive\n", f.c_str());
        for (const std::string& m : npz_members(f)) {
          const Array a = read_npz_member(f, m);
          std::printf("%s\n%s", m.c_str(), describe(a).c_str());
        }
        continue;
      }
      const Array a = read_array(f);
      const char* k = kind == FileKind::npy ? "npy" : kind == FileKind::idx ? "idx" : kind == FileKind::idx_gz ? "idx (gzip)" : "npz member";
      std::printf("%s: %s\n%s", f.c_str(), k, describe(a).c_str());
    }
  });
}

// ------------------------------------------------------------------ generate
void add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Write a synthetic pool of model outputs (and embeddings)");
  struct Args {
    SyntheticSpec spec;
    std::string dtype = "float32", output, embeddings;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("-n", a->spec.n, "Samples")->check(CLI::NonNegativeNumber);
  cmd->add_option("-c", a->spec.c, "Classes")->check(CLI::PositiveNumber);
  cmd->add_option("-m", a->spec.m, "Committee members (0: an [N,C] output)")->check(CLI::NonNegativeNumber);
  cmd->add_option("-d", a->spec.d, "Embedding width (with --embeddings)");
  cmd->add_flag("--logits", a->spec.logits, "Write logits instead of probabilities");
  cmd->add_option("--dtype", a->dtype, "float32 or float16")->check(CLI::IsMember({"float32", "float16"}));
  cmd->add_option("--seed", a->spec.seed, "Seed");
  cmd->add_option("--output,-o", a->output, "Model outputs (.npy)")->required();
  cmd->add_option("--embeddings", a->embeddings, "Also write embeddings [N,D] (.npy) here");
  cmd->callback([a] {
    a->spec.dtype = a->dtype == "float16" ? DType::f16 : DType::f32;
    write_npy(a->output, synthetic_outputs(a->spec).view());
    if (!a->embeddings.empty()) {
      if (a->spec.d <= 0) a->spec.d = 64;
      write_npy(a->embeddings, synthetic_embeddings(a->spec).view());
    }
  });
}

// ------------------------------------------------------------------ demo
void add_demo(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "demo", "The main job on a built-in default: generate a synthetic pool, score it, select a batch");
  struct Args {
    std::int64_t n = 1000000, c = 10, k = 100;
    std::string acquisition = "entropy", out = "quarry-demo";
    std::uint64_t seed = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("-n", a->n, "Pool size")->check(CLI::PositiveNumber);
  cmd->add_option("-c", a->c, "Classes")->check(CLI::PositiveNumber);
  cmd->add_option("-k", a->k, "Batch size")->check(CLI::NonNegativeNumber);
  cmd->add_option("--acquisition,-a", a->acquisition, "Acquisition score (single-model)");
  cmd->add_option("--out", a->out, "Folder for pool.npy, scores.npy and batch.csv");
  cmd->add_option("--seed", a->seed, "Seed of the synthetic pool");
  cmd->callback([a] {
    const Acquisition acq = parse_acquisition(a->acquisition);
    QUARRY_EXPECTS(!acquisition_needs_committee(acq) && !acquisition_needs_embeddings(acq),
                   "demo runs single-model scores without embeddings; got ", a->acquisition);
    std::filesystem::create_directories(a->out);
    const std::string pool = a->out + "/pool.npy", scores = a->out + "/scores.npy",
                      batch = a->out + "/batch.csv";
    SyntheticSpec spec;
    spec.n = a->n;
    spec.c = a->c;
    spec.seed = a->seed;
    auto t0 = Clock::now();
    write_npy(pool, synthetic_outputs(spec).view());
    const double t_gen = seconds_since(t0);

    t0 = Clock::now();
    const Array in = read_npy(pool);  // memory-mapped, as a user's pool would be
    std::vector<float> s = score(in.view(), acq, ScoreOptions{});
    const double t_score = seconds_since(t0);
    write_npy(scores, ArrayView{s.data(), DType::f32, {a->n}});

    t0 = Clock::now();
    const Selection sel = select_topk(s.data(), a->n, a->k);
    const double t_select = seconds_since(t0);
    write_file_atomic(batch, {selection_csv(sel)});

    const double gb = static_cast<double>(in.nbytes()) / 1e9;
    std::printf("quarry demo: synthetic pool of %lld samples x %lld classes (float32, %.2f GB)\n",
                static_cast<long long>(a->n), static_cast<long long>(a->c), gb);
    std::printf("  generate  %8.3f s  -> %s\n", t_gen, pool.c_str());
    std::printf("  score     %8.3f s  (%s, %.1f M samples/s, %.2f GB/s) -> %s\n", t_score,
                a->acquisition.c_str(), a->n / t_score / 1e6, gb / t_score, scores.c_str());
    std::printf("  select    %8.3f s  (top %lld) -> %s\n", t_select, static_cast<long long>(a->k), batch.c_str());
    std::printf("  most informative samples:\n    rank      index      score   probabilities\n");
    for (std::int64_t r = 0; r < std::min<std::int64_t>(5, sel.size()); ++r) {
      const float* p = in.as<float>() + sel.index[r] * a->c;
      std::string probs;
      for (std::int64_t j = 0; j < std::min<std::int64_t>(a->c, 5); ++j) probs += fmt::format("{:.2f} ", p[j]);
      if (a->c > 5) probs += "...";
      std::printf("    %4lld %10lld %10.4f   %s\n", static_cast<long long>(r + 1),
                  static_cast<long long>(sel.index[r]), sel.score[r], probs.c_str());
    }
  });
}

}  // namespace

void add_commands(CLI::App& app) {
  add_score(app);
  add_select(app);
  add_info(app);
  add_generate(app);
  add_demo(app);
  add_loop_commands(app);
  add_project_commands(app);
}

}  // namespace quarry::cli
