// What a simulation reports, part 2: rounds.jsonl, one JSON object a line per round record
// (strategy x repeat x round), written as the simulation runs and read back by `report`.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quarry/error.hpp"
#include "quarry/loop.hpp"
#include "simulate/report_internal.hpp"

namespace quarry {
namespace {

using nlohmann::json;
// Written with the keys in the order set (parsed into plain json).
using ojson = nlohmann::ordered_json;

}  // namespace

namespace report_detail {

ojson number_or_null(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }

}  // namespace report_detail

using report_detail::kNaN;
using report_detail::number_or_null;

// ---------------------------------------------------------------- rounds.jsonl (reading)

namespace {

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
  // The stopping rule's fields (absent in runs without one, and in older files).
  if (j.contains("stop_kappa")) r.stop_kappa = as_double(j["stop_kappa"], "stop_kappa");
  if (j.contains("stop_fired")) {
    QUARRY_EXPECTS(j["stop_fired"].is_boolean(), "field \"stop_fired\" must be true or false");
    r.stop_fired = j["stop_fired"].get<bool>();
  }
  return r;
}

}  // namespace

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
  if (!std::isnan(r.stop_kappa) || r.stop_fired) {
    j["stop_kappa"] = number_or_null(r.stop_kappa);
    j["stop_fired"] = r.stop_fired;
  }
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

}  // namespace quarry
