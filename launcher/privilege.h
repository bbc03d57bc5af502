// Who tunnels acts for, and with whose rights it reads the files it is
// told to read. tunnels needs root (for its namespaces and nftables), but
// under sudo it acts for the user who ran sudo: the program it starts runs
// as that user, and the configuration and key files it reads are read with
// that user's rights, so that a sudoers rule for `tunnels run` gives no
// more than a sandbox for the user's own programs.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace tunnels::launcher {

// A user as the kernel sees one: ids and supplementary groups, and what
// its passwd entry says (empty for a bare uid without one).
struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::string name;
  std::string home;
  std::string shell;
};

// The user tunnels acts for: under sudo (real uid 0 and SUDO_UID set), the
// user who ran sudo, with SUDO_GID; otherwise the real user.
Identity FindInvoker();

// Whether `invoker` ran tunnels through sudo as someone other than root.
bool UnderSudo(const Identity& invoker);

// The identity the program of `tunnels run` gets: `user` (--user), or the
// invoker when empty. --user may name only the invoker itself, unless the
// invoker is root, who may name any user but root: a program started as
// root would have every capability in the machine's mount namespace, and
// under sudo --user root would turn a rule for tunnels into a root shell.
// nullopt with `error` set when refused or unknown.
std::optional<Identity> FindProgramIdentity(const Identity& invoker, const std::string& user,
                                            std::string* error);

// While it lives, the calling thread's file accesses are checked with the
// invoker's rights: its effective uid, gid and groups become the invoker's,
// which also empties its effective capability set. Other threads keep
// root's (the kernel's credentials are per thread; glibc's set*id() would
// change every thread's, so the system calls are made directly): `tunnels
// system` reads a new configuration on a thread of its own while the I/O
// thread keeps marking sockets and binding ports. The destructor restores
// root's. Does nothing unless under sudo.
class InvokerRights {
 public:
  explicit InvokerRights(const Identity& invoker);
  ~InvokerRights();
  InvokerRights(const InvokerRights&) = delete;
  InvokerRights& operator=(const InvokerRights&) = delete;
  // "" when the rights were taken (or nothing had to change), else why not:
  // nothing may then be read.
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  bool dropped_ = false;
  gid_t egid_ = 0;
  int dumpable_ = 1;
  std::vector<gid_t> groups_;
  std::string error_;
};

// Loads the configuration at `paths` (none: no rules) with the rights of
// the user who ran sudo, when under sudo: every command that reads a
// configuration reads it so, so that what the invoker cannot read neither
// becomes rules nor is quoted in a diagnostic. When the rights cannot be
// taken, a result with that error and nothing read.
config::LoadResult LoadAsInvoker(const Identity& invoker, const std::vector<std::string>& paths,
                                 const config::LoadOptions& options = {});

// --- process helpers, for the forks of `tunnels run` and the guardian ------

// "`what`: " and the text of the current errno.
std::string ErrnoText(const std::string& what);

// The null-terminated list of pointers execve() takes, into `strings`
// (which must outlive it).
std::vector<char*> ExecList(const std::vector<std::string>& strings);

// Ends a child (SIGKILL) and reaps it when destroyed, unless released
// (once it was reaped elsewhere).
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ~ChildGuard();
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  void Release() { pid_ = -1; }

 private:
  pid_t pid_;
};

// A Ctrl-C (SIGINT), SIGTERM or SIGHUP that arrived, blocked, during setup:
// the signal, taken off the pending set, or 0. Setup then stops and what it
// did is undone, instead of starting the program anyway.
[[nodiscard]] int StopRequested();

}  // namespace tunnels::launcher
