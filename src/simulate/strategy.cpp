#include "simulate/strategy.hpp"

#include <chrono>
#include <random>

#include "quarry/error.hpp"

namespace quarry::loop {
namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

std::string strategy_names() {
  std::string s = "random";
  for (auto a : all_acquisitions()) s += std::string(", ") + acquisition_name(a);
  for (auto d : all_diversity_strategies()) s += std::string(", ") + diversity_strategy_name(d);
  return s;
}

Strategy parse_strategy(const std::string& name) {
  Strategy s;
  s.name = name;
  if (name == "random") return s;
  for (auto a : all_acquisitions())
    if (name == acquisition_name(a)) {
      s.kind = Strategy::Kind::acquisition;
      s.acquisition = a;
      return s;
    }
  for (auto d : all_diversity_strategies())
    if (name == diversity_strategy_name(d)) {
      s.kind = Strategy::Kind::diversity;
      s.diversity = d;
      return s;
    }
  QUARRY_USAGE_FAIL("unknown strategy '", quote_input(name), "': expected one of ", strategy_names());
}

std::vector<std::int64_t> sample_without_replacement(std::vector<std::int64_t> from, std::int64_t k,
                                                     std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  k = std::min<std::int64_t>(k, static_cast<std::int64_t>(from.size()));
  for (std::int64_t i = 0; i < k; ++i) {
    const std::int64_t j = i + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(from.size() - i));
    std::swap(from[i], from[j]);
  }
  from.resize(static_cast<std::size_t>(k));
  return from;
}

std::uint64_t mix(std::uint64_t a, std::uint64_t b) {
  std::uint64_t z = a * 0x9E3779B97F4A7C15ull ^ (b + 0xBF58476D1CE4E5B9ull + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::uint64_t name_hash(const std::string& s) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

Selection select_step(const Strategy& strategy, const Model& model, const Split& pool,
                      const StepOptions& o, StepTimes* times) {
  StepTimes local;
  StepTimes& tm = times ? *times : local;
  const std::int64_t n = pool.size();
  std::vector<char> excluded(static_cast<std::size_t>(n), 0);
  for (auto i : o.exclude) {
    QUARRY_EXPECTS(i >= 0 && i < n, "internal: excluded index ", i, " outside the pool of ", n);
    excluded[static_cast<std::size_t>(i)] = 1;
  }
  std::vector<std::int64_t> rest;
  for (std::int64_t i = 0; i < n; ++i)
    if (!excluded[static_cast<std::size_t>(i)]) rest.push_back(i);
  const std::int64_t k = std::min<std::int64_t>(o.k, static_cast<std::int64_t>(rest.size()));
  Selection sel;
  if (k <= 0) return sel;
  if (strategy.kind == Strategy::Kind::random) {
    const auto t = Clock::now();
    sel.index = sample_without_replacement(std::move(rest), k, o.seed);
    sel.score.assign(sel.index.size(), 0.0f);
    tm.select = since(t);
    return sel;
  }
  InferOptions io;
  io.committee = strategy.committee() ? o.committee : CommitteeSpec{};
  io.seed = o.seed;
  io.threads = o.threads;
  // A model on CUDA keeps its outputs there when the engine runs there too: scored and
  // selected in place, only the k picks reach the host (diversity strategies copy them once).
  io.on_device = resolve_device(o.device).kind == DeviceKind::cuda;
  auto t = Clock::now();
  const Inference inf = model.infer(pool, io);
  tm.infer = since(t);
  const ArrayView probs = inf.probs.view(), emb = inf.embeddings.view();
  if (strategy.kind == Strategy::Kind::acquisition) {
    const ArrayView input = strategy.committee() ? inf.committee.view() : probs;
    ScoreOptions so;
    so.device = o.device;
    so.input_name = "probs";
    SelectOptions sl;
    sl.k = k;
    sl.exclude = o.exclude;
    t = Clock::now();
    sel = score_and_select(input, strategy.acquisition, so, sl,
                           acquisition_needs_embeddings(strategy.acquisition) ? &emb : nullptr);
    tm.score = since(t);  // scoring and selection, one pass
  } else {
    DiversityOptions d;
    d.k = k;
    d.exclude = o.exclude;
    d.seed = o.seed;
    d.device = o.device;
    d.input_name = "probs";
    t = Clock::now();
    sel = select_diverse(strategy.diversity, emb, &probs, d);
    tm.select = since(t);
  }
  for (auto i : sel.index)
    QUARRY_EXPECTS(i >= 0 && i < n && !excluded[static_cast<std::size_t>(i)], "internal: strategy ",
                   strategy.name, " selected the excluded sample ", i);
  return sel;
}

}  // namespace quarry::loop
