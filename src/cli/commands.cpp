// The quarry subcommands: score, select, info, generate, demo (train, infer, simulate: loop_commands.cpp).
#include <omp.h>
#include <sys/stat.h>

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
#include "dense_cli.hpp"
#include "instance_cli.hpp"
#include "quarry/acquisition.hpp"
#include "quarry/batchbald.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/diversity.hpp"
#include "quarry/dist.hpp"
#include "quarry/stream.hpp"
#include "quarry/select.hpp"
#include "quarry/synthetic.hpp"
#include "io/files.hpp"

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
  std::string input, embeddings, acquisition = "entropy", device = "auto", budget;
  bool logits = false;
  double tolerance = -1.0;

  void add(CLI::App* cmd, bool input_required) {
    auto* in = cmd->add_option("--input", input,
                               "Model outputs: probabilities or logits, [N,C] or committee [M,N,C], "
                               "float32/float16/float64 .npy (or FILE.npz:member); shards: 'pool-*.npy' "
                               "or a comma-separated list, concatenated along N in name order");
    if (input_required) in->required();
    cmd->add_flag("--logits", logits, "The input holds logits (softmax taken in the same pass)");
    cmd->add_option("--acquisition,-a", acquisition, acquisition_help());
    cmd->add_option("--embeddings", embeddings,
                    "Penultimate-layer embeddings [N,D] (egl, badge-norm, diversity); shards as --input");
    cmd->add_option("--device", device,
                    "auto, cpu, cuda or cuda:N (under MPI, cuda picks the GPU by the rank on its node)");
    cmd->add_option("--tolerance", tolerance,
                    "Allowed |row sum - 1| of probabilities (negative: 1e-3, or 1e-2 for float16)");
    cmd->add_option("--memory-budget", budget,
                    "Bytes the streamed pool may occupy at once, e.g. 512M or 4G (default: half the "
                    "free GPU memory, or a quarter of the available host memory); larger pools are "
                    "read in chunks with identical results");
  }

  ScoreOptions options() const {
    ScoreOptions o;
    o.logits = logits;
    o.sum_tolerance = tolerance;
    o.device = parse_device(device);
    o.input_name = input;
    o.embeddings_name = embeddings;
    return o;
  }
  StreamOptions stream() const {
    StreamOptions s;
    if (!budget.empty()) s.memory_budget = parse_bytes(budget);
    return s;
  }
};

void print_stream(const Cluster& cluster, const char* what, const StreamStats& st, std::int64_t rows,
                  double seconds) {
  std::fprintf(stderr, "quarry: rank %d of %d: %s %lld rows in %lld chunk(s) of up to %lld rows (budget %lld bytes) in %.3f s\n",
               cluster.rank(), cluster.size(), what, static_cast<long long>(rows), static_cast<long long>(st.chunks),
               static_cast<long long>(st.rows_per_chunk), static_cast<long long>(st.budget), seconds);
}

// ------------------------------------------------------------------ score
// One process: the scores stream into the output file chunk by chunk. Under MPI each rank scores
// its shard; rank 0 writes its own as it goes, then the other ranks' in rank order.
void add_score(CLI::App& app) {
  auto* cmd = app.add_subcommand("score", "Score every sample of a pool; writes N float32 scores as .npy");
  auto args = std::make_shared<ScoreArgs>();
  auto output = std::make_shared<std::string>();
  auto threads = std::make_shared<int>(0);
  auto verbose = std::make_shared<bool>(false);
  args->add(cmd, true);
  cmd->add_option("--output,-o", *output, "Where to write the scores (.npy, float32 [N]; dense outputs: or .csv)")
      ->required();
  cmd->add_option("--threads", *threads, "CPU threads (0: all cores)");
  cmd->add_flag("--verbose,-v", *verbose, "Print timings to stderr");
  auto dense = std::make_shared<DenseArgs>();
  dense->add(cmd, false);
  auto inst = std::make_shared<InstanceArgs>();
  inst->add(cmd);
  cmd->callback([=] {
    std::vector<Named> ins = {{"--input", args->input}, {"--embeddings", args->embeddings}};
    for (const Named& n : dense->inputs()) ins.push_back(n);
    check_outputs({{"--output", *output}, {"--voxel-map", dense->voxel_map}}, ins);
    set_threads(*threads);
    if (inst->active()) {  // detections, multi-label outputs (instance_commands.cpp)
      InstanceCall c;
      c.input = args->input, c.acquisition = args->acquisition, c.device = args->device, c.budget = args->budget;
      c.embeddings = args->embeddings, c.output = *output, c.logits = args->logits, c.verbose = *verbose;
      c.tolerance = args->tolerance;
      return instance_score(*inst, *dense, c);
    }
    inst->expect_inactive();
    if (dense->active()) {
      QUARRY_USAGE_EXPECTS(args->embeddings.empty(), "--embeddings: dense outputs are scored without embeddings");
      return dense_score(*dense, args->input, args->acquisition, args->logits, args->tolerance, args->device,
                         args->budget, *output, *verbose);
    }
    QUARRY_USAGE_EXPECTS(dense->ignore.empty() && dense->class_weights.empty() && dense->voxel_map.empty() &&
                             !dense->channels_last && !dense->committee,
                         "--ignore-mask, --class-weights, --voxel-map, --channels-last and --committee are options "
                         "of dense outputs: give --reduce (or --slices)");
    Cluster cluster;
    PoolFiles input, emb;
    Acquisition acq = Acquisition::entropy;
    ScoreOptions options;
    std::unique_ptr<AtomicFile> file;
    const auto start = Clock::now();
    cluster.run([&] {
      acq = parse_acquisition(args->acquisition);
      options = args->options();
      options.device = rank_device(cluster, args->device);
      input = PoolFiles::open(args->input);
      if (!args->embeddings.empty()) emb = PoolFiles::open(args->embeddings);
      if (cluster.root()) {
        file = std::make_unique<AtomicFile>(*output);
        file->write(npy_header(DType::f32, {input.n()}, *output));
      }
    });
    const auto t0 = Clock::now();
    StreamStats st;
    distributed_score(cluster, input, acq, options, emb.empty() ? nullptr : &emb, args->stream(),
                      [&](std::int64_t, const float* s, std::int64_t count) {
                        file->write({reinterpret_cast<const char*>(s), static_cast<std::size_t>(count) * sizeof(float)});
                      }, &st);
    const auto rows = cluster.shard(input.n());
    if (*verbose) print_stream(cluster, "scored", st, rows.second - rows.first, seconds_since(t0));
    cluster.run([&] {
      if (cluster.root()) file->commit();
    });
    if (*verbose && cluster.root())
      std::fprintf(stderr, "quarry: score: %lld rows on %d rank(s) in %.3f s (files opened to output renamed)\n",
                   static_cast<long long>(input.n()), cluster.size(), seconds_since(start));
  });
}

// ------------------------------------------------------------------ select
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
ProgressFn progress_printer(const std::string& strategy) {
  auto start = std::make_shared<Clock::time_point>(Clock::now());
  auto last = std::make_shared<double>(0.0);
  return [=](const Progress& p) {
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
  std::int64_t k = -1, candidates = 0, clusters = 0, samples = 512;
  double restart = 0.5;
  int neighbours = 20;
  double beta = 1.0, radius = 0, purity = 0.95;
  std::uint64_t seed = 0;
  int threads = 0;
  bool verbose = false;
};

// select --strategy badge|kcenter|cluster-margin|uncertain-kcenter: over --embeddings, with the
// model outputs of --input where the strategy reads them. A pool within the budget gets
// select_diverse's exact answer; a larger one, or an MPI run, the two-stage selection
// (candidates per chunk and per rank, the final selection among them on rank 0).
Selection select_diverse_cli(Cluster& cluster, const SelectArgs& a, const std::vector<std::int64_t>& exclude) {
  const DiversityStrategy strategy = parse_diversity_strategy(a.strategy);
  if (a.score.embeddings.empty())
    throw CLI::ValidationError("--strategy " + a.strategy + " needs --embeddings H.npy ([N, D])");
  if (!a.scores.empty())
    throw CLI::ValidationError("--strategy " + a.strategy + " selects from --input and --embeddings, not --scores");
  if (diversity_needs_outputs(strategy) && a.score.input.empty())
    throw CLI::ValidationError("--strategy " + a.strategy + " needs the model outputs: --input P.npy");
  DiversityOptions o;
  PoolFiles emb, outputs;
  std::pair<std::int64_t, std::int64_t> rows;
  cluster.run([&] {
    o.k = a.k;
    o.exclude = exclude;
    o.candidates = a.candidates;
    o.clusters = a.clusters;
    o.neighbours = a.neighbours;
    o.radius = a.radius;
    o.purity = a.purity;
    o.acquisition = parse_acquisition(a.score.acquisition);
    o.seed = a.seed;
    o.logits = a.score.logits;
    o.sum_tolerance = a.score.tolerance;
    o.device = rank_device(cluster, a.score.device);
    o.input_name = a.score.input;
    o.embeddings_name = a.score.embeddings;
    o.progress = progress_printer(a.strategy);
    emb = PoolFiles::open(a.score.embeddings);
    if (!a.score.input.empty()) outputs = PoolFiles::open(a.score.input);
    rows = cluster.shard(emb.n());
  });
  const PoolFiles* out = a.score.input.empty() ? nullptr : &outputs;
  StreamStats st;
  const Selection sel = distributed_select_diverse(cluster, strategy, emb, out, o, a.score.stream(), &st);
  if (a.verbose) print_stream(cluster, "candidates from", st, rows.second - rows.first, 0.0);
  return sel;
}

void add_select(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "select", "Select the k samples to label: from --scores, or score --input and select in one call");
  auto a = std::make_shared<SelectArgs>();
  auto* sc = cmd->add_option("--scores", a->scores, "Scores [N] (.npy) from `quarry score`; shards as --input");
  a->score.add(cmd, false);
  cmd->get_option("--input")->excludes(sc);
  cmd->add_option("-k", a->k, "Number of samples to select")->required()->check(non_negative());
  cmd->add_option("--exclude", a->exclude,
                  "Already labeled indices, never selected: integer .npy, or text/CSV with one index per line");
  cmd->add_option("--strategy", a->strategy,
                  "topk (the k highest scores), power (sample k with P ~ score^beta), or a diversity "
                  "strategy over --embeddings: badge, kcenter, cluster-margin, uncertain-kcenter, typiclust, "
                  "probcover; or batchbald over a committee --input [M, N, C]")
      ->check(CLI::IsMember({"topk", "power", "badge", "kcenter", "cluster-margin", "uncertain-kcenter", "typiclust",
                             "probcover", "batchbald"}));
  auto* samples = cmd->add_option("--samples", a->samples,
                  "batchbald: label configurations of the batch kept (exact up to this many, sampled beyond)")
      ->check(positive());
  auto* restart = cmd->add_option("--restart", a->restart,
                  "batchbald: a new joint batch starts when the best gain falls below this share of the best "
                  "BALD score left (0: one joint batch, as in the paper; 1: BALD's order)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--beta", a->beta, "Exponent of power sampling");
  cmd->add_option("--seed", a->seed, "Seed of power sampling, badge and cluster-margin (same seed, same selection)");
  cmd->add_option("--candidates", a->candidates,
                  "cluster-margin, uncertain-kcenter: choose among this many most uncertain samples (0: 10 k)")
      ->check(non_negative());
  cmd->add_option("--clusters", a->clusters,
                  "k-means clusters: cluster-margin (0: k), typiclust (0: excluded + k), probcover's radius (0: 10)")
      ->check(non_negative());
  cmd->add_option("--neighbours", a->neighbours, "typiclust: nearest neighbours of the typicality")->check(positive());
  cmd->add_option("--radius", a->radius, "probcover: the balls' radius (0: chosen from --purity)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--purity", a->purity, "probcover: share of single-cluster balls the chosen radius keeps")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--output,-o", a->output, "Where to write the selection (standard output if absent)");
  cmd->add_option("--format", a->format, "csv (rank,index,score) or json; default: from the output's extension")
      ->check(CLI::IsMember({"csv", "json"}));
  cmd->add_option("--threads", a->threads, "CPU threads (0: all cores)");
  cmd->add_flag("--verbose,-v", a->verbose, "Print timings to stderr");
  auto dense = std::make_shared<DenseArgs>();
  dense->add(cmd, true);
  auto inst = std::make_shared<InstanceArgs>();
  inst->add(cmd);
  cmd->callback([a, dense, inst, samples, restart] {
    QUARRY_USAGE_EXPECTS(a->strategy == "batchbald" || (samples->count() == 0 && restart->count() == 0),
                         "--samples and --restart are options of --strategy batchbald, not ", a->strategy);
    if (inst->active()) {  // detections, multi-label outputs (instance_commands.cpp)
      check_outputs({{"--output", a->output}}, {{"--input", a->score.input}, {"--exclude", a->exclude}});
      set_threads(a->threads);
      InstanceCall c;
      c.input = a->score.input, c.acquisition = a->score.acquisition, c.device = a->score.device;
      c.budget = a->score.budget, c.embeddings = a->score.embeddings, c.scores = a->scores, c.strategy = a->strategy;
      c.exclude = a->exclude, c.output = a->output, c.format = a->format, c.logits = a->score.logits;
      c.verbose = a->verbose, c.tolerance = a->score.tolerance, c.k = a->k;
      return instance_select(*inst, *dense, c);
    }
    inst->expect_inactive();
    if (dense->active()) {
      QUARRY_USAGE_EXPECTS(!a->score.input.empty(), "dense outputs are selected from --input (with --reduce)");
      QUARRY_USAGE_EXPECTS(a->strategy == "topk", "--strategy ", a->strategy,
                           ": dense outputs are selected by topk (per case, or per slice with --slices)");
      QUARRY_USAGE_EXPECTS(a->score.embeddings.empty(), "--embeddings: dense outputs are selected without embeddings");
      std::vector<Named> ins = {{"--input", a->score.input}, {"--exclude", a->exclude}};
      for (const Named& n : dense->inputs()) ins.push_back(n);
      check_outputs({{"--output", a->output}}, ins);
      set_threads(a->threads);
      const std::vector<std::int64_t> excl = a->exclude.empty() ? std::vector<std::int64_t>{} : read_index_list(a->exclude);
      return dense_select(*dense, a->score.input, a->score.acquisition, a->score.logits, a->score.tolerance,
                          a->score.device, a->score.budget, a->k, excl, a->output, a->format, a->verbose);
    }
    QUARRY_USAGE_EXPECTS(dense->ignore.empty() && dense->class_weights.empty() && !dense->channels_last &&
                             !dense->committee && dense->per_case == 0,
                         "--ignore-mask, --class-weights, --channels-last, --committee and --per-case are options "
                         "of dense outputs: give --reduce (or --slices)");
    if (a->strategy == "batchbald") {
      QUARRY_USAGE_EXPECTS(!a->score.input.empty() && a->scores.empty() && a->score.embeddings.empty(),
                           "--strategy batchbald selects from a committee's outputs: --input P.npy [M, N, C] ",
                           "(not --scores or --embeddings)");
      check_outputs({{"--output", a->output}}, {{"--input", a->score.input}, {"--exclude", a->exclude}});
      set_threads(a->threads);
      const auto t0 = Clock::now();
      const Array in = read_array(a->score.input);
      const std::vector<std::int64_t> excl = a->exclude.empty() ? std::vector<std::int64_t>{} : read_index_list(a->exclude);
      BatchBaldOptions o;
      o.samples = a->samples;
      o.restart = a->restart;
      o.seed = a->seed;
      o.logits = a->score.logits;
      o.sum_tolerance = a->score.tolerance;
      o.device = parse_device(a->score.device);
      o.input_name = a->score.input;
      const Selection sel = select_batchbald(in.view(), a->k, excl, o);
      check_mapped_inputs();
      if (a->verbose)
        std::fprintf(stderr, "quarry: batchbald: %lld of %lld in %.3f s\n", static_cast<long long>(sel.size()),
                     static_cast<long long>(in.rank() == 3 ? in.shape()[1] : 0), seconds_since(t0));
      return write_selection(sel, "batchbald", a->score.input, a->output, a->format);
    }
    const bool diverse = a->strategy != "topk" && a->strategy != "power";
    if (!diverse && a->scores.empty() && a->score.input.empty())  // a usage error: exit 2
      throw CLI::ValidationError("select needs --scores FILE, or --input FILE with --acquisition");
    check_outputs({{"--output", a->output}}, {{"--scores", a->scores},
                                              {"--input", a->score.input},
                                              {"--embeddings", a->score.embeddings},
                                              {"--exclude", a->exclude}});
    QUARRY_USAGE_EXPECTS(a->strategy != "power" || (a->beta > 0 && a->beta <= 1e30), "--beta ", a->beta,
                         ": power sampling needs an exponent > 0 (and at most 1e30)");
    set_threads(a->threads);
    Cluster cluster;
    std::vector<std::int64_t> excl;
    cluster.run([&] {
      if (!a->exclude.empty()) excl = read_index_list(a->exclude);
    });
    const auto t0 = Clock::now();
    if (diverse) {
      const Selection sel = select_diverse_cli(cluster, *a, excl);
      cluster.run([&] {
        if (!cluster.root()) return;
        if (a->verbose)
          std::fprintf(stderr, "selected %lld (%s) in %.3f s\n", static_cast<long long>(sel.size()),
                       a->strategy.c_str(), seconds_since(t0));
        write_selection(sel, a->strategy, a->score.embeddings, a->output, a->format);
      });
      return;
    }
    const bool from_scores = !a->scores.empty();
    SelectOptions so;
    so.k = a->k;
    so.power = a->strategy == "power";
    so.beta = a->beta;
    so.seed = a->seed;
    so.exclude = std::move(excl);
    PoolFiles pool, emb;
    Acquisition acq = Acquisition::entropy;
    ScoreOptions options;
    std::pair<std::int64_t, std::int64_t> rows;
    cluster.run([&] {
      options = a->score.options();
      options.device = rank_device(cluster, a->score.device);
      if (!from_scores) acq = parse_acquisition(a->score.acquisition);
      pool = PoolFiles::open(from_scores ? a->scores : a->score.input);
      if (!from_scores && !a->score.embeddings.empty()) emb = PoolFiles::open(a->score.embeddings);
      rows = cluster.shard(pool.n());
    });
    StreamStats st;
    const Selection sel =
        from_scores ? distributed_select_scores(cluster, pool, so, options.device, a->score.stream(), &st)
                    : distributed_score_select(cluster, pool, acq, options, so, emb.empty() ? nullptr : &emb,
                                               a->score.stream(), &st);
    if (a->verbose) print_stream(cluster, "selected from", st, rows.second - rows.first, seconds_since(t0));
    cluster.run([&] {
      if (!cluster.root()) return;
      const std::string source = from_scores ? a->scores : a->score.input + " (" + a->score.acquisition + ")";
      write_selection(sel, a->strategy, source, a->output, a->format);
      if (a->verbose)
        std::fprintf(stderr, "quarry: select: %lld rows on %d rank(s) in %.3f s (files opened to output written)\n",
                     static_cast<long long>(pool.n()), cluster.size(), seconds_since(t0));
    });
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
  auto* cmd = app.add_subcommand("info", "Shape, dtype and a summary of NPY, NPZ, IDX and NIfTI files (and their layout as dense outputs)");
  auto files = std::make_shared<std::vector<std::string>>();
  cmd->add_option("files", *files, "Files (.npy, .npz, .npz:member, IDX or IDX.gz, .nii or .nii.gz)")->required();
  cmd->callback([files] {
    for (const std::string& f : *files) {
      // FILE.npz:member names a member; the kind is that of the archive.
      const std::size_t colon = f.rfind(".npz:");
      const bool member = colon != std::string::npos && std::filesystem::is_regular_file(f.substr(0, colon + 4));
      const FileKind kind = detect_file_kind(member ? f.substr(0, colon + 4) : f);
      if (kind == FileKind::npz && !member) {
        std::printf("%s: npz archive\n", f.c_str());
        std::vector<std::int64_t> offsets, probs, objectness;  // shapes of detections' members
        for (const std::string& m : npz_members(f)) {
          const Array a = read_npz_member(f, m);
          std::printf("%s\n%s", m.c_str(), describe(a).c_str());
          if (m == "offsets" && !dtype_is_float(a.dtype())) offsets = a.shape();
          if (m == "probs") probs = a.shape();
          if (m == "objectness") objectness = a.shape();
        }
        if (offsets.size() == 1 && offsets[0] >= 1 && probs.size() == 2) {
          // The offsets as score --boxes reads them: 0 first, non-decreasing, B last.
          const Array o = read_npz_member(f, "offsets");
          std::int64_t prev = -1, bad = -1;
          for (std::int64_t i = 0; i < o.numel() && bad < 0; ++i) {
            std::int64_t v = 0;
            switch (o.dtype()) {
              case DType::u8: v = o.as<std::uint8_t>()[i]; break;
              case DType::i8: v = o.as<std::int8_t>()[i]; break;
              case DType::i16: v = o.as<std::int16_t>()[i]; break;
              case DType::i32: v = o.as<std::int32_t>()[i]; break;
              default: v = o.as<std::int64_t>()[i]; break;
            }
            const bool ok = i == 0 ? v == 0 : v >= prev && (i + 1 < o.numel() || v == probs[0]);
            if (!ok) bad = i;
            prev = v;
          }
          if (bad >= 0)
            std::printf("not valid detections (--boxes): offsets[%lld] = %lld (expected 0 first, non-decreasing, "
                        "%lld boxes last)\n", static_cast<long long>(bad), static_cast<long long>(prev),
                        static_cast<long long>(probs[0]));
          else
            std::printf("as detections (--boxes): %lld images, %lld boxes, %lld classes%s\n",
                        static_cast<long long>(offsets[0] - 1), static_cast<long long>(probs[0]),
                        static_cast<long long>(probs[1]), objectness.empty() ? "" : ", with objectness");
        }
        continue;
      }
      const Array a = read_array(f);
      const char* k = is_nifti_path(f)             ? "nifti (axes reversed: dims x, y, z, t become [t, z, y, x])"
                      : kind == FileKind::npy      ? "npy"
                      : kind == FileKind::idx      ? "idx"
                      : kind == FileKind::idx_gz   ? "idx (gzip)"
                                                   : "npz member";
      std::printf("%s: %s\n%s", f.c_str(), k, describe(a).c_str());
      if (is_nifti_path(f) && a.rank() >= 4) {
        // A probability map: the classes along the 4th NIfTI dimension (or the 5th).
        const auto& sh = a.shape();
        const bool vector5 = a.rank() == 5 && sh[1] == 1;
        std::vector<std::int64_t> grid(sh.begin() + (vector5 ? 2 : 1), sh.end());
        if (a.rank() == 4 || vector5)
          std::printf("  as a dense case (--reduce): %lld classes over a grid %s (z, y, x)\n",
                      static_cast<long long>(sh[0]), shape_string(grid).c_str());
      } else if (!is_nifti_path(f) && a.rank() >= 3) {
        const auto& sh = a.shape();
        std::vector<std::int64_t> grid(sh.begin() + 2, sh.end());
        std::printf("  as dense outputs (--reduce): %lld cases x %lld classes over a grid %s\n",
                    static_cast<long long>(sh[0]), static_cast<long long>(sh[1]), shape_string(grid).c_str());
        if (a.rank() >= 4)
          std::printf("  as a committee (--committee): %lld members x %lld cases x %lld classes over a grid %s\n",
                      static_cast<long long>(sh[0]), static_cast<long long>(sh[1]), static_cast<long long>(sh[2]),
                      shape_string(std::vector<std::int64_t>(sh.begin() + 3, sh.end())).c_str());
      }
    }
  });
}

// A synthetic array of rows x cols elements must fit in memory: checked before it is allocated.
void expect_memory_for(const char* what, std::int64_t rows, std::int64_t cols, std::int64_t elem) {
  std::int64_t bytes = 0;
  const bool overflow = __builtin_mul_overflow(rows, cols, &bytes) || __builtin_mul_overflow(bytes, elem, &bytes);
  const std::uint64_t available = available_memory();
  QUARRY_EXPECTS(!overflow && (available == 0 || static_cast<std::uint64_t>(bytes) <= available), what, ": ", rows,
                 " x ", cols, " values need ", overflow ? std::string("more than 2^63") : std::to_string(bytes),
                 " bytes of memory, and ", available, " are available");
}

// ------------------------------------------------------------------ generate
void add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Write a synthetic pool of model outputs (and embeddings)");
  struct Args {
    SyntheticSpec spec;
    std::string dtype = "float32", output, embeddings;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("-n", a->spec.n, "Samples")->check(non_negative());
  cmd->add_option("-c", a->spec.c, "Classes")->check(positive());
  cmd->add_option("-m", a->spec.m, "Committee members (0: an [N,C] output)")->check(non_negative());
  cmd->add_option("-d", a->spec.d, "Embedding width (with --embeddings)")->check(positive())->default_str("64");
  cmd->add_flag("--logits", a->spec.logits, "Write logits instead of probabilities");
  cmd->add_option("--dtype", a->dtype, "float32 or float16")->check(CLI::IsMember({"float32", "float16"}));
  cmd->add_option("--seed", a->spec.seed, "Seed");
  cmd->add_option("--output,-o", a->output, "Model outputs (.npy)")->required();
  cmd->add_option("--embeddings", a->embeddings, "Also write embeddings [N,D] (.npy) here");
  cmd->callback([a] {
    check_outputs({{"--output", a->output}, {"--embeddings", a->embeddings}}, {});
    QUARRY_USAGE_EXPECTS(a->spec.d == 0 || !a->embeddings.empty(), "-d ", a->spec.d,
                         " is the width of the embeddings: give --embeddings FILE too");
    a->spec.dtype = a->dtype == "float16" ? DType::f16 : DType::f32;
    expect_memory_for("generate", a->spec.n, a->spec.c * std::max<std::int64_t>(a->spec.m, 1), 4);
    if (!a->embeddings.empty()) expect_memory_for("generate --embeddings", a->spec.n, a->spec.d > 0 ? a->spec.d : 64, 4);
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
  cmd->add_option("-n", a->n, "Pool size")->check(positive());
  cmd->add_option("-c", a->c, "Classes")->check(positive());
  cmd->add_option("-k", a->k, "Batch size")->check(non_negative());
  cmd->add_option("--acquisition,-a", a->acquisition, "Acquisition score (single-model)");
  cmd->add_option("--out", a->out, "Folder for pool.npy, scores.npy and batch.csv");
  cmd->add_option("--seed", a->seed, "Seed of the synthetic pool");
  cmd->callback([a] {
    const Acquisition acq = parse_acquisition(a->acquisition);
    QUARRY_USAGE_EXPECTS(!acquisition_needs_committee(acq) && !acquisition_needs_embeddings(acq),
                         "demo runs single-model scores without embeddings; got ", a->acquisition);
    QUARRY_USAGE_EXPECTS(a->k <= a->n, "demo: -k ", a->k, " is more than the pool of -n ", a->n, " samples");
    // Everything is checked before the folder and its files are made.
    const std::string pool = a->out + "/pool.npy", scores = a->out + "/scores.npy",
                      batch = a->out + "/batch.csv";
    {
      struct stat st {};
      QUARRY_USAGE_EXPECTS(::stat(a->out.c_str(), &st) != 0 || S_ISDIR(st.st_mode), "demo: --out ",
                           quote_input(a->out, 200), " is a file; it names the folder for pool.npy, scores.npy and batch.csv");
    }
    check_outputs({{"pool", pool}, {"scores", scores}, {"batch", batch}}, {});
    expect_memory_for("demo", a->n, a->c, 4);
    const MadeFolder folder("demo: --out", a->out);
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

const char* loop_command_help(const std::string& name) {
  for (const LoopCommand& c : kLoopCommands)
    if (name == c.name) return c.help;
  return "";
}

void add_commands(CLI::App& app) {
  add_score(app);
  add_select(app);
  add_info(app);
  add_generate(app);
  add_demo(app);
}

}  // namespace quarry::cli
