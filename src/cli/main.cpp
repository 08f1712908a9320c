// quarry: score a pool of model outputs and select the batch worth labelling.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

#include "cli.hpp"
#include "quarry/dist.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/version.hpp"

int main(int argc, char** argv) {
  CLI::App app{"quarry: active-learning engine. Scores every sample of a pool by how informative "
               "a label would be and selects the batch for annotators."};
  app.require_subcommand(0, 1);
  app.option_defaults()->always_capture_default();
  bool version = false;
  app.add_flag("--version", version, "Print the version and the build's features");
  quarry::cli::add_commands(app);
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
    const int code = app.exit(e) == 0 ? 0 : 2;  // --help: 0; usage errors: 2
    quarry::abort_pending_job(code);
    return code;
  } catch (const quarry::ClusterError& e) {  // an MPI rank failed: every rank exits 1 (2: a bad argument)
    if (e.echo()) std::fprintf(stderr, "quarry: error: %s\n", e.what());
    return e.exit_code();
  } catch (const quarry::UsageError& e) {  // a bad argument: as CLI11's usage errors
    std::fprintf(stderr, "quarry: error: %s\n", e.what());
    quarry::abort_pending_job(2);
    return 2;
  } catch (const quarry::Error& e) {
    std::fprintf(stderr, "quarry: error: %s\n", e.what());
    quarry::abort_pending_job(1);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quarry: internal error: %s\n", e.what());
    quarry::abort_pending_job(3);
    return 3;
  }
  return 0;
}
