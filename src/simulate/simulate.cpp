// The simulated active-learning loop: the dataset's labels are the oracle. Every selection goes
// through the engine's public calls, the same ones `quarry select` makes: quarry::score then
// quarry::select_topk for an acquisition, quarry::select_diverse for a diversity strategy.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <random>
#include <string>

#include "quarry/acquisition.hpp"
#include "quarry/diversity.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/loop.hpp"
#include "quarry/select.hpp"
#include "simulate/strategy.hpp"

namespace quarry {
namespace {

using loop::mix;
using loop::name_hash;
using loop::sample_without_replacement;
using loop::Strategy;

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

void check_simulate_options(const Dataset& data, const SimulateOptions& o) {
  QUARRY_USAGE_EXPECTS(!o.strategies.empty(), "simulate: no strategies given");
  std::vector<Strategy> strategies;
  for (const auto& name : o.strategies) {
    strategies.push_back(loop::parse_strategy(name, "--strategies"));
    for (std::size_t i = 0; i + 1 < strategies.size(); ++i)
      QUARRY_USAGE_EXPECTS(strategies[i].name != name, "simulate: strategy '", name, "' is listed twice");
  }
  const std::int64_t pool = data.train.size();
  QUARRY_USAGE_EXPECTS(o.seed_size >= 1 && o.batch >= 1 && o.rounds >= 0 && o.repeats >= 1,
                       "simulate: --seed-size and --batch must be >= 1, --rounds >= 0, --repeats >= 1");
  std::int64_t more = 0, total = 0;
  const bool overflow = __builtin_mul_overflow(static_cast<std::int64_t>(o.rounds), o.batch, &more) ||
                        __builtin_add_overflow(o.seed_size, more, &total);
  QUARRY_USAGE_EXPECTS(!overflow && total <= pool, "simulate: ", o.seed_size, " initial labels + ", o.rounds,
                       " rounds x ", o.batch, " = ", overflow ? std::string("more") : std::to_string(total),
                       " labels, but the pool (", data.spec, ") has only ", pool, " samples");
  QUARRY_EXPECTS(data.test.size() > 0, "simulate: ", data.spec, " has no test split to evaluate on");
  const bool committee_needed =
      std::any_of(strategies.begin(), strategies.end(), [](const Strategy& s) { return s.committee(); });
  QUARRY_USAGE_EXPECTS(!committee_needed || o.committee.kind != CommitteeSpec::Kind::none,
                       "simulate: a committee strategy needs a committee (--committee mc:M or ensemble:M)");
  if (!o.balance_target.empty()) {
    QUARRY_USAGE_EXPECTS(std::any_of(strategies.begin(), strategies.end(), [](const Strategy& s) { return s.balanced; }),
                         "simulate: --balance-target is for balanced:NAME strategies, and none is listed");
    QUARRY_USAGE_EXPECTS(static_cast<int>(o.balance_target.size()) == data.num_classes, "simulate: --balance-target has ",
                         o.balance_target.size(), " weights, but ", data.spec, " has ", data.num_classes, " classes");
  }
  QUARRY_USAGE_EXPECTS(o.batchbald_restart >= 0 && o.batchbald_restart <= 1,
                       "simulate: --batchbald-restart must be in [0, 1], got ", o.batchbald_restart);
  QUARRY_USAGE_EXPECTS(o.seed_strategy == "random" || o.seed_strategy == "typiclust" || o.seed_strategy == "probcover",
                       "simulate: --seed-strategy '", quote_input(o.seed_strategy),
                       "': expected random, typiclust or probcover");
  const bool automatic = std::any_of(strategies.begin(), strategies.end(),
                                     [](const Strategy& s) { return s.kind == Strategy::Kind::automatic; });
  QUARRY_USAGE_EXPECTS(o.seed_embeddings.empty() || o.seed_strategy != "random" || automatic,
                       "simulate: --seed-embeddings is for --seed-strategy typiclust or probcover, or the "
                       "strategy auto");
}

namespace {

// The initial labeled set of a repeat: random, or a cold-start strategy over the embeddings.
std::vector<std::int64_t> initial_set(const Dataset& data, const SimulateOptions& o, const ArrayView& embeddings,
                                      const std::vector<std::int64_t>& all, std::uint64_t seed) {
  if (o.seed_strategy == "random") return sample_without_replacement(all, o.seed_size, seed);
  DiversityOptions d;
  d.k = o.seed_size;
  d.seed = seed;
  d.embeddings_name = o.seed_embeddings.empty() ? data.spec + " (its inputs)" : o.seed_embeddings;
  return select_diverse(parse_diversity_strategy(o.seed_strategy), embeddings, nullptr, d).index;
}

}  // namespace

std::vector<RoundRecord> simulate(const Dataset& data, const SimulateOptions& o) {
  check_simulate_options(data, o);
  std::vector<Strategy> strategies;
  for (const auto& name : o.strategies) strategies.push_back(loop::parse_strategy(name));
  const std::int64_t pool = data.train.size();

  std::vector<std::int64_t> all(static_cast<std::size_t>(pool));
  for (std::int64_t i = 0; i < pool; ++i) all[i] = i;
  std::vector<RoundRecord> records;
  // The cold start's embeddings: a file, or the pool's inputs as [pool, numel] float32.
  Array seed_file;
  ArrayView seed_view;
  if (o.seed_strategy != "random" || !o.seed_embeddings.empty()) {
    if (!o.seed_embeddings.empty()) {
      seed_file = read_npy(o.seed_embeddings);
      seed_view = seed_file.view();
      QUARRY_EXPECTS(seed_view.rank() == 2 && seed_view.shape[0] == pool, o.seed_embeddings,
                     ": expected embeddings [", pool, ", D] of the pool, got shape ", shape_string(seed_view.shape));
    } else {
      seed_view = ArrayView(data.train.x.data(), DType::f32, {pool, data.sample_numel()});
    }
  }

  for (int repeat = 0; repeat < o.repeats; ++repeat) {
    const std::uint64_t repeat_seed = o.seed + static_cast<std::uint64_t>(repeat);
    const std::vector<std::int64_t> initial = initial_set(data, o, seed_view, all, mix(repeat_seed, 1));
    // The stopping rule's stop set: samples outside the initial set, the same for every
    // strategy of the repeat (some get labeled later; agreement on them still counts).
    Split stop_set;
    if (o.stop) {
      std::vector<char> initial_mask(static_cast<std::size_t>(pool), 0);
      for (auto i : initial) initial_mask[static_cast<std::size_t>(i)] = 1;
      std::vector<std::int64_t> rest;
      for (auto i : all)
        if (!initial_mask[static_cast<std::size_t>(i)]) rest.push_back(i);
      std::vector<std::int64_t> chosen = sample_without_replacement(rest, o.stop->set_size, mix(repeat_seed, 3));
      std::sort(chosen.begin(), chosen.end());
      stop_set = take_rows(data.train, data.sample_numel(), chosen);
    }
    Model round0_single, round0_ensemble;
    double round0_single_seconds = 0, round0_ensemble_seconds = 0;
    int round0_single_epochs = 0, round0_ensemble_epochs = 0;
    for (const Strategy& strategy : strategies) {
      std::vector<std::int64_t> labeled = initial;
      std::vector<char> is_labeled(static_cast<std::size_t>(pool), 0);
      for (auto i : labeled) is_labeled[static_cast<std::size_t>(i)] = 1;
      std::vector<std::int32_t> previous;  // the last model's predictions on the stop set
      std::vector<double> kappas;
      bool fired = false;
      for (int round = 0; round <= o.rounds; ++round) {
        const auto round_start = Clock::now();
        RoundRecord r;
        r.strategy = strategy.name;
        r.repeat = repeat;
        r.round = round;
        r.labels = static_cast<std::int64_t>(labeled.size());
        r.labeled_per_class.assign(static_cast<std::size_t>(data.num_classes), 0);
        for (auto i : labeled) ++r.labeled_per_class[static_cast<std::size_t>(data.train.y[i])];

        // Train: the repeat's seed, so every strategy's round 0 is the same model.
        TrainOptions to = o.train;
        to.seed = repeat_seed;
        to.committee = strategy.committee() && o.committee.kind == CommitteeSpec::Kind::ensemble
                           ? o.committee
                           : CommitteeSpec{};
        // Round 0 is the same model for every strategy of the repeat (same set, same seed): it is
        // trained once per kind (single model or ensemble) and shared.
        const bool ensemble = to.committee.kind == CommitteeSpec::Kind::ensemble;
        std::optional<Model> trained;
        Model* round0 = ensemble ? &round0_ensemble : &round0_single;
        auto t = Clock::now();
        const bool shared = round == 0 && !round0->empty();
        if (shared) {
          r.train_seconds = ensemble ? round0_ensemble_seconds : round0_single_seconds;
          r.epochs = ensemble ? round0_ensemble_epochs : round0_single_epochs;
        } else {
          TrainReport tr;
          trained = Model::train(data, labeled, to, &tr);
          r.train_seconds = since(t);
          r.epochs = tr.epochs;
          if (round == 0) {
            *round0 = std::move(*trained);
            trained.reset();
            (ensemble ? round0_ensemble_seconds : round0_single_seconds) = r.train_seconds;
            (ensemble ? round0_ensemble_epochs : round0_single_epochs) = r.epochs;
          }
        }
        const Model& model = trained ? *trained : *round0;

        t = Clock::now();
        r.test = evaluate_predictions(data.test.y, model.predict(data.test, to.threads), data.num_classes);
        if (o.stop && stop_set.size() > 0) {
          std::vector<std::int32_t> predicted = model.predict(stop_set, to.threads);
          if (!previous.empty()) {
            r.stop_kappa = cohen_kappa(previous, predicted, data.num_classes);
            kappas.push_back(r.stop_kappa);
            r.stop_fired = !fired && stop_rule_fires(*o.stop, kappas);
            fired = fired || r.stop_fired;
          }
          previous = std::move(predicted);
        }
        r.eval_seconds = since(t);
        const bool stop_here = r.stop_fired && o.stop_early;

        if (round < o.rounds && !stop_here) {
          const std::uint64_t round_seed = mix(mix(repeat_seed, 2 + static_cast<std::uint64_t>(round)),
                                               name_hash(strategy.name));
          loop::StepOptions so;
          so.k = o.batch;
          so.exclude = labeled;
          so.committee = o.committee;
          so.seed = round_seed;
          so.device = o.device;
          so.threads = to.threads;
          so.balance_target = o.balance_target;
          so.batchbald_restart = o.batchbald_restart;
          if (!o.seed_embeddings.empty()) {  // auto's typicality: the cold start's embeddings
            so.typical_embeddings = seed_view;
            so.typical_embeddings_name = o.seed_embeddings;
          }
          loop::StepTimes times;
          const Selection sel = loop::select_step(strategy, model, data.train, so, &times);
          r.infer_seconds = times.infer;
          r.score_seconds = times.score;
          r.select_seconds = times.select;
          for (auto i : sel.index) {
            QUARRY_EXPECTS(!is_labeled[static_cast<std::size_t>(i)], "internal: strategy ", strategy.name,
                           " selected the labeled sample ", i);
            is_labeled[static_cast<std::size_t>(i)] = 1;
            labeled.push_back(i);
          }
          r.selected = sel.index;
        }
        // A shared round-0 model counts its one training in every strategy's round 0.
        r.round_seconds = since(round_start) + (shared ? r.train_seconds : 0.0);
        if (o.on_round) o.on_round(r);
        records.push_back(std::move(r));
        if (stop_here) break;
      }
    }
  }
  return records;
}

void write_simulation_report(const std::string& dir, const std::vector<RoundRecord>& records,
                             const SimulationSummary& summary) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  QUARRY_EXPECTS(!ec, dir, ": cannot create the output folder: ", ec.message());
  std::string lines;
  for (const auto& r : records) lines += round_json(r) + "\n";
  const std::filesystem::path d(dir);
  write_file_atomic((d / "rounds.jsonl").string(), {lines});
  write_file_atomic((d / "curves.csv").string(), {curves_csv(summary)});
  write_file_atomic((d / "summary.json").string(), {summary_json(summary)});
  write_file_atomic((d / "summary.md").string(), {summary_markdown(summary)});
  write_file_atomic((d / "curves.svg").string(), {curves_svg(summary)});
}

}  // namespace quarry
