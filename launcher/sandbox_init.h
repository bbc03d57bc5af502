// PID 1 of `tunnels run`'s sandbox: the process clone() starts in the new
// PID, network and mount namespaces. It waits for tunnels to finish the
// setup, mounts the sandbox's files, starts the program, passes signals on,
// reaps orphans, and exits with the program's status; the kernel then ends
// every process left in the sandbox.
#pragma once

#include <signal.h>

#include <string>
#include <vector>

#include "launcher/privilege.h"

namespace tunnels::launcher {

// tunnels' exit status when it could not set the sandbox up (as env(1)
// and container runtimes use it).
constexpr int kSetupFailed = 125;

// The signals that tunnels and init pass on to the program.
constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

// What init needs, all prepared before the clone: init is a forked copy of
// a process that will soon have threads, so it only makes system calls and
// small allocations.
struct SandboxPlan {
  std::vector<std::string> command;
  Identity identity;
  std::string cwd;
  std::string resolv_conf;  // files to mount over the machine's
  std::string nsswitch;
  bool same_user = false;        // the caller's own identity: nothing to change
  bool report_leftovers = true;  // at the default log level and above
  // "NAME=value" entries; prepared before the fork, as the argument list is.
  std::vector<std::string> environment;
};

// init's whole life, in the child of clone(): reads one byte 'g' from `go`
// once tunnels is ready, then does the above. `original_mask` is the signal
// mask to give the program back (tunnels blocked the forwarded signals).
[[noreturn]] void SandboxInit(const SandboxPlan& plan, int go, const sigset_t& original_mask);

}  // namespace tunnels::launcher
