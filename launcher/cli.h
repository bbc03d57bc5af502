// The command line of tunnels. main() only calls Main(); everything the
// commands do lives in the libraries, so the commands stay testable.
#pragma once

#include <iosfwd>
#include <set>
#include <string>
#include <vector>

#include "config/log.h"
#include "launcher/run.h"

namespace tunnels::launcher {

int Main(int argc, char** argv);

// The arguments (without the program's name) in the form the parser
// expects: `tunnels CONF...` (the original's form) becomes `tunnels system
// CONF...`, and options written before the command move after it, so that
// `tunnels -v system CONF` and `tunnels -c X run -- CMD` mean what they say
// instead of reading "system", "run" or X as a configuration file.
// `takes_value`: the options (as written, "-c", "--config") whose next
// argument is their value, not a command. Nothing after `--` is looked at:
// it is the program's.
std::vector<std::string> CanonicalArguments(std::vector<std::string> args,
                                            const std::set<std::string>& takes_value = {});

// What the command line asks for, once parsed.
struct CommandLine {
  std::string command;             // "check", "explain", "system", "run" or "cleanup"
  std::vector<std::string> paths;  // CONF... of check, explain, system, cleanup
  // -v and -q, accepted by every command before or after its name; they
  // change what system and run log.
  int verbose = 0;
  int quiet = 0;
  std::string explain_to;
  bool explain_json = false;
  RunOptions run;
  std::string cleanup_state = "/run/tunnels";
  bool cleanup_state_given = false;
  bool cleanup_run_only = false;
  bool cleanup_system_only = false;  // internal: the guardian of a tunnels system
  bool cleanup_forget = false;

  // The log level of system and run: -q errors only, -v every query too.
  config::LogLevel Level() const;
};

// Parses `args` (without the program's name). Returns -1 when there is a
// command to run, else the exit status, with help or the error written to
// `out` or `err`.
int ParseCommandLine(std::vector<std::string> args, CommandLine* line, std::ostream& out,
                     std::ostream& err);

}  // namespace tunnels::launcher
