// One selection step of the loop, shared by `quarry simulate` and `quarry project next`: a
// strategy name (random, an acquisition, a diversity strategy) and the model's outputs on the
// pool -> the batch. Every selection goes through the engine's public calls, the ones
// `quarry select` makes: quarry::score then quarry::select_topk for an acquisition,
// quarry::select_diverse for a diversity strategy.
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
  enum class Kind { random, acquisition, diversity } kind = Kind::random;
  std::string name;
  Acquisition acquisition = Acquisition::entropy;
  DiversityStrategy diversity = DiversityStrategy::badge;
  /// The committee outputs [M, N, C] are needed (a committee acquisition).
  bool committee() const { return kind == Kind::acquisition && acquisition_needs_committee(acquisition); }
};

/// "random, entropy, ..., badge, kcenter, ...": every valid name.
std::string strategy_names();
/// A strategy by name; an unknown name is an Error listing the valid ones.
Strategy parse_strategy(const std::string& name);

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
};

struct StepTimes {
  double infer = 0, score = 0, select = 0;
};

/// Selects min(k, selectable) samples of `pool` with `strategy`; `model` is not used for random.
Selection select_step(const Strategy& strategy, const Model& model, const Split& pool,
                      const StepOptions& options, StepTimes* times = nullptr);

}  // namespace quarry::loop
