// quarry::evaluate_predictions: the confusion matrix and the metrics read off it (accuracy,
// balanced accuracy, macro-F1, per-class sensitivity and specificity).
#include <cmath>
#include <cstdint>
#include <limits>
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
