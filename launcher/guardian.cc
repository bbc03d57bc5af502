#include "launcher/guardian.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "launcher/privilege.h"
#include "netns/unique_fd.h"

namespace tunnels::launcher {

// Forks the guardian: a process in a session of its own (the terminal's
// Ctrl-C does not reach it) that holds nothing of tunnels' but a pidfd of
// this process. When this process has ended, however it ended (SIGKILL, the
// OOM killer), the pidfd turns readable and the guardian becomes `tunnels
// cleanup --state-dir DIR --run-only`, which undoes what was left: IPv4
// forwarding must not stay on after the table that limited it went with its
// owner. After a normal exit that finds nothing to do. It waits before it
// execs, so that loading a second tunnels does not slow this one's start.
// False with `error` set when it cannot be started.
//
// `tunnels system` uses the same guardian with `--system-only` (see
// system.cc): each guardian runs only the part of cleanup for its own
// instance's state, since another instance may be live elsewhere.
bool StartGuardian(const std::vector<std::string>& args, std::string* error) {
  // The pidfd (close-on-exec) turns readable once this process is a zombie:
  // by then it has closed every descriptor and left nothing running.
  netns::UniqueFd self(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
  if (self.get() < 0) {
    *error = ErrnoText("cannot start the cleanup guardian (pidfd_open)");
    return false;
  }
  // Everything the child needs, made before fork(): other threads may hold
  // the allocator's locks, so the child only makes system calls.
  std::vector<char*> argv = ExecList(args);
  sigset_t none;
  ::sigemptyset(&none);
  const pid_t pid = ::fork();
  if (pid < 0) {
    *error = ErrnoText("cannot start the cleanup guardian (fork)");
    return false;
  }
  if (pid == 0) {
    ::setsid();
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::prctl(PR_SET_NAME, "tunnels-guard");  // in ps and top, until it execs
    // Nothing of tunnels' but standard output and error: a socket or a
    // namespace held here would outlive tunnels.
    if (self.get() != 3 && ::dup2(self.get(), 3) != 3) ::_exit(127);
    ::close_range(4, ~0U, 0);
    if (const int null = ::open("/dev/null", O_RDONLY); null > 0) {
      ::dup2(null, 0);  // not the terminal's input
      ::close(null);
    }
    pollfd ended{3, POLLIN, 0};
    while (::poll(&ended, 1, -1) < 0 && errno == EINTR) {
    }
    ::close(3);
    ::execv("/proc/self/exe", argv.data());
    ::_exit(127);
  }
  return true;
}

}  // namespace tunnels::launcher
