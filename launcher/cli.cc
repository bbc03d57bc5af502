#include "launcher/cli.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>

#include "launcher/commands.h"
#include "launcher/system.h"

namespace tunnels::launcher {

int Main(int argc, char** argv) {
  CLI::App app{
      "tunnels: transparent proxying rules per domain name.\n"
      "Names that match a rule get a fake address; connections to it go through the rule's "
      "proxy, with the name resolved on the proxy's side."};
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

  // The original took configuration paths with no command: `tunnels CONF...`
  // is `tunnels system CONF...`.
  std::vector<std::string> args(argv + 1, argv + argc);
  static const std::vector<std::string> kKnown = {"check",  "explain", "system",
                                                  "--help", "-h",      "--version"};
  if (!args.empty() && std::find(kKnown.begin(), kKnown.end(), args[0]) == kKnown.end()) {
    args.insert(args.begin(), "system");
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
