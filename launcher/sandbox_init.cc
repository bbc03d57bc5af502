#include "launcher/sandbox_init.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "launcher/seccomp.h"
#include "netns/unique_fd.h"

namespace tunnels::launcher {
namespace {

namespace fs = std::filesystem;

// Writes a message for the user on stderr; async-signal-safe enough for a
// forked child.
void Say(const std::string& message) {
  const std::string line = "tunnels run: " + message + "\n";
  [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
}

// Where a symbolic link finally points, without requiring that it exists.
std::string FollowLinks(std::string path) {
  for (int i = 0; i < 16; ++i) {
    char target[4096];
    const ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
    if (n <= 0) return path;
    target[n] = '\0';
    const fs::path t(target);
    path = (t.is_absolute() ? t : fs::path(path).parent_path() / t).lexically_normal().string();
  }
  return path;
}

bool MountSandboxFiles(const SandboxPlan& plan) {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    Say(ErrnoText("cannot make the sandbox's mounts private"));
    return false;
  }
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    Say(ErrnoText("cannot mount /proc for the sandbox"));
    return false;
  }
  // systemd-resolved's varlink and D-Bus-facing sockets, and nscd's cache:
  // programs that ask them would get answers from outside the sandbox.
  std::vector<std::string> hidden;
  for (const char* dir : {"/run/systemd/resolve", "/run/nscd", "/var/run/nscd"}) {
    struct stat st {};
    if (::lstat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
      if (::mount("tunnels", dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") != 0) {
        Say(ErrnoText(std::string("cannot hide ") + dir));
        return false;
      }
      hidden.push_back(dir);
    }
  }
  // /etc/resolv.conf is often a link into /run/systemd/resolve, hidden just
  // now: bind over what it points to, made in our own empty tmpfs if needed.
  const std::string resolv = FollowLinks("/etc/resolv.conf");
  if (::access(resolv.c_str(), F_OK) != 0) {
    const bool ours = std::any_of(hidden.begin(), hidden.end(), [&](const std::string& d) {
      return resolv.starts_with(d + "/");
    });
    if (!ours) {
      Say("/etc/resolv.conf points to " + resolv + ", which does not exist; cannot replace it");
      return false;
    }
    netns::UniqueFd created(::open(resolv.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  }
  if (::mount(plan.resolv_conf.c_str(), resolv.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    Say(ErrnoText("cannot mount the sandbox's resolv.conf over " + resolv));
    return false;
  }
  if (::access("/etc/nsswitch.conf", F_OK) == 0 &&
      ::mount(plan.nsswitch.c_str(), "/etc/nsswitch.conf", nullptr, MS_BIND, nullptr) != 0) {
    Say(ErrnoText("cannot mount the sandbox's nsswitch.conf"));
    return false;
  }
  return true;
}

[[noreturn]] void ExecProgram(const SandboxPlan& plan, const sigset_t& original_mask) {
  for (int sig : kForwarded) ::signal(sig, SIG_DFL);
  ::signal(SIGCHLD, SIG_DFL);
  ::signal(SIGPIPE, SIG_DFL);  // tunnels ignores it; the program gets the default
  ::sigprocmask(SIG_SETMASK, &original_mask, nullptr);
  if (!plan.same_user) {
    if (::setgroups(plan.identity.groups.size(), plan.identity.groups.data()) != 0 ||
        ::setgid(plan.identity.gid) != 0 || ::setuid(plan.identity.uid) != 0) {
      Say(ErrnoText("cannot become user " + plan.identity.name));
      ::_exit(kSetupFailed);
    }
  }
  // Nothing in the sandbox regains privileges through a setuid binary, nor
  // types into the caller's terminal (see seccomp.h).
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    Say(ErrnoText("cannot set no_new_privs for the program"));
    ::_exit(kSetupFailed);
  }
  if (const std::string why = BlockTerminalInjection(); !why.empty()) {
    Say(why);
    ::_exit(kSetupFailed);
  }
  if (::chdir(plan.cwd.c_str()) != 0) {
    Say(ErrnoText("cannot enter " + plan.cwd + " in the sandbox"));
  }
  std::vector<char*> argv = ExecList(plan.command);
  std::vector<char*> envp = ExecList(plan.environment);
  ::execvpe(argv[0], argv.data(), envp.data());
  const int e = errno;
  Say(std::string("cannot run ") + plan.command[0] + ": " + std::strerror(e));
  ::_exit(e == ENOENT ? 127 : 126);
}

void NoOp(int) {}

// Counts the processes of the sandbox's PID namespace (its own /proc) other
// than init, and says how many are about to be ended.
void ReportLeftovers() {
  std::error_code ec;
  int left = 0;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name != "1" && name.find_first_not_of("0123456789") == std::string::npos) ++left;
  }
  if (left > 0) {
    Say("the program exited; ending " + std::to_string(left) +
        (left == 1 ? " process" : " processes") + " left in the sandbox");
  }
}

}  // namespace

[[noreturn]] void SandboxInit(const SandboxPlan& plan, int go, const sigset_t& original_mask) {
  // init dies with tunnels; the kernel then ends the whole PID namespace.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  char byte = 0;
  if (::read(go, &byte, 1) != 1 || byte != 'g') ::_exit(kSetupFailed);
  ::close(go);
  if (!MountSandboxFiles(plan)) ::_exit(kSetupFailed);

  // PID 1 gets only the signals it has handlers for; they stay blocked and
  // are taken with sigwaitinfo.
  for (int sig : kForwarded) ::signal(sig, NoOp);
  ::signal(SIGCHLD, NoOp);
  const pid_t program = ::fork();
  if (program < 0) {
    Say(ErrnoText("cannot start the program (fork)"));
    ::_exit(kSetupFailed);
  }
  if (program == 0) ExecProgram(plan, original_mask);

  sigset_t wait_for;
  ::sigemptyset(&wait_for);
  for (int sig : kForwarded) ::sigaddset(&wait_for, sig);
  ::sigaddset(&wait_for, SIGCHLD);
  for (;;) {
    siginfo_t info{};
    const int sig = ::sigwaitinfo(&wait_for, &info);
    if (sig < 0) continue;
    if (sig != SIGCHLD) {
      // From the terminal the program got it too: pass on only what a
      // process sent (tunnels, or a kill from inside), or it arrives twice.
      if (info.si_code != SI_KERNEL) ::kill(program, sig);
      continue;
    }
    int status = 0;
    pid_t done;
    while ((done = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (done != program) continue;  // an orphan: reaped, as init must
      // The kernel ends the rest with init: say so, as a program that left
      // a daemon behind would otherwise lose it without a word.
      if (plan.report_leftovers) ReportLeftovers();
      if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
      if (WIFSIGNALED(status)) ::_exit(128 + WTERMSIG(status));
    }
  }
}

}  // namespace tunnels::launcher
