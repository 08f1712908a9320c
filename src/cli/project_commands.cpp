// quarry project init | next | label | status | export | repair | serve: the human-in-the-loop labeling
// project.
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/project.hpp"
#include "serve/server.hpp"
#include "simulate/strategy.hpp"

namespace quarry::cli {
namespace {

void warn_torn(const Project& p) {
  if (!p.torn().empty()) std::fprintf(stderr, "quarry: warning: %s\n", p.torn().c_str());
}

void add_init(CLI::App* project) {
  auto* cmd = project->add_subcommand("init", "Create a labeling project in a new or empty folder");
  struct Args {
    std::string dir, classes, manifest;
    ProjectConfig config;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("DIR", a->dir, "Project folder (created)")->required();
  cmd->add_option("--dataset", a->config.dataset,
                  "The pool: pool:X.npy (unlabeled features or images), idx:DIR, npz:FILE, npy:X.npy,y.npy, synthetic[:N] (their labels are never used as "
                  "labels; its validation split, where it has one, measures the model)")
      ->required();
  cmd->add_option("--model", a->config.model, "cnn, mlp or torchscript:FILE (default: cnn for images, mlp for features)");
  cmd->add_option("--strategy", a->config.strategy,
                  "random, an acquisition (entropy, margin, bald, ...), a diversity strategy (badge, kcenter, ...), "
                  "batchbald, or balanced:NAME (NAME per predicted class, toward --balance-target)");
  cmd->add_option("--balance-target", a->config.balance_target,
                  "balanced:NAME: the target class distribution, one weight per class, e.g. 0.5,0.5 (default uniform)");
  cmd->add_option("--seed-strategy", a->config.seed_strategy,
                  "The batches before there is a model (the cold start): random, or typiclust / probcover over the "
                  "pool's inputs or --seed-embeddings")
      ->check(CLI::IsMember({"random", "typiclust", "probcover"}));
  cmd->add_option("--seed-embeddings", a->config.seed_embeddings,
                  "The cold start's embeddings, also auto's while labels are few: .npy [pool, D], one row per "
                  "item (e.g. from quarry pretrain; default: the pool's inputs)");
  cmd->add_option("--committee", a->config.committee, "Committee of committee strategies: mc:M or ensemble:M");
  auto* restart = cmd->add_option("--batchbald-restart", a->config.batchbald_restart,
                                  "batchbald: a new joint batch starts when the best gain falls below this share of "
                                  "the best a fresh one could gain (0: one joint batch, the paper's)")
                      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--classes", a->classes, "Class names, comma separated (default: the dataset's class ids 0..C-1)");
  cmd->add_option("--manifest", a->manifest,
                  "CSV index,id,path_or_url: what annotators see for each pool item (default: the index)");
  cmd->add_option("--seed", a->config.seed, "Seed of training and of random batches");
  cmd->add_option("--device", a->config.device, "auto, cpu or cuda[:N]: where training and scoring run");
  cmd->add_option("--threads", a->config.threads, "CPU threads (0: all)")->check(non_negative());
  cmd->callback([a, restart] {
    QUARRY_USAGE_EXPECTS(restart->count() == 0 || loop::parse_strategy(a->config.strategy, "--strategy").kind ==
                                                      loop::Strategy::Kind::batchbald,
                         "--batchbald-restart is for --strategy batchbald (or balanced:batchbald), not ",
                         a->config.strategy);
    expect_folder_arg("the project folder", a->dir);
    a->config.classes = split_commas(a->classes, true);  // "a,,b": init names the empty class
    Project::init(a->dir, a->config, a->manifest);
    const Project p(a->dir);
    std::printf("project %s: %lld items, classes %s, strategy %s, model %s\n", a->dir.c_str(),
                static_cast<long long>(p.config().pool_size), fmt::format("{}", fmt::join(p.config().classes, ",")).c_str(),
                p.config().strategy.c_str(), p.config().model.c_str());
    std::printf("next: quarry project next %s -k 100\n", a->dir.c_str());
  });
}

void add_next(CLI::App* project) {
  auto* cmd = project->add_subcommand(
      "next", "Retrain on the labels if they changed, score the pool and write the next batch for annotators");
  struct Args {
    std::string dir;
    NextOptions o;
    double wait = 10;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("DIR", a->dir, "Project folder")->required();
  cmd->add_option("-k,--k", a->o.k, "Batch size")->check(positive());
  cmd->add_flag("--replace-pending", a->o.replace_pending,
                "Drop the open batches: their items without a label may be proposed again");
  cmd->add_flag("--retrain", a->o.retrain,
                "Train a new model even if the labels are unchanged; accept a pool whose files changed since init "
                "(same number of items, in the same order)");
  cmd->add_option("--wait", a->wait, "Seconds to wait for another command writing to the project")
      ->check(non_negative());
  cmd->callback([a] {
    Project p(a->dir, 0);
    warn_torn(p);
    const NextResult r = p.next(a->o, [](const std::string& s) { std::fprintf(stderr, "quarry: %s\n", s.c_str()); },
                                a->wait);
    if (r.dropped > 0)
      std::printf("dropped the open batch: %lld items without a label may be proposed again\n",
                  static_cast<long long>(r.dropped));
    std::printf("batch %04d: %zu items (%s)\n  %s\n  %s\n", r.batch.number, r.batch.index.size(),
                r.batch.strategy.c_str(), r.csv_path.c_str(), r.labelstudio_path.c_str());
  });
}

void add_label(CLI::App* project) {
  auto* cmd = project->add_subcommand(
      "label", "Import labels: CSV (index,label or id,label) or a Label Studio JSON export; all rows or none");
  struct Args {
    std::string dir, file;
    bool allow_relabel = false;
    double wait = 10;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("DIR", a->dir, "Project folder")->required();
  cmd->add_option("FILE", a->file, "Labels: CSV or Label Studio JSON export")->required();
  cmd->add_flag("--allow-relabel", a->allow_relabel, "Let a label change an earlier one");
  cmd->add_option("--wait", a->wait, "Seconds to wait for another command writing to the project")
      ->check(non_negative());
  cmd->callback([a] {
    Project p(a->dir, 0);
    const ImportSummary s = p.label(a->file, a->allow_relabel, a->wait);
    if (!s.torn.empty()) std::fprintf(stderr, "quarry: warning: %s\n", s.torn.c_str());
    std::printf("%s: %lld rows: %lld new, %lld relabeled, %lld unchanged, %lld tasks without annotation",
                a->file.c_str(), static_cast<long long>(s.rows), static_cast<long long>(s.added),
                static_cast<long long>(s.relabeled), static_cast<long long>(s.unchanged),
                static_cast<long long>(s.skipped));
    if (s.seq > 0)
      std::printf("; saved (journal record %lld, %zu labels in all)\n", static_cast<long long>(s.seq), p.labels().size());
    else
      std::printf("; nothing to save\n");
  });
}

void add_status(CLI::App* project) {
  auto* cmd = project->add_subcommand("status", "Labels, class balance, batches and the model's validation metrics");
  auto dir = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("text");
  auto stop_spec = std::make_shared<std::string>("kappa:0.99:3");
  cmd->add_option("DIR", *dir, "Project folder")->required();
  cmd->add_option("--format", *format, "text or json")->check(CLI::IsMember({"text", "json"}));
  cmd->add_option("--stop", *stop_spec,
                  "Stopping rule: kappa:THRESHOLD:WINDOW, the mean Cohen's kappa of the last WINDOW consecutive "
                  "models' predictions on the project's stop set reaching THRESHOLD")
      ->capture_default_str();
  cmd->callback([dir, format, stop_spec] {
    const StopRule rule = parse_stop_rule(*stop_spec);
    const Project p(*dir);
    warn_torn(p);
    const ProjectStatus s = p.status();
    const std::optional<std::size_t> stopped = project_stop_round(s.rounds, rule);
    const auto& classes = p.config().classes;
    if (*format == "json") {
      nlohmann::json j;
      j["pool_size"] = s.pool_size;
      j["labeled"] = s.labeled;
      nlohmann::json pc = nlohmann::json::object();
      for (std::size_t c = 0; c < classes.size(); ++c) pc[classes[c]] = s.per_class[c];
      j["per_class"] = pc;
      j["batches"] = s.batches;
      j["models_trained"] = s.models_trained;
      j["open_batch"] = s.open_batch ? nlohmann::json(*s.open_batch) : nlohmann::json(nullptr);
      j["pending"] = s.pending;
      j["model_current"] = s.model_current;
      j["model_labels"] = s.model_labels;
      j["val_accuracy"] = s.val_accuracy ? nlohmann::json(*s.val_accuracy) : nlohmann::json(nullptr);
      j["val_balanced_accuracy"] =
          s.val_balanced_accuracy ? nlohmann::json(*s.val_balanced_accuracy) : nlohmann::json(nullptr);
      j["torn_journal_tail"] = s.torn;
      j["rounds"] = nlohmann::json::array();
      for (const auto& r : s.rounds)
        j["rounds"].push_back(
            {{"labels", r.labels},
             {"time", r.time},
             {"val_accuracy", r.val_accuracy ? nlohmann::json(*r.val_accuracy) : nlohmann::json(nullptr)},
             {"val_balanced_accuracy",
              r.val_balanced_accuracy ? nlohmann::json(*r.val_balanced_accuracy) : nlohmann::json(nullptr)},
             {"stop_kappa", r.stop_kappa ? nlohmann::json(*r.stop_kappa) : nlohmann::json(nullptr)}});
      j["stop"] = {{"rule", rule.describe()},
                   {"fired", stopped.has_value()},
                   {"model", stopped ? nlohmann::json(*stopped + 1) : nlohmann::json(nullptr)},
                   {"labels", stopped ? nlohmann::json(s.rounds[*stopped].labels) : nlohmann::json(nullptr)}};
      std::printf("%s\n", j.dump(1).c_str());
      return;
    }
    std::printf("project %s: %s, strategy %s, model %s\n", dir->c_str(), p.config().dataset.c_str(),
                p.config().strategy.c_str(), p.config().model.c_str());
    std::printf("labels:  %lld of %lld items (%.2f%%)\n", static_cast<long long>(s.labeled),
                static_cast<long long>(s.pool_size), s.pool_size ? 100.0 * s.labeled / s.pool_size : 0.0);
    for (std::size_t c = 0; c < classes.size(); ++c)
      std::printf("  %-20s %8lld (%.1f%%)\n", classes[c].c_str(), static_cast<long long>(s.per_class[c]),
                  s.labeled ? 100.0 * s.per_class[c] / s.labeled : 0.0);
    std::printf("batches: %d", s.batches);
    if (s.open_batch)
      std::printf(" (batch %04d open: %lld items await labels)", *s.open_batch, static_cast<long long>(s.pending));
    std::printf("\nmodels:  %d trained", s.models_trained);
    if (s.models_trained > 0)
      std::printf("; the last on %lld labels (%s)", static_cast<long long>(s.model_labels),
                  s.model_current ? "current" : "the labels changed since: `next` retrains");
    std::printf("\n");
    if (s.val_accuracy)
      std::printf("validation: accuracy %.1f%%, balanced accuracy %.1f%%\n", 100 * *s.val_accuracy,
                  100 * *s.val_balanced_accuracy);
    std::string curve;
    for (const auto& r : s.rounds)
      if (r.val_balanced_accuracy)
        curve += fmt::format("{}{}: {:.1f}%", curve.empty() ? "" : ", ", r.labels, 100 * *r.val_balanced_accuracy);
    if (!curve.empty()) std::printf("balanced accuracy by labels: %s\n", curve.c_str());
    std::string kappas;
    for (const auto& r : s.rounds)
      if (r.stop_kappa) kappas += fmt::format("{}{}: {:.3f}", kappas.empty() ? "" : ", ", r.labels, *r.stop_kappa);
    if (stopped)
      std::printf("stopping rule %s: labels have stopped paying since model %zu (%lld labels): consecutive models "
                  "agree on the stop set (kappa by labels: %s)\n",
                  rule.describe().c_str(), *stopped + 1, static_cast<long long>(s.rounds[*stopped].labels),
                  kappas.c_str());
    else if (!kappas.empty())
      std::printf("stopping rule %s: not fired; labels still change the model (kappa by labels: %s)\n",
                  rule.describe().c_str(), kappas.c_str());
  });
}

void add_export(CLI::App* project) {
  auto* cmd = project->add_subcommand("export", "Write the labels: CSV index,label sorted by index, or NPY [L, 2] int64");
  struct Args {
    std::string dir, format = "csv", output;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("DIR", a->dir, "Project folder")->required();
  cmd->add_option("--format", a->format, "csv or npy")->check(CLI::IsMember({"csv", "npy"}));
  cmd->add_option("-o,--output", a->output, "Output file (csv: standard output without it; npy: required)");
  cmd->callback([a] {
    QUARRY_USAGE_EXPECTS(a->format != "npy" || !a->output.empty(), "export --format npy needs --output FILE");
    check_outputs({{"--output", a->output}}, {});
    const Project p(a->dir, 5, true);  // the labels come from the journal; state.json is not needed
    warn_torn(p);
    if (a->format == "npy") {
      p.export_npy(a->output);
    } else if (a->output.empty()) {
      const std::string text = p.export_csv();
      std::fwrite(text.data(), 1, text.size(), stdout);
    } else {
      write_file_atomic(a->output, {p.export_csv()});
    }
    if (!a->output.empty())
      std::fprintf(stderr, "quarry: %zu labels written to %s\n", p.labels().size(), a->output.c_str());
  });
}

void add_repair(CLI::App* project) {
  auto* cmd = project->add_subcommand(
      "repair", "Rebuild state.json from the label journal and the batch files (after a lost or damaged state.json, "
                "or to accept a journal restored from a backup); the labels are never changed");
  struct Args {
    std::string dir;
    double wait = 10;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("DIR", a->dir, "Project folder")->required();
  cmd->add_option("--wait", a->wait, "Seconds to wait for another command writing to the project")
      ->check(non_negative());
  cmd->callback([a] {
    const RepairReport r = Project::repair(a->dir, a->wait);
    for (const std::string& line : r.actions) std::printf("%s\n", line.c_str());
  });
}

void add_serve(CLI::App* project) {
  auto* cmd = project->add_subcommand(
      "serve", "Serve the project's labeling page on this machine: label the open batch in a browser, "
               "with the keyboard, and start the next round from there");
  auto o = std::make_shared<serve::ServeOptions>();
  cmd->add_option("DIR", o->dir, "Project folder")->required();
  cmd->add_option("--host", o->host,
                  "Address to listen on (default 127.0.0.1, this machine only; another address lets anyone who "
                  "reaches it and has the token label, over plain HTTP)");
  cmd->add_option("--port", o->port, "Port (0: any free one)")->check(CLI::Range(0, 65535));
  cmd->add_option("--token", o->token, "Access token (default: DIR/serve.token, made at random on the first start; printed in the page's address)");
  cmd->add_option("-k,--k", o->k, "Batch size of \"next batch\" (default: the last batch's, else 100)")->check(positive());
  cmd->add_option("--wait", o->lock_wait, "Seconds a label waits for another command writing to the project")
      ->check(non_negative());
  cmd->callback([o] {
    const int rc = serve::run(*o);
    if (rc != 0) throw Error("the labeling server stopped with an error");
  });
}

}  // namespace

void add_project_commands(CLI::App& app) {
  auto* project = app.add_subcommand("project", loop_command_help("project"));
  project->require_subcommand(1);
  add_init(project);
  add_next(project);
  add_label(project);
  add_status(project);
  add_export(project);
  add_repair(project);
  add_serve(project);
}

}  // namespace quarry::cli
