// What a simulation reports, part 3: the summary's files, curves.csv (the mean curves),
// summary.json (everything, for programs) and summary.md (the tables, for people).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "quarry/error.hpp"
#include "quarry/loop.hpp"
#include "simulate/report_internal.hpp"

namespace quarry {

using report_detail::find_strategy;
using report_detail::kNaN;
using report_detail::number_or_null;
using report_detail::strf;

namespace {

// Written with the keys in the order set.
using ojson = nlohmann::ordered_json;

// ---------------------------------------------------------------- text helpers

// %.6g, and "nan" for NaN (curves.csv).
std::string g6(double v) { return std::isnan(v) ? std::string("nan") : strf("%.6g", v); }

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

std::string pm(const MeanStd& m, int decimals = 4) {
  if (std::isnan(m.mean)) return "n/a";
  return strf("%.*f ± %.*f", decimals, m.mean, decimals, m.std);
}

std::string seconds_pm(const MeanStd& m) {
  if (std::isnan(m.mean)) return "n/a";
  return strf("%.3g ± %.2g", m.mean, m.std);
}

ojson mean_std_json(const MeanStd& m) {
  ojson j = {{"mean", number_or_null(m.mean)}, {"std", number_or_null(m.std)}};
  if (!std::isnan(m.ci_low)) j["ci95"] = {number_or_null(m.ci_low), number_or_null(m.ci_high)};
  return j;
}

// [low, high]; a bound that is not a number (an unbounded low end of a saving) is null.
ojson interval_json(const Interval& i) {
  if (!i.defined()) return nullptr;
  return {number_or_null(i.low), number_or_null(i.high)};
}

// Whether the interval excludes 0 (null: no interval).
ojson differs_json(const Interval& i) { return i.defined() ? ojson(!i.covers(0.0)) : ojson(nullptr); }

ojson efficiency_json(const Efficiency& e) {
  ojson j;
  j["target"] = number_or_null(e.target);
  j["target_rule"] =
      "isotonic fit of the baseline's mean curve at its last round; labels where each curve's isotonic fit first "
      "reaches it";
  j["baseline_final_mean"] = number_or_null(e.baseline_final);
  j["baseline_labels"] = e.baseline_labels ? number_or_null(*e.baseline_labels) : ojson(nullptr);
  if (e.baseline) {
    j["baseline"] = true;  // no saving of its own
    return j;
  }
  j["labels"] = e.labels ? number_or_null(*e.labels) : ojson(nullptr);
  j["saving_percent"] = e.saving_percent ? number_or_null(*e.saving_percent) : ojson(nullptr);
  j["ci95"] = interval_json(e.saving_ci95);
  j["different_from_baseline"] = differs_json(e.saving_ci95);
  j["reached"] = e.labels.has_value();
  ojson per_repeat = ojson::array();
  for (const std::optional<double>& x : e.repeat_labels)
    per_repeat.push_back(x ? number_or_null(*x) : ojson(nullptr));
  j["repeat_labels"] = std::move(per_repeat);
  j["repeats_reached"] = e.repeats_reached;
  j["repeat_saving"] = e.repeats_reached > 0 ? mean_std_json(e.repeat_saving) : ojson(nullptr);
  j["stays_labels"] = e.stays_labels ? number_or_null(*e.stays_labels) : ojson(nullptr);
  return j;
}

ojson stop_json(const StopSummary& st) {
  ojson fired = ojson::array();
  for (const std::optional<int>& r : st.fired_round) fired.push_back(r ? ojson(*r) : ojson(nullptr));
  ojson j;
  j["fired_round"] = std::move(fired);
  j["repeats_fired"] = st.repeats_fired;
  j["labels"] = mean_std_json(st.labels);
  j["labels_saved"] = mean_std_json(st.labels_saved);
  j["accuracy"] = mean_std_json(st.accuracy);
  j["accuracy_cost"] = mean_std_json(st.accuracy_cost);
  j["balanced_accuracy"] = mean_std_json(st.balanced_accuracy);
  j["balanced_accuracy_cost"] = mean_std_json(st.balanced_accuracy_cost);
  ojson kappa = ojson::array();
  for (double k : st.mean_kappa) kappa.push_back(number_or_null(k));
  j["mean_kappa"] = std::move(kappa);
  return j;
}

ojson aulc_json(const Aulc& a) {
  ojson j = {{"mean", number_or_null(a.mean)}, {"ci95", interval_json(a.ci95)}};
  if (!std::isnan(a.difference)) {
    j["difference"] = number_or_null(a.difference);
    j["difference_ci95"] = interval_json(a.difference_ci95);
    j["different_from_baseline"] = differs_json(a.difference_ci95);
  }
  return j;
}

}  // namespace

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
  out += ",accuracy_ci95_low,accuracy_ci95_high,balanced_accuracy_ci95_low,balanced_accuracy_ci95_high\n";
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
      for (const MeanStd* m : {&st.accuracy[k], &st.balanced_accuracy[k]})
        out += "," + g6(m->ci_low) + "," + g6(m->ci_high);
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
  j["bootstrap_resamples"] = kBootstrapResamples;
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
    e["aulc"] = {{"accuracy", aulc_json(st.accuracy_aulc)},
                 {"balanced_accuracy", aulc_json(st.balanced_accuracy_aulc)}};
    if (st.stopped_early) e["stopped_early"] = true;
    if (st.stop) e["stop"] = stop_json(*st.stop);
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
    if (e.baseline || st.strategy == s.baseline || !e.saving_percent || !(*e.saving_percent > 0)) continue;
    if (!best || *e.saving_percent > *((*best).*which).saving_percent) best = &st;
  }
  return best;
}

std::string labels_cell(const StrategySummary& st, const Efficiency& e) {
  if (e.baseline) return "(baseline)";
  if (e.labels) return strf("%.0f", *e.labels);
  return strf("not reached (> %lld labels)", static_cast<long long>(st.labels.back()));
}

// A bound of a saving's interval: "< 0" for an unbounded low end.
std::string bound(double v) { return std::isinf(v) && v < 0 ? std::string("< 0") : strf("%.1f", v); }

// "59.2 % [41.0, 66.3]"; with "(best)" in bold; ": not different from random" where the
// interval covers 0.
std::string saving_cell(const Efficiency& e, bool best, const std::string& baseline) {
  if (e.baseline) return "–";
  if (!e.saving_percent && !e.saving_ci95.defined()) return "–";
  std::string v = e.saving_percent ? strf("%.1f %%", *e.saving_percent) : std::string("not reached");
  if (best) v = "**" + v + "** (best)";
  if (e.saving_ci95.defined()) {
    v += " [" + bound(e.saving_ci95.low) + ", " + bound(e.saving_ci95.high) + "]";
    if (e.saving_ci95.covers(0.0)) v += ": not different from " + md(baseline);
    if (e.saving_ci95.high < 0) v += ": worse than " + md(baseline);
  }
  return v;
}

// The per-repeat saving: mean ± std over the repeats that reached the target, and how many of
// how many did ("41 ± 6 % (3/3)"; "– (0/3)" when none).
std::string repeat_saving_cell(const StrategySummary& st, const Efficiency& e) {
  if (e.baseline) return "–";
  const std::string reached = strf("(%d/%d)", e.repeats_reached, st.repeats);
  if (e.repeats_reached == 0 || std::isnan(e.repeat_saving.mean)) return "– " + reached;
  return strf("%.0f ± %.0f %% ", e.repeat_saving.mean, e.repeat_saving.std) + reached;
}

// "0.9412 [0.9380, 0.9440]"
std::string value_ci(double v, const Interval& ci, const char* sign = "") {
  if (std::isnan(v)) return "n/a";
  std::string out = strf(std::string("%").append(sign).append(".4f").c_str(), v);
  if (ci.defined()) out += strf(std::string(" [%").append(sign).append(".4f, %").append(sign).append(".4f]").c_str(), ci.low, ci.high);
  return out;
}

std::string aulc_difference_cell(const Aulc& a, const std::string& baseline) {
  if (std::isnan(a.difference)) return "–";
  std::string out = value_ci(a.difference, a.difference_ci95, "+");
  if (a.difference_ci95.covers(0.0)) out += ": not different from " + md(baseline);
  return out;
}

std::string stays_cell(const Efficiency& e) {
  if (e.baseline) return "(baseline)";
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

// "0.9612 ± 0.0040"; "–" where undefined.
std::string pm_or_dash(const MeanStd& m, const char* format = "%.4f ± %.4f") {
  return std::isnan(m.mean) ? std::string("–") : strf(format, m.mean, m.std);
}

// The stopping rule: where it fired and what stopping there cost, and the agreement per round.
std::string stop_section(const SimulationSummary& s) {
  bool any = false;
  std::size_t rounds = 0;
  for (const StrategySummary& st : s.strategies)
    if (st.stop) any = true, rounds = std::max(rounds, st.stop->mean_kappa.size());
  if (!any) return "";
  std::string out =
      "\n## Stopping rule: stabilising predictions\n\n"
      "| Strategy | Fired | Labels at firing | Labels saved | Accuracy at firing | Accuracy lost by "
      "stopping | Balanced accuracy at firing | Balanced accuracy lost by stopping |\n"
      "| --- | --: | --: | --: | --: | --: | --: | --: |\n";
  for (const StrategySummary& st : s.strategies) {
    if (!st.stop) continue;
    const StopSummary& p = *st.stop;
    out += "| " + md(st.strategy) + strf(" | %d/%zu | ", p.repeats_fired, p.fired_round.size()) +
           pm_or_dash(p.labels, "%.0f ± %.0f") + " | " + pm_or_dash(p.labels_saved, "%.0f ± %.0f") +
           " | " + pm_or_dash(p.accuracy) + " | " + pm_or_dash(p.accuracy_cost) + " | " +
           pm_or_dash(p.balanced_accuracy) + " | " + pm_or_dash(p.balanced_accuracy_cost) + " |\n";
  }
  out += "\nCohen's kappa between consecutive models' predictions on the stop set (mean over "
         "repeats):\n\n| Strategy |";
  std::string rule = "| --- |";
  for (std::size_t k = 1; k < rounds; ++k) out += strf(" %zu |", k), rule += " --: |";
  out += "\n" + rule + "\n";
  for (const StrategySummary& st : s.strategies) {
    if (!st.stop) continue;
    out += "| " + md(st.strategy) + " |";
    for (std::size_t k = 1; k < rounds; ++k) {
      const double v = k < st.stop->mean_kappa.size() ? st.stop->mean_kappa[k] : kNaN;
      out += std::isnan(v) ? std::string(" – |") : strf(" %.3f |", v);
    }
    out += "\n";
  }
  out += "\nThe rule fires at the first round where the mean kappa of the last WINDOW rounds "
         "reaches THRESHOLD (`--stop kappa:THRESHOLD:WINDOW`). *Labels saved*: the run's last "
         "round's labels minus those at firing; *lost by stopping*: the metric at the last round "
         "minus at firing (negative: stopping lost nothing), over the repeats where it fired and "
         "the run went on.\n";
  bool early = false;
  for (const StrategySummary& st : s.strategies) early = early || st.stopped_early;
  if (early)
    out += "\nWith `--stop-early` a repeat ends where the rule fires; a strategy's curves above "
           "end at the round where its first repeat stopped, so every point is a mean over all "
           "of its repeats.\n";
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
    out += strf(" Labels to reach %s's accuracy (%.4f) | Saving [95%% CI] | Saving per repeat |",
                md(s.baseline).c_str(), base->accuracy_efficiency.target);
    out += strf(" Labels to reach %s's balanced accuracy (%.4f) | Saving [95%% CI] | Saving per repeat |",
                md(s.baseline).c_str(), base->balanced_accuracy_efficiency.target);
    rule += " --: | --: | --: | --: | --: | --: |";
  }
  out += " Round time (s) |\n" + rule + " --: |\n";
  for (const StrategySummary& st : s.strategies) {
    out += "| " + md(st.strategy) + strf(" | %lld | ", static_cast<long long>(st.labels.back())) +
           pm(st.accuracy.back()) + " | " + pm(st.balanced_accuracy.back()) + " | " +
           pm(st.macro_f1.back()) + " |";
    if (base) {
      out += " " + labels_cell(st, st.accuracy_efficiency) + " | " +
             saving_cell(st.accuracy_efficiency, &st == best_acc, s.baseline) + " | " +
             repeat_saving_cell(st, st.accuracy_efficiency) + " |";
      out += " " + labels_cell(st, st.balanced_accuracy_efficiency) + " | " +
             saving_cell(st.balanced_accuracy_efficiency, &st == best_bal, s.baseline) + " | " +
             repeat_saving_cell(st, st.balanced_accuracy_efficiency) + " |";
    }
    out += " " + seconds_pm(st.round_seconds) + " |\n";
  }

  if (base) {
    // A baseline that stopped improving before its last round: savings against it say little.
    for (const auto* e : {&base->accuracy_efficiency, &base->balanced_accuracy_efficiency}) {
      const char* metric = e == &base->accuracy_efficiency ? "accuracy" : "balanced accuracy";
      if (e->baseline_labels && *e->baseline_labels < static_cast<double>(base->labels.back()))
        out += strf("\n**Note:** %s's %s, made monotone, reaches its final value (%.4f) at %.0f labels, "
                    "before its last round (%lld): %s stopped improving there, so a strategy "
                    "can save labels only against those %.0f, and a curve that dips first is read as "
                    "needing more. Compare the areas under the learning curves below.\n",
                    md(s.baseline).c_str(), metric, e->target, *e->baseline_labels,
                    static_cast<long long>(base->labels.back()), md(s.baseline).c_str(), *e->baseline_labels);
    }
    out += "\n## Stays above from: labels after which the mean curve stays at or above the "
           "target\n\n";
    out += strf("| Strategy | Accuracy (%.4f) | Balanced accuracy (%.4f) |\n| --- | --: | --: |\n",
                base->accuracy_efficiency.target, base->balanced_accuracy_efficiency.target);
    for (const StrategySummary& st : s.strategies)
      out += "| " + md(st.strategy) + " | " + stays_cell(st.accuracy_efficiency) + " | " +
             stays_cell(st.balanced_accuracy_efficiency) + " |\n";
  }

  out += "\n## Area under the learning curve (mean height, 95% CI over repeats)\n\n";
  out += "| Strategy | Accuracy | Difference from " + md(s.baseline) + " [95% CI, paired] | "
         "Balanced accuracy | Difference from " + md(s.baseline) + " [95% CI, paired] |\n"
         "| --- | --: | --: | --: | --: |\n";
  for (const StrategySummary& st : s.strategies)
    out += "| " + md(st.strategy) + " | " + value_ci(st.accuracy_aulc.mean, st.accuracy_aulc.ci95) +
           " | " + aulc_difference_cell(st.accuracy_aulc, s.baseline) + " | " +
           value_ci(st.balanced_accuracy_aulc.mean, st.balanced_accuracy_aulc.ci95) + " | " +
           aulc_difference_cell(st.balanced_accuracy_aulc, s.baseline) + " |\n";

  out += stop_section(s);
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
  out += "**Target:** " + md(s.baseline) + "'s mean curve made monotone by an isotonic "
         "(least-squares non-decreasing) fit, read at its last round. A dip of the baseline's "
         "last round does not lower it (which would credit every strategy with a saving), and "
         "one lucky round does not raise it as a running best would. The raw final mean is in "
         "summary.json (`baseline_final_mean`).\n\n";
  out += "**Label efficiency:** the number of labels a strategy needs for its mean learning "
         "curve, made monotone by the same isotonic fit, to first reach the target (interpolated "
         "linearly between rounds), and the **saving**: 100 × (1 − those labels / the labels at "
         "which the baseline's fitted curve reaches it, its final labels unless it plateaued). "
         "Reading every curve the same way means a curve identical to the baseline's saves "
         "exactly 0, and one lucky round is not a crossing. A saving of 40 % means the strategy "
         "matched the baseline's final quality with 40 % fewer labels; \"not reached\" means it "
         "never did within the run. The baseline itself has no saving. The best saving is in "
         "bold.\n\n";
  out += strf("**95%% CI:** a paired bootstrap over repeats (%d resamples, fixed seed): repeats "
              "are drawn with replacement, a strategy's repeat together with the baseline's "
              "repeat of the same number (they share the initial labeled set and the seed), the "
              "target is refitted on each resample and the saving read again; the interval holds "
              "the middle 95 %% of those savings. \"< 0\": more than 2.5 %% of the resamples never "
              "reached the target within the run. Where the interval covers 0 the strategy is "
              "**not different from ",
              kBootstrapResamples) +
         md(s.baseline) + "** at this number of repeats. With few repeats the interval is "
         "itself rough: 5 repeats have only 126 distinct resamples.\n\n";
  out += "**Saving per repeat:** the same reading on each repeat's own learning curve, against "
         "the same target: the mean ± sample standard deviation of the saving over the repeats "
         "whose curve reached the target, and how many of the repeats did (\"41 ± 6 % (3/3)\"; "
         "\"– (0/3)\": none did).\n\n";
  out += "**Stays above from:** the labels after which the mean curve stays at or above the "
         "target up to the last round (interpolated into the round where it last crosses the "
         "target from below); \"below at the last round\" means it ends under the target. Where "
         "it is larger than the first crossing, the curve dipped back below the target after "
         "first reaching it.\n\n";
  out += "**Area under the learning curve (AULC):** the trapezoid area of a repeat's curve over "
         "labels divided by the label range, so it reads as the curve's mean height; the mean "
         "over repeats with a bootstrap 95 % interval, and the difference from " +
         md(s.baseline) + "'s AULC: the mean of the per-repeat differences with a paired "
         "bootstrap interval. Unlike the saving it credits a strategy for the whole curve, not "
         "one crossing.\n";
  return out;
}

}  // namespace quarry
