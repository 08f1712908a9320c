// quarry::evaluate_predictions: the confusion matrix and the metrics read off it (accuracy,
// balanced accuracy, macro-F1, per-class sensitivity and specificity); Cohen's kappa between two
// models' predictions and the stopping rule built on it.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "quarry/error.hpp"
#include "quarry/loop.hpp"

namespace quarry {

Metrics evaluate_predictions(const std::vector<std::int32_t>& truth,
                             const std::vector<std::int32_t>& predicted, int num_classes) {
  QUARRY_EXPECTS(num_classes >= 1, "metrics need at least one class, got num_classes = ",
                 num_classes);
  QUARRY_EXPECTS(truth.size() == predicted.size(), "metrics: ", truth.size(), " true labels but ",
                 predicted.size(), " predictions");
  const std::size_t C = static_cast<std::size_t>(num_classes);
  const double nan = std::numeric_limits<double>::quiet_NaN();

  Metrics m;
  m.num_classes = num_classes;
  m.n = static_cast<std::int64_t>(truth.size());
  m.confusion.assign(C * C, 0);
  for (std::size_t i = 0; i < truth.size(); ++i) {
    const std::int32_t t = truth[i], p = predicted[i];
    QUARRY_EXPECTS(t >= 0 && t < num_classes, "metrics: true label ", t, " of sample ", i,
                   " is outside [0, ", num_classes, ")");
    QUARRY_EXPECTS(p >= 0 && p < num_classes, "metrics: predicted class ", p, " of sample ", i,
                   " is outside [0, ", num_classes, ")");
    ++m.confusion[static_cast<std::size_t>(t) * C + static_cast<std::size_t>(p)];
  }

  // Per class: TP = diagonal, FN = rest of the row (truth c), FP = rest of the column.
  std::int64_t correct = 0;
  double recall_sum = 0, f1_sum = 0;
  int present = 0, f1_classes = 0;
  m.sensitivity.assign(C, nan);
  m.specificity.assign(C, nan);
  for (std::size_t c = 0; c < C; ++c) {
    std::int64_t row = 0, col = 0;
    for (std::size_t k = 0; k < C; ++k) {
      row += m.confusion[c * C + k];
      col += m.confusion[k * C + c];
    }
    const std::int64_t tp = m.confusion[c * C + c];
    const std::int64_t fn = row - tp, fp = col - tp;
    const std::int64_t negatives = m.n - row;  // samples of the other classes: TN + FP
    correct += tp;
    if (row > 0) {
      m.sensitivity[c] = static_cast<double>(tp) / static_cast<double>(row);
      recall_sum += m.sensitivity[c];
      ++present;
    }
    if (negatives > 0)
      m.specificity[c] = static_cast<double>(negatives - fp) / static_cast<double>(negatives);
    // F1 = 2TP / (2TP + FP + FN), over the classes in the truth or in the predictions; a class
    // in neither (0 / 0) is left out of the mean.
    const std::int64_t denom = 2 * tp + fp + fn;
    if (denom > 0) {
      f1_sum += 2.0 * static_cast<double>(tp) / static_cast<double>(denom);
      ++f1_classes;
    }
  }
  // No samples: every mean is 0 / 0.
  m.accuracy = m.n > 0 ? static_cast<double>(correct) / static_cast<double>(m.n) : nan;
  m.balanced_accuracy = present > 0 ? recall_sum / present : nan;
  m.macro_f1 = f1_classes > 0 ? f1_sum / f1_classes : nan;
  return m;
}

}  // namespace quarry

namespace quarry {

double cohen_kappa(const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b,
                   int num_classes) {
  QUARRY_EXPECTS(a.size() == b.size() && !a.empty(), "kappa: ", a.size(), " and ", b.size(),
                 " predictions (expected the same, non-zero number)");
  const std::size_t C = static_cast<std::size_t>(num_classes);
  std::vector<double> ca(C, 0.0), cb(C, 0.0);
  double agree = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    QUARRY_EXPECTS(a[i] >= 0 && b[i] >= 0 && static_cast<std::size_t>(a[i]) < C &&
                       static_cast<std::size_t>(b[i]) < C,
                   "kappa: a class outside [0, ", num_classes, ") at position ", i);
    ca[static_cast<std::size_t>(a[i])] += 1;
    cb[static_cast<std::size_t>(b[i])] += 1;
    agree += a[i] == b[i];
  }
  const double n = static_cast<double>(a.size());
  double chance = 0;
  for (std::size_t c = 0; c < C; ++c) chance += (ca[c] / n) * (cb[c] / n);
  const double observed = agree / n;
  if (chance >= 1.0) return observed >= 1.0 ? 1.0 : 0.0;  // both one constant class
  return (observed - chance) / (1.0 - chance);
}

std::string StopRule::describe() const {
  char buf[64];
  std::snprintf(buf, sizeof buf, "kappa:%g:%d", threshold, window);
  return buf;
}

StopRule parse_stop_rule(const std::string& spec) {
  const auto bad = [&](const char* why) {
    QUARRY_USAGE_FAIL("--stop '", quote_input(spec), "': ", why,
                      "; expected kappa:THRESHOLD:WINDOW, e.g. kappa:0.99:3 (THRESHOLD in (-1, 1], "
                      "WINDOW a whole number >= 1)");
  };
  if (spec.rfind("kappa:", 0) != 0) bad("unknown rule");
  if (spec.find_first_of(" \t\n\r") != std::string::npos) bad("spaces inside");
  const std::string rest = spec.substr(6);
  const std::size_t colon = rest.find(':');
  if (colon == std::string::npos) bad("missing WINDOW");
  StopRule rule;
  const std::string t = rest.substr(0, colon), w = rest.substr(colon + 1);
  char* end = nullptr;
  rule.threshold = std::strtod(t.c_str(), &end);
  if (t.empty() || *end != '\0' || !std::isfinite(rule.threshold) || rule.threshold <= -1 ||
      rule.threshold > 1)
    bad("THRESHOLD is not a number in (-1, 1]");
  const long window = std::strtol(w.c_str(), &end, 10);
  if (w.empty() || *end != '\0' || window < 1 || window > 1000) bad("WINDOW is not a whole number in [1, 1000]");
  rule.window = static_cast<int>(window);
  return rule;
}

bool stop_rule_fires(const StopRule& rule, const std::vector<double>& kappas) {
  const std::size_t w = static_cast<std::size_t>(rule.window);
  if (kappas.size() < w) return false;
  double sum = 0;
  for (std::size_t i = kappas.size() - w; i < kappas.size(); ++i) sum += kappas[i];
  return sum / static_cast<double>(w) >= rule.threshold;
}

}  // namespace quarry
