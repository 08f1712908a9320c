#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "cli.hpp"
#include "quarry/error.hpp"

namespace quarry::cli {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string json_text(const nlohmann::json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string selection_csv(const Selection& sel) {
  std::string out = "rank,index,score\n";
  out.reserve(out.size() + sel.index.size() * 32);
  for (std::size_t r = 0; r < sel.index.size(); ++r)
    out += fmt::format("{},{},{:.9g}\n", r + 1, sel.index[r], sel.score[r]);
  return out;
}

std::string selection_json(const Selection& sel, const std::string& strategy, const std::string& source) {
  nlohmann::json j;
  j["strategy"] = strategy;
  j["source"] = source;
  j["k"] = sel.index.size();
  nlohmann::json rows = nlohmann::json::array();
  for (std::size_t r = 0; r < sel.index.size(); ++r)
    rows.push_back({{"rank", r + 1}, {"index", sel.index[r]}, {"score", sel.score[r]}});
  j["selected"] = std::move(rows);
  return json_text(j);
}

std::vector<std::string> split_commas(const std::string& s, bool keep_empty) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = s.find(',', start);
    std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (keep_empty || !item.empty()) out.push_back(std::move(item));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace quarry::cli
