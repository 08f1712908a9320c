#include "simulate/strategy.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>

#include "quarry/batchbald.hpp"
#include "quarry/error.hpp"

namespace quarry::loop {
namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

namespace {

// random, the acquisitions, the diversity strategies and batchbald: what balanced: wraps.
std::string base_names() {
  std::string s = "random";
  for (auto a : all_acquisitions()) s += std::string(", ") + acquisition_name(a);
  for (auto d : all_diversity_strategies()) s += std::string(", ") + diversity_strategy_name(d);
  return s + ", batchbald";
}

// The strategies only on their own: auto.
const char* const kUnwrapped = "auto";

// `name` without balanced:; `whole` is what was given (for the message).
Strategy parse_base(const std::string& name, const std::string& whole) {
  Strategy s;
  s.name = whole;
  if (name == "random") return s;
  if (name == "batchbald") {
    s.kind = Strategy::Kind::batchbald;
    return s;
  }
  if (name == "auto") {
    QUARRY_USAGE_EXPECTS(name == whole, "'", quote_input(whole), "': auto chooses its own strategy and cannot be "
                         "balanced");
    s.kind = Strategy::Kind::automatic;
    return s;
  }
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
  if (name == whole)
    QUARRY_USAGE_FAIL("unknown strategy '", quote_input(name), "': expected one of ", strategy_names());
  QUARRY_USAGE_FAIL("unknown strategy '", quote_input(name), "' in '", quote_input(whole),
                    "': balanced:NAME takes NAME one of ", base_names());
}

// `total` split in proportion to `weight` (sum > 0) by largest remainder, ties to the lower class.
std::vector<std::int64_t> apportion(std::int64_t total, const std::vector<double>& weight) {
  double sum = 0;
  for (double w : weight) sum += w;
  std::vector<std::int64_t> q(weight.size());
  std::vector<double> rem(weight.size());
  std::int64_t placed = 0;
  for (std::size_t c = 0; c < weight.size(); ++c) {
    const double share = static_cast<double>(total) * weight[c] / sum;
    q[c] = static_cast<std::int64_t>(std::floor(share));
    rem[c] = share - static_cast<double>(q[c]);
    placed += q[c];
  }
  std::vector<std::size_t> order(weight.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return rem[a] > rem[b]; });
  for (std::size_t j = 0; placed < total; ++j, ++placed) ++q[order[j % order.size()]];
  // Rounding may put a share a hair above an integer: take back from the smallest remainders.
  for (std::size_t j = order.size(); placed > total; --j)
    if (q[order[(j - 1) % order.size()]] > 0 && weight[order[(j - 1) % order.size()]] > 0) {
      --q[order[(j - 1) % order.size()]];
      --placed;
    }
  return q;
}

}  // namespace

std::string strategy_names() {
  return base_names() + ", " + kUnwrapped + ", or balanced:NAME with NAME one of " + base_names();
}

Strategy auto_strategy(std::int64_t labeled, int num_classes) {
  Strategy s;
  s.kind = Strategy::Kind::diversity;
  s.name = "auto";
  s.diversity = labeled < kAutoTypicalPerClass * num_classes ? DiversityStrategy::typiclust : DiversityStrategy::badge;
  return s;
}

Strategy parse_strategy(const std::string& name, const std::string& option) {
  if (!option.empty()) {
    try {
      return parse_strategy(name);
    } catch (const UsageError& e) {
      QUARRY_USAGE_FAIL(option, ": ", e.what());
    }
  }
  const std::string prefix = "balanced:";
  if (name.rfind(prefix, 0) != 0) {
    QUARRY_USAGE_EXPECTS(name != "balanced", "strategy 'balanced' needs the strategy it balances: balanced:NAME ",
                         "with NAME one of ", base_names());
    return parse_base(name, name);
  }
  const std::string inner = name.substr(prefix.size());
  QUARRY_USAGE_EXPECTS(!inner.empty(), "strategy '", quote_input(name),
                       "': balanced:NAME needs a strategy NAME, one of ", base_names());
  QUARRY_USAGE_EXPECTS(inner != "balanced" && inner.rfind(prefix, 0) != 0, "strategy '", quote_input(name),
                       "': balanced: does not nest; balanced:NAME takes NAME one of ", base_names());
  Strategy s = parse_base(inner, name);
  s.balanced = true;
  return s;
}

std::vector<double> parse_balance_target(const std::string& text, int num_classes, const std::string& option) {
  std::vector<double> t;
  double sum = 0;
  for (std::size_t at = 0;;) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, comma - at);
    char* end = nullptr;
    const double v = item.empty() ? 0.0 : std::strtod(item.c_str(), &end);
    QUARRY_USAGE_EXPECTS(!item.empty() && end == item.c_str() + item.size() && std::isfinite(v) && v >= 0,
                         option, " '", quote_input(text), "': '", quote_input(item),
                         "' is not a weight (a finite number >= 0); give one per class, e.g. 0.5,0.5");
    t.push_back(v);
    sum += v;
    if (comma == text.size()) break;
    at = comma + 1;
  }
  QUARRY_USAGE_EXPECTS(static_cast<int>(t.size()) == num_classes, option, " '", quote_input(text), "': ", t.size(),
                       " weights, but there are ", num_classes, " classes: give one per class");
  QUARRY_USAGE_EXPECTS(sum > 0, option, " '", quote_input(text), "': the weights sum to 0");
  QUARRY_USAGE_EXPECTS(std::isfinite(sum), option, " '", quote_input(text),
                       "': the weights' sum is beyond the largest number; give them as shares, e.g. 0.5,0.5");
  for (double& v : t) v /= sum;
  return t;
}

std::vector<std::int64_t> balanced_quotas(std::int64_t k, const std::vector<std::int64_t>& available,
                                          const std::vector<double>& target) {
  const std::size_t classes = available.size();
  const std::vector<double> t = target.empty() ? std::vector<double>(classes, 1.0) : target;
  QUARRY_EXPECTS(t.size() == classes, "internal: a target of ", t.size(), " classes for ", classes);
  std::int64_t total = 0;
  for (auto a : available) total += a;
  k = std::min(k, total);
  if (k <= 0) return std::vector<std::int64_t>(classes, 0);
  std::vector<std::int64_t> q = apportion(k, t);
  for (;;) {
    // A class short of candidates keeps what it has; the surplus goes to the classes with
    // candidates left, by their target (equally where it is 0 for them all). Each pass fills
    // at least one more class, so this ends.
    std::int64_t surplus = 0;
    for (std::size_t c = 0; c < classes; ++c)
      if (q[c] > available[c]) {
        surplus += q[c] - available[c];
        q[c] = available[c];
      }
    if (surplus == 0) return q;
    std::vector<double> w(classes, 0.0);
    double sum = 0;
    for (std::size_t c = 0; c < classes; ++c)
      if (q[c] < available[c]) sum += w[c] = t[c];
    if (sum == 0)
      for (std::size_t c = 0; c < classes; ++c) w[c] = q[c] < available[c] ? 1.0 : 0.0;
    const std::vector<std::int64_t> more = apportion(surplus, w);
    for (std::size_t c = 0; c < classes; ++c) q[c] += more[c];
  }
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

namespace {

// Rows `rows` of a host array along `axis` (0: [N, ...]; 1: a committee [M, N, C]).
Array take_rows(const Array& a, const std::vector<std::int64_t>& rows, int axis) {
  const ArrayView v = a.view();
  if (v.shape.empty()) return Array();  // absent (no committee)
  QUARRY_EXPECTS(!v.location.on_cuda() && v.rank() > axis, "internal: outputs to split by class are not host rows");
  std::vector<std::int64_t> shape = v.shape;
  const std::int64_t n = shape[static_cast<std::size_t>(axis)];
  shape[static_cast<std::size_t>(axis)] = static_cast<std::int64_t>(rows.size());
  Array out = Array::allocate(v.dtype, shape, a.source());
  const std::int64_t outer = axis == 0 ? 1 : v.shape[0];
  const std::size_t row = v.nbytes() / static_cast<std::size_t>(std::max<std::int64_t>(1, outer * n));
  const auto* src = static_cast<const char*>(a.data());
  auto* dst = static_cast<char*>(out.mutable_data());
  for (std::int64_t m = 0; m < outer; ++m)
    for (std::size_t j = 0; j < rows.size(); ++j)
      std::memcpy(dst + (static_cast<std::size_t>(m) * rows.size() + j) * row,
                  src + (static_cast<std::size_t>(m * n + rows[j])) * row, row);
  return out;
}

// Selects k of `candidates` (pool indices, none excluded) with `s`'s kind (ignoring balanced),
// from the outputs `inf` of the whole pool of `n`; `exclude` is the rest of the pool.
Selection select_among(const Strategy& s, const Inference& inf, const std::vector<std::int64_t>& candidates,
                       const std::vector<std::int64_t>& exclude, std::int64_t k, std::uint64_t seed,
                       const StepOptions& o, StepTimes& tm) {
  Selection sel;
  auto t = Clock::now();
  if (s.kind == Strategy::Kind::random) {
    sel.index = sample_without_replacement(candidates, k, seed);
    sel.score.assign(sel.index.size(), 0.0f);
    tm.select += since(t);
    return sel;
  }
  const ArrayView probs = inf.probs.view(), emb = inf.embeddings.view();
  if (s.kind == Strategy::Kind::acquisition) {
    const ArrayView input = s.committee() ? inf.committee.view() : probs;
    ScoreOptions so;
    so.device = o.device;
    so.input_name = "probs";
    SelectOptions sl;
    sl.k = k;
    sl.exclude = exclude;
    sel = score_and_select(input, s.acquisition, so, sl, acquisition_needs_embeddings(s.acquisition) ? &emb : nullptr);
    tm.score += since(t);  // scoring and selection, one pass
  } else if (s.kind == Strategy::Kind::diversity) {
    DiversityOptions d;
    d.k = k;
    d.exclude = exclude;
    d.seed = seed;
    d.device = o.device;
    d.input_name = "probs";
    sel = select_diverse(s.diversity, emb, &probs, d);
    tm.select += since(t);
  } else {
    BatchBaldOptions b;
    b.seed = seed;
    b.device = o.device;
    b.restart = o.batchbald_restart;
    sel = select_batchbald(inf.committee.view(), k, exclude, b);
    tm.select += since(t);
  }
  return sel;
}

// balanced:NAME: NAME on each predicted class's candidates alone (with the excluded samples,
// as NAME sees them: kcenter's centres), the class's quota of the batch each.
Selection select_balanced(const Strategy& s, const Inference& inf, const std::vector<std::int64_t>& candidates,
                          const std::vector<std::int64_t>& exclude, std::int64_t k, const StepOptions& o,
                          StepTimes& tm) {
  const ArrayView probs = inf.probs.view();
  QUARRY_EXPECTS(probs.rank() == 2 && probs.dtype == DType::f32 && !probs.location.on_cuda(),
                 "internal: balanced: the probabilities are not host float32 [N, C]");
  const std::int64_t classes = probs.shape[1];
  const auto* p = inf.probs.as<float>();
  std::vector<std::vector<std::int64_t>> by_class(static_cast<std::size_t>(classes));
  for (auto i : candidates) {
    const float* row = p + i * classes;
    by_class[static_cast<std::size_t>(std::max_element(row, row + classes) - row)].push_back(i);
  }
  std::vector<std::int64_t> available;
  for (const auto& c : by_class) available.push_back(static_cast<std::int64_t>(c.size()));
  QUARRY_USAGE_EXPECTS(o.balance_target.empty() || static_cast<std::int64_t>(o.balance_target.size()) == classes,
                       "the balance target has ", o.balance_target.size(), " weights, but the model ", classes,
                       " classes");
  const std::vector<std::int64_t> quota = balanced_quotas(k, available, o.balance_target);
  const Strategy inner = [&] {
    Strategy t = s;
    t.balanced = false;
    return t;
  }();
  Selection sel;
  for (std::int64_t c = 0; c < classes; ++c) {
    const auto& mine = by_class[static_cast<std::size_t>(c)];
    const std::int64_t q = quota[static_cast<std::size_t>(c)];
    if (q == 0) continue;
    const std::uint64_t seed = mix(o.seed, static_cast<std::uint64_t>(c));
    Selection part;
    if (inner.kind == Strategy::Kind::random) {
      part = select_among(inner, inf, mine, {}, q, seed, o, tm);
    } else {
      // The class's own pool: the excluded samples first, then its candidates.
      std::vector<std::int64_t> rows = exclude;
      rows.insert(rows.end(), mine.begin(), mine.end());
      Inference sub;
      sub.probs = take_rows(inf.probs, rows, 0);
      sub.embeddings = take_rows(inf.embeddings, rows, 0);
      if (inner.committee()) sub.committee = take_rows(inf.committee, rows, 1);
      std::vector<std::int64_t> sub_excluded(exclude.size()), sub_mine(mine.size());
      std::iota(sub_excluded.begin(), sub_excluded.end(), std::int64_t{0});
      std::iota(sub_mine.begin(), sub_mine.end(), static_cast<std::int64_t>(exclude.size()));
      part = select_among(inner, sub, sub_mine, sub_excluded, q, seed, o, tm);
      for (auto& i : part.index) i = rows[static_cast<std::size_t>(i)];
    }
    sel.index.insert(sel.index.end(), part.index.begin(), part.index.end());
    sel.score.insert(sel.score.end(), part.score.begin(), part.score.end());
  }
  return sel;
}

}  // namespace

Inference infer_step(const Strategy& strategy, const Model& model, const Split& pool, const StepOptions& o) {
  if (!strategy.needs_model()) return {};
  InferOptions io;
  io.committee = strategy.committee() ? o.committee : CommitteeSpec{};
  io.seed = o.seed;
  io.threads = o.threads;
  // A model on CUDA keeps its outputs there when the engine runs there too: scored and
  // selected in place, only the k picks reach the host (diversity strategies copy them once).
  // BatchBALD and balanced: (split by class) read host outputs.
  io.on_device = resolve_device(o.device).kind == DeviceKind::cuda && !strategy.balanced &&
                 strategy.kind != Strategy::Kind::batchbald;
  return model.infer(pool, io);
}

Selection select_on_outputs(const Strategy& strategy, const Inference& inf, std::int64_t n, const StepOptions& o,
                            StepTimes* times) {
  StepTimes local;
  StepTimes& tm = times ? *times : local;
  std::vector<char> excluded(static_cast<std::size_t>(n), 0);
  for (auto i : o.exclude) {
    QUARRY_EXPECTS(i >= 0 && i < n, "internal: excluded index ", i, " outside the pool of ", n);
    excluded[static_cast<std::size_t>(i)] = 1;
  }
  std::vector<std::int64_t> rest;
  for (std::int64_t i = 0; i < n; ++i)
    if (!excluded[static_cast<std::size_t>(i)]) rest.push_back(i);
  const std::int64_t k = std::min<std::int64_t>(o.k, static_cast<std::int64_t>(rest.size()));
  if (k <= 0) return {};
  const Selection sel = strategy.balanced ? select_balanced(strategy, inf, rest, o.exclude, k, o, tm)
                                          : select_among(strategy, inf, rest, o.exclude, k, o.seed, o, tm);
  for (auto i : sel.index)
    QUARRY_EXPECTS(i >= 0 && i < n && !excluded[static_cast<std::size_t>(i)], "internal: strategy ",
                   strategy.name, " selected the excluded sample ", i);
  return sel;
}

Selection select_step(const Strategy& strategy, const Model& model, const Split& pool, const StepOptions& o,
                      StepTimes* times) {
  StepTimes local;
  StepTimes& tm = times ? *times : local;
  if (strategy.kind == Strategy::Kind::automatic) {
    const Strategy chosen = auto_strategy(static_cast<std::int64_t>(o.exclude.size()), model.num_classes());
    if (chosen.diversity != DiversityStrategy::typiclust) return select_step(chosen, model, pool, o, times);
    // Typicality over the given embeddings or the pool's inputs (as the cold start): the model
    // is not asked.
    const auto t = Clock::now();
    DiversityOptions d;
    d.exclude = o.exclude;
    d.k = std::min<std::int64_t>(o.k, pool.size() - static_cast<std::int64_t>(o.exclude.size()));
    d.seed = o.seed;
    const bool given = o.typical_embeddings.data != nullptr;
    d.embeddings_name = given ? o.typical_embeddings_name : "the pool's inputs";
    const std::int64_t numel = pool.size() > 0 ? static_cast<std::int64_t>(pool.x.size()) / pool.size() : 0;
    const ArrayView emb = given ? o.typical_embeddings : ArrayView(pool.x.data(), DType::f32, {pool.size(), numel});
    QUARRY_EXPECTS(emb.rank() == 2 && emb.shape[0] == pool.size(), d.embeddings_name, ": expected embeddings [",
                   pool.size(), ", D] of the pool, got shape ", shape_string(emb.shape));
    Selection sel = d.k > 0 ? select_diverse(DiversityStrategy::typiclust, emb, nullptr, d) : Selection{};
    tm.select = since(t);
    return sel;
  }
  Inference inf;
  if (o.k > 0 && static_cast<std::int64_t>(o.exclude.size()) < pool.size()) {
    const auto t = Clock::now();
    inf = infer_step(strategy, model, pool, o);
    tm.infer = since(t);
  }
  return select_on_outputs(strategy, inf, pool.size(), o, &tm);
}

}  // namespace quarry::loop
