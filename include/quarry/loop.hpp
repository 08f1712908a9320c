// The active-learning loop, simulated with the dataset's own labels as the oracle: train,
// evaluate, infer on the pool, score and select through the engine (the same calls as
// `quarry select`), label, retrain. And what it reports: metrics, learning curves, label
// efficiency against random sampling, rounds.jsonl / curves.csv / summary.json / summary.md /
// curves.svg.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "quarry/dataset.hpp"
#include "quarry/device.hpp"
#include "quarry/train.hpp"

namespace quarry {

// ------------------------------------------------------------------ metrics

struct Metrics {
  double accuracy = 0;           // correct / n
  double balanced_accuracy = 0;  // mean over classes present in the truth of their recall
  double macro_f1 = 0;           // mean of F1_c = 2TP / (2TP + FP + FN) over the classes in
                                 // the truth or in the predictions (present but never
                                 // predicted, or predicted but never present: 0; in neither:
                                 // left out), as scikit-learn's macro F1
  std::vector<double> sensitivity;  // [C]: recall of class c, TP / (TP + FN) (NaN if absent)
  std::vector<double> specificity;  // [C]: TN / (TN + FP) over the other classes (NaN if none)
  std::vector<std::int64_t> confusion;  // [C*C]: row = truth, column = prediction
  int num_classes = 0;
  std::int64_t n = 0;
};

/// Metrics of predictions against the truth (same length, classes in [0, num_classes)).
Metrics evaluate_predictions(const std::vector<std::int32_t>& truth,
                             const std::vector<std::int32_t>& predicted, int num_classes);

/// Cohen's kappa of two label vectors (same length, classes in [0, num_classes)): (p_o - p_e) /
/// (1 - p_e), p_o the share of agreements and p_e the agreement expected by chance from the two
/// vectors' class frequencies; 1 where both are one and the same constant (p_e = 1).
double cohen_kappa(const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b,
                   int num_classes);

// ------------------------------------------------------------------ the stopping rule

/// "kappa:THRESHOLD:WINDOW": stabilising predictions (Bloodgood and Vijay-Shanker, 2009). Each
/// new model predicts a fixed stop set of unlabeled samples; its agreement with the previous
/// model's predictions is Cohen's kappa; the rule fires at the first round where the mean of
/// the last WINDOW kappas is at least THRESHOLD: more labels have stopped changing the model.
struct StopRule {
  double threshold = 0.99;
  int window = 3;
  std::int64_t set_size = 1000;  // samples in the stop set (fewer where the pool is smaller)
  /// "kappa:0.99:3"
  std::string describe() const;
};

/// Parses "kappa:THRESHOLD:WINDOW" (THRESHOLD in (-1, 1], WINDOW >= 1); anything else is a
/// UsageError naming the expected form.
StopRule parse_stop_rule(const std::string& spec);

/// Whether the rule fires on these kappas (oldest first): at least `window` of them and the mean
/// of the last `window` at least the threshold.
bool stop_rule_fires(const StopRule& rule, const std::vector<double>& kappas);

// ------------------------------------------------------------------ one round's record

struct RoundRecord {
  std::string strategy;
  int repeat = 0;
  int round = 0;             // 0: the initial set; r >= 1: after the r-th selected batch
  std::int64_t labels = 0;   // labeled samples the model of this round was trained on
  Metrics test;
  std::vector<std::int64_t> labeled_per_class;  // [C] of the labeled set
  int epochs = 0;
  double train_seconds = 0, eval_seconds = 0, infer_seconds = 0, score_seconds = 0,
         select_seconds = 0, round_seconds = 0;
  /// The batch selected after this round's model (empty after the last round).
  std::vector<std::int64_t> selected;
  /// With a stopping rule: Cohen's kappa of this round's model's predictions on the stop set
  /// against the previous round's (NaN at round 0 and without a rule), and whether the rule
  /// fired at this round (the first round it does; false before and after).
  double stop_kappa = std::numeric_limits<double>::quiet_NaN();
  bool stop_fired = false;
};

// ------------------------------------------------------------------ summary

/// Mean and sample standard deviation (n - 1; 0 for one repeat) over repeats; for a learning
/// curve's point also the 95% interval of the mean (percentile bootstrap over repeats; NaN with
/// fewer than two repeats, and for times).
struct MeanStd {
  double mean = 0, std = 0;
  double ci_low = std::numeric_limits<double>::quiet_NaN();
  double ci_high = std::numeric_limits<double>::quiet_NaN();
};

/// A 95% interval (percentile bootstrap). `low` may be -infinity for a saving: more than 2.5%
/// of the resamples never reached the target within the run (a saving below 0). NaN: none.
struct Interval {
  double low = std::numeric_limits<double>::quiet_NaN();
  double high = std::numeric_limits<double>::quiet_NaN();
  bool defined() const { return !std::isnan(low) && !std::isnan(high); }
  bool covers(double v) const { return defined() && low <= v && v <= high; }
};

/// How many labels a strategy needed to reach a target. The target is the baseline's (random's)
/// mean curve made monotone by an isotonic (least-squares non-decreasing) fit, taken at the
/// baseline's last round: a dip of the baseline's last round does not lower it, and one lucky
/// round does not raise it as its running best would. Every curve is read the same way: the
/// labels where its own isotonic fit first reaches the target (linear between rounds), so a
/// curve identical to the baseline's saves exactly 0 and one lucky round is not a crossing. The
/// saving is 100 * (1 - labels / the baseline's labels). The baseline has no saving of its own.
struct Efficiency {
  double target = 0;             // the isotonic fit of the baseline's mean curve at its end
  double baseline_final = 0;     // the baseline's raw final mean (for comparison)
  /// Where the isotonic fit of the baseline's mean curve first reaches the target (its final
  /// labels, or fewer where its curve plateaued): the labels a saving is counted against.
  std::optional<double> baseline_labels;
  bool baseline = false;         // this is the baseline: no saving
  std::optional<double> labels;  // none: the target was never reached
  std::optional<double> saving_percent;  // 100 * (1 - labels / baseline_labels)
  /// Paired bootstrap 95% interval of saving_percent: repeats resampled with replacement, the
  /// strategy's and the baseline's curves of a repeat together (they share the initial set),
  /// the target refitted on each resample. Undefined with fewer than two paired repeats.
  Interval saving_ci95;
  /// Per repeat, in repeat order: the labels at which the isotonic fit of that repeat's curve
  /// first reaches the target (same rule); none: that repeat never reached it.
  std::vector<std::optional<double>> repeat_labels;
  int repeats_reached = 0;  // how many of repeat_labels are set
  /// Mean and sample std of the per-repeat saving % over the repeats that reached the target
  /// (0 and 0 when none did).
  MeanStd repeat_saving;
  /// Labels from which the mean curve stays at or above the target up to the last round: the
  /// first round r with mean >= target at every round from r on, interpolated from round r - 1
  /// when that one is below; none: the last round is below the target.
  std::optional<double> stays_labels;
};

/// The area under a learning curve: the trapezoid rule over labels, divided by the label range
/// (so it is the curve's mean height, in the metric's units), per repeat; its mean over repeats
/// with a bootstrap 95% interval, and the paired difference from the baseline's (mean of the
/// per-repeat differences, paired bootstrap 95% interval; undefined for the baseline itself).
struct Aulc {
  double mean = 0;
  Interval ci95;
  double difference = std::numeric_limits<double>::quiet_NaN();
  Interval difference_ci95;
};

/// The stopping rule over a strategy's repeats: where it fired and what stopping there would
/// have cost, against the same repeat's last round.
struct StopSummary {
  /// Per repeat, in repeat order: the round at which the rule fired; none: it did not.
  std::vector<std::optional<int>> fired_round;
  int repeats_fired = 0;
  /// Over the repeats where it fired: labels at the firing round, labels saved (the run's last
  /// round's labels minus those), accuracy and balanced accuracy at the firing round, and what
  /// they lost against the repeat's last round (last minus firing; negative: stopping was
  /// better).
  MeanStd labels, labels_saved, accuracy, accuracy_cost, balanced_accuracy, balanced_accuracy_cost;
  /// Every round's kappa averaged over repeats (NaN at round 0).
  std::vector<double> mean_kappa;
};

struct StrategySummary {
  std::string strategy;
  int repeats = 0;
  /// Some repeats were stopped by the rule (--stop-early): the curves end at the round where
  /// the first of them stopped, so that every point is a mean over all repeats.
  bool stopped_early = false;
  std::optional<StopSummary> stop;  // with a stopping rule
  std::vector<std::int64_t> labels;  // per round (the same in every repeat)
  std::vector<MeanStd> accuracy, balanced_accuracy, macro_f1;  // per round
  /// For two classes: per round, per class (index [round][class]).
  std::vector<std::vector<MeanStd>> sensitivity, specificity;
  Efficiency accuracy_efficiency, balanced_accuracy_efficiency;
  Aulc accuracy_aulc, balanced_accuracy_aulc;
  MeanStd round_seconds;  // mean time of a round (all rounds of all repeats)
  MeanStd train_seconds, infer_seconds, score_seconds, select_seconds;
};

/// Resamples of the bootstrap intervals (fixed seed: the same report for the same records).
inline constexpr int kBootstrapResamples = 2000;

struct SimulationSummary {
  std::string dataset;      // Dataset::describe() and spec
  std::string model;        // Model::describe() of a round-0 model
  std::string baseline = "random";
  std::int64_t seed_size = 0, batch = 0;
  int rounds = 0, repeats = 0, num_classes = 0;
  std::string config_json;  // the full configuration, as JSON (written into summary.json)
  std::vector<StrategySummary> strategies;  // in the order first seen in the records
};

/// Aggregates round records (every strategy x repeat x round) into the summary. The baseline
/// is `baseline` ("random"); without it in the records the efficiencies are left empty.
/// Errors: repeats of a strategy with different label counts per round.
SimulationSummary summarize(const std::vector<RoundRecord>& records, SimulationSummary header);

/// One JSON object (one line, no newline) for rounds.jsonl.
std::string round_json(const RoundRecord& r);
/// Parses a line of rounds.jsonl back (tests compare the summary with it).
RoundRecord parse_round_json(const std::string& line);
std::string curves_csv(const SimulationSummary& s);
std::string summary_json(const SimulationSummary& s);
std::string summary_markdown(const SimulationSummary& s);
/// Learning curves (accuracy and balanced accuracy against labels, mean with a +-1 std band
/// per strategy), a self-contained SVG.
std::string curves_svg(const SimulationSummary& s);

// ------------------------------------------------------------------ the simulation

struct SimulateOptions {
  /// "random", an acquisition name (entropy, margin, least-confidence, ratio, bald,
  /// vote-entropy, kl-max, variation-ratio, consensus-entropy, egl, badge-norm: exact top-k),
  /// a diversity strategy (badge, kcenter, cluster-margin, uncertain-kcenter), batchbald, or
  /// balanced:NAME (NAME per predicted class toward a target class distribution).
  std::vector<std::string> strategies{"random", "entropy", "margin", "bald", "badge"};
  std::int64_t seed_size = 200;
  std::int64_t batch = 100;
  int rounds = 10;
  int repeats = 3;
  std::uint64_t seed = 0;
  /// Model and training settings (its seed is replaced by the repeat's).
  TrainOptions train;
  /// Committee of the committee strategies (bald, ...): MC-dropout unless told otherwise.
  CommitteeSpec committee{CommitteeSpec::Kind::mc, 10};
  /// The balanced:NAME strategies' target class distribution (one weight per class, summing
  /// to 1); empty: uniform.
  std::vector<double> balance_target;
  /// batchbald's restart share (BatchBaldOptions::restart): 0 = one joint batch, the paper's.
  double batchbald_restart = 0.5;
  /// How each repeat's initial labeled set is chosen: "random", or a cold-start strategy,
  /// "typiclust" or "probcover", over `seed_embeddings` (seeded by the repeat).
  std::string seed_strategy = "random";
  /// The pool's embeddings [pool, D] for the cold start (e.g. `quarry pretrain`'s, or a
  /// foundation model's); empty: the pool's inputs themselves, flattened (pixels, features).
  std::string seed_embeddings;
  /// Where scoring and selection run (quarry's engine).
  DeviceSpec device{};
  /// The stopping rule, evaluated every round (none: not evaluated).
  std::optional<StopRule> stop;
  /// End a strategy's repeat at the round where the rule fires (no more training or labels).
  bool stop_early = false;
  /// Called after every round (progress lines, rounds.jsonl).
  std::function<void(const RoundRecord&)> on_round;
};

/// What simulate() checks before it starts (strategies, sizes against the pool, a test split,
/// a committee where a strategy needs one): an Error (UsageError for the options) naming them.
void check_simulate_options(const Dataset& data, const SimulateOptions& options);

/// Runs every strategy for every repeat. Repeat r uses seed + r for its initial set (the same
/// for every strategy of the repeat) and for training. Errors: an unknown strategy, a seed set
/// or batch larger than the pool, a pool too small for the rounds.
std::vector<RoundRecord> simulate(const Dataset& data, const SimulateOptions& options);

/// Writes rounds.jsonl, curves.csv, summary.json, summary.md and curves.svg into `dir`
/// (created if needed; each file atomically).
void write_simulation_report(const std::string& dir, const std::vector<RoundRecord>& records,
                             const SimulationSummary& summary);

}  // namespace quarry
