// What a simulation reports, part 1: the summary over repeats (learning curves, label
// efficiency against the baseline), and the helpers the report's files share
// (report_internal.hpp). The files: rounds.jsonl lines in report_rounds.cpp, curves.csv,
// summary.json and summary.md in report_summary.cpp, curves.svg in report_svg.cpp.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "quarry/error.hpp"
#include "quarry/loop.hpp"
#include "simulate/report_internal.hpp"

namespace quarry {

// ---------------------------------------------------------------- shared helpers

namespace report_detail {

std::string strf(const char* format, ...) {
  char small[256];
  va_list args;
  va_start(args, format);
  va_list again;
  va_copy(again, args);
  const int n = std::vsnprintf(small, sizeof small, format, args);
  va_end(args);
  std::string out;
  if (n >= 0 && static_cast<std::size_t>(n) < sizeof small) {
    out.assign(small, static_cast<std::size_t>(n));
  } else if (n >= 0) {
    out.resize(static_cast<std::size_t>(n) + 1);
    std::vsnprintf(out.data(), out.size(), format, again);
    out.resize(static_cast<std::size_t>(n));
  }
  va_end(again);
  return out;
}

const StrategySummary* find_strategy(const SimulationSummary& s, const std::string& name) {
  for (const StrategySummary& st : s.strategies)
    if (st.strategy == name) return &st;
  return nullptr;
}

}  // namespace report_detail

using report_detail::find_strategy;
using report_detail::kNaN;

namespace {

// Mean and sample standard deviation of the defined (non-NaN) values: a metric undefined in a
// repeat (the sensitivity of a class absent from its test set) is left out; NaN if none.
MeanStd mean_std(const std::vector<double>& values) {
  double sum = 0;
  std::size_t n = 0;
  for (double v : values)
    if (!std::isnan(v)) sum += v, ++n;
  if (n == 0) return {kNaN, kNaN};
  // Equal values: exactly that value, std 0 (not 0.8000000000000002 +- 1.4e-16).
  bool equal = true;
  double first = kNaN;
  for (double v : values)
    if (!std::isnan(v)) {
      if (std::isnan(first)) first = v;
      equal = equal && v == first;
    }
  if (equal) return {first, 0.0};
  const double mean = sum / static_cast<double>(n);
  double ss = 0;
  for (double v : values)
    if (!std::isnan(v)) ss += (v - mean) * (v - mean);
  return {mean, n > 1 ? std::sqrt(ss / static_cast<double>(n - 1)) : 0.0};
}

std::string record_name(const RoundRecord& r) {
  return detail::concat("strategy '", r.strategy, "' repeat ", r.repeat, " round ", r.round);
}

// Labels of round i (ys[i] >= target), interpolated from round i - 1 where that one is below.
double crossing_into(const std::vector<std::int64_t>& labels, const std::vector<double>& ys,
                     std::size_t i, double target) {
  double x = static_cast<double>(labels[i]);
  if (i > 0 && ys[i - 1] < target) {  // false for NaN
    const double x0 = static_cast<double>(labels[i - 1]), y0 = ys[i - 1], y = ys[i];
    x = x0 + (target - y0) / (y - y0) * (x - x0);  // y0 < target <= y: y > y0
  }
  return x;
}

// Labels at which the curve `ys` (one value per round) first reaches `target`: the first round
// whose value is >= target, interpolated linearly from the round before (which is below the
// target; not interpolated where it is undefined). None if no round reaches it.
std::optional<double> first_crossing(const std::vector<std::int64_t>& labels,
                                     const std::vector<double>& ys, double target) {
  for (std::size_t i = 0; i < ys.size(); ++i) {
    if (ys[i] >= target) return crossing_into(labels, ys, i, target);
  }
  return std::nullopt;
}

// Labels from which the curve stays at or above `target` to the last round (see
// Efficiency::stays_labels); none if the last round is below.
std::optional<double> stays_from(const std::vector<std::int64_t>& labels,
                                 const std::vector<double>& ys, double target) {
  std::size_t r = ys.size();
  while (r > 0 && ys[r - 1] >= target) --r;
  if (r == ys.size()) return std::nullopt;
  return crossing_into(labels, ys, r, target);
}

double saving(double labels, double baseline_labels) { return 100.0 * (1.0 - labels / baseline_labels); }

// The isotonic (least-squares non-decreasing) fit of `ys`, by pooling adjacent violators. NaN
// values are left out of the fit and stay NaN.
std::vector<double> isotonic(const std::vector<double>& ys) {
  std::vector<double> sum, count;  // the pooled blocks
  for (double y : ys) {
    if (std::isnan(y)) continue;
    sum.push_back(y);
    count.push_back(1);
    while (sum.size() > 1 && sum[sum.size() - 2] / count[count.size() - 2] > sum.back() / count.back()) {
      sum[sum.size() - 2] += sum.back();
      count[count.size() - 2] += count.back();
      sum.pop_back();
      count.pop_back();
    }
  }
  std::vector<double> fit(ys.size(), kNaN);
  std::size_t block = 0;
  double left = count.empty() ? 0 : count[0];
  for (std::size_t i = 0; i < ys.size(); ++i) {
    if (std::isnan(ys[i])) continue;
    if (left == 0) left = count[++block];
    fit[i] = sum[block] / count[block];
    --left;
  }
  return fit;
}

// The fit's last value: the target a curve is read against. NaN if every value is.
double isotonic_end(const std::vector<double>& ys) {
  const std::vector<double> fit = isotonic(ys);
  for (auto it = fit.rbegin(); it != fit.rend(); ++it)
    if (!std::isnan(*it)) return *it;
  return kNaN;
}

// Labels at which the isotonic fit of `ys` first reaches `target` (interpolated): what a
// strategy needed, read on its curve made monotone as the target was, so a curve identical to
// the baseline's needs exactly the baseline's labels, and a lucky round is not a crossing.
std::optional<double> monotone_crossing(const std::vector<std::int64_t>& labels, const std::vector<double>& ys,
                                        double target) {
  return first_crossing(labels, isotonic(ys), target);
}

// The q-quantile of sorted values (linear between order statistics, as NumPy's default); a
// -infinity neighbour gives -infinity.
double quantile_sorted(const std::vector<double>& v, double q) {
  const double h = q * static_cast<double>(v.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(std::floor(h));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  if (std::isinf(v[lo]) || std::isinf(v[hi])) return h - static_cast<double>(lo) > 0 ? std::min(v[lo], v[hi]) : v[lo];
  return v[lo] + (h - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

// The 95% percentile interval of bootstrap values (NaN ones left out; undefined if none).
Interval percentile_interval(std::vector<double> values) {
  values.erase(std::remove_if(values.begin(), values.end(), [](double v) { return std::isnan(v); }),
               values.end());
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  return {quantile_sorted(values, 0.025), quantile_sorted(values, 0.975)};
}

// The curves of a strategy per repeat: repeat -> one value per round.
using RepeatCurves = std::map<int, std::vector<double>>;

// The bootstrap's resamples of n repeats: kBootstrapResamples draws of n positions with
// replacement, from a fixed seed (the same for every strategy and metric: the report is a
// function of the records).
std::vector<std::vector<std::size_t>> resamples(std::size_t n) {
  std::mt19937_64 rng(0x9e3779b97f4a7c15ull);
  std::vector<std::vector<std::size_t>> out(kBootstrapResamples, std::vector<std::size_t>(n));
  for (auto& draw : out)
    for (auto& i : draw) i = static_cast<std::size_t>(rng() % n);
  return out;
}

// The mean curve over the repeats `curves[draw[i]]`.
std::vector<double> mean_curve(const std::vector<const std::vector<double>*>& curves,
                               const std::vector<std::size_t>& draw) {
  std::vector<double> m(curves.front()->size(), 0.0), n(m.size(), 0.0);
  for (std::size_t i : draw)
    for (std::size_t k = 0; k < m.size(); ++k)
      if (!std::isnan((*curves[i])[k])) m[k] += (*curves[i])[k], n[k] += 1;  // as mean_std: NaN left out
  for (std::size_t k = 0; k < m.size(); ++k) m[k] = n[k] > 0 ? m[k] / n[k] : kNaN;
  return m;
}

// A curve's area per unit of labels: the trapezoid rule over labels divided by the label range
// (its mean height); the only value for one round.
double aulc(const std::vector<std::int64_t>& labels, const std::vector<double>& ys) {
  if (ys.size() == 1) return ys[0];
  double area = 0;
  for (std::size_t k = 1; k < ys.size(); ++k)
    area += 0.5 * (ys[k] + ys[k - 1]) * static_cast<double>(labels[k] - labels[k - 1]);
  return area / static_cast<double>(labels.back() - labels.front());
}

// The repeats the strategy and the baseline both ran, in repeat order: the pairs of the paired
// bootstrap (a repeat's initial set and seed are the same for every strategy).
std::vector<int> paired_repeats(const RepeatCurves& a, const RepeatCurves& b) {
  std::vector<int> out;
  for (const auto& [rep, curve] : a)
    if (b.count(rep)) out.push_back(rep);
  return out;
}

// Label efficiency against the baseline: the target is the isotonic end of its mean curve, the
// baseline's labels where its isotonic fit first reaches it, and a strategy's labels where its
// own isotonic fit does; on the mean curves, on each repeat's curve, and the paired bootstrap
// interval of the saving (both fits redone on each resample).
Efficiency efficiency(const std::vector<std::int64_t>& labels, const std::vector<MeanStd>& curve,
                      const RepeatCurves& per_repeat, const std::vector<std::int64_t>& base_labels,
                      const std::vector<MeanStd>& base_curve, const RepeatCurves& base_repeats, bool is_baseline) {
  Efficiency e;
  std::vector<double> base_means;
  for (const MeanStd& m : base_curve) base_means.push_back(m.mean);
  e.target = isotonic_end(base_means);
  e.baseline_final = base_means.back();
  e.baseline_labels = monotone_crossing(base_labels, base_means, e.target);
  e.baseline = is_baseline;
  if (is_baseline || !e.baseline_labels || !(*e.baseline_labels > 0)) return e;  // no saving of its own
  const double reference = *e.baseline_labels;
  std::vector<double> means;
  for (const MeanStd& m : curve) means.push_back(m.mean);
  e.labels = monotone_crossing(labels, means, e.target);
  if (e.labels) e.saving_percent = saving(*e.labels, reference);
  e.stays_labels = stays_from(labels, means, e.target);

  std::vector<double> savings;
  for (const auto& [rep, ys] : per_repeat) {
    e.repeat_labels.push_back(monotone_crossing(labels, ys, e.target));
    if (!e.repeat_labels.back()) continue;
    ++e.repeats_reached;
    savings.push_back(saving(*e.repeat_labels.back(), reference));
  }
  if (!savings.empty()) e.repeat_saving = mean_std(savings);

  // The paired bootstrap: resample repeats, both curves of a repeat together; refit both.
  const std::vector<int> pairs = paired_repeats(per_repeat, base_repeats);
  if (pairs.size() < 2 || base_curve.size() != curve.size()) return e;
  std::vector<const std::vector<double>*> mine, theirs;
  for (int rep : pairs) mine.push_back(&per_repeat.at(rep)), theirs.push_back(&base_repeats.at(rep));
  std::vector<double> boot;
  for (const auto& draw : resamples(pairs.size())) {
    const std::vector<double> base = mean_curve(theirs, draw);
    const double target = isotonic_end(base);
    const std::optional<double> ref = monotone_crossing(base_labels, base, target);
    const std::optional<double> at = monotone_crossing(labels, mean_curve(mine, draw), target);
    if (!ref || !(*ref > 0)) continue;
    boot.push_back(at ? saving(*at, *ref) : -INFINITY);  // beyond the run: < 0
  }
  e.saving_ci95 = percentile_interval(std::move(boot));
  return e;
}

// The bootstrap 95% interval of the mean of per-repeat values (undefined for fewer than two).
Interval mean_interval(std::vector<double> values) {
  values.erase(std::remove_if(values.begin(), values.end(), [](double v) { return std::isnan(v); }), values.end());
  if (values.size() < 2) return {};
  std::vector<double> boot;
  for (const auto& draw : resamples(values.size())) {
    double m = 0;
    for (std::size_t i : draw) m += values[i];
    boot.push_back(m / static_cast<double>(draw.size()));
  }
  return percentile_interval(std::move(boot));
}

// The AULC of a strategy over its repeats, with its interval, and the paired difference from
// the baseline's (left undefined for the baseline itself or without one).
Aulc aulc_summary(const std::vector<std::int64_t>& labels, const RepeatCurves& per_repeat,
                  const RepeatCurves* base_repeats, bool is_baseline) {
  Aulc a;
  std::vector<double> own;
  for (const auto& [rep, ys] : per_repeat) own.push_back(aulc(labels, ys));
  a.mean = mean_std(own).mean;
  a.ci95 = mean_interval(own);
  if (is_baseline || !base_repeats) return a;
  std::vector<double> diff;
  for (int rep : paired_repeats(per_repeat, *base_repeats)) {
    const std::vector<double>& theirs = base_repeats->at(rep);
    if (theirs.size() != labels.size()) return a;  // another protocol: no pairing
    diff.push_back(aulc(labels, per_repeat.at(rep)) - aulc(labels, theirs));
  }
  if (diff.empty()) return a;
  a.difference = mean_std(diff).mean;
  a.difference_ci95 = mean_interval(diff);
  return a;
}

// The 95% interval of each round's mean over repeats (the curves' bands), from the same
// resamples for every round.
void set_curve_intervals(std::vector<MeanStd>& curve, const RepeatCurves& per_repeat) {
  if (per_repeat.size() < 2) return;
  std::vector<const std::vector<double>*> curves;
  for (const auto& [rep, ys] : per_repeat) curves.push_back(&ys);
  std::vector<std::vector<double>> boot(curve.size());
  for (const auto& draw : resamples(curves.size())) {
    const std::vector<double> m = mean_curve(curves, draw);
    for (std::size_t k = 0; k < curve.size(); ++k) boot[k].push_back(m[k]);
  }
  for (std::size_t k = 0; k < curve.size(); ++k) {
    const Interval ci = percentile_interval(std::move(boot[k]));
    curve[k].ci_low = ci.low;
    curve[k].ci_high = ci.high;
  }
}

// ---------------------------------------------------------------- summary (its steps)

// The records of a strategy: repeat -> round -> record.
using ByRound = std::map<int, const RoundRecord*>;
using ByRepeat = std::map<int, ByRound>;

struct Grouped {
  std::vector<std::string> order;  // the strategies, in first-seen order
  std::map<std::string, ByRepeat> strategies;
  int num_classes = 0;  // of the records (0: no records)
};

// The records by strategy, repeat and round; every record has the same number of classes and
// appears once.
Grouped group_records(const std::vector<RoundRecord>& records) {
  Grouped g;
  for (const RoundRecord& r : records) {
    QUARRY_EXPECTS(r.round >= 0, record_name(r), ": negative round");
    if (g.num_classes == 0) g.num_classes = r.test.num_classes;
    QUARRY_EXPECTS(r.test.num_classes == g.num_classes, record_name(r), ": ",
                   r.test.num_classes, " classes, but other records have ", g.num_classes);
    auto it = g.strategies.find(r.strategy);
    if (it == g.strategies.end()) {
      g.order.push_back(r.strategy);
      it = g.strategies.emplace(r.strategy, ByRepeat{}).first;
    }
    const bool fresh = it->second[r.repeat].emplace(r.round, &r).second;
    QUARRY_EXPECTS(fresh, record_name(r), " appears twice in the records");
  }
  return g;
}

// Whether a repeat ended where the stopping rule fired (simulate --stop-early).
bool stopped_by_rule(const ByRound& by_round) { return by_round.rbegin()->second->stop_fired; }

// The number of rounds of a strategy's summary, after checking that every repeat has rounds
// 0..R-1 (a repeat the stopping rule ended: up to the round where it fired) with the label
// counts of the longest repeat. Where the rule ended a repeat early, the summary's curves end
// at the shortest such repeat (`stopped_early`), so every point is a mean over every repeat.
int checked_rounds(const std::string& name, const ByRepeat& repeats, bool* stopped_early) {
  int longest = 0, full = 0, shortest_stopped = std::numeric_limits<int>::max();
  const ByRound* reference = nullptr;
  for (const auto& [rep, by_round] : repeats) {
    const int length = by_round.rbegin()->first + 1;
    if (length > longest) longest = length, reference = &by_round;
    if (stopped_by_rule(by_round))
      shortest_stopped = std::min(shortest_stopped, length);
    else
      full = std::max(full, length);
  }
  const int reference_repeat = reference->begin()->second->repeat;
  for (const auto& [rep, by_round] : repeats) {
    const int needed = stopped_by_rule(by_round) ? by_round.rbegin()->first + 1 : full;
    for (int k = 0; k < needed; ++k)
      QUARRY_EXPECTS(by_round.count(k), "strategy '", name, "' repeat ", rep, " has no round ", k,
                     " (every repeat needs rounds 0 to ", needed - 1, ")");
  }
  for (const auto& [rep, by_round] : repeats)  // every round present: compare the labels
    for (const auto& [k, r] : by_round) {
      const std::int64_t labels = reference->at(k)->labels;
      QUARRY_EXPECTS(r->labels == labels, "strategy '", name, "': repeat ", rep, " has ", r->labels,
                     " labels at round ", k, " but repeat ", reference_repeat, " has ", labels);
    }
  const int rounds = full > 0 ? std::min(full, shortest_stopped) : shortest_stopped;
  *stopped_early = rounds < longest;
  return rounds;
}

// The stopping rule over a strategy's repeats (none where no record has its fields).
std::optional<StopSummary> summarize_stop(const ByRepeat& repeats) {
  bool any = false;
  std::size_t longest = 0;
  for (const auto& [rep, by_round] : repeats) {
    longest = std::max(longest, by_round.size());
    for (const auto& [k, r] : by_round) any = any || !std::isnan(r->stop_kappa) || r->stop_fired;
  }
  if (!any) return std::nullopt;
  StopSummary st;
  std::vector<double> labels, saved, acc, acc_cost, bal, bal_cost;
  std::vector<std::vector<double>> kappa(longest);
  for (const auto& [rep, by_round] : repeats) {
    std::optional<int> fired;
    for (const auto& [k, r] : by_round) {
      if (!std::isnan(r->stop_kappa)) kappa[static_cast<std::size_t>(k)].push_back(r->stop_kappa);
      if (r->stop_fired && !fired) fired = k;
    }
    st.fired_round.push_back(fired);
    if (!fired) continue;
    ++st.repeats_fired;
    const RoundRecord& at = *by_round.at(*fired);
    labels.push_back(static_cast<double>(at.labels));
    acc.push_back(at.test.accuracy);
    bal.push_back(at.test.balanced_accuracy);
    const RoundRecord& last = *by_round.rbegin()->second;
    if (last.round == at.round) continue;  // ended there (--stop-early): nothing to compare
    saved.push_back(static_cast<double>(last.labels - at.labels));
    acc_cost.push_back(last.test.accuracy - at.test.accuracy);
    bal_cost.push_back(last.test.balanced_accuracy - at.test.balanced_accuracy);
  }
  const auto summary = [](const std::vector<double>& v) { return v.empty() ? MeanStd{kNaN, kNaN} : mean_std(v); };
  st.labels = summary(labels);
  st.labels_saved = summary(saved);
  st.accuracy = summary(acc);
  st.accuracy_cost = summary(acc_cost);
  st.balanced_accuracy = summary(bal);
  st.balanced_accuracy_cost = summary(bal_cost);
  for (const std::vector<double>& k : kappa) st.mean_kappa.push_back(k.empty() ? kNaN : mean_std(k).mean);
  return st;
}

// The learning curves and times of a strategy over its repeats (label efficiency left for
// later: it needs the baseline).
StrategySummary summarize_strategy(const std::string& name, const ByRepeat& repeats, int rounds,
                                   bool binary) {
  StrategySummary st;
  st.strategy = name;
  st.repeats = static_cast<int>(repeats.size());
  const ByRound& first_rounds = repeats.begin()->second;

  std::vector<double> round_s, train_s, infer_s, score_s, select_s;
  for (int k = 0; k < rounds; ++k) {
    std::vector<double> acc, bal, f1;
    std::vector<std::vector<double>> sens(binary ? 2 : 0), spec(binary ? 2 : 0);
    for (const auto& [rep, by_round] : repeats) {
      const RoundRecord& r = *by_round.at(k);
      acc.push_back(r.test.accuracy);
      bal.push_back(r.test.balanced_accuracy);
      f1.push_back(r.test.macro_f1);
      if (binary) {
        QUARRY_EXPECTS(r.test.sensitivity.size() == 2 && r.test.specificity.size() == 2,
                       record_name(r), ": expected the sensitivity and specificity of 2 "
                       "classes, got ", r.test.sensitivity.size(), " and ",
                       r.test.specificity.size());
        for (int c = 0; c < 2; ++c) {
          sens[c].push_back(r.test.sensitivity[c]);
          spec[c].push_back(r.test.specificity[c]);
        }
      }
      round_s.push_back(r.round_seconds);
      train_s.push_back(r.train_seconds);
      infer_s.push_back(r.infer_seconds);
      score_s.push_back(r.score_seconds);
      select_s.push_back(r.select_seconds);
    }
    st.labels.push_back(first_rounds.at(k)->labels);
    st.accuracy.push_back(mean_std(acc));
    st.balanced_accuracy.push_back(mean_std(bal));
    st.macro_f1.push_back(mean_std(f1));
    if (binary) {
      st.sensitivity.push_back({mean_std(sens[0]), mean_std(sens[1])});
      st.specificity.push_back({mean_std(spec[0]), mean_std(spec[1])});
    }
  }
  st.round_seconds = mean_std(round_s);
  st.train_seconds = mean_std(train_s);
  st.infer_seconds = mean_std(infer_s);
  st.score_seconds = mean_std(score_s);
  st.select_seconds = mean_std(select_s);
  return st;
}

// A metric per repeat, per round: the curves of the per-repeat label efficiency, the bootstrap
// and the AULC.
RepeatCurves repeat_curves(const ByRepeat& repeats, int rounds, double Metrics::*metric) {
  RepeatCurves curves;
  for (const auto& [rep, by_round] : repeats) {
    std::vector<double> ys;
    for (int k = 0; k < rounds; ++k) ys.push_back(by_round.at(k)->test.*metric);
    curves.emplace(rep, std::move(ys));
  }
  return curves;
}

// Label efficiency and AULC against the baseline (efficiency left empty without a baseline).
// repeat_acc[i], repeat_bal[i]: the per-repeat curves of s.strategies[i].
void set_efficiency(SimulationSummary& s, const std::vector<RepeatCurves>& repeat_acc,
                    const std::vector<RepeatCurves>& repeat_bal) {
  const StrategySummary* base = find_strategy(s, s.baseline);
  const std::size_t b = base ? static_cast<std::size_t>(base - s.strategies.data()) : 0;
  for (std::size_t i = 0; i < s.strategies.size(); ++i) {
    StrategySummary& st = s.strategies[i];
    const bool is_base = base && i == b;
    st.accuracy_aulc = aulc_summary(st.labels, repeat_acc[i], base ? &repeat_acc[b] : nullptr, is_base);
    st.balanced_accuracy_aulc =
        aulc_summary(st.labels, repeat_bal[i], base ? &repeat_bal[b] : nullptr, is_base);
    if (!base) {
      st.accuracy_efficiency = Efficiency{};
      st.accuracy_efficiency.target = kNaN;
      st.accuracy_efficiency.baseline_final = kNaN;
      st.balanced_accuracy_efficiency = st.accuracy_efficiency;
      continue;
    }
    st.accuracy_efficiency = efficiency(st.labels, st.accuracy, repeat_acc[i], base->labels, base->accuracy,
                                        repeat_acc[b], is_base);
    st.balanced_accuracy_efficiency = efficiency(st.labels, st.balanced_accuracy, repeat_bal[i], base->labels,
                                                 base->balanced_accuracy, repeat_bal[b], is_base);
  }
}

// The protocol, where the caller left it out, as the records show it.
void fill_protocol(SimulationSummary& s) {
  if (s.strategies.empty()) return;
  const StrategySummary* base = find_strategy(s, s.baseline);
  const StrategySummary& ref = base ? *base : s.strategies.front();
  int repeats = 0, rounds = 0;
  for (const StrategySummary& st : s.strategies) {
    repeats = std::max(repeats, st.repeats);
    rounds = std::max(rounds, static_cast<int>(st.labels.size()) - 1);
  }
  if (s.repeats == 0) s.repeats = repeats;
  if (s.rounds == 0) s.rounds = rounds;
  if (s.seed_size == 0) s.seed_size = ref.labels.front();
  if (s.batch == 0 && ref.labels.size() > 1) s.batch = ref.labels[1] - ref.labels[0];
}

}  // namespace

// ---------------------------------------------------------------- summary

SimulationSummary summarize(const std::vector<RoundRecord>& records, SimulationSummary header) {
  SimulationSummary s = std::move(header);
  s.strategies.clear();

  const Grouped grouped = group_records(records);
  if (s.num_classes == 0) s.num_classes = grouped.num_classes;
  QUARRY_EXPECTS(records.empty() || s.num_classes == grouped.num_classes, "the summary is for ",
                 s.num_classes, " classes but the records have ", grouped.num_classes);
  const bool binary = s.num_classes == 2;

  // Per strategy (in the order of s.strategies), per repeat (in repeat order), per round: the
  // accuracy and balanced accuracy of each repeat (the per-repeat label efficiency).
  std::vector<RepeatCurves> repeat_acc, repeat_bal;
  for (const std::string& name : grouped.order) {
    const ByRepeat& repeats = grouped.strategies.at(name);
    bool stopped_early = false;
    const int rounds = checked_rounds(name, repeats, &stopped_early);
    s.strategies.push_back(summarize_strategy(name, repeats, rounds, binary));
    s.strategies.back().stopped_early = stopped_early;
    s.strategies.back().stop = summarize_stop(repeats);
    repeat_acc.push_back(repeat_curves(repeats, rounds, &Metrics::accuracy));
    repeat_bal.push_back(repeat_curves(repeats, rounds, &Metrics::balanced_accuracy));
    set_curve_intervals(s.strategies.back().accuracy, repeat_acc.back());
    set_curve_intervals(s.strategies.back().balanced_accuracy, repeat_bal.back());
  }
  set_efficiency(s, repeat_acc, repeat_bal);
  fill_protocol(s);
  return s;
}

}  // namespace quarry
