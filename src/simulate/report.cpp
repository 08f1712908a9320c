// What a simulation reports: the summary over repeats (learning curves, label efficiency
// against the baseline) and its files: rounds.jsonl lines, curves.csv, summary.json,
// summary.md and curves.svg.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "quarry/error.hpp"
#include "quarry/loop.hpp"
#include "simulate/xml.hpp"

namespace quarry {
namespace {

using nlohmann::json;
// Written with the keys in the order set (parsed into plain json).
using ojson = nlohmann::ordered_json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// printf into a std::string.
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
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

// %.6g, and "nan" for NaN (curves.csv).
std::string g6(double v) { return std::isnan(v) ? std::string("nan") : strf("%.6g", v); }

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

double saving(double labels, double baseline_final_labels) {
  return 100.0 * (1.0 - labels / baseline_final_labels);
}

// Label efficiency against `target` (the baseline's final mean): on the mean curve, and on
// each repeat's curve (`per_repeat[repeat][round]`, in repeat order).
Efficiency efficiency(const std::vector<std::int64_t>& labels, const std::vector<MeanStd>& curve,
                      const std::vector<std::vector<double>>& per_repeat, double target,
                      double baseline_final_labels) {
  Efficiency e;
  e.target = target;
  std::vector<double> means;
  for (const MeanStd& m : curve) means.push_back(m.mean);
  e.labels = first_crossing(labels, means, target);
  if (e.labels && baseline_final_labels > 0)
    e.saving_percent = saving(*e.labels, baseline_final_labels);
  e.stays_labels = stays_from(labels, means, target);

  std::vector<double> savings;
  for (const std::vector<double>& ys : per_repeat) {
    e.repeat_labels.push_back(first_crossing(labels, ys, target));
    if (!e.repeat_labels.back()) continue;
    ++e.repeats_reached;
    savings.push_back(baseline_final_labels > 0
                          ? saving(*e.repeat_labels.back(), baseline_final_labels)
                          : kNaN);
  }
  if (!savings.empty()) e.repeat_saving = mean_std(savings);  // NaN: no baseline labels
  return e;
}

const StrategySummary* find_strategy(const SimulationSummary& s, const std::string& name) {
  for (const StrategySummary& st : s.strategies)
    if (st.strategy == name) return &st;
  return nullptr;
}

// ---------------------------------------------------------------- rounds.jsonl

ojson number_or_null(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }

ojson numbers_or_null(const std::vector<double>& v) {
  ojson a = ojson::array();
  for (double x : v) a.push_back(number_or_null(x));
  return a;
}

const json& field(const json& j, const char* key) {
  const auto it = j.find(key);
  QUARRY_EXPECTS(it != j.end(), "missing field \"", key, "\"");
  return *it;
}

double as_double(const json& v, const char* key) {
  if (v.is_null()) return kNaN;
  QUARRY_EXPECTS(v.is_number(), "field \"", key, "\" must be a number or null, got ", v.dump());
  return v.get<double>();
}

std::int64_t as_int(const json& v, const char* key) {
  QUARRY_EXPECTS(v.is_number_integer(), "field \"", key, "\" must be an integer, got ", v.dump());
  return v.get<std::int64_t>();
}

std::vector<double> doubles(const json& j, const char* key) {
  const json& a = field(j, key);
  QUARRY_EXPECTS(a.is_array(), "field \"", key, "\" must be an array, got ", a.dump());
  std::vector<double> out;
  for (const json& v : a) out.push_back(as_double(v, key));
  return out;
}

std::vector<std::int64_t> ints(const json& a, const char* key) {
  QUARRY_EXPECTS(a.is_array(), "field \"", key, "\" must be an array, got ", a.dump());
  std::vector<std::int64_t> out;
  for (const json& v : a) out.push_back(as_int(v, key));
  return out;
}

RoundRecord parse_record(const json& j) {
  QUARRY_EXPECTS(j.is_object(), "expected a JSON object");
  RoundRecord r;
  const json& strategy = field(j, "strategy");
  QUARRY_EXPECTS(strategy.is_string(), "field \"strategy\" must be a string");
  r.strategy = strategy.get<std::string>();
  r.repeat = static_cast<int>(as_int(field(j, "repeat"), "repeat"));
  r.round = static_cast<int>(as_int(field(j, "round"), "round"));
  r.labels = as_int(field(j, "labels"), "labels");
  r.test.accuracy = as_double(field(j, "accuracy"), "accuracy");
  r.test.balanced_accuracy = as_double(field(j, "balanced_accuracy"), "balanced_accuracy");
  r.test.macro_f1 = as_double(field(j, "macro_f1"), "macro_f1");
  r.test.sensitivity = doubles(j, "sensitivity");
  r.test.specificity = doubles(j, "specificity");
  r.test.n = as_int(field(j, "n"), "n");
  r.test.num_classes = j.contains("num_classes")
                           ? static_cast<int>(as_int(j["num_classes"], "num_classes"))
                           : static_cast<int>(r.test.sensitivity.size());
  // The confusion matrix as rows ([[...], ...], as written) or flat ([C*C]).
  const json& confusion = field(j, "confusion");
  QUARRY_EXPECTS(confusion.is_array(), "field \"confusion\" must be an array");
  for (const json& row : confusion) {
    if (row.is_array()) {
      for (std::int64_t v : ints(row, "confusion")) r.test.confusion.push_back(v);
    } else {
      r.test.confusion.push_back(as_int(row, "confusion"));
    }
  }
  r.labeled_per_class = ints(field(j, "labeled_per_class"), "labeled_per_class");
  r.epochs = static_cast<int>(as_int(field(j, "epochs"), "epochs"));
  const json& seconds = field(j, "seconds");
  QUARRY_EXPECTS(seconds.is_object(), "field \"seconds\" must be an object");
  r.train_seconds = as_double(field(seconds, "train"), "seconds.train");
  r.eval_seconds = as_double(field(seconds, "eval"), "seconds.eval");
  r.infer_seconds = as_double(field(seconds, "infer"), "seconds.infer");
  r.score_seconds = as_double(field(seconds, "score"), "seconds.score");
  r.select_seconds = as_double(field(seconds, "select"), "seconds.select");
  r.round_seconds = as_double(field(seconds, "round"), "seconds.round");
  r.selected = ints(field(j, "selected"), "selected");
  return r;
}

// ---------------------------------------------------------------- text helpers

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// Text for Markdown (table cells included): no line breaks, and the characters that would
// end a cell, open an HTML tag or start emphasis, code or a link backslash-escaped.
std::string md(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\n' || c == '\r') {
      out += ' ';
      continue;
    }
    if (std::string_view("|<>*_`[]\\").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

std::string xml(const std::string& s) { return loop::xml_escape(s); }

std::string pm(const MeanStd& m, int decimals = 4) {
  if (std::isnan(m.mean)) return "n/a";
  return strf("%.*f ± %.*f", decimals, m.mean, decimals, m.std);
}

std::string seconds_pm(const MeanStd& m) {
  if (std::isnan(m.mean)) return "n/a";
  return strf("%.3g ± %.2g", m.mean, m.std);
}

ojson mean_std_json(const MeanStd& m) {
  return {{"mean", number_or_null(m.mean)}, {"std", number_or_null(m.std)}};
}

ojson efficiency_json(const Efficiency& e) {
  ojson j;
  j["target"] = number_or_null(e.target);
  j["labels"] = e.labels ? number_or_null(*e.labels) : ojson(nullptr);
  j["saving_percent"] = e.saving_percent ? number_or_null(*e.saving_percent) : ojson(nullptr);
  j["reached"] = e.labels.has_value();
  ojson per_repeat = ojson::array();
  for (const std::optional<double>& x : e.repeat_labels)
    per_repeat.push_back(x ? number_or_null(*x) : ojson(nullptr));
  j["repeat_labels"] = std::move(per_repeat);
  j["repeats_reached"] = e.repeats_reached;
  j["repeat_saving"] = mean_std_json(e.repeat_saving);
  j["stays_labels"] = e.stays_labels ? number_or_null(*e.stays_labels) : ojson(nullptr);
  return j;
}

}  // namespace

// ---------------------------------------------------------------- summary

SimulationSummary summarize(const std::vector<RoundRecord>& records, SimulationSummary header) {
  SimulationSummary s = std::move(header);
  s.strategies.clear();

  // strategy (first-seen order) -> repeat -> round -> record
  std::vector<std::string> order;
  std::map<std::string, std::map<int, std::map<int, const RoundRecord*>>> grouped;
  int record_classes = 0;
  for (const RoundRecord& r : records) {
    QUARRY_EXPECTS(r.round >= 0, record_name(r), ": negative round");
    if (record_classes == 0) record_classes = r.test.num_classes;
    QUARRY_EXPECTS(r.test.num_classes == record_classes, record_name(r), ": ",
                   r.test.num_classes, " classes, but other records have ", record_classes);
    auto it = grouped.find(r.strategy);
    if (it == grouped.end()) {
      order.push_back(r.strategy);
      it = grouped.emplace(r.strategy, std::map<int, std::map<int, const RoundRecord*>>{}).first;
    }
    const bool fresh = it->second[r.repeat].emplace(r.round, &r).second;
    QUARRY_EXPECTS(fresh, record_name(r), " appears twice in the records");
  }
  if (s.num_classes == 0) s.num_classes = record_classes;
  QUARRY_EXPECTS(records.empty() || s.num_classes == record_classes, "the summary is for ",
                 s.num_classes, " classes but the records have ", record_classes);
  const bool binary = s.num_classes == 2;

  // Per strategy (in the order of s.strategies), per repeat (in repeat order), per round: the
  // accuracy and balanced accuracy of each repeat (the per-repeat label efficiency).
  std::vector<std::vector<std::vector<double>>> repeat_acc, repeat_bal;

  for (const std::string& name : order) {
    const auto& repeats = grouped[name];
    StrategySummary st;
    st.strategy = name;
    st.repeats = static_cast<int>(repeats.size());

    // Every repeat has rounds 0..R-1 with the label counts of the first repeat.
    int rounds = 0;
    for (const auto& [rep, by_round] : repeats)
      rounds = std::max(rounds, by_round.rbegin()->first + 1);
    const auto& [first_repeat, first_rounds] = *repeats.begin();
    for (const auto& [rep, by_round] : repeats) {
      for (int k = 0; k < rounds; ++k) {
        const auto found = by_round.find(k);
        QUARRY_EXPECTS(found != by_round.end(), "strategy '", name, "' repeat ", rep,
                       " has no round ", k, " (every repeat needs rounds 0 to ", rounds - 1, ")");
        const std::int64_t labels = first_rounds.at(k)->labels;  // checked first: map order
        QUARRY_EXPECTS(found->second->labels == labels, "strategy '", name, "': repeat ", rep,
                       " has ", found->second->labels, " labels at round ", k, " but repeat ",
                       first_repeat, " has ", labels);
      }
    }

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
    std::vector<std::vector<double>> acc_curves, bal_curves;
    for (const auto& [rep, by_round] : repeats) {
      std::vector<double> acc, bal;
      for (int k = 0; k < rounds; ++k) {
        acc.push_back(by_round.at(k)->test.accuracy);
        bal.push_back(by_round.at(k)->test.balanced_accuracy);
      }
      acc_curves.push_back(std::move(acc));
      bal_curves.push_back(std::move(bal));
    }
    repeat_acc.push_back(std::move(acc_curves));
    repeat_bal.push_back(std::move(bal_curves));
    s.strategies.push_back(std::move(st));
  }

  // Label efficiency against the baseline's final mean (left empty without a baseline).
  const StrategySummary* base = find_strategy(s, s.baseline);
  for (std::size_t i = 0; i < s.strategies.size(); ++i) {
    StrategySummary& st = s.strategies[i];
    if (!base) {
      st.accuracy_efficiency = Efficiency{};
      st.accuracy_efficiency.target = kNaN;
      st.balanced_accuracy_efficiency = st.accuracy_efficiency;
      continue;
    }
    const double final_labels = static_cast<double>(base->labels.back());
    st.accuracy_efficiency = efficiency(st.labels, st.accuracy, repeat_acc[i],
                                        base->accuracy.back().mean, final_labels);
    st.balanced_accuracy_efficiency =
        efficiency(st.labels, st.balanced_accuracy, repeat_bal[i],
                   base->balanced_accuracy.back().mean, final_labels);
  }

  // The protocol, where the caller left it out, as the records show it.
  if (!s.strategies.empty()) {
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
  return s;
}

// ---------------------------------------------------------------- rounds.jsonl

std::string round_json(const RoundRecord& r) {
  ojson j;
  j["strategy"] = r.strategy;
  j["repeat"] = r.repeat;
  j["round"] = r.round;
  j["labels"] = r.labels;
  j["accuracy"] = number_or_null(r.test.accuracy);
  j["balanced_accuracy"] = number_or_null(r.test.balanced_accuracy);
  j["macro_f1"] = number_or_null(r.test.macro_f1);
  j["sensitivity"] = numbers_or_null(r.test.sensitivity);
  j["specificity"] = numbers_or_null(r.test.specificity);
  j["num_classes"] = r.test.num_classes;
  // Rows of the confusion matrix (row = truth), flat where it is not C x C.
  const std::size_t C = static_cast<std::size_t>(std::max(r.test.num_classes, 0));
  if (C > 0 && r.test.confusion.size() == C * C) {
    ojson rows = ojson::array();
    for (std::size_t t = 0; t < C; ++t)
      rows.push_back(std::vector<std::int64_t>(r.test.confusion.begin() + t * C,
                                               r.test.confusion.begin() + (t + 1) * C));
    j["confusion"] = std::move(rows);
  } else {
    j["confusion"] = r.test.confusion;
  }
  j["n"] = r.test.n;
  j["labeled_per_class"] = r.labeled_per_class;
  j["epochs"] = r.epochs;
  j["seconds"] = {{"train", number_or_null(r.train_seconds)},
                  {"eval", number_or_null(r.eval_seconds)},
                  {"infer", number_or_null(r.infer_seconds)},
                  {"score", number_or_null(r.score_seconds)},
                  {"select", number_or_null(r.select_seconds)},
                  {"round", number_or_null(r.round_seconds)}};
  j["selected"] = r.selected;
  return j.dump();
}

RoundRecord parse_round_json(const std::string& line) {
  const std::string shown = line.size() > 200 ? line.substr(0, 200) + "..." : line;
  try {
    return parse_record(json::parse(line));
  } catch (const json::exception& e) {
    QUARRY_FAIL("rounds.jsonl: malformed line (", e.what(), "): ", shown);
  } catch (const Error& e) {
    QUARRY_FAIL("rounds.jsonl: malformed line (", e.what(), "): ", shown);
  }
}

// ---------------------------------------------------------------- curves.csv

std::string curves_csv(const SimulationSummary& s) {
  const bool binary = s.num_classes == 2;
  std::string out =
      "strategy,round,labels,repeats,accuracy_mean,accuracy_std,balanced_accuracy_mean,"
      "balanced_accuracy_std,macro_f1_mean,macro_f1_std";
  if (binary) {
    for (const char* what : {"sensitivity", "specificity"})
      for (int c = 0; c < 2; ++c) out += strf(",%s_%d_mean,%s_%d_std", what, c, what, c);
  }
  out += '\n';
  for (const StrategySummary& st : s.strategies) {
    for (std::size_t k = 0; k < st.labels.size(); ++k) {
      out += csv_field(st.strategy) + strf(",%zu,%lld,%d", k, static_cast<long long>(st.labels[k]),
                                           st.repeats);
      for (const MeanStd* m : {&st.accuracy[k], &st.balanced_accuracy[k], &st.macro_f1[k]})
        out += "," + g6(m->mean) + "," + g6(m->std);
      if (binary && k < st.sensitivity.size()) {
        for (const auto* per_class : {&st.sensitivity[k], &st.specificity[k]})
          for (const MeanStd& m : *per_class) out += "," + g6(m.mean) + "," + g6(m.std);
      }
      out += '\n';
    }
  }
  return out;
}

// ---------------------------------------------------------------- summary.json

std::string summary_json(const SimulationSummary& s) {
  ojson j;
  j["dataset"] = s.dataset;
  j["model"] = s.model;
  j["baseline"] = s.baseline;
  j["seed_size"] = s.seed_size;
  j["batch"] = s.batch;
  j["rounds"] = s.rounds;
  j["repeats"] = s.repeats;
  j["num_classes"] = s.num_classes;
  if (!s.config_json.empty()) {
    try {
      j["config"] = ojson::parse(s.config_json);
    } catch (const ojson::exception& e) {
      QUARRY_FAIL("summary.json: the configuration is not valid JSON (", e.what(), ")");
    }
  }
  ojson strategies = ojson::array();
  for (const StrategySummary& st : s.strategies) {
    ojson curve = ojson::array();
    for (std::size_t k = 0; k < st.labels.size(); ++k) {
      ojson point = {{"round", k},
                    {"labels", st.labels[k]},
                    {"accuracy", mean_std_json(st.accuracy[k])},
                    {"balanced_accuracy", mean_std_json(st.balanced_accuracy[k])},
                    {"macro_f1", mean_std_json(st.macro_f1[k])}};
      if (k < st.sensitivity.size()) {
        ojson sens = ojson::array(), spec = ojson::array();
        for (const MeanStd& m : st.sensitivity[k]) sens.push_back(mean_std_json(m));
        for (const MeanStd& m : st.specificity[k]) spec.push_back(mean_std_json(m));
        point["sensitivity"] = std::move(sens);
        point["specificity"] = std::move(spec);
      }
      curve.push_back(std::move(point));
    }
    ojson e;
    e["strategy"] = st.strategy;
    e["repeats"] = st.repeats;
    e["curve"] = std::move(curve);
    e["efficiency"] = {{"accuracy", efficiency_json(st.accuracy_efficiency)},
                       {"balanced_accuracy", efficiency_json(st.balanced_accuracy_efficiency)}};
    e["seconds"] = {{"round", mean_std_json(st.round_seconds)},
                    {"train", mean_std_json(st.train_seconds)},
                    {"infer", mean_std_json(st.infer_seconds)},
                    {"score", mean_std_json(st.score_seconds)},
                    {"select", mean_std_json(st.select_seconds)}};
    strategies.push_back(std::move(e));
  }
  j["strategies"] = std::move(strategies);
  return j.dump(2) + "\n";
}

// ---------------------------------------------------------------- summary.md

namespace {

// The strategy (other than the baseline) with the largest positive saving; null if none.
const StrategySummary* best_saving(const SimulationSummary& s,
                                   Efficiency StrategySummary::*which) {
  const StrategySummary* best = nullptr;
  for (const StrategySummary& st : s.strategies) {
    const Efficiency& e = st.*which;
    if (st.strategy == s.baseline || !e.saving_percent || !(*e.saving_percent > 0)) continue;
    if (!best || *e.saving_percent > *((*best).*which).saving_percent) best = &st;
  }
  return best;
}

std::string labels_cell(const StrategySummary& st, const Efficiency& e) {
  if (e.labels) return strf("%.0f", *e.labels);
  return strf("not reached (> %lld labels)", static_cast<long long>(st.labels.back()));
}

std::string saving_cell(const Efficiency& e, bool best) {
  if (!e.saving_percent) return "–";
  const std::string v = strf("%.1f %%", *e.saving_percent);
  return best ? "**" + v + "** (best)" : v;
}

// The per-repeat saving: mean ± std over the repeats that reached the target, and how many of
// how many did ("41 ± 6 % (3/3)"; "– (0/3)" when none).
std::string repeat_saving_cell(const StrategySummary& st, const Efficiency& e) {
  const std::string reached = strf("(%d/%d)", e.repeats_reached, st.repeats);
  if (e.repeats_reached == 0 || std::isnan(e.repeat_saving.mean)) return "– " + reached;
  return strf("%.0f ± %.0f %% ", e.repeat_saving.mean, e.repeat_saving.std) + reached;
}

std::string stays_cell(const Efficiency& e) {
  if (e.stays_labels) return strf("%.0f", *e.stays_labels);
  return "below at the last round";
}

std::string per_round_table(const SimulationSummary& s,
                            std::vector<MeanStd> StrategySummary::*curve) {
  std::size_t rounds = 0;
  for (const StrategySummary& st : s.strategies) rounds = std::max(rounds, st.labels.size());
  std::string out = "| Round | Labels |";
  std::string rule = "| --: | --: |";
  for (const StrategySummary& st : s.strategies) {
    out += " " + md(st.strategy) + " |";
    rule += " --: |";
  }
  out += "\n" + rule + "\n";
  for (std::size_t k = 0; k < rounds; ++k) {
    // The label count of the first strategy that has this round; a strategy with another
    // count at this round shows its own.
    std::int64_t labels = -1;
    for (const StrategySummary& st : s.strategies)
      if (k < st.labels.size()) {
        labels = st.labels[k];
        break;
      }
    out += strf("| %zu | %lld |", k, static_cast<long long>(labels));
    for (const StrategySummary& st : s.strategies) {
      if (k >= st.labels.size()) {
        out += " – |";
        continue;
      }
      out += " " + pm((st.*curve)[k]);
      if (st.labels[k] != labels)
        out += strf(" (%lld labels)", static_cast<long long>(st.labels[k]));
      out += " |";
    }
    out += "\n";
  }
  return out;
}

}  // namespace

std::string summary_markdown(const SimulationSummary& s) {
  const StrategySummary* base = find_strategy(s, s.baseline);
  std::string out = "# Active-learning simulation\n\n";
  out += "- **Dataset:** " + md(s.dataset) + "\n";
  out += "- **Model:** " + md(s.model) + "\n";
  out += strf("- **Protocol:** an initial labeled set of %lld samples, then %d rounds of %lld "
              "labels each",
              static_cast<long long>(s.seed_size), s.rounds, static_cast<long long>(s.batch));
  if (base) out += strf(" (%lld labels at the end)", static_cast<long long>(base->labels.back()));
  out += strf("; %d repeat%s per strategy (mean ± sample standard deviation over repeats); "
              "%d classes.\n",
              s.repeats, s.repeats == 1 ? "" : "s", s.num_classes);
  out += "- **Baseline:** " + md(s.baseline) +
         (base ? std::string("\n") : std::string(" (not in this run: no label efficiency)\n"));
  out += "\n## Results at the last round\n\n";

  const StrategySummary* best_acc = best_saving(s, &StrategySummary::accuracy_efficiency);
  const StrategySummary* best_bal = best_saving(s, &StrategySummary::balanced_accuracy_efficiency);
  out += "| Strategy | Labels | Accuracy | Balanced accuracy | Macro-F1 |";
  std::string rule = "| --- | --: | --: | --: | --: |";
  if (base) {
    out += strf(" Labels to reach %s's accuracy (%.4f) | Saving | Saving per repeat |",
                md(s.baseline).c_str(), base->accuracy.back().mean);
    out += strf(" Labels to reach %s's balanced accuracy (%.4f) | Saving | Saving per repeat |",
                md(s.baseline).c_str(), base->balanced_accuracy.back().mean);
    rule += " --: | --: | --: | --: | --: | --: |";
  }
  out += " Round time (s) |\n" + rule + " --: |\n";
  for (const StrategySummary& st : s.strategies) {
    out += "| " + md(st.strategy) + strf(" | %lld | ", static_cast<long long>(st.labels.back())) +
           pm(st.accuracy.back()) + " | " + pm(st.balanced_accuracy.back()) + " | " +
           pm(st.macro_f1.back()) + " |";
    if (base) {
      out += " " + labels_cell(st, st.accuracy_efficiency) + " | " +
             saving_cell(st.accuracy_efficiency, &st == best_acc) + " | " +
             repeat_saving_cell(st, st.accuracy_efficiency) + " |";
      out += " " + labels_cell(st, st.balanced_accuracy_efficiency) + " | " +
             saving_cell(st.balanced_accuracy_efficiency, &st == best_bal) + " | " +
             repeat_saving_cell(st, st.balanced_accuracy_efficiency) + " |";
    }
    out += " " + seconds_pm(st.round_seconds) + " |\n";
  }

  if (base) {
    out += "\n## Stays above from: labels after which the mean curve stays at or above " +
           md(s.baseline) + "'s final mean\n\n";
    out += strf("| Strategy | Accuracy (%.4f) | Balanced accuracy (%.4f) |\n| --- | --: | --: |\n",
                base->accuracy.back().mean, base->balanced_accuracy.back().mean);
    for (const StrategySummary& st : s.strategies)
      out += "| " + md(st.strategy) + " | " + stays_cell(st.accuracy_efficiency) + " | " +
             stays_cell(st.balanced_accuracy_efficiency) + " |\n";
  }

  out += "\n## Accuracy per round\n\n" + per_round_table(s, &StrategySummary::accuracy);
  out += "\n## Balanced accuracy per round\n\n" +
         per_round_table(s, &StrategySummary::balanced_accuracy);

  if (s.num_classes == 2) {
    out += "\n## Sensitivity and specificity at the last round\n\n";
    out += "| Strategy | Sensitivity, class 0 | Sensitivity, class 1 | Specificity, class 0 | "
           "Specificity, class 1 |\n| --- | --: | --: | --: | --: |\n";
    for (const StrategySummary& st : s.strategies) {
      if (st.sensitivity.empty()) continue;
      const auto& sens = st.sensitivity.back();
      const auto& spec = st.specificity.back();
      out += "| " + md(st.strategy) + " | " + pm(sens[0]) + " | " + pm(sens[1]) + " | " +
             pm(spec[0]) + " | " + pm(spec[1]) + " |\n";
    }
  }

  out += "\n## Time per round (seconds, mean ± std over all rounds and repeats)\n\n";
  out += "| Strategy | Round | Train | Infer | Score | Select |\n"
         "| --- | --: | --: | --: | --: | --: |\n";
  for (const StrategySummary& st : s.strategies)
    out += "| " + md(st.strategy) + " | " + seconds_pm(st.round_seconds) + " | " +
           seconds_pm(st.train_seconds) + " | " + seconds_pm(st.infer_seconds) + " | " +
           seconds_pm(st.score_seconds) + " | " + seconds_pm(st.select_seconds) + " |\n";

  out += "\n## How to read this\n\n";
  out += "Every strategy starts from the same initial labeled set in a repeat and labels one "
         "batch per round; the model is retrained from scratch on the labeled set and evaluated "
         "on the test split. Values are the mean ± sample standard deviation over repeats. "
         "Balanced accuracy is the mean recall over the classes in the test set; macro-F1 the "
         "mean F1 over the classes in the test set or the predictions.\n\n";
  out += "**Label efficiency:** the number of labels a strategy needs for its mean learning "
         "curve to first reach " + md(s.baseline) + "'s mean at its last round (interpolated "
         "linearly between rounds), and the **saving**: 100 × (1 − those labels / the "
         "baseline's final labels). A saving of 40 % means the strategy matched the baseline's "
         "final quality with 40 % fewer labels; \"not reached\" means it never did within the "
         "run. The best saving is in bold.\n\n";
  out += "**Saving per repeat:** the same reading on each repeat's own learning curve, against "
         "the same target (" + md(s.baseline) + "'s final mean): the mean ± sample standard "
         "deviation of the saving over the repeats whose curve reached the target, and how many "
         "of the repeats did (\"41 ± 6 % (3/3)\"; \"– (0/3)\": none did). The mean curve can "
         "cross the target on one repeat's upward blip; a wide spread or few repeats reaching it "
         "means the saving above is fragile.\n\n";
  out += "**Stays above from:** the labels after which the mean curve stays at or above " +
         md(s.baseline) + "'s final mean up to the last round (interpolated into the round "
         "where it last crosses the target from below); \"below at the last round\" means it "
         "ends under the target. Where it is larger than the first crossing, the curve dipped "
         "back below the target after first reaching it.\n";
  return out;
}

// ---------------------------------------------------------------- curves.svg

namespace {

// Okabe-Ito colours (distinguishable with the common colour-vision deficiencies); yellow last:
// weak on white. The baseline is drawn dashed in dark grey.
constexpr const char* kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                    "#E69F00", "#56B4E9", "#000000", "#F0E442"};
constexpr const char* kBaselineColour = "#555555";

struct Axis {
  double lo = 0, hi = 1, step = 0.2;
  double first_tick() const { return std::ceil(lo / step - 1e-9) * step; }
};

// Ticks at 1, 2 or 5 x 10^k covering [lo, hi] with about `ticks` intervals.
// `tight`: the axis spans [lo, hi] exactly, ticks at the multiples of the step inside it;
// otherwise it is widened to the ticks around [lo, hi].
Axis nice_axis(double lo, double hi, int ticks, bool tight = false) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi - lo <= 0) {
    const double pad = lo != 0 ? std::abs(lo) * 0.1 : 1.0;
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / ticks;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  if (tight) return {lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo), step};  // room for markers
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step, step};
}

std::string tick_label(double v, double step) {
  const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  if (decimals == 0 && std::abs(v) >= 10000 && std::fmod(v, 1000) == 0)
    return strf("%.0fk", v / 1000);
  return strf("%.*f", decimals, v + 0.0);  // + 0.0: no "-0"
}

struct Panel {
  double x0, y0, x1, y1;  // plot area
  Axis ax, ay;
  double px(double x) const { return x0 + (x - ax.lo) / (ax.hi - ax.lo) * (x1 - x0); }
  double py(double y) const { return y1 - (y - ay.lo) / (ay.hi - ay.lo) * (y1 - y0); }
};

// A marker of shape `shape` (circle, square, triangle, diamond, inverted triangle).
std::string marker(int shape, double x, double y, const char* colour) {
  const double r = 3.4;
  switch (shape % 5) {
    case 0:
      return strf("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\"/>", x, y, r, colour);
    case 1:
      return strf("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>",
                  x - r * 0.9, y - r * 0.9, 1.8 * r, 1.8 * r, colour);
    case 2:
      return strf("<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"%s\"/>", x,
                  y - 1.2 * r, x + 1.1 * r, y + 0.8 * r, x - 1.1 * r, y + 0.8 * r, colour);
    case 3:
      return strf("<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"%s\"/>", x,
                  y - 1.3 * r, x + 1.3 * r, y, x, y + 1.3 * r, x - 1.3 * r, y, colour);
    default:
      return strf("<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"%s\"/>", x,
                  y + 1.2 * r, x + 1.1 * r, y - 0.8 * r, x - 1.1 * r, y - 0.8 * r, colour);
  }
}

struct Style {
  const char* colour;
  int shape;
  bool dashed;
};

std::vector<Style> styles(const SimulationSummary& s) {
  std::vector<Style> out;
  int next = 0;
  for (const StrategySummary& st : s.strategies) {
    if (st.strategy == s.baseline) {
      out.push_back({kBaselineColour, 0, true});
    } else {
      out.push_back({kPalette[next % 8], next % 5, false});
      ++next;
    }
  }
  return out;
}

std::string draw_panel(const SimulationSummary& s, const std::vector<Style>& style,
                       std::vector<MeanStd> StrategySummary::*curve, const std::string& title,
                       const std::string& y_title, double left, int id) {
  const StrategySummary* base = find_strategy(s, s.baseline);
  const double target = base ? (base->*curve).back().mean : kNaN;

  // Ranges over the means +- std (and the target line); a metric in [0, 1] stays there.
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const StrategySummary& st : s.strategies)
    for (std::size_t k = 0; k < st.labels.size(); ++k) {
      const MeanStd& m = (st.*curve)[k];
      if (!std::isfinite(m.mean)) continue;
      const double sd = std::isfinite(m.std) ? m.std : 0;
      xmin = std::min(xmin, static_cast<double>(st.labels[k]));
      xmax = std::max(xmax, static_cast<double>(st.labels[k]));
      ymin = std::min(ymin, m.mean - sd);
      ymax = std::max(ymax, m.mean + sd);
    }
  if (std::isfinite(target)) ymin = std::min(ymin, target), ymax = std::max(ymax, target);
  if (ymin >= 0 && ymin <= 1) ymax = std::min(ymax, 1.0);
  if (ymax <= 1 && ymax >= 0) ymin = std::max(ymin, 0.0);
  Panel p{left + 64, 44, left + 480 - 20, 326, nice_axis(xmin, xmax, 5, true),
          nice_axis(ymin, ymax, 5)};
  if (p.ay.lo < 0 && ymin >= 0) p.ay.lo = 0;
  if (p.ay.hi > 1 && ymax <= 1) p.ay.hi = 1;

  std::string out = strf("<g id=\"panel%d\">\n", id);
  out += strf("<clipPath id=\"clip%d\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>"
              "</clipPath>\n",
              id, p.x0, p.y0, p.x1 - p.x0, p.y1 - p.y0);
  // Grid, ticks and tick labels.
  const int ny = static_cast<int>(std::lround((p.ay.hi - p.ay.lo) / p.ay.step));
  for (int i = 0; i <= ny; ++i) {
    const double v = p.ay.lo + i * p.ay.step, y = p.py(v);
    out += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n",
                p.x0, y, p.x1, y);
    out += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n",
                p.x0 - 5, y, p.x0, y);
    out += strf("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%s</text>\n",
                p.x0 - 8, y + 4, tick_label(v, p.ay.step).c_str());
  }
  const double x_first = p.ax.first_tick();
  const int nx = static_cast<int>(std::floor((p.ax.hi - x_first) / p.ax.step + 1e-9));
  for (int i = 0; i <= nx; ++i) {
    const double v = x_first + i * p.ax.step, x = p.px(v);
    out += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x,
                p.y1, x, p.y1 + 5);
    out += strf("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n",
                x, p.y1 + 18, tick_label(v, p.ax.step).c_str());
  }
  out += strf("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
              "stroke=\"#333\"/>\n",
              p.x0, p.y0, p.x1 - p.x0, p.y1 - p.y0);
  out += strf("<text x=\"%.1f\" y=\"26\" text-anchor=\"middle\" font-size=\"15\" "
              "font-weight=\"bold\">%s</text>\n",
              (p.x0 + p.x1) / 2, xml(title).c_str());
  out += strf("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">labeled "
              "samples</text>\n",
              (p.x0 + p.x1) / 2, p.y1 + 38);
  out += strf("<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\" "
              "font-size=\"12\">%s</text>\n",
              left + 16, (p.y0 + p.y1) / 2, xml(y_title).c_str());

  // Bands first (under every line; clipped: mean + std may pass 1), then the target line, then
  // lines and markers (inside the axes by construction).
  out += strf("<g clip-path=\"url(#clip%d)\">\n", id);
  for (std::size_t i = 0; i < s.strategies.size(); ++i) {
    const StrategySummary& st = s.strategies[i];
    std::string upper, lower;
    bool any_spread = false;
    for (std::size_t k = 0; k < st.labels.size(); ++k) {
      const MeanStd& m = (st.*curve)[k];
      if (!std::isfinite(m.mean)) continue;
      const double sd = std::isfinite(m.std) ? m.std : 0;
      any_spread = any_spread || sd > 0;
      const double x = p.px(static_cast<double>(st.labels[k]));
      upper += strf("%.1f,%.1f ", x, p.py(m.mean + sd));
      lower = strf("%.1f,%.1f ", x, p.py(m.mean - sd)) + lower;
    }
    if (any_spread)
      out += strf("<polygon points=\"%s%s\" fill=\"%s\" fill-opacity=\"0.15\" stroke=\"none\"/>\n",
                  upper.c_str(), lower.c_str(), style[i].colour);
  }
  out += "</g>\n";
  if (std::isfinite(target)) {
    const double y = p.py(target);
    out += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222\" "
                "stroke-width=\"1.2\" stroke-dasharray=\"1.5 3\"/>\n",
                p.x0, y, p.x1, y);
  }
  for (std::size_t i = 0; i < s.strategies.size(); ++i) {
    const StrategySummary& st = s.strategies[i];
    std::string points, markers;
    for (std::size_t k = 0; k < st.labels.size(); ++k) {
      const MeanStd& m = (st.*curve)[k];
      if (!std::isfinite(m.mean)) continue;
      const double x = p.px(static_cast<double>(st.labels[k])), y = p.py(m.mean);
      points += strf("%.1f,%.1f ", x, y);
      markers += marker(style[i].shape, x, y, style[i].colour);
    }
    if (points.empty()) continue;
    points.pop_back();
    out += strf("<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s>"
                "<title>%s</title></polyline>\n",
                points.c_str(), style[i].colour,
                style[i].dashed ? " stroke-dasharray=\"7 4\"" : "", xml(st.strategy).c_str());
    out += markers + "\n";
  }
  if (std::isfinite(target))
    // At the left end, where learning curves are still low; below the line near the top.
    out += strf("<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#222\" "
                "stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\">%s final mean "
                "%s</text>\n",
                p.x0 + 6, p.py(target) + (p.py(target) - p.y0 < 16 ? 13 : -5),
                xml(s.baseline).c_str(), tick_label(target, 0.0001).c_str());
  out += "</g>\n";
  return out;
}

}  // namespace

std::string curves_svg(const SimulationSummary& s) {
  const std::vector<Style> style = styles(s);

  // Legend entries flow left to right, wrapping before the note at the right end; the width of
  // text estimated at 7 px a character (font size 12).
  struct Entry {
    double x, y;
  };
  std::vector<Entry> at;
  const double legend_top = 390, row_h = 20, left = 64, right = 610;
  double x = left, y = legend_top;
  for (const StrategySummary& st : s.strategies) {
    const double w = 38 + 7.0 * static_cast<double>(st.strategy.size()) + 22;
    if (x + w > right && x > left) x = left, y += row_h;
    at.push_back({x, y});
    x += w;
  }
  const int height = static_cast<int>(std::max(420.0, y + 22));

  std::string out = strf("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"%d\" "
                         "viewBox=\"0 0 960 %d\" font-family=\"DejaVu Sans, Helvetica, Arial, "
                         "sans-serif\">\n",
                         height, height);
  out += "<title>Learning curves: " + xml(s.dataset) + "</title>\n";
  out += strf("<rect width=\"960\" height=\"%d\" fill=\"white\"/>\n", height);
  if (s.strategies.empty()) {
    out += "<text x=\"480\" y=\"210\" text-anchor=\"middle\" font-size=\"14\">no rounds to "
           "plot</text>\n</svg>\n";
    return out;
  }
  out += draw_panel(s, style, &StrategySummary::accuracy, "Accuracy vs labels", "test accuracy",
                    0, 0);
  out += draw_panel(s, style, &StrategySummary::balanced_accuracy,
                    "Balanced accuracy vs labels", "test balanced accuracy", 480, 1);

  out += "<g id=\"legend\" font-size=\"12\">\n";
  for (std::size_t i = 0; i < s.strategies.size(); ++i) {
    const double lx = at[i].x, ly = at[i].y;
    out += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"2\"%s/>",
                lx, ly - 4, lx + 30, ly - 4, style[i].colour,
                style[i].dashed ? " stroke-dasharray=\"7 4\"" : "");
    out += marker(style[i].shape, lx + 15, ly - 4, style[i].colour);
    out += strf("<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", lx + 38, ly,
                xml(s.strategies[i].strategy).c_str());
  }
  const StrategySummary* base = find_strategy(s, s.baseline);
  out += "</g>\n";
  const std::string note =
      (s.repeats > 1 ? strf("mean ± 1 std over %d repeats", s.repeats)
                     : std::string("one repeat")) +
      (base ? "; dotted: " + xml(s.baseline) + "'s final mean" : std::string());
  out += strf("<text x=\"940\" y=\"%.1f\" text-anchor=\"end\" font-size=\"10\" fill=\"#555\">"
              "%s</text>\n",
              legend_top + 1, note.c_str());
  out += "</svg>\n";
  return out;
}

}  // namespace quarry
