// quarry: score a pool of model outputs and select the batch worth labelling.
//
// One source, two programs. `quarry` (QUARRY_CLI_LOOP=0) links the engine only, so it starts in
// milliseconds; the loop's commands (train, infer, simulate, report, project), which need
// LibTorch, it hands over to `quarry-loop`, the program beside it, by exec with the same
// arguments. `quarry-loop` (QUARRY_CLI_LOOP=1) links the loop and runs every command.
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <string>
#include <string_view>
#include <cstdio>
#include <cstring>
#include <exception>

#include "cli.hpp"
#include "quarry/dist.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/version.hpp"
#include "io/files.hpp"

namespace {

// The message with every run of more than 240 non-blank characters (a huge argument, a field
// quoted whole) cut to its start and its length.
std::string shorten(const std::string& message) {
  std::string out;
  std::size_t i = 0;
  while (i < message.size()) {
    std::size_t j = i;
    while (j < message.size() && !std::isspace(static_cast<unsigned char>(message[j]))) ++j;
    const std::string_view word(message.data() + i, j - i);
    out += word.size() > 240 ? quarry::quote_input(word, 80) : std::string(word);
    i = j;
    while (i < message.size() && std::isspace(static_cast<unsigned char>(message[i]))) out += message[i++];
  }
  return out;
}

// Prints the error and returns its exit code. A file that shrank while it was read explains any
// other error it caused (a row that no longer sums to 1): that is what is reported.
int fail(const std::string& message, int code) {
  std::string text = message;
  try {
    quarry::check_mapped_inputs(true);
  } catch (const quarry::Error& shrunk) {
    text = shrunk.what();
    code = 1;
  }
  std::fprintf(stderr, "quarry: error: %s\n", shorten(text).c_str());
  quarry::abort_pending_job(code);
  return code;
}

#if !QUARRY_CLI_LOOP
// The command a command line names: its first argument that is not an option (the program's
// own options, --help and --version, take no value).
const char* command_of(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (argv[i][0] != '-') return argv[i];
  return nullptr;
}

bool is_loop_command(const char* name) {
  for (const quarry::cli::LoopCommand& c : quarry::cli::kLoopCommands)
    if (std::strcmp(name, c.name) == 0) return true;
  return false;
}

// Replaces this process with quarry-loop, the program beside this one (found through
// /proc/self/exe, or an absolute or relative argv[0] with a folder; never through the current
// folder), with the same arguments; returns only when that fails. QUARRY_HANDED_OVER marks the
// hand-over: a quarry-loop that is really another quarry (a copy or a link) would hand over
// again, forever; it stops at the second hand-over instead.
int hand_over(const char* command, char** argv) {
  auto fail = [command](const std::string& where, const char* why) {
    std::fprintf(stderr,
                 "quarry: error: '%s' is run by quarry-loop (the active-learning loop, with LibTorch), "
                 "which should be at %s: %s\n",
                 command, where.c_str(), why);
    return 1;
  };
  if (std::getenv("QUARRY_HANDED_OVER"))
    return fail("the program quarry handed over to", "it is not quarry-loop but quarry again (a copy or a link?)");
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) {
    self = argv[0];
    if (self.native().find('/') == std::string::npos)
      return fail("the folder of this program", "it cannot be found without /proc (run quarry by its path)");
  }
  const std::filesystem::path loop = self.parent_path() / "quarry-loop";
  ::setenv("QUARRY_HANDED_OVER", "1", 1);
  ::execv(loop.c_str(), argv);
  return fail(loop.string(), std::strerror(errno));
}
#endif

}  // namespace

int main(int argc, char** argv) {
#if !QUARRY_CLI_LOOP
  if (const char* command = command_of(argc, argv); command && is_loop_command(command))
    return hand_over(command, argv);
#else
  ::unsetenv("QUARRY_HANDED_OVER");  // arrived: a quarry this process runs may hand over again
#endif
  CLI::App app{"quarry: active-learning engine. Scores every sample of a pool by how informative "
               "a label would be and selects the batch for annotators."};
  app.require_subcommand(0, 1);
  app.option_defaults()->always_capture_default();
  bool version = false;
  app.add_flag("--version", version, "Print the version and the build's features");
  quarry::cli::add_commands(app);
#if QUARRY_CLI_LOOP
  quarry::cli::add_loop_commands(app);
  quarry::cli::add_project_commands(app);
#else
  // Listed in --help; run by quarry-loop (hand_over above).
  for (const quarry::cli::LoopCommand& c : quarry::cli::kLoopCommands) app.add_subcommand(c.name, c.help);
#endif
  quarry::cli::add_number_checks(app);
  // One command per process: no file it read may be replaced by one of its outputs.
  quarry::refuse_input_overwrites(true);
  try {
    app.parse(argc, argv);
    if (version) {
      std::fputs(quarry::build_info_string().c_str(), stdout);
    } else if (app.get_subcommands().empty()) {
      std::fputs(app.help().c_str(), stdout);
      return 2;
    }
    // An input that shrank while it was read: what was computed from it is not to be trusted.
    quarry::check_mapped_inputs(true);
    // What went to standard output must have been written (a full disk, a closed pipe).
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
      std::fprintf(stderr, "quarry: error: cannot write standard output: %s\n", std::strerror(errno));
      return 1;
    }
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    // CLI11's message, with any very long argument it quotes cut short.
    std::fprintf(stderr, "%s\nRun with --help for more information.\n", shorten(e.what()).c_str());
    quarry::abort_pending_job(2);
    return 2;
  } catch (const quarry::ClusterError& e) {  // an MPI rank failed: every rank exits 1 (2: a bad argument)
    if (e.echo()) std::fprintf(stderr, "quarry: error: %s\n", shorten(e.what()).c_str());
    return e.exit_code();
  } catch (const quarry::UsageError& e) {  // a bad argument: as CLI11's usage errors
    return fail(e.what(), 2);
  } catch (const quarry::Error& e) {
    return fail(e.what(), 1);
  } catch (const std::filesystem::filesystem_error& e) {  // a path the system refuses (too long, a loop)
    return fail(e.what(), 1);
  } catch (const std::bad_alloc&) {
    return fail("out of memory", 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quarry: internal error: %s\n", shorten(e.what()).c_str());
    quarry::abort_pending_job(3);
    return 3;
  }
  return 0;
}
