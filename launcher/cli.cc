#include "launcher/cli.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <set>

#include "launcher/commands.h"
#include "launcher/privilege.h"
#include "launcher/run.h"
#include "launcher/system.h"

namespace tunnels::launcher {

namespace {

constexpr const char* kRunUsage = "usage: tunnels run [OPTIONS] -- CMD [ARGS...]";

// For a `tunnels run` whose program is not after `--`: without it, the
// program's own options would be read as tunnels' (or refused as unknown).
void RunUsageError(std::ostream& err) {
  err << "tunnels run: the program and its arguments go after --; " << kRunUsage << "\n"
      << "hint: put -- before the program's name, as in tunnels run -c rules.yml -- curl -v "
         "https://example.com\n";
}

}  // namespace

std::vector<std::string> CanonicalArguments(std::vector<std::string> args,
                                            const std::set<std::string>& takes_value) {
  static const std::vector<std::string> kCommands = {"check", "explain", "system", "run",
                                                     "cleanup"};
  static const std::vector<std::string> kAlone = {"--help", "-h", "--version"};
  if (args.empty() || std::find(kAlone.begin(), kAlone.end(), args[0]) != kAlone.end()) {
    return args;
  }
  // The first word that is neither an option nor an option's value, up to `--`.
  auto word = args.begin();
  while (word != args.end() && *word != "--" && !word->empty() && (*word)[0] == '-') {
    if (takes_value.contains(*word) && word + 1 != args.end()) ++word;  // its value
    ++word;
  }
  if (word != args.end() &&
      std::find(kCommands.begin(), kCommands.end(), *word) != kCommands.end()) {
    std::rotate(args.begin(), word, word + 1);  // the command first, its options after it
  } else {
    // The original took configuration paths with no command.
    args.insert(args.begin(), "system");
  }
  return args;
}

config::LogLevel CommandLine::Level() const {
  if (quiet > 0) return config::LogLevel::kError;
  return verbose > 0 ? config::LogLevel::kDebug : config::LogLevel::kInfo;
}

int ParseCommandLine(std::vector<std::string> args, CommandLine* line, std::ostream& out,
                     std::ostream& err) {
  CLI::App app{
      "tunnels: transparent proxying rules per domain name.\n"
      "Names that match a rule get a fake address; connections to it go through the rule's "
      "proxy, with the name resolved on the proxy's side.",
      "tunnels"};
  app.set_version_flag("--version", std::string("tunnels ") + TUNNELS_VERSION);
  app.require_subcommand(1);
  app.footer("See tunnels(1) and tunnels.conf(5).");

  CLI::App* check = app.add_subcommand(
      "check", "Validate configuration files and directories and print a summary");
  check->add_option("CONF", line->paths,
                    "Configuration files or directories; default: what run reads without -c");

  CLI::App* explain =
      app.add_subcommand("explain", "Show what tunnels does with a name, port and protocol");
  explain
      ->add_option("--to", line->explain_to,
                   "NAME[:PORT][/tcp|/udp]; the port defaults to 443 and the protocol to tcp")
      ->required();
  explain->add_flag("--json", line->explain_json, "Print one JSON object");
  explain->add_option("CONF", line->paths, "Configuration files or directories")->required();

  CLI::App* system = app.add_subcommand(
      "system", "Run the DNS server for this machine's own network namespace, in the foreground");
  system->add_option("CONF", line->paths, "Configuration files or directories")->required();

  RunOptions& run_options = line->run;
  CLI::App* run = app.add_subcommand(
      "run", "Run one program in a sandbox of its own where the rules apply: tunnels run -- CMD");
  // One path per -c: with more, `-c X curl` would take curl for a file.
  run->add_option("-c,--config", run_options.config_paths,
                  "Configuration file or directory (repeatable); default: /etc/tunnels and "
                  "~/.config/tunnels")
      ->allow_extra_args(false);
  run->add_flag("--strict", run_options.strict,
                "No route out but through the rules' proxies; names without a rule get the "
                "blackhole address");
  run->add_option("--user", run_options.user,
                  "Run the program as this user (default: the user who ran sudo)");
  std::vector<std::string> run_positional;
  run->add_option("COMMAND", run_positional, "The program and its arguments, after --");

  CLI::App* cleanup = app.add_subcommand(
      "cleanup",
      "Undo what killed instances of tunnels system and tunnels run left behind (resolv.conf, "
      "routes, nftables tables, kernel parameters)");
  CLI::Option* cleanup_state_option = cleanup->add_option(
      "--state-dir", line->cleanup_state,
      "Where the state is (default /run/tunnels; for tunnels system, the configuration's "
      "stateDirectory)");
  cleanup->add_option("CONF", line->paths,
                      "The configuration tunnels system ran with, for its stateDirectory");
  cleanup->add_flag("--forget", line->cleanup_forget,
                    "Drop the tunnels system journal even if some of it cannot be undone, after "
                    "listing what it held");
  // Internal: what the guardian of a tunnels run becomes (see run.cc). Not
  // the system part: a tunnels system with another stateDirectory may be
  // running.
  cleanup->add_flag("--run-only", line->cleanup_run_only)->group("");
  // Internal: what the guardian of a tunnels system becomes (see system.cc).
  cleanup->add_flag("--system-only", line->cleanup_system_only)->group("");

  // Every command takes -v and -q, so that they may come first whatever
  // the command; they change what system and run log.
  for (CLI::App* command : {check, explain, system, run, cleanup}) {
    command->add_flag("-v,--verbose", line->verbose,
                      "system and run: log more (every query, fake address and connection "
                      "attempt)");
    command->add_flag("-q,--quiet", line->quiet, "system and run: log errors only");
  }
  std::set<std::string> takes_value;
  for (const CLI::App* command : app.get_subcommands({})) {
    for (const CLI::Option* option : command->get_options()) {
      if (option->get_positional() || option->get_items_expected_max() == 0) continue;
      for (const std::string& name : option->get_snames()) takes_value.insert("-" + name);
      for (const std::string& name : option->get_lnames()) takes_value.insert("--" + name);
    }
  }
  const std::size_t given = args.size();
  args = CanonicalArguments(std::move(args), takes_value);
  // Under sudo the command must be named: sudo matches a rule's arguments
  // as one string, so `tunnels run *` also allows `tunnels 'run x'`, which
  // the original's form without a command would take for `tunnels system
  // 'run x'`, as root.
  if (args.size() > given && UnderSudo(FindInvoker())) {
    err << "tunnels: under sudo, name the command (tunnels system CONF...): '" << args[1]
        << "' is none of check, explain, system, run, cleanup\n";
    return 2;
  }
  // Everything after `--` is the program's, untouched: CLI11 would still
  // read some of it as options.
  bool dashes_given = false;
  if (!args.empty() && args[0] == "run") {
    const auto dashes = std::find(args.begin(), args.end(), "--");
    if (dashes != args.end()) {
      dashes_given = true;
      run_options.command.assign(dashes + 1, args.end());
      args.erase(dashes, args.end());
    }
  }
  const bool is_run = !args.empty() && args[0] == "run";
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments in reverse order
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints help and errors itself; usage errors exit with 2 as
    // other command-line tools do.
    const int status = app.exit(e, out, err);
    if (status == 0) return 0;
    if (is_run && !dashes_given) RunUsageError(err);
    return 2;
  }
  if (*run && !run_positional.empty()) {
    RunUsageError(err);
    return 2;
  }
  line->cleanup_state_given = cleanup_state_option->count() > 0;
  for (const CLI::App* command : {check, explain, system, run, cleanup}) {
    if (*command) line->command = command->get_name();
  }
  return -1;
}

int Main(int argc, char** argv) {
  CommandLine line;
  if (const int status = ParseCommandLine({argv + 1, argv + argc}, &line, std::cout, std::cerr);
      status >= 0) {
    return status;
  }
  const std::vector<std::string>& paths = line.paths;
  RunOptions& run_options = line.run;
  if (line.command == "check") return Check(paths, std::cout, std::cerr);
  if (line.command == "run") {
    run_options.level = line.Level();
    return Run(run_options);
  }
  if (line.command == "cleanup") {
    const std::string& cleanup_state = line.cleanup_state;
    if (line.cleanup_run_only) return Cleanup(cleanup_state);
    if (line.cleanup_system_only) return CleanupSystem(cleanup_state, "", "", false, true);
    std::string system_state = cleanup_state;
    config::Options defaults;
    std::string resolv_conf = defaults.resolvconf_path;
    std::string backup = defaults.resolvconf_backup_path;
    int status = 0;
    if (!paths.empty()) {
      const config::LoadResult loaded = LoadAsInvoker(FindInvoker(), paths);
      if (loaded.ok()) {
        if (!line.cleanup_state_given) system_state = loaded.config->options.state_directory;
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
    if (CleanupSystem(system_state, resolv_conf, backup, line.cleanup_forget) != 0) status = 1;
    if (Cleanup(cleanup_state) != 0) status = 1;
    return status;
  }
  if (line.command == "system") {
    SystemOptions options;
    options.paths = paths;
    options.level = line.Level();
    return RunSystem(options);
  }
  if (line.command == "explain") {
    std::string error;
    const auto target = ParseExplainTarget(line.explain_to, &error);
    if (!target) {
      std::cerr << "tunnels explain: --to " << line.explain_to << ": " << error << "\n";
      return 2;
    }
    return Explain(*target, line.explain_json, paths, std::cout, std::cerr);
  }
  return 2;
}

}  // namespace tunnels::launcher
