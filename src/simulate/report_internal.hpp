// Internal to the simulation report: what its files share. report.cpp (the summary over
// repeats), report_rounds.cpp (rounds.jsonl), report_summary.cpp (curves.csv, summary.json,
// summary.md) and report_svg.cpp (curves.svg); the public calls are in quarry/loop.hpp.
#pragma once
#include <limits>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "quarry/loop.hpp"

namespace quarry::report_detail {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// printf into a std::string.
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
std::string strf(const char* format, ...);

/// The strategy called `name` in the summary; null if none.
const StrategySummary* find_strategy(const SimulationSummary& s, const std::string& name);

/// A finite number as itself, NaN and infinities as null (JSON has neither).
nlohmann::ordered_json number_or_null(double v);

}  // namespace quarry::report_detail
