// `tunnels run -- CMD`: one program, and everything it starts, in a sandbox
// of its own network, mount and PID namespaces, where the rules apply; the
// rest of the machine is untouched.
#pragma once

#include <string>
#include <vector>

#include "config/log.h"

namespace tunnels::launcher {

struct RunOptions {
  std::vector<std::string> config_paths;  // -c; empty: /etc/tunnels and ~/.config/tunnels
  bool strict = false;                    // no route out but through the rules' proxies
  std::string user;                       // --user; empty: SUDO_UID/SUDO_GID, or the caller
  std::vector<std::string> command;
  std::string state_dir = "/run/tunnels";
  config::LogLevel level = config::LogLevel::kWarning;
};

// What `tunnels run` reads without -c (and `tunnels check` without CONF):
// /etc/tunnels and the invoking user's ~/.config/tunnels, those that exist.
std::vector<std::string> DefaultConfigPaths();

// Exit status: the program's (128+N when a signal N ended it), or 125 when
// tunnels itself could not set the sandbox up (as env(1) and container
// runtimes do), 126/127 when the command cannot be run or found.
int Run(const RunOptions& options);

// `tunnels cleanup`: removes what killed `tunnels run` instances left behind
// on this side (state under `state_dir`), never touching running ones.
int Cleanup(const std::string& state_dir);

}  // namespace tunnels::launcher
