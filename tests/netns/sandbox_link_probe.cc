// sandbox_link_probe: drives netns::SandboxLink for
// tests/integration/test_sandbox_link.py.
//
//   sandbox_link_probe [--strict] [--keep-sandbox] [--state-dir DIR]
//                      [--prefix P] [--table T] [--range A.B.C.D/LEN]
//   sandbox_link_probe --cleanup [--state-dir DIR]
//
// Forks a child that unshares a new network namespace (the "sandbox") and
// waits; creates the SandboxLink for it, then prints
//   note: <sentence>            for each leftover replaced or cleaned up
//   ready sandbox_pid=N network=A/30 caller=IF caller_ip=A sandbox=IF
//         sandbox_ip=A drops=0|1 state=PATH          (one line)
//   ready sandbox_pid=N strict                       (with --strict)
// Commands run in the sandbox with `nsenter --net=/proc/N/ns/net`. On
// SIGTERM or SIGINT it removes the SandboxLink, prints "removed", kills the
// child and exits 0. The child dies with the probe (PR_SET_PDEATHSIG), and
// with it the sandbox's namespace, unless --keep-sandbox: then it stays
// until killed, as a sandbox whose tunnels was killed might.
//
// --cleanup runs SandboxLink::CleanupStale, prints "note: ..." per thing
// done and "cleaned". Errors: "error: <sentence>" on stderr, exit 1.
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "netns/sandbox_link.h"
#include "netns/unique_fd.h"
#include "tests/netns/probe_args.h"

namespace {

using tunnels::netns::Ipv4AddressString;
using tunnels::netns::SandboxLink;
using tunnels::netns::SandboxLinkSpec;
using tunnels::netns::UniqueFd;
using tunnels::netns::testing::Fail;
using tunnels::netns::testing::ParseRange;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// The sandbox: a child in a new network namespace that waits to be killed.
// Returns its pid, or -1 with the reason in `*error`.
pid_t StartSandbox(bool keep, std::string* error) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) {
    *error = Errno("pipe2");
    return -1;
  }
  UniqueFd read_end(ready[0]), write_end(ready[1]);
  const pid_t parent = getpid();
  const pid_t child = fork();
  if (child < 0) {
    *error = Errno("fork");
    return -1;
  }
  if (child == 0) {
    if (!keep && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)) _exit(1);
    if (unshare(CLONE_NEWNET) != 0) _exit(2);
    const char byte = 1;
    if (write(write_end.get(), &byte, 1) != 1) _exit(3);
    write_end.Reset();
    while (true) pause();
  }
  write_end.Reset();
  char byte = 0;
  ssize_t n;
  do {
    n = read(read_end.get(), &byte, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) {
    int status = 0;
    waitpid(child, &status, 0);
    *error = "the sandbox child could not unshare its network namespace (exit status " +
             std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")";
    return -1;
  }
  return child;
}

}  // namespace

int main(int argc, char** argv) {
  SandboxLinkSpec spec;
  spec.name_prefix = "tnl" + std::to_string(getpid());
  spec.table_name = "tunnels_run_" + std::to_string(getpid());
  bool keep = false, cleanup = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--strict") {
      spec.outbound = false;
    } else if (arg == "--keep-sandbox") {
      keep = true;
    } else if (arg == "--cleanup") {
      cleanup = true;
    } else if (arg == "--state-dir" && has_value) {
      spec.state_dir = argv[++i];
    } else if (arg == "--prefix" && has_value) {
      spec.name_prefix = argv[++i];
    } else if (arg == "--table" && has_value) {
      spec.table_name = argv[++i];
    } else if (arg == "--range" && has_value) {
      if (!ParseRange(argv[++i], &spec.link_range, &spec.link_range_length))
        return Fail("bad --range");
    } else {
      return Fail(
          "usage: sandbox_link_probe [--strict] [--keep-sandbox] [--state-dir DIR] [--prefix P] "
          "[--table T] [--range A.B.C.D/LEN] | --cleanup [--state-dir DIR]");
    }
  }

  if (cleanup) {
    std::vector<std::string> notes;
    const std::string errors = SandboxLink::CleanupStale(spec.state_dir, &notes);
    for (const std::string& note : notes) std::printf("note: %s\n", note.c_str());
    std::fflush(stdout);
    if (!errors.empty()) return Fail(errors);
    std::printf("cleaned\n");
    return 0;
  }

  // Signals arrive through a descriptor, so that the exit path is ordinary
  // code that runs the destructors. Blocked before the fork: the child
  // ignores them too, and dies by SIGKILL only.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  if (sigprocmask(SIG_BLOCK, &signals, nullptr) != 0) return Fail(Errno("sigprocmask"));

  std::string error;
  const pid_t sandbox_pid = StartSandbox(keep, &error);
  if (sandbox_pid < 0) return Fail(error);
  // From here on the child must not outlive a failure.
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } reaper{sandbox_pid};

  UniqueFd signal_fd(signalfd(-1, &signals, SFD_CLOEXEC));
  if (!signal_fd) return Fail(Errno("signalfd"));
  const std::string ns_path = "/proc/" + std::to_string(sandbox_pid) + "/ns/net";
  UniqueFd netns(open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!netns) return Fail(Errno("open " + ns_path));
  spec.sandbox_netns_fd = netns.get();

  std::unique_ptr<SandboxLink> link = SandboxLink::Create(spec, &error);
  if (!link) return Fail(error);
  for (const std::string& note : link->notes()) std::printf("note: %s\n", note.c_str());
  if (link->outbound()) {
    std::printf(
        "ready sandbox_pid=%d network=%s caller=%s caller_ip=%s sandbox=%s sandbox_ip=%s "
        "drops=%d state=%s\n",
        static_cast<int>(sandbox_pid), link->network().ToString().c_str(),
        link->caller_interface().c_str(), Ipv4AddressString(link->caller_address()).c_str(),
        link->sandbox_interface().c_str(), Ipv4AddressString(link->sandbox_address()).c_str(),
        link->drops_other_forwarding() ? 1 : 0, link->state_file().c_str());
  } else {
    std::printf("ready sandbox_pid=%d strict\n", static_cast<int>(sandbox_pid));
  }
  std::fflush(stdout);

  while (true) {
    pollfd fd{signal_fd.get(), POLLIN, 0};
    if (poll(&fd, 1, -1) < 0) {
      if (errno == EINTR) continue;
      return Fail(Errno("poll"));
    }
    break;
  }
  if (std::string errors = link->Remove(); !errors.empty()) return Fail(errors);
  link.reset();
  std::printf("removed\n");
  std::fflush(stdout);
  return 0;
}
