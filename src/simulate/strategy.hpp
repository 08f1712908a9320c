// One selection step of the loop, shared by `quarry simulate` and `quarry project next`: a
// strategy name (random, an acquisition, a diversity strategy, batchbald, or balanced:NAME over
// any of them) and the model's outputs on the pool -> the batch. Every selection goes through
// the engine's public calls, the ones `quarry select` makes: quarry::score then
// quarry::select_topk for an acquisition, quarry::select_diverse for a diversity strategy,
// quarry::select_batchbald for batchbald.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/diversity.hpp"
#include "quarry/select.hpp"
#include "quarry/train.hpp"

namespace quarry::loop {

struct Strategy {
  /// automatic: `auto`, which picks one of the others each step by the budget (auto_strategy).
  enum class Kind { random, acquisition, diversity, batchbald, automatic } kind = Kind::random;
  /// The full name ("entropy", "balanced:entropy").
  std::string name;
  Acquisition acquisition = Acquisition::entropy;
  DiversityStrategy diversity = DiversityStrategy::badge;
  /// balanced:NAME: `kind` (and its acquisition or diversity strategy) is NAME's, run on each
  /// predicted class's candidates alone with the class's quota (balanced_quotas).
  bool balanced = false;
  /// The committee outputs [M, N, C] are needed (a committee acquisition, batchbald).
  bool committee() const {
    return kind == Kind::batchbald || (kind == Kind::acquisition && acquisition_needs_committee(acquisition));
  }
  /// The model's outputs are needed (all but random; balanced:random needs the predictions).
  bool needs_model() const { return kind != Kind::random || balanced; }
};

/// "random, entropy, ..., badge, kcenter, ..., batchbald, balanced:NAME (...)": every valid name.
std::string strategy_names();
/// A strategy by name; an unknown name (or inner name of balanced:NAME), balanced: without a
/// name and a nested balanced:balanced:NAME are UsageErrors listing the valid ones, prefixed
/// "OPTION: " where `option` names where the name came from ("--strategies").
Strategy parse_strategy(const std::string& name, const std::string& option = "");

/// "0.5,0.3,0.2" -> the target class distribution of balanced:NAME; `option` names it in
/// errors. Non-negative finite weights with a positive sum (normalised by it), one per class:
/// a UsageError otherwise.
std::vector<double> parse_balance_target(const std::string& text, int num_classes, const std::string& option);

/// Per-class quotas of a class-balanced batch of min(k, sum of available): class c gets
/// round(k * target_c) by largest remainder (ties to the lower class); a class with fewer
/// candidates than its quota keeps what it has and its surplus goes to the classes with
/// candidates left, in proportion to their target (equally where those targets are all 0),
/// repeated until all is placed. `target` empty: uniform over available.size() classes.
std::vector<std::int64_t> balanced_quotas(std::int64_t k, const std::vector<std::int64_t>& available,
                                          const std::vector<double>& target = {});

/// What `auto` runs with `labeled` labels and `num_classes` classes: typiclust over
/// StepOptions::typical_embeddings (or the pool's inputs) while labels are few (fewer than
/// kAutoTypicalPerClass per class: the model's uncertainty means little yet), then badge
/// (uncertainty with diversity).
inline constexpr std::int64_t kAutoTypicalPerClass = 10;
Strategy auto_strategy(std::int64_t labeled, int num_classes);

/// k of `from` without replacement, Fisher-Yates with a fully specified generator (the same
/// draw on every platform).
std::vector<std::int64_t> sample_without_replacement(std::vector<std::int64_t> from, std::int64_t k,
                                                     std::uint64_t seed);
/// A 64-bit mix of two values (splitmix finaliser), for deriving seeds.
std::uint64_t mix(std::uint64_t a, std::uint64_t b);
/// FNV-1a of a name: stable across standard libraries (std::hash is not).
std::uint64_t name_hash(const std::string& s);

struct StepOptions {
  std::int64_t k = 0;
  /// Never selected (labeled, or awaiting labels).
  std::vector<std::int64_t> exclude;
  /// Committee drawn for committee acquisitions.
  CommitteeSpec committee{CommitteeSpec::Kind::mc, 10};
  std::uint64_t seed = 0;
  DeviceSpec device{};
  int threads = 0;
  /// balanced:NAME: the target class distribution (parse_balance_target); empty: uniform.
  std::vector<double> balance_target;
  /// batchbald: BatchBaldOptions::restart (a new joint batch once the gains fall below this share).
  double batchbald_restart = 0.5;
  /// auto: the embeddings [pool, D] its typicality runs over (the cold start's, e.g. from
  /// quarry pretrain), and their name for errors; no data: the pool's inputs.
  ArrayView typical_embeddings;
  std::string typical_embeddings_name;
};

struct StepTimes {
  double infer = 0, score = 0, select = 0;
};

/// Selects min(k, selectable) samples of `pool` with `strategy`: the model's outputs on the pool
/// (infer_step) then the selection on them (select_on_outputs). `model` is not used for random.
Selection select_step(const Strategy& strategy, const Model& model, const Split& pool,
                      const StepOptions& options, StepTimes* times = nullptr);

/// The outputs `strategy` selects from: none for random; probabilities and embeddings, with the
/// committee [M, N, C] where strategy.committee().
Inference infer_step(const Strategy& strategy, const Model& model, const Split& pool, const StepOptions& options);

/// Selects min(k, selectable) of the `n` pool samples from outputs `inf` (empty for random).
/// balanced:NAME takes the predicted class of a sample as the argmax of inf.probs (the lowest
/// class on ties) and returns its picks class by class (class 0 first), each class's picks in
/// NAME's order; NAME runs on class c with the seed mix(seed, c).
Selection select_on_outputs(const Strategy& strategy, const Inference& inf, std::int64_t n,
                            const StepOptions& options, StepTimes* times = nullptr);

}  // namespace quarry::loop
