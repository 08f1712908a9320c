// The quarry command: subcommand registration and shared output helpers.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quarry/select.hpp"

namespace quarry::cli {

/// Registers the engine's subcommands (score, select, info, generate, demo) on `app`. Each
/// subcommand's callback does its work and throws quarry::Error on failure.
void add_commands(CLI::App& app);
/// train, infer, simulate, report (src/cli/loop_commands.cpp; in quarry-loop only).
void add_loop_commands(CLI::App& app);
/// project init, next, label, status, export, repair, serve (src/cli/project_commands.cpp; quarry-loop).
void add_project_commands(CLI::App& app);

/// The loop's commands, which `quarry` hands over to `quarry-loop`, with the one-line help both
/// programs show for them.
struct LoopCommand {
  const char* name;
  const char* help;
};
inline constexpr LoopCommand kLoopCommands[] = {
    {"train", "Train a model on the labeled samples of a dataset's pool"},
    {"infer", "Run a trained model over a dataset's pool: probs.npy, embeddings.npy, committee.npy"},
    {"pretrain", "Learn embeddings of an unlabeled image pool by self-supervised (contrastive) training, "
                 "for the cold start's typiclust and probcover"},
    {"simulate", "Simulate active learning with the dataset's labels as the oracle and measure label "
                 "efficiency against random sampling"},
    {"report", "Rebuild a simulation's summary.md, summary.json, curves.csv and curves.svg from its "
               "rounds.jsonl (also of an interrupted run: repeats that did not finish are left out)"},
    {"project", "A labeling project with people in the loop: init, next, label, status, export, repair, serve"},
};
/// The help line of loop command `name` (one of kLoopCommands).
const char* loop_command_help(const std::string& name);

/// The items of a comma-separated list ("" gives none); `keep_empty`: "a,,b" has an empty item.
std::vector<std::string> split_commas(const std::string& s, bool keep_empty);

/// A file named on the command line: the flag that named it ("--output") and its path or spec.
struct Named {
  std::string flag, path;
};

/// The existing files an input argument reads: a file, the files of a folder, a dataset spec
/// (idx:DIR, npz:FILE, npy:X,Y, pool:X), FILE.npz:member, or shards ('pool-*.npy', a,b,c).
std::vector<std::string> input_files(const std::string& spec);

/// Before any work: each output must not be a folder, a labeling project's own file, the same
/// file as any input (by identity: links and hard links followed) or as another output. A clash
/// is a quarry::UsageError (exit 2) naming both.
void check_outputs(const std::vector<Named>& outputs, const std::vector<Named>& inputs);

/// For an output written after minutes of work (training): the folder where writing it lands
/// (links followed, to files not made yet too) exists and can be written, else a
/// quarry::UsageError (exit 2) naming the flag. Devices and pipes are written in place: no check.
void expect_output_folder(const Named& output);

/// Checks every numeric option of every subcommand: a whole decimal number for integers (no
/// 0x10, no 1e3), a finite decimal for reals (no nan, inf), --threads at most max_threads().
void add_number_checks(CLI::App& app);
/// The most CPU threads --threads takes: 8 per core, at least 64.
int max_threads();

/// An output folder argument (`flag` names it in errors): missing (it is made, with the folders
/// above it) or a folder. A file, a path under a file and a link on the way that leads nowhere
/// are quarry::UsageErrors (exit 2).
void expect_folder_arg(const std::string& flag, const std::string& dir);

/// Makes an output folder (and those above it). When the command then fails and the folder it
/// made is still empty, the destructor removes it: a failed command leaves no empty folder.
class MadeFolder {
 public:
  MadeFolder(const std::string& flag, const std::string& dir);
  ~MadeFolder();
  MadeFolder(const MadeFolder&) = delete;
  MadeFolder& operator=(const MadeFolder&) = delete;

 private:
  std::string dir_;
  bool made_ = false;
  int exceptions_ = 0;
};

/// Bounds of numeric options with human messages ("must be >= 0, got -3"), in place of
/// CLI::NonNegativeNumber and CLI::PositiveNumber, whose messages print DBL_MAX in 309 digits.
CLI::Validator non_negative();
CLI::Validator positive();

/// The selection as CSV (`rank,index,score`) or JSON.
std::string selection_csv(const Selection& sel);
/// A CSV field: as is, or quoted ("a,b" -> "\"a,b\"", quotes doubled) where it holds a comma,
/// a quote or a line break.
std::string csv_field(const std::string& s);
bool ends_with(const std::string& s, const std::string& tail);
/// JSON text of `j`, indented by 2; bytes that are not UTF-8 (a file name) become U+FFFD.
std::string json_text(const nlohmann::json& j);
std::string selection_json(const Selection& sel, const std::string& strategy, const std::string& source);

}  // namespace quarry::cli
