#include "launcher/cli.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>

#include "launcher/commands.h"
#include "launcher/run.h"
#include "launcher/system.h"

namespace tunnels::launcher {

std::vector<std::string> CanonicalArguments(std::vector<std::string> args) {
  static const std::vector<std::string> kCommands = {"check", "explain", "system", "run",
                                                     "cleanup"};
  static const std::vector<std::string> kAlone = {"--help", "-h", "--version"};
  if (args.empty() || std::find(kAlone.begin(), kAlone.end(), args[0]) != kAlone.end()) {
    return args;
  }
  // The first word that is not an option, up to `--`.
  auto word = std::find_if(args.begin(), args.end(), [](const std::string& a) {
    return a == "--" || a.empty() || a[0] != '-';
  });
  if (word != args.end() &&
      std::find(kCommands.begin(), kCommands.end(), *word) != kCommands.end()) {
    std::rotate(args.begin(), word, word + 1);  // the command first, its options after it
  } else {
    // The original took configuration paths with no command.
    args.insert(args.begin(), "system");
  }
  return args;
}

int Main(int argc, char** argv) {
  CLI::App app{
      "tunnels: transparent proxying rules per domain name.\n"
      "Names that match a rule get a fake address; connections to it go through the rule's "
      "proxy, with the name resolved on the proxy's side.",
      "tunnels"};
  app.set_version_flag("--version", std::string("tunnels ") + TUNNELS_VERSION);
  app.require_subcommand(1);
  app.footer("See tunnels(1) and tunnels.conf(5).");

  std::vector<std::string> check_paths;
  CLI::App* check = app.add_subcommand(
      "check", "Validate configuration files and directories and print a summary");
  check->add_option("CONF", check_paths, "Configuration files or directories")->required();

  std::vector<std::string> explain_paths;
  std::string explain_to;
  bool explain_json = false;
  CLI::App* explain =
      app.add_subcommand("explain", "Show what tunnels does with a name, port and protocol");
  explain
      ->add_option("--to", explain_to,
                   "NAME[:PORT][/tcp|/udp]; the port defaults to 443 and the protocol to tcp")
      ->required();
  explain->add_flag("--json", explain_json, "Print one JSON object");
  explain->add_option("CONF", explain_paths, "Configuration files or directories")->required();

  std::vector<std::string> system_paths;
  int verbose = 0;
  int quiet = 0;
  CLI::App* system = app.add_subcommand(
      "system", "Run the DNS server for this machine's own network namespace, in the foreground");
  system->add_option("CONF", system_paths, "Configuration files or directories")->required();
  system->add_flag("-v,--verbose", verbose, "Log more (twice: every query)");
  system->add_flag("-q,--quiet", quiet, "Log errors only");

  RunOptions run_options;
  int run_verbose = 0;
  CLI::App* run = app.add_subcommand(
      "run", "Run one program in a sandbox of its own where the rules apply: tunnels run -- CMD");
  run->add_option("-c,--config", run_options.config_paths,
                  "Configuration file or directory (repeatable); default: /etc/tunnels and "
                  "~/.config/tunnels");
  run->add_flag("--strict", run_options.strict,
                "No route out but through the rules' proxies; names without a rule fail");
  run->add_option("--user", run_options.user,
                  "Run the program as this user (default: the user who ran sudo)");
  run->add_flag("-v,--verbose", run_verbose, "Log what tunnels does (twice: every connection)");
  std::vector<std::string> run_positional;
  run->add_option("COMMAND", run_positional, "The program and its arguments, after --");

  std::string cleanup_state = "/run/tunnels";
  std::vector<std::string> cleanup_paths;
  CLI::App* cleanup = app.add_subcommand(
      "cleanup",
      "Undo what killed instances of tunnels system and tunnels run left behind (resolv.conf, "
      "routes, nftables tables, kernel parameters)");
  CLI::Option* cleanup_state_option = cleanup->add_option(
      "--state-dir", cleanup_state,
      "Where the state is (default /run/tunnels; for tunnels system, the configuration's "
      "stateDirectory)");
  cleanup->add_option("CONF", cleanup_paths,
                      "The configuration tunnels system ran with, for its stateDirectory");
  bool cleanup_forget = false;
  cleanup->add_flag("--forget", cleanup_forget,
                    "Drop the tunnels system journal even if some of it cannot be undone, after "
                    "listing what it held");
  // Internal: what the guardian of a tunnels run becomes (see run.cc). Not
  // the system part: a tunnels system with another stateDirectory may be
  // running.
  bool cleanup_run_only = false;
  cleanup->add_flag("--run-only", cleanup_run_only)->group("");
  // Internal: what the guardian of a tunnels system becomes (see system.cc).
  bool cleanup_system_only = false;
  cleanup->add_flag("--system-only", cleanup_system_only)->group("");

  std::vector<std::string> args = CanonicalArguments({argv + 1, argv + argc});
  // Everything after `--` is the program's, untouched: CLI11 would still
  // read some of it as options.
  if (!args.empty() && args[0] == "run") {
    const auto dashes = std::find(args.begin(), args.end(), "--");
    if (dashes != args.end()) {
      run_options.command.assign(dashes + 1, args.end());
      args.erase(dashes, args.end());
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments in reverse order
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints help and errors itself; usage errors exit with 2 as
    // other command-line tools do.
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (*check) return Check(check_paths, std::cout, std::cerr);
  if (*run) {
    if (run_options.command.empty()) run_options.command = run_positional;
    run_options.level = run_verbose >= 2   ? config::LogLevel::kDebug
                        : run_verbose == 1 ? config::LogLevel::kInfo
                                           : config::LogLevel::kWarning;
    return Run(run_options);
  }
  if (*cleanup) {
    if (cleanup_run_only) return Cleanup(cleanup_state);
    if (cleanup_system_only) return CleanupSystem(cleanup_state, "", "", false, true);
    std::string system_state = cleanup_state;
    config::Options defaults;
    std::string resolv_conf = defaults.resolvconf_path;
    std::string backup = defaults.resolvconf_backup_path;
    int status = 0;
    if (!cleanup_paths.empty()) {
      const config::LoadResult loaded = config::Load(cleanup_paths);
      if (loaded.ok()) {
        if (cleanup_state_option->count() == 0)
          system_state = loaded.config->options.state_directory;
        resolv_conf = loaded.config->options.resolvconf_path;
        backup = loaded.config->options.resolvconf_backup_path;
      } else {
        // A broken configuration must not keep the system broken: the
        // default place is still cleaned up.
        for (const auto& d : loaded.diagnostics) std::cerr << d.ToString() << "\n";
        std::cerr << "tunnels cleanup: cannot read stateDirectory from the configuration; "
                     "cleaning up "
                  << system_state << "\n";
        status = 1;
      }
    }
    if (CleanupSystem(system_state, resolv_conf, backup, cleanup_forget) != 0) status = 1;
    if (Cleanup(cleanup_state) != 0) status = 1;
    return status;
  }
  if (*system) {
    SystemOptions options;
    options.paths = system_paths;
    options.level = quiet > 0     ? config::LogLevel::kError
                    : verbose > 0 ? config::LogLevel::kDebug
                                  : config::LogLevel::kInfo;
    return RunSystem(options);
  }
  if (*explain) {
    std::string error;
    const auto target = ParseExplainTarget(explain_to, &error);
    if (!target) {
      std::cerr << "tunnels explain: --to " << explain_to << ": " << error << "\n";
      return 2;
    }
    return Explain(*target, explain_json, explain_paths, std::cout, std::cerr);
  }
  return 2;
}

}  // namespace tunnels::launcher
