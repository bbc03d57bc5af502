#include "launcher/privilege.h"

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace tunnels::launcher {
namespace {

std::optional<unsigned long> Number(const char* text) {
  if (!text || !*text) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const unsigned long value = std::strtoul(text, &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return value;
}

// `pw`'s identity with primary group `gid` and its groups from the group
// database.
Identity FromPasswd(const passwd& pw, gid_t gid) {
  Identity id;
  id.uid = pw.pw_uid;
  id.gid = gid;
  id.name = pw.pw_name;
  id.home = pw.pw_dir;
  id.shell = pw.pw_shell ? pw.pw_shell : "";
  int count = 64;
  id.groups.resize(static_cast<std::size_t>(count));
  if (::getgrouplist(pw.pw_name, id.gid, id.groups.data(), &count) < 0) {
    id.groups.resize(static_cast<std::size_t>(count));
    ::getgrouplist(pw.pw_name, id.gid, id.groups.data(), &count);
  }
  id.groups.resize(static_cast<std::size_t>(std::max(count, 0)));
  return id;
}

Identity Bare(uid_t uid, gid_t gid) {
  Identity id;
  id.uid = uid;
  id.gid = gid;
  id.groups = {gid};
  return id;
}

// The set*id() system calls themselves, for the calling thread only (see
// InvokerRights).
int ThreadSetGroups(const std::vector<gid_t>& groups) {
  return static_cast<int>(::syscall(SYS_setgroups, groups.size(), groups.data()));
}
int ThreadSetEgid(gid_t gid) {
  return static_cast<int>(
      ::syscall(SYS_setresgid, static_cast<gid_t>(-1), gid, static_cast<gid_t>(-1)));
}
int ThreadSetEuid(uid_t uid) {
  return static_cast<int>(
      ::syscall(SYS_setresuid, static_cast<uid_t>(-1), uid, static_cast<uid_t>(-1)));
}

std::string Describe(const Identity& id) {
  return (id.name.empty() ? "uid " : id.name + ", uid ") + std::to_string(id.uid);
}

}  // namespace

Identity FindInvoker() {
  uid_t uid = ::getuid();
  gid_t gid = ::getgid();
  if (uid == 0) {
    // Only root can have set SUDO_UID for itself, so it is trusted then.
    const auto sudo_uid = Number(std::getenv("SUDO_UID"));
    if (sudo_uid) {
      uid = static_cast<uid_t>(*sudo_uid);
      const auto sudo_gid = Number(std::getenv("SUDO_GID"));
      const passwd* pw = ::getpwuid(uid);
      gid = sudo_gid ? static_cast<gid_t>(*sudo_gid) : pw ? pw->pw_gid : static_cast<gid_t>(uid);
    }
  }
  const passwd* pw = ::getpwuid(uid);
  return pw ? FromPasswd(*pw, gid) : Bare(uid, gid);
}

bool UnderSudo(const Identity& invoker) { return ::getuid() == 0 && invoker.uid != 0; }

std::optional<Identity> FindProgramIdentity(const Identity& invoker, const std::string& user,
                                            std::string* error) {
  if (user.empty()) return invoker;
  const passwd* pw = ::getpwnam(user.c_str());
  if (!pw) {
    *error = "--user " + user + ": no such user";
    return std::nullopt;
  }
  if (invoker.uid != 0 && pw->pw_uid != invoker.uid) {
    *error = "--user " + user + ": the program may run only as the user who " +
             (UnderSudo(invoker) ? "ran sudo" : "runs tunnels") + " (" + Describe(invoker) +
             "); leave out --user";
    return std::nullopt;
  }
  if (pw->pw_uid == 0 && invoker.uid == 0) {
    *error = "--user " + user +
             ": refusing to start the program as root, with every capability in the "
             "machine's mount namespace; leave out --user to run it as yourself";
    return std::nullopt;
  }
  return FromPasswd(*pw, pw->pw_gid);
}

InvokerRights::InvokerRights(const Identity& invoker) {
  if (!UnderSudo(invoker)) return;
  egid_ = ::getegid();
  dumpable_ = ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  const int count = ::getgroups(0, nullptr);
  groups_.resize(static_cast<std::size_t>(std::max(count, 0)));
  if (count < 0 || ::getgroups(count, groups_.data()) != count) {
    error_ = std::string("cannot read tunnels' groups (getgroups): ") + std::strerror(errno);
    return;
  }
  // Groups and gid first: once the uid is not root's, they cannot change.
  if (ThreadSetGroups(invoker.groups) != 0 || ThreadSetEgid(invoker.gid) != 0 ||
      ThreadSetEuid(invoker.uid) != 0) {
    error_ = "cannot take the rights of " + Describe(invoker) +
             " to read its files (setgroups, setresgid, setresuid): " + std::strerror(errno);
  }
  dropped_ = true;  // whatever changed is undone
}

InvokerRights::~InvokerRights() {
  if (!dropped_) return;
  // The saved uid stayed 0: the effective uid and capabilities come back.
  if (ThreadSetEuid(0) != 0 || ThreadSetEgid(egid_) != 0 || ThreadSetGroups(groups_) != 0) {
    // Without root's rights nothing that follows can succeed; stopping here
    // says why rather than failing later at something unrelated.
    const std::string line =
        std::string("tunnels: cannot take root's rights back: ") + std::strerror(errno) + "\n";
    [[maybe_unused]] const ssize_t n = ::write(2, line.data(), line.size());
    std::_Exit(125);
  }
  // A change of effective uid made the process undumpable (its /proc
  // files root's); back as it was.
  if (dumpable_ >= 0) ::prctl(PR_SET_DUMPABLE, dumpable_, 0, 0, 0);
}

config::LoadResult LoadAsInvoker(const Identity& invoker, const std::vector<std::string>& paths,
                                 const config::LoadOptions& options) {
  const InvokerRights rights(invoker);
  if (!rights.error().empty()) {
    config::LoadResult failed;
    failed.diagnostics.push_back(config::Diagnostic{config::Severity::kError, {}, rights.error()});
    return failed;
  }
  return paths.empty() ? config::LoadDocuments({}, options) : config::Load(paths, options);
}

std::string ErrnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

std::vector<char*> ExecList(const std::vector<std::string>& strings) {
  std::vector<char*> list;
  for (const std::string& s : strings) list.push_back(const_cast<char*>(s.c_str()));
  list.push_back(nullptr);
  return list;
}

ChildGuard::~ChildGuard() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
}

int StopRequested() {
  sigset_t stop;
  ::sigemptyset(&stop);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaddset(&stop, sig);
  const timespec now{};
  const int sig = ::sigtimedwait(&stop, nullptr, &now);
  return sig > 0 ? sig : 0;
}

}  // namespace tunnels::launcher
