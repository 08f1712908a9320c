// The quarry command: subcommand registration and shared output helpers.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "quarry/select.hpp"

namespace quarry::cli {

/// Registers every subcommand on `app`. Each subcommand's callback does its work and throws
/// quarry::Error on failure.
void add_commands(CLI::App& app);

/// Writes `content` to `path` atomically (temporary file in the same folder, fsync, rename).
void write_text_atomic(const std::string& path, const std::string& content);

/// The selection as CSV (`rank,index,score`) or JSON.
std::string selection_csv(const Selection& sel);
std::string selection_json(const Selection& sel, const std::string& strategy, const std::string& source);

}  // namespace quarry::cli
