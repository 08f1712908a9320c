// Metrics, the summary over repeats (means, stds, label efficiency) and the report files
// (rounds.jsonl lines, curves.csv, summary.json, summary.md, curves.svg) on hand-made records.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quarry/error.hpp"
#include "quarry/loop.hpp"

namespace {

using quarry::Aulc;
using quarry::Efficiency;
using quarry::Error;
using quarry::Metrics;
using quarry::RoundRecord;
using quarry::SimulationSummary;
using quarry::StrategySummary;

constexpr double kEps = 1e-12;

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// ---------------------------------------------------------------- metrics

TEST(Metrics, BinaryHandComputed) {
  // truth 0 x6, 1 x4; confusion [[5, 1], [2, 2]]
  const std::vector<std::int32_t> truth{0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
  const std::vector<std::int32_t> pred{0, 0, 0, 0, 0, 1, 1, 1, 0, 0};
  const Metrics m = quarry::evaluate_predictions(truth, pred, 2);
  EXPECT_EQ(m.num_classes, 2);
  EXPECT_EQ(m.n, 10);
  EXPECT_EQ(m.confusion, (std::vector<std::int64_t>{5, 1, 2, 2}));
  EXPECT_NEAR(m.accuracy, 0.7, kEps);
  EXPECT_NEAR(m.balanced_accuracy, (5.0 / 6 + 0.5) / 2, kEps);
  // F1_0 = 2*5 / (10 + 2 + 1), F1_1 = 2*2 / (4 + 1 + 2)
  EXPECT_NEAR(m.macro_f1, (10.0 / 13 + 4.0 / 7) / 2, kEps);
  ASSERT_EQ(m.sensitivity.size(), 2u);
  EXPECT_NEAR(m.sensitivity[0], 5.0 / 6, kEps);
  EXPECT_NEAR(m.sensitivity[1], 0.5, kEps);
  EXPECT_NEAR(m.specificity[0], 0.5, kEps);  // of the 4 samples of class 1, 2 not called 0
  EXPECT_NEAR(m.specificity[1], 5.0 / 6, kEps);
}

TEST(Metrics, ThreeClassesOneNeverPredicted) {
  // confusion [[1,1,0],[1,1,0],[0,2,0]]: class 2 is in the truth but never predicted.
  const std::vector<std::int32_t> truth{0, 0, 1, 1, 2, 2};
  const std::vector<std::int32_t> pred{0, 1, 1, 0, 1, 1};
  const Metrics m = quarry::evaluate_predictions(truth, pred, 3);
  EXPECT_EQ(m.confusion, (std::vector<std::int64_t>{1, 1, 0, 1, 1, 0, 0, 2, 0}));
  EXPECT_NEAR(m.accuracy, 1.0 / 3, kEps);
  EXPECT_NEAR(m.balanced_accuracy, (0.5 + 0.5 + 0.0) / 3, kEps);
  // F1: 2/(2+1+1), 2/(2+3+1), 0 (present, never predicted: counts as 0)
  EXPECT_NEAR(m.macro_f1, (0.5 + 1.0 / 3 + 0.0) / 3, kEps);
  EXPECT_NEAR(m.sensitivity[2], 0.0, kEps);
  EXPECT_NEAR(m.specificity[0], 0.75, kEps);
  EXPECT_NEAR(m.specificity[1], 0.25, kEps);
  EXPECT_NEAR(m.specificity[2], 1.0, kEps);

  // A fourth class in neither the truth nor the predictions is left out of every mean.
  const Metrics m4 = quarry::evaluate_predictions(truth, pred, 4);
  EXPECT_NEAR(m4.accuracy, m.accuracy, kEps);
  EXPECT_NEAR(m4.balanced_accuracy, m.balanced_accuracy, kEps);
  EXPECT_NEAR(m4.macro_f1, m.macro_f1, kEps);
  EXPECT_TRUE(std::isnan(m4.sensitivity[3]));
  EXPECT_NEAR(m4.specificity[3], 1.0, kEps);
}

TEST(Metrics, ClassPredictedButAbsentCountsInMacroF1Only) {
  // Class 2 is predicted once but never true: F1_2 = 0 joins the macro mean, not the recalls.
  const std::vector<std::int32_t> truth{0, 0, 1, 1};
  const std::vector<std::int32_t> pred{0, 2, 1, 1};
  const Metrics m = quarry::evaluate_predictions(truth, pred, 3);
  EXPECT_NEAR(m.accuracy, 0.75, kEps);
  EXPECT_NEAR(m.balanced_accuracy, (0.5 + 1.0) / 2, kEps);
  EXPECT_NEAR(m.macro_f1, (2.0 / 3 + 1.0 + 0.0) / 3, kEps);
  EXPECT_TRUE(std::isnan(m.sensitivity[2]));
  EXPECT_NEAR(m.specificity[2], 0.75, kEps);
}

TEST(Metrics, PerfectAndAllWrong) {
  const std::vector<std::int32_t> truth{0, 1, 2, 2, 1, 0, 2};
  const Metrics perfect = quarry::evaluate_predictions(truth, truth, 3);
  EXPECT_EQ(perfect.accuracy, 1.0);
  EXPECT_EQ(perfect.balanced_accuracy, 1.0);
  EXPECT_EQ(perfect.macro_f1, 1.0);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(perfect.sensitivity[c], 1.0);
    EXPECT_EQ(perfect.specificity[c], 1.0);
  }

  const Metrics wrong = quarry::evaluate_predictions({0, 1, 0, 1}, {1, 0, 1, 0}, 2);
  EXPECT_EQ(wrong.accuracy, 0.0);
  EXPECT_EQ(wrong.balanced_accuracy, 0.0);
  EXPECT_EQ(wrong.macro_f1, 0.0);
  EXPECT_EQ(wrong.sensitivity, (std::vector<double>{0.0, 0.0}));
  EXPECT_EQ(wrong.specificity, (std::vector<double>{0.0, 0.0}));
  EXPECT_EQ(wrong.confusion, (std::vector<std::int64_t>{0, 2, 2, 0}));
}

TEST(Metrics, OneClassInTheTruth) {
  // Only class 0 in the truth, always predicted: no negatives for class 0's specificity.
  const Metrics m = quarry::evaluate_predictions({0, 0, 0}, {0, 0, 0}, 2);
  EXPECT_EQ(m.accuracy, 1.0);
  EXPECT_EQ(m.balanced_accuracy, 1.0);
  EXPECT_EQ(m.macro_f1, 1.0);
  EXPECT_TRUE(std::isnan(m.specificity[0]));
  EXPECT_TRUE(std::isnan(m.sensitivity[1]));
  EXPECT_EQ(m.specificity[1], 1.0);

  const Metrics empty = quarry::evaluate_predictions({}, {}, 2);
  EXPECT_EQ(empty.n, 0);
  EXPECT_TRUE(std::isnan(empty.accuracy));
  EXPECT_TRUE(std::isnan(empty.balanced_accuracy));
  EXPECT_TRUE(std::isnan(empty.macro_f1));
}

TEST(Metrics, Errors) {
  EXPECT_THROW(quarry::evaluate_predictions({0, 1}, {0}, 2), Error);
  EXPECT_THROW(quarry::evaluate_predictions({0, 2}, {0, 1}, 2), Error);
  EXPECT_THROW(quarry::evaluate_predictions({0, 1}, {0, -1}, 2), Error);
  EXPECT_THROW(quarry::evaluate_predictions({0}, {0}, 0), Error);
  try {
    quarry::evaluate_predictions({0, 1, 5}, {0, 1, 1}, 3);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("5"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- summarize

RoundRecord rec(const std::string& strategy, int repeat, int round, std::int64_t labels,
                double acc, double bal, double f1 = 0.5, int classes = 3) {
  RoundRecord r;
  r.strategy = strategy;
  r.repeat = repeat;
  r.round = round;
  r.labels = labels;
  r.test.accuracy = acc;
  r.test.balanced_accuracy = bal;
  r.test.macro_f1 = f1;
  r.test.num_classes = classes;
  r.test.sensitivity.assign(classes, 0.5);
  r.test.specificity.assign(classes, 0.5);
  r.round_seconds = 1.0 + repeat + 0.5 * round;
  r.train_seconds = 0.5;
  return r;
}

// Labels 10, 20, 30 (rounds 0..2), two repeats each.
//   random:  acc means 0.6, 0.7, 0.8 (target 0.8); bal means 0.5, 0.6, 0.7 (target 0.7)
//   entropy: acc means 0.6, 0.85, 0.9 -> 18 labels;  bal 0.5, 0.6, 0.75 -> 26.67 labels
//   margin:  acc means 0.5, 0.6, 0.7 -> never;        bal 0.5, 0.6, 0.75 -> 26.67 labels
//   kcenter: acc 0.85 at round 0 -> 10 labels
std::vector<RoundRecord> sample_records() {
  std::vector<RoundRecord> r;
  const std::int64_t L[] = {10, 20, 30};
  auto add = [&](const std::string& s, const double (&acc)[2][3], const double (&bal)[2][3]) {
    for (int rep = 0; rep < 2; ++rep)
      for (int k = 0; k < 3; ++k) r.push_back(rec(s, rep, k, L[k], acc[rep][k], bal[rep][k]));
  };
  // entropy first: strategies keep the order they are first seen in.
  add("entropy", {{0.55, 0.8, 0.9}, {0.65, 0.9, 0.9}}, {{0.5, 0.6, 0.7}, {0.5, 0.6, 0.8}});
  add("random", {{0.5, 0.6, 0.7}, {0.7, 0.8, 0.9}}, {{0.4, 0.5, 0.6}, {0.6, 0.7, 0.8}});
  add("margin", {{0.5, 0.6, 0.7}, {0.5, 0.6, 0.7}}, {{0.5, 0.6, 0.75}, {0.5, 0.6, 0.75}});
  add("kcenter", {{0.85, 0.85, 0.9}, {0.85, 0.85, 0.9}}, {{0.8, 0.8, 0.8}, {0.8, 0.8, 0.8}});
  return r;
}

SimulationSummary sample_summary() {
  SimulationSummary h;
  h.dataset = "toy: 3 classes";
  h.model = "mlp";
  h.seed_size = 10;
  h.batch = 10;
  h.rounds = 2;
  h.repeats = 2;
  h.config_json = R"({"strategies":["entropy","random","margin","kcenter"],"seed":7})";
  return quarry::summarize(sample_records(), h);
}

const StrategySummary& get(const SimulationSummary& s, const std::string& name) {
  for (const StrategySummary& st : s.strategies)
    if (st.strategy == name) return st;
  throw std::runtime_error("no strategy " + name);
}

TEST(Summarize, MeansStdsAndOrder) {
  const SimulationSummary s = sample_summary();
  ASSERT_EQ(s.strategies.size(), 4u);
  EXPECT_EQ(s.strategies[0].strategy, "entropy");
  EXPECT_EQ(s.strategies[1].strategy, "random");
  EXPECT_EQ(s.num_classes, 3);  // filled from the records

  const StrategySummary& random = get(s, "random");
  EXPECT_EQ(random.repeats, 2);
  EXPECT_EQ(random.labels, (std::vector<std::int64_t>{10, 20, 30}));
  ASSERT_EQ(random.accuracy.size(), 3u);
  EXPECT_NEAR(random.accuracy[0].mean, 0.6, kEps);
  EXPECT_NEAR(random.accuracy[2].mean, 0.8, kEps);
  EXPECT_NEAR(random.accuracy[1].std, std::sqrt(0.02), kEps);  // (0.6, 0.8): sample std
  EXPECT_NEAR(random.balanced_accuracy[2].mean, 0.7, kEps);
  EXPECT_NEAR(random.macro_f1[1].mean, 0.5, kEps);
  EXPECT_EQ(random.macro_f1[1].std, 0.0);
  EXPECT_TRUE(random.sensitivity.empty());  // three classes: none

  // Round times 1 + repeat + 0.5 round: {1, 1.5, 2, 2, 2.5, 3}, mean 2.
  EXPECT_NEAR(random.round_seconds.mean, 2.0, kEps);
  EXPECT_NEAR(random.round_seconds.std, std::sqrt(2.5 / 5), kEps);
  EXPECT_NEAR(random.train_seconds.mean, 0.5, kEps);
  EXPECT_EQ(random.train_seconds.std, 0.0);
}

TEST(Summarize, EfficiencyInterpolation) {
  const SimulationSummary s = sample_summary();
  const StrategySummary& entropy = get(s, "entropy");
  EXPECT_NEAR(entropy.accuracy_efficiency.target, 0.8, kEps);
  ASSERT_TRUE(entropy.accuracy_efficiency.labels);
  EXPECT_NEAR(*entropy.accuracy_efficiency.labels, 18.0, 1e-9);  // 10 + (0.2 / 0.25) * 10
  ASSERT_TRUE(entropy.accuracy_efficiency.saving_percent);
  EXPECT_NEAR(*entropy.accuracy_efficiency.saving_percent, 40.0, 1e-9);

  EXPECT_NEAR(entropy.balanced_accuracy_efficiency.target, 0.7, kEps);
  ASSERT_TRUE(entropy.balanced_accuracy_efficiency.labels);
  EXPECT_NEAR(*entropy.balanced_accuracy_efficiency.labels, 20.0 + 10.0 * (0.1 / 0.15), 1e-9);
  EXPECT_NEAR(*entropy.balanced_accuracy_efficiency.saving_percent,
              100.0 * (1 - (20.0 + 10.0 * (0.1 / 0.15)) / 30.0), 1e-9);

  // The baseline gets no saving of its own.
  const StrategySummary& random = get(s, "random");
  EXPECT_TRUE(random.accuracy_efficiency.baseline);
  EXPECT_FALSE(random.accuracy_efficiency.labels);
  EXPECT_FALSE(random.accuracy_efficiency.saving_percent);
  EXPECT_FALSE(random.accuracy_efficiency.saving_ci95.defined());
  EXPECT_TRUE(random.accuracy_efficiency.repeat_labels.empty());
  EXPECT_NEAR(random.accuracy_efficiency.target, 0.8, kEps);
}

TEST(Summarize, NeverReachedAndReachedAtRoundZero) {
  const SimulationSummary s = sample_summary();
  const StrategySummary& margin = get(s, "margin");
  EXPECT_NEAR(margin.accuracy_efficiency.target, 0.8, kEps);
  EXPECT_FALSE(margin.accuracy_efficiency.labels);
  EXPECT_FALSE(margin.accuracy_efficiency.saving_percent);
  ASSERT_TRUE(margin.balanced_accuracy_efficiency.labels);
  EXPECT_NEAR(*margin.balanced_accuracy_efficiency.labels, 20.0 + 10.0 * (0.1 / 0.15), 1e-9);

  const StrategySummary& kcenter = get(s, "kcenter");
  ASSERT_TRUE(kcenter.accuracy_efficiency.labels);
  EXPECT_EQ(*kcenter.accuracy_efficiency.labels, 10.0);
  EXPECT_NEAR(*kcenter.accuracy_efficiency.saving_percent, 100.0 * (1 - 10.0 / 30), 1e-9);
}

// Labels 100..400 (rounds 0..3), three repeats; values exact in binary (multiples of 1/8).
// The target is random's final mean, 0.75, for both metrics (balanced accuracy = accuracy,
// except blip's, which stays at 0.25). Baseline's final labels: 400.
//   random:  (.5 .5 .625 .75) (.5 .625 .875 .75) (.5 .5 .625 .75)
//            per repeat 400, 250, 400; mean curve reaches it at 400
//   entropy: (.5 .875 .75 .875) (.5 .625 1 .875) (.5 .5 .5 .625)
//            per repeat 166.67, 233.33, never; means .5 .6667 .75 .7917 -> 300, stays from 300
//   blip:    (.5 1 .5 .75) (.5 .75 .625 .875) (.5 .5 .5 .875)
//            per repeat 150, 200, 366.67; means .5 .75 .5417 .8333 -> first 200, then dips
//            below: stays from 300 + (.75 - .5417) / (.8333 - .5417) * 100 = 371.43
std::vector<RoundRecord> repeat_records() {
  std::vector<RoundRecord> r;
  auto add = [&](const std::string& s, const double (&acc)[3][4], bool flat_bal) {
    for (int rep = 0; rep < 3; ++rep)
      for (int k = 0; k < 4; ++k)
        r.push_back(rec(s, rep, k, 100 * (k + 1), acc[rep][k], flat_bal ? 0.25 : acc[rep][k]));
  };
  add("random", {{0.5, 0.5, 0.625, 0.75}, {0.5, 0.625, 0.875, 0.75}, {0.5, 0.5, 0.625, 0.75}},
      false);
  add("entropy", {{0.5, 0.875, 0.75, 0.875}, {0.5, 0.625, 1.0, 0.875}, {0.5, 0.5, 0.5, 0.625}},
      false);
  add("blip", {{0.5, 1.0, 0.5, 0.75}, {0.5, 0.75, 0.625, 0.875}, {0.5, 0.5, 0.5, 0.875}}, true);
  return r;
}

SimulationSummary repeat_summary() {
  SimulationSummary h;
  h.dataset = "toy: per-repeat";
  h.model = "mlp";
  return quarry::summarize(repeat_records(), h);
}

// Sample standard deviation of a few values (n - 1).
double sample_std(const std::vector<double>& v) {
  double mean = 0;
  for (double x : v) mean += x / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return std::sqrt(ss / static_cast<double>(v.size() - 1));
}

TEST(Summarize, PerRepeatEfficiency) {
  const SimulationSummary s = repeat_summary();
  const auto& e = get(s, "entropy").accuracy_efficiency;
  EXPECT_EQ(e.target, 0.75);
  ASSERT_EQ(e.repeat_labels.size(), 3u);
  // Each repeat's curve is read on its isotonic fit: (.5 .875 .75 .875) fits to
  // (.5 .8125 .8125 .875), reaching 0.75 at 100 + 100 (.25 / .3125) = 180; (.5 .625 1 .875) to
  // (.5 .625 .9375 .9375), at 200 + 100 (.125 / .3125) = 240.
  ASSERT_TRUE(e.repeat_labels[0]);
  EXPECT_NEAR(*e.repeat_labels[0], 180.0, 1e-9);
  ASSERT_TRUE(e.repeat_labels[1]);
  EXPECT_NEAR(*e.repeat_labels[1], 240.0, 1e-9);
  EXPECT_FALSE(e.repeat_labels[2]);  // never reaches 0.75
  EXPECT_EQ(e.repeats_reached, 2);
  // Against random's 400 labels (its fitted curve reaches 0.75 at its last round): savings 55
  // and 40 %.
  ASSERT_TRUE(e.baseline_labels);
  EXPECT_NEAR(*e.baseline_labels, 400.0, 1e-9);
  EXPECT_NEAR(e.repeat_saving.mean, 47.5, 1e-9);
  EXPECT_NEAR(e.repeat_saving.std, sample_std({55.0, 40.0}), 1e-9);
  // The mean curve: first crossing and staying both at round 2 (exactly on the target).
  ASSERT_TRUE(e.labels);
  EXPECT_NEAR(*e.labels, 300.0, 1e-9);
  EXPECT_NEAR(*e.saving_percent, 25.0, 1e-9);
  ASSERT_TRUE(e.stays_labels);
  EXPECT_NEAR(*e.stays_labels, 300.0, 1e-9);
  // Balanced accuracy has the same values here.
  const auto& eb = get(s, "entropy").balanced_accuracy_efficiency;
  EXPECT_EQ(eb.repeats_reached, 2);
  EXPECT_NEAR(eb.repeat_saving.mean, 47.5, 1e-9);
  ASSERT_TRUE(eb.stays_labels);
  EXPECT_NEAR(*eb.stays_labels, 300.0, 1e-9);

  // The baseline: no saving, no per-repeat reading (it used to be credited with 12.5 %).
  const auto& r = get(s, "random").accuracy_efficiency;
  EXPECT_TRUE(r.baseline);
  EXPECT_TRUE(r.repeat_labels.empty());
  EXPECT_EQ(r.repeats_reached, 0);
  EXPECT_FALSE(r.stays_labels);
}

TEST(Summarize, StaysAboveAfterADip) {
  const SimulationSummary s = repeat_summary();
  const auto& e = get(s, "blip").accuracy_efficiency;
  // The mean curve touches 0.75 at round 1 (200 labels), dips to 0.5417 at round 2 and is back
  // above (0.8333) at round 3. Its isotonic fit pools the blip with the dip, (.5 .6458 .6458
  // .8333): the lucky round is not a crossing; the fit reaches 0.75 at 300 + 100 (.1042 / .1875).
  ASSERT_TRUE(e.labels);
  const double pooled = (0.75 + 1.625 / 3) / 2;
  EXPECT_NEAR(*e.labels, 300 + 100 * (0.75 - pooled) / (2.5 / 3 - pooled), 1e-9);  // 355.56
  ASSERT_TRUE(e.stays_labels);
  const double y2 = 1.625 / 3, y3 = 2.5 / 3;
  EXPECT_NEAR(*e.stays_labels, 300 + 100 * (0.75 - y2) / (y3 - y2), 1e-9);  // 371.43
  EXPECT_NEAR(*e.stays_labels, 300 + 100 * (0.625 / 0.875), 1e-9);
  // Every repeat reaches it: (.5 1 .5 .75) fits to (.5 .75 .75 .75): 200; (.5 .75 .625 .875) to
  // (.5 .6875 .6875 .875): 333.33; (.5 .5 .5 .875): 366.67.
  ASSERT_EQ(e.repeat_labels.size(), 3u);
  EXPECT_NEAR(e.repeat_labels[0].value_or(-1), 200.0, 1e-9);
  EXPECT_NEAR(e.repeat_labels[1].value_or(-1), 300 + 100 * (0.0625 / 0.1875), 1e-9);
  EXPECT_NEAR(e.repeat_labels[2].value_or(-1), 300 + 100 * (0.25 / 0.375), 1e-9);
  EXPECT_EQ(e.repeats_reached, 3);
  const std::vector<double> savings{50.0, 100.0 * (1 - (300 + 100 * (0.0625 / 0.1875)) / 400),
                                    100.0 * (1 - (300 + 100 * (0.25 / 0.375)) / 400)};
  EXPECT_NEAR(e.repeat_saving.mean, (savings[0] + savings[1] + savings[2]) / 3, 1e-9);
  EXPECT_NEAR(e.repeat_saving.std, sample_std(savings), 1e-9);

  // Balanced accuracy flat at 0.25: reached by no repeat, never above.
  const auto& b = get(s, "blip").balanced_accuracy_efficiency;
  EXPECT_FALSE(b.labels);
  EXPECT_FALSE(b.stays_labels);
  ASSERT_EQ(b.repeat_labels.size(), 3u);
  for (const auto& x : b.repeat_labels) EXPECT_FALSE(x);
  EXPECT_EQ(b.repeats_reached, 0);
  EXPECT_EQ(b.repeat_saving.mean, 0.0);
  EXPECT_EQ(b.repeat_saving.std, 0.0);

  // The sample records: one entry per repeat; margin's accuracy ends below the target, in the
  // mean and in every repeat: no "stays", no repeat reaching it.
  const SimulationSummary sample = sample_summary();  // held: get() returns a reference into it
  const auto& sample_margin = get(sample, "margin").balanced_accuracy_efficiency;
  EXPECT_EQ(sample_margin.repeat_labels.size(), 2u);
  const auto& sample_margin_acc = get(sample, "margin").accuracy_efficiency;
  EXPECT_FALSE(sample_margin_acc.stays_labels);
  EXPECT_EQ(sample_margin_acc.repeats_reached, 0);
}

TEST(Summarize, PerRepeatOneReached) {
  // Two repeats; only the second reaches random's final mean (0.75), at round 1.
  std::vector<RoundRecord> records;
  for (int rep = 0; rep < 2; ++rep)
    for (int k = 0; k < 2; ++k) {
      records.push_back(rec("random", rep, k, 10 * (k + 1), 0.5, 0.5 + 0.25 * k));
      records.push_back(rec("x", rep, k, 10 * (k + 1), 0.5, rep == 1 ? 0.5 + 0.375 * k : 0.5));
    }
  const SimulationSummary s = quarry::summarize(records, {});
  const auto& e = get(s, "x").balanced_accuracy_efficiency;
  ASSERT_EQ(e.repeat_labels.size(), 2u);
  EXPECT_FALSE(e.repeat_labels[0]);
  EXPECT_NEAR(e.repeat_labels[1].value_or(-1), 10 + 10 * (0.25 / 0.375), 1e-9);
  EXPECT_EQ(e.repeats_reached, 1);
  EXPECT_NEAR(e.repeat_saving.mean, 100 * (1 - (10 + 10 * (0.25 / 0.375)) / 20), 1e-9);
  EXPECT_EQ(e.repeat_saving.std, 0.0);
  // Mean curve 0.5, 0.6875: below at the last round.
  EXPECT_FALSE(e.labels);
  EXPECT_FALSE(e.stays_labels);
}

TEST(Summarize, BaselineMissing) {
  std::vector<RoundRecord> records;
  for (const RoundRecord& r : sample_records())
    if (r.strategy != "random") records.push_back(r);
  const SimulationSummary s = quarry::summarize(records, SimulationSummary{});
  ASSERT_EQ(s.strategies.size(), 3u);
  for (const StrategySummary& st : s.strategies) {
    EXPECT_FALSE(st.accuracy_efficiency.labels);
    EXPECT_FALSE(st.accuracy_efficiency.saving_percent);
    EXPECT_FALSE(st.balanced_accuracy_efficiency.labels);
    EXPECT_FALSE(st.balanced_accuracy_efficiency.saving_percent);
    EXPECT_TRUE(st.accuracy_efficiency.repeat_labels.empty());
    EXPECT_EQ(st.accuracy_efficiency.repeats_reached, 0);
    EXPECT_FALSE(st.accuracy_efficiency.stays_labels);
  }
  // The protocol, left out of the header, is read off the records.
  EXPECT_EQ(s.repeats, 2);
  EXPECT_EQ(s.rounds, 2);
  EXPECT_EQ(s.seed_size, 10);
  EXPECT_EQ(s.batch, 10);
  // And the reports still come out.
  EXPECT_NE(quarry::summary_markdown(s).find("not in this run"), std::string::npos);
  EXPECT_TRUE(nlohmann::json::parse(quarry::summary_json(s)).is_object());
  EXPECT_EQ(quarry::curves_svg(s).rfind("<svg", 0), 0u);
}

// The target is the isotonic fit of the baseline's mean curve at its end: a dip at the last
// round is pooled with the rounds before it, so it neither lowers the target nor credits every
// strategy with a saving.
TEST(Summarize, TargetIsTheBaselinesIsotonicEnd) {
  std::vector<RoundRecord> records;
  const double random_acc[] = {0.5, 0.8, 0.86, 0.84};  // the last round dips
  const double x_acc[] = {0.5, 0.7, 0.845, 0.845};     // above the dip, below the plateau
  for (int rep = 0; rep < 2; ++rep)
    for (int k = 0; k < 4; ++k) {
      records.push_back(rec("random", rep, k, 100 * (k + 1), random_acc[k], random_acc[k]));
      records.push_back(rec("x", rep, k, 100 * (k + 1), x_acc[k], x_acc[k]));
    }
  const SimulationSummary s = quarry::summarize(records, {});
  const Efficiency& e = get(s, "x").accuracy_efficiency;
  EXPECT_NEAR(e.target, 0.85, 1e-12);  // (0.86 + 0.84) / 2
  EXPECT_NEAR(e.baseline_final, 0.84, 1e-12);
  EXPECT_FALSE(e.labels);  // against the raw final mean it would have "saved" 30 %
  EXPECT_NEAR(get(s, "random").accuracy_efficiency.target, 0.85, 1e-12);
}

// Two repeats: a resample is {0, 0}, {0, 1} or {1, 1}, so the 95% interval runs from the
// smallest to the largest of the three savings (each resample pairs a strategy's repeat with the
// baseline's repeat of the same number and refits the target). Labels 100, 200, 300.
//   random: r0 (.5 .6 .7), r1 (.5 .8 .9)       targets: {0,0} .7, {0,1} .8, {1,1} .9
//   x:      r0 (.5 .9 .9), r1 (.5 .7 1.0)
//   {0,0}: x (.5 .9 .9) reaches .7 at 150: 50 %; {0,1}: (.5 .8 .95) reaches .8 at 200: 33.3 %;
//   {1,1}: (.5 .7 1) reaches .9 at 266.7: 11.1 %.
// AULC (mean height): x 0.8 and 0.725, random 0.6 and 0.75: differences +0.2 and -0.025.
TEST(Summarize, PairedBootstrapIntervals) {
  std::vector<RoundRecord> records;
  const double random_acc[2][3] = {{0.5, 0.6, 0.7}, {0.5, 0.8, 0.9}};
  const double x_acc[2][3] = {{0.5, 0.9, 0.9}, {0.5, 0.7, 1.0}};
  for (int rep = 0; rep < 2; ++rep)
    for (int k = 0; k < 3; ++k) {
      records.push_back(rec("random", rep, k, 100 * (k + 1), random_acc[rep][k], random_acc[rep][k]));
      records.push_back(rec("x", rep, k, 100 * (k + 1), x_acc[rep][k], x_acc[rep][k]));
    }
  const SimulationSummary s = quarry::summarize(records, {});
  const Efficiency& e = get(s, "x").accuracy_efficiency;
  ASSERT_TRUE(e.saving_percent);
  EXPECT_NEAR(*e.saving_percent, 100.0 / 3, 1e-9);
  ASSERT_TRUE(e.saving_ci95.defined());
  EXPECT_NEAR(e.saving_ci95.low, 100.0 * (1 - (200 + 100 * (0.2 / 0.3)) / 300), 1e-9);
  EXPECT_NEAR(e.saving_ci95.high, 50.0, 1e-9);
  EXPECT_FALSE(e.saving_ci95.covers(0.0));

  const Aulc& a = get(s, "x").accuracy_aulc;
  EXPECT_NEAR(a.mean, 0.7625, 1e-12);
  EXPECT_NEAR(a.ci95.low, 0.725, 1e-12);
  EXPECT_NEAR(a.ci95.high, 0.8, 1e-12);
  EXPECT_NEAR(a.difference, 0.0875, 1e-12);
  EXPECT_NEAR(a.difference_ci95.low, -0.025, 1e-12);
  EXPECT_NEAR(a.difference_ci95.high, 0.2, 1e-12);
  EXPECT_TRUE(a.difference_ci95.covers(0.0));  // "not different from random"
  const Aulc& base = get(s, "random").accuracy_aulc;
  EXPECT_NEAR(base.mean, 0.675, 1e-12);
  EXPECT_TRUE(std::isnan(base.difference));  // none against itself

  // Written out: summary.json's ci95 and verdicts, and the markdown says it plainly.
  const nlohmann::json j = nlohmann::json::parse(quarry::summary_json(s));
  const nlohmann::json& x = j["strategies"][1];
  EXPECT_NEAR(x["efficiency"]["accuracy"]["ci95"][1].get<double>(), 50.0, 1e-9);
  EXPECT_EQ(x["efficiency"]["accuracy"]["different_from_baseline"], true);
  EXPECT_EQ(x["aulc"]["accuracy"]["different_from_baseline"], false);
  EXPECT_NEAR(x["curve"][1]["accuracy"]["ci95"][0].get<double>(), 0.7, 1e-12);
  EXPECT_EQ(j["strategies"][0]["efficiency"]["accuracy"]["baseline"], true);
  EXPECT_FALSE(j["strategies"][0]["efficiency"]["accuracy"].contains("saving_percent"));
  const std::string m = quarry::summary_markdown(s);
  EXPECT_NE(m.find("| 200 | **33.3 %** (best) [11.1, 50.0] |"), std::string::npos) << m;
  EXPECT_NE(m.find("| x | 0.7625 [0.7250, 0.8000] | +0.0875 [-0.0250, +0.2000]: not different "
                   "from random |"),
            std::string::npos)
      << m;

  // One repeat: no interval anywhere.
  records.erase(std::remove_if(records.begin(), records.end(),
                               [](const RoundRecord& r) { return r.repeat == 1; }),
                records.end());
  const SimulationSummary one = quarry::summarize(records, {});
  EXPECT_FALSE(get(one, "x").accuracy_efficiency.saving_ci95.defined());
  EXPECT_FALSE(get(one, "x").accuracy_aulc.difference_ci95.defined());
  EXPECT_TRUE(std::isnan(get(one, "x").accuracy[1].ci_low));
}

// A strategy whose every curve is random's saves exactly nothing, however noisy the curves
// (reading its raw curve against random's fitted end credited such a clone with 54%).
TEST(Summarize, ACopyOfTheBaselineSavesNothing) {
  std::vector<RoundRecord> records;
  const double acc[3][5] = {{0.5, 0.8, 0.7, 0.75, 0.72}, {0.5, 0.6, 0.9, 0.7, 0.8}, {0.5, 0.55, 0.8, 0.85, 0.6}};
  for (const char* name : {"random", "clone"})
    for (int rep = 0; rep < 3; ++rep)
      for (int k = 0; k < 5; ++k) records.push_back(rec(name, rep, k, 50 * (k + 1), acc[rep][k], acc[rep][k]));
  const SimulationSummary s = quarry::summarize(records, {});
  const Efficiency& e = get(s, "clone").accuracy_efficiency;
  ASSERT_TRUE(e.saving_percent);
  EXPECT_EQ(*e.saving_percent, 0.0);
  ASSERT_TRUE(e.saving_ci95.defined());
  EXPECT_EQ(e.saving_ci95.low, 0.0);
  EXPECT_EQ(e.saving_ci95.high, 0.0);
  EXPECT_TRUE(e.saving_ci95.covers(0.0));
  EXPECT_TRUE(get(s, "clone").accuracy_aulc.difference_ci95.covers(0.0));
  EXPECT_NE(quarry::summary_markdown(s).find("0.0 % [0.0, 0.0]: not different from random"), std::string::npos);
}

TEST(Summarize, OtherBaselineName) {
  SimulationSummary h;
  h.baseline = "margin";
  const SimulationSummary s = quarry::summarize(sample_records(), h);
  EXPECT_NEAR(get(s, "entropy").accuracy_efficiency.target, 0.7, kEps);
}

TEST(Summarize, InconsistentRepeatsAreErrors) {
  std::vector<RoundRecord> records = sample_records();
  records[4].labels = 25;  // entropy, repeat 1, round 1
  EXPECT_THROW(quarry::summarize(records, {}), Error);

  records = sample_records();
  records.erase(records.begin() + 5);  // entropy, repeat 1, round 2
  try {
    quarry::summarize(records, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("entropy"), std::string::npos) << e.what();
  }

  records = sample_records();
  records.erase(records.begin());  // entropy, repeat 0, round 0
  EXPECT_THROW(quarry::summarize(records, {}), Error);

  records = sample_records();
  records.push_back(records[0]);  // the same round twice
  EXPECT_THROW(quarry::summarize(records, {}), Error);

  records = sample_records();
  records[3].test.num_classes = 2;
  EXPECT_THROW(quarry::summarize(records, {}), Error);
}

TEST(Summarize, BinarySensitivitySpecificity) {
  std::vector<RoundRecord> records;
  for (int rep = 0; rep < 3; ++rep)
    for (int k = 0; k < 2; ++k) {
      RoundRecord r = rec("random", rep, k, 100 + 50 * k, 0.8, 0.7, 0.6, 2);
      r.test.sensitivity = {0.9 + 0.01 * rep, 0.5};
      r.test.specificity = {0.5, 0.9 + 0.01 * rep};
      if (rep == 2) r.test.sensitivity[1] = std::nan("");  // undefined in one repeat
      records.push_back(r);
    }
  const SimulationSummary s = quarry::summarize(records, {});
  EXPECT_EQ(s.num_classes, 2);
  const StrategySummary& st = s.strategies.at(0);
  ASSERT_EQ(st.sensitivity.size(), 2u);
  ASSERT_EQ(st.sensitivity[1].size(), 2u);
  EXPECT_NEAR(st.sensitivity[1][0].mean, 0.91, kEps);
  EXPECT_NEAR(st.sensitivity[1][0].std, 0.01, 1e-12);
  EXPECT_NEAR(st.sensitivity[1][1].mean, 0.5, kEps);  // the undefined repeat left out
  EXPECT_NEAR(st.specificity[0][1].mean, 0.91, kEps);

  const std::string csv = quarry::curves_csv(s);
  EXPECT_NE(csv.find(",sensitivity_0_mean,sensitivity_0_std,sensitivity_1_mean,"
                     "sensitivity_1_std,specificity_0_mean,specificity_0_std,"
                     "specificity_1_mean,specificity_1_std,accuracy_ci95_low,"),
            std::string::npos)
      << csv;
  EXPECT_NE(quarry::summary_markdown(s).find("Sensitivity, class 1"), std::string::npos);
}

// ---------------------------------------------------------------- rounds.jsonl

TEST(StopRule, KappaByHand) {
  // a = 0 0 1 1, b = 0 1 1 1: p_o = 3/4, p_e = 1/2 * 1/4 + 1/2 * 3/4 = 1/2, kappa = 1/2.
  EXPECT_NEAR(quarry::cohen_kappa({0, 0, 1, 1}, {0, 1, 1, 1}, 2), 0.5, 1e-12);
  EXPECT_NEAR(quarry::cohen_kappa({0, 1, 2}, {0, 1, 2}, 3), 1.0, 1e-12);
  // Complete disagreement between two balanced labelings: p_o = 0, p_e = 1/2.
  EXPECT_NEAR(quarry::cohen_kappa({0, 1}, {1, 0}, 2), -1.0, 1e-12);
  // Both the same constant: chance agreement is 1; identical, so 1.
  EXPECT_EQ(quarry::cohen_kappa({1, 1, 1}, {1, 1, 1}, 3), 1.0);
  EXPECT_THROW(quarry::cohen_kappa({0, 1}, {0}, 2), Error);
  EXPECT_THROW(quarry::cohen_kappa({0, 2}, {0, 1}, 2), Error);
}

TEST(StopRule, ParseAndFire) {
  const quarry::StopRule r = quarry::parse_stop_rule("kappa:0.99:3");
  EXPECT_EQ(r.threshold, 0.99);
  EXPECT_EQ(r.window, 3);
  EXPECT_EQ(r.describe(), "kappa:0.99:3");
  for (const char* bad : {"", "kappa", "kappa:0.99", "kappa:x:3", "kappa:1.5:3", "kappa:0.9:0",
                          "kappa:0.9:2.5", "agreement:0.9:3", "kappa:-1:3", "kappa:nan:3"}) {
    try {
      quarry::parse_stop_rule(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const quarry::UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("kappa:THRESHOLD:WINDOW"), std::string::npos) << e.what();
    }
  }
  // The mean of the last WINDOW kappas against the threshold.
  EXPECT_FALSE(quarry::stop_rule_fires(r, {0.995, 0.995}));         // too few
  EXPECT_TRUE(quarry::stop_rule_fires(r, {0.5, 0.99, 0.995, 1.0}));   // mean 0.995
  EXPECT_FALSE(quarry::stop_rule_fires(r, {0.99, 0.99, 0.98, 0.995}));  // mean 0.98833
}

// Records with the rule's fields: where it fired, what stopping there cost, and --stop-early
// repeats that end where it fired.
TEST(StopRule, Summary) {
  std::vector<RoundRecord> records;
  const double acc[2][4] = {{0.5, 0.7, 0.8, 0.82}, {0.5, 0.6, 0.75, 0.85}};
  const double kappa[2][4] = {{0, 0.8, 0.95, 0.99}, {0, 0.7, 0.8, 0.9}};
  for (int rep = 0; rep < 2; ++rep)
    for (int k = 0; k < 4; ++k) {
      RoundRecord r = rec("random", rep, k, 100 * (k + 1), acc[rep][k], acc[rep][k]);
      if (k > 0) r.stop_kappa = kappa[rep][k];
      r.stop_fired = rep == 0 && k == 2;  // kappa:0.9:1 fires at round 2 in repeat 0 only
      records.push_back(r);
    }
  SimulationSummary s = quarry::summarize(records, {});
  const StrategySummary& st = get(s, "random");
  ASSERT_TRUE(st.stop);
  EXPECT_FALSE(st.stopped_early);
  EXPECT_EQ(st.stop->repeats_fired, 1);
  ASSERT_EQ(st.stop->fired_round.size(), 2u);
  EXPECT_EQ(st.stop->fired_round[0], 2);
  EXPECT_FALSE(st.stop->fired_round[1]);
  EXPECT_NEAR(st.stop->labels.mean, 300, 1e-12);
  EXPECT_NEAR(st.stop->labels_saved.mean, 100, 1e-12);
  EXPECT_NEAR(st.stop->accuracy.mean, 0.8, 1e-12);
  EXPECT_NEAR(st.stop->accuracy_cost.mean, 0.02, 1e-12);
  ASSERT_EQ(st.stop->mean_kappa.size(), 4u);
  EXPECT_TRUE(std::isnan(st.stop->mean_kappa[0]));
  EXPECT_NEAR(st.stop->mean_kappa[3], 0.945, 1e-12);
  const std::string m = quarry::summary_markdown(s);
  EXPECT_NE(m.find("| random | 1/2 | 300 ± 0 | 100 ± 0 | 0.8000 ± 0.0000 | 0.0200 ± 0.0000 |"),
            std::string::npos)
      << m;
  const nlohmann::json j = nlohmann::json::parse(quarry::summary_json(s));
  EXPECT_EQ(j["strategies"][0]["stop"]["fired_round"], nlohmann::json::parse("[2, null]"));
  // rounds.jsonl keeps the fields.
  const RoundRecord back = quarry::parse_round_json(quarry::round_json(records[2]));
  EXPECT_TRUE(back.stop_fired);
  EXPECT_NEAR(back.stop_kappa, 0.95, 1e-12);
  EXPECT_TRUE(std::isnan(quarry::parse_round_json(quarry::round_json(records[0])).stop_kappa));

  // --stop-early: repeat 0 ends at round 2; the curves end there too (a mean over both repeats
  // at every point), and the cost is unknown for the stopped repeat.
  records.erase(records.begin() + 3);  // repeat 0, round 3
  s = quarry::summarize(records, {});
  const StrategySummary& early = get(s, "random");
  EXPECT_TRUE(early.stopped_early);
  EXPECT_EQ(early.labels.size(), 3u);
  EXPECT_NEAR(early.accuracy[2].mean, 0.775, 1e-12);
  EXPECT_TRUE(std::isnan(early.stop->accuracy_cost.mean));
  EXPECT_NE(quarry::summary_markdown(s).find("With `--stop-early`"), std::string::npos);
  // A repeat with a round missing before its end is still an error.
  records.erase(std::remove_if(records.begin(), records.end(),
                               [](const RoundRecord& r) { return r.repeat == 1 && r.round == 1; }),
                records.end());
  EXPECT_THROW(quarry::summarize(records, {}), Error);
}

TEST(RoundJson, RoundTrip) {
  RoundRecord r;
  r.strategy = "entropy \"quoted\"";
  r.repeat = 2;
  r.round = 3;
  r.labels = 500;
  r.test = quarry::evaluate_predictions({0, 0, 1, 1, 1}, {0, 1, 1, 1, 0}, 3);  // class 2 absent
  r.test.macro_f1 = std::nan("");
  r.labeled_per_class = {250, 200, 50};
  r.epochs = 17;
  r.train_seconds = 1.25;
  r.eval_seconds = 0.125;
  r.infer_seconds = 0.5;
  r.score_seconds = 0.0625;
  r.select_seconds = 1.0 / 3;
  r.round_seconds = 2.1;
  r.selected = {7, 3, 123456789012};

  const std::string line = quarry::round_json(r);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_TRUE(j["macro_f1"].is_null());
  EXPECT_TRUE(j["sensitivity"][2].is_null());
  EXPECT_EQ(j["confusion"].size(), 3u);
  EXPECT_EQ(j["seconds"]["train"], 1.25);

  const RoundRecord b = quarry::parse_round_json(line);
  EXPECT_EQ(b.strategy, r.strategy);
  EXPECT_EQ(b.repeat, 2);
  EXPECT_EQ(b.round, 3);
  EXPECT_EQ(b.labels, 500);
  EXPECT_EQ(b.test.accuracy, r.test.accuracy);
  EXPECT_EQ(b.test.balanced_accuracy, r.test.balanced_accuracy);
  EXPECT_TRUE(std::isnan(b.test.macro_f1));
  ASSERT_EQ(b.test.sensitivity.size(), 3u);
  EXPECT_EQ(b.test.sensitivity[0], r.test.sensitivity[0]);
  EXPECT_TRUE(std::isnan(b.test.sensitivity[2]));
  EXPECT_EQ(b.test.specificity, r.test.specificity);
  EXPECT_EQ(b.test.confusion, r.test.confusion);
  EXPECT_EQ(b.test.num_classes, 3);
  EXPECT_EQ(b.test.n, 5);
  EXPECT_EQ(b.labeled_per_class, r.labeled_per_class);
  EXPECT_EQ(b.epochs, 17);
  EXPECT_EQ(b.train_seconds, 1.25);
  EXPECT_EQ(b.eval_seconds, 0.125);
  EXPECT_EQ(b.infer_seconds, 0.5);
  EXPECT_EQ(b.score_seconds, 0.0625);
  EXPECT_EQ(b.select_seconds, 1.0 / 3);  // doubles round-trip exactly
  EXPECT_EQ(b.round_seconds, 2.1);
  EXPECT_EQ(b.selected, r.selected);
  EXPECT_EQ(quarry::round_json(b), line);
}

TEST(RoundJson, MalformedLinesAreErrors) {
  for (const std::string& bad : {std::string("{not json"), std::string("[1, 2]"),
                                std::string(R"({"strategy": "x"})")}) {
    try {
      quarry::parse_round_json(bad);
      FAIL() << "expected an error for " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  RoundRecord r = rec("random", 0, 0, 10, 0.5, 0.5);
  nlohmann::json j = nlohmann::json::parse(quarry::round_json(r));
  j["labels"] = "ten";
  EXPECT_THROW(quarry::parse_round_json(j.dump()), Error);
}

// ---------------------------------------------------------------- the report files

TEST(CurvesCsv, RowsAndValues) {
  const SimulationSummary s = sample_summary();
  const std::string csv = quarry::curves_csv(s);
  EXPECT_EQ(csv.rfind("strategy,round,labels,repeats,accuracy_mean,accuracy_std,"
                      "balanced_accuracy_mean,balanced_accuracy_std,macro_f1_mean,macro_f1_std,"
                      "accuracy_ci95_low,accuracy_ci95_high,balanced_accuracy_ci95_low,"
                      "balanced_accuracy_ci95_high\n",
                      0),
            0u);
  EXPECT_EQ(count(csv, "\n"), 1u + 4 * 3);
  // Two repeats: every bootstrap mean is one of the two values or their mean; the 95% interval
  // spans the two values.
  EXPECT_NE(csv.find("\nentropy,1,20,2,0.85,0.0707107,0.6,0,0.5,0,0.8,0.9,0.6,0.6\n"),
            std::string::npos)
      << csv;
  EXPECT_NE(csv.find("\nrandom,2,30,2,0.8,0.141421,0.7,0.141421,0.5,0,0.7,0.9,0.6,0.8\n"),
            std::string::npos)
      << csv;
}

TEST(SummaryJson, Fields) {
  const SimulationSummary s = sample_summary();
  const nlohmann::json j = nlohmann::json::parse(quarry::summary_json(s));
  EXPECT_EQ(j["dataset"], "toy: 3 classes");
  EXPECT_EQ(j["baseline"], "random");
  EXPECT_EQ(j["num_classes"], 3);
  EXPECT_EQ(j["config"]["seed"], 7);
  ASSERT_EQ(j["strategies"].size(), 4u);
  const nlohmann::json& entropy = j["strategies"][0];
  EXPECT_EQ(entropy["strategy"], "entropy");
  EXPECT_EQ(entropy["repeats"], 2);
  ASSERT_EQ(entropy["curve"].size(), 3u);
  EXPECT_EQ(entropy["curve"][1]["labels"], 20);
  EXPECT_NEAR(entropy["curve"][1]["accuracy"]["mean"].get<double>(), 0.85, kEps);
  EXPECT_NEAR(entropy["efficiency"]["accuracy"]["labels"].get<double>(), 18.0, 1e-9);
  EXPECT_NEAR(entropy["efficiency"]["accuracy"]["saving_percent"].get<double>(), 40.0, 1e-9);
  EXPECT_NEAR(entropy["efficiency"]["accuracy"]["target"].get<double>(), 0.8, kEps);
  const nlohmann::json& margin = j["strategies"][2];
  EXPECT_TRUE(margin["efficiency"]["accuracy"]["labels"].is_null());
  EXPECT_TRUE(margin["efficiency"]["accuracy"]["saving_percent"].is_null());
  EXPECT_EQ(margin["efficiency"]["accuracy"]["reached"], false);
  EXPECT_TRUE(entropy["seconds"]["round"]["mean"].is_number());

  SimulationSummary bad = s;
  bad.config_json = "{oops";
  EXPECT_THROW(quarry::summary_json(bad), Error);
}

TEST(SummaryMarkdown, StrategiesAndSavings) {
  const SimulationSummary s = sample_summary();
  const std::string m = quarry::summary_markdown(s);
  for (const char* name : {"entropy", "random", "margin", "kcenter"})
    EXPECT_NE(m.find(std::string("| ") + name + " |"), std::string::npos) << name;
  EXPECT_NE(m.find("toy: 3 classes"), std::string::npos);
  EXPECT_NE(m.find("| 18 | 40.0 % ["), std::string::npos) << m;
  EXPECT_NE(m.find("| random | 30 | "), std::string::npos) << m;
  EXPECT_NE(m.find("| (baseline) | – | – |"), std::string::npos) << m;  // no saving of its own
  EXPECT_NE(m.find("not reached (> 30 labels)"), std::string::npos) << m;
  EXPECT_NE(m.find("**66.7 %** (best)"), std::string::npos) << m;  // kcenter, accuracy
  EXPECT_EQ(count(m, "(best)"), 2u);  // once per metric
  EXPECT_NE(m.find("0.8500 ± 0.0707"), std::string::npos) << m;  // entropy, round 1
  EXPECT_NE(m.find("How to read this"), std::string::npos);
}

TEST(SummaryJson, PerRepeatFields) {
  const nlohmann::json j = nlohmann::json::parse(quarry::summary_json(repeat_summary()));
  ASSERT_EQ(j["strategies"].size(), 3u);
  const nlohmann::json& entropy = j["strategies"][1]["efficiency"]["accuracy"];
  EXPECT_EQ(j["strategies"][1]["strategy"], "entropy");
  ASSERT_EQ(entropy["repeat_labels"].size(), 3u);
  EXPECT_NEAR(entropy["repeat_labels"][0].get<double>(), 180.0, 1e-9);
  EXPECT_NEAR(entropy["repeat_labels"][1].get<double>(), 240.0, 1e-9);
  EXPECT_TRUE(entropy["repeat_labels"][2].is_null());
  EXPECT_EQ(entropy["repeats_reached"], 2);
  EXPECT_NEAR(entropy["repeat_saving"]["mean"].get<double>(), 47.5, 1e-9);
  EXPECT_NEAR(entropy["repeat_saving"]["std"].get<double>(), sample_std({55.0, 40.0}), 1e-9);
  EXPECT_NEAR(entropy["baseline_labels"].get<double>(), 400.0, 1e-9);
  EXPECT_NEAR(entropy["stays_labels"].get<double>(), 300.0, 1e-9);

  const nlohmann::json& blip = j["strategies"][2]["efficiency"];
  EXPECT_NEAR(blip["accuracy"]["stays_labels"].get<double>(), 300 + 100 * (0.625 / 0.875), 1e-9);
  EXPECT_NEAR(blip["accuracy"]["labels"].get<double>(), 1600.0 / 4.5, 1e-9);  // 355.56
  EXPECT_EQ(blip["accuracy"]["repeats_reached"], 3);
  const nlohmann::json& flat = blip["balanced_accuracy"];
  EXPECT_EQ(flat["repeat_labels"], nlohmann::json::parse("[null, null, null]"));
  EXPECT_EQ(flat["repeats_reached"], 0);
  EXPECT_TRUE(flat["repeat_saving"].is_null());  // no repeat reached it: no saving to average
  EXPECT_TRUE(flat["stays_labels"].is_null());
}

TEST(SummaryMarkdown, PerRepeatSavingAndStays) {
  const std::string m = quarry::summary_markdown(repeat_summary());
  EXPECT_EQ(count(m, "| Saving [95% CI] | Saving per repeat |"), 2u) << m;
  // entropy, accuracy: 300 labels, 25.0 %, per repeat 48 ± 11 % with 2 of 3 repeats; its
  // interval covers 0 (one repeat never reaches the target): said plainly.
  EXPECT_NE(m.find("| entropy | 400 | "), std::string::npos) << m;
  const std::size_t best = m.find("| 300 | **25.0 %** (best) [< 0, ");
  ASSERT_NE(best, std::string::npos) << m;
  EXPECT_NE(m.find("]: not different from random | 48 ± 11 % (2/3) |", best), std::string::npos) << m;
  // blip: 355.56 labels, 11.1 %.
  EXPECT_NE(m.find("| 356 | 11.1 % ["), std::string::npos) << m;
  // blip, balanced accuracy: reached by none, in no resample either.
  EXPECT_NE(m.find("| not reached (> 400 labels) | not reached [< 0, < 0]: worse than random | "
                   "– (0/3) |"),
            std::string::npos)
      << m;
  // The "stays above from" table.
  EXPECT_NE(m.find("## Stays above from: labels after which the mean curve stays at or above "
                   "the target"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("| entropy | 300 | 300 |"), std::string::npos) << m;
  EXPECT_NE(m.find("| blip | 371 | below at the last round |"), std::string::npos) << m;
  // Explained in "How to read this".
  EXPECT_NE(m.find("**Saving per repeat:**"), std::string::npos);
  EXPECT_NE(m.find("**Stays above from:**"), std::string::npos);
  // Every row of the results table has as many cells as its header.
  const std::size_t header = m.find("| Strategy | Labels | Accuracy");
  ASSERT_NE(header, std::string::npos);
  const auto line_at = [&](std::size_t at) { return m.substr(at, m.find('\n', at) - at); };
  const std::size_t cells = count(line_at(header), "|");
  std::size_t at = m.find('\n', header) + 1;
  for (int row = 0; row < 4; ++row, at = m.find('\n', at) + 1)  // the rule and 3 strategies
    EXPECT_EQ(count(line_at(at), "|"), cells) << line_at(at);
}

SimulationSummary realistic_summary(const std::string& extra_name) {
  // Learning curves of the usual shape: a saturating rise, strategies ahead of random.
  std::vector<RoundRecord> records;
  const std::vector<std::pair<std::string, double>> strategies{
      {"random", 1.0}, {"entropy", 1.9}, {"margin", 2.1}, {"bald", 1.6}, {extra_name, 1.3}};
  for (const auto& [name, speed] : strategies)
    for (int rep = 0; rep < 3; ++rep)
      for (int k = 0; k <= 10; ++k) {
        const double labels = 200 + 100 * k;
        const double noise = 0.012 * std::sin(3.0 * rep + k * 1.7 + speed);
        const double acc = 0.93 - 0.33 * std::exp(-speed * (labels - 200) / 600) + noise;
        const double bal = 0.90 - 0.40 * std::exp(-speed * (labels - 200) / 700) + 1.4 * noise;
        RoundRecord r = rec(name, rep, k, static_cast<std::int64_t>(labels), acc, bal, bal, 4);
        records.push_back(r);
      }
  SimulationSummary h;
  h.dataset = "synthetic: 4000 train / 500 val / 1000 test, 1x28x28, 4 classes";
  h.model = "cnn";
  return quarry::summarize(records, h);
}

TEST(CurvesSvg, WellFormedEnough) {
  const SimulationSummary s = realistic_summary("a<b & \"c\"");
  const std::string svg = quarry::curves_svg(s);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  // One mean line per strategy in each of the two panels.
  EXPECT_EQ(count(svg, "<polyline"), 2 * s.strategies.size());
  EXPECT_EQ(count(svg, "<g"), count(svg, "</g>"));
  EXPECT_EQ(count(svg, "<text"), count(svg, "</text>"));
  // Names escaped: no raw '<' or '&' from the name.
  EXPECT_NE(svg.find("a&lt;b &amp; &quot;c&quot;"), std::string::npos);
  EXPECT_EQ(svg.find("a<b"), std::string::npos);
  // Nothing external.
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(svg.find("href"), std::string::npos);
  EXPECT_EQ(svg.find("@import"), std::string::npos);
  // Random sampling dashed; the bands are translucent polygons.
  EXPECT_NE(svg.find("stroke-dasharray=\"7 4\""), std::string::npos);
  EXPECT_GE(count(svg, "fill-opacity=\"0.15\""), 2 * s.strategies.size());

  // The Markdown report escapes it too (no HTML tag, no emphasis).
  const std::string md = quarry::summary_markdown(s);
  EXPECT_NE(md.find("| a\\<b & \"c\" |"), std::string::npos) << md;

  // For looking at: tests/tmp/curves_sample.svg (render it with rsvg-convert).
  std::ofstream(std::string(QUARRY_TEST_TMP) + "/curves_sample.svg") << svg;
  std::ofstream(std::string(QUARRY_TEST_TMP) + "/summary_sample.md") << md;
}

TEST(CurvesSvg, EmptyAndSingleRound) {
  const std::string empty = quarry::curves_svg(quarry::summarize({}, {}));
  EXPECT_EQ(empty.rfind("<svg", 0), 0u);
  EXPECT_EQ(count(empty, "<polyline"), 0u);

  std::vector<RoundRecord> one{rec("random", 0, 0, 50, 0.5, 0.5)};
  const std::string svg = quarry::curves_svg(quarry::summarize(one, {}));
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

}  // namespace
