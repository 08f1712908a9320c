// The quarry command: subcommand registration and shared output helpers.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "quarry/select.hpp"

namespace quarry::cli {

/// Registers every subcommand on `app`. Each subcommand's callback does its work and throws
/// quarry::Error on failure.
void add_commands(CLI::App& app);
/// train, infer, simulate (src/cli/loop_commands.cpp).
void add_loop_commands(CLI::App& app);
/// project init, next, label, status, export (src/cli/project_commands.cpp).
void add_project_commands(CLI::App& app);

/// The items of a comma-separated list ("" gives none); `keep_empty`: "a,,b" has an empty item.
std::vector<std::string> split_commas(const std::string& s, bool keep_empty);

/// The selection as CSV (`rank,index,score`) or JSON.
std::string selection_csv(const Selection& sel);
std::string selection_json(const Selection& sel, const std::string& strategy, const std::string& source);

}  // namespace quarry::cli
