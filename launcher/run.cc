// `tunnels run`: the sandbox.
//
// Three processes:
//   tunnels  stays in the caller's network namespace, so that every outbound
//            connection (to a proxy, a direct target or the upstream DNS) is
//            made from there; its DNS server, transparent listener and
//            interception live inside the sandbox's network namespace,
//            created by a thread that joins it (sockets keep the namespace
//            they were made in).
//   init     PID 1 of the sandbox's new PID namespace, in its new network and
//            mount namespaces: mounts the sandbox's files, starts the program,
//            passes signals on, reaps orphans, and exits with the program's
//            status; the kernel then ends every process left in the sandbox.
//   program  the command, as the invoking user, with no_new_privs and a
//            seccomp filter against typing into the terminal (seccomp.h).
// init dies with tunnels (PR_SET_PDEATHSIG), so nothing of the sandbox
// outlives tunnels even after SIGKILL.
#include "launcher/run.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "config/config.h"
#include "launcher/privilege.h"
#include "launcher/sandbox_files.h"
#include "launcher/seccomp.h"
#include "launcher/stack.h"
#include "launcher/system.h"
#include "netns/file_io.h"
#include "netns/interception.h"
#include "netns/sandbox_link.h"
#include "netns/unique_fd.h"

namespace tunnels::launcher {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;

constexpr int kSetupFailed = 125;

// The signals that tunnels and init pass on to the program.
constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

using Fd = netns::UniqueFd;

bool HasCapabilities(std::string* missing) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) {
    *missing = "CAP_SYS_ADMIN and CAP_NET_ADMIN";
    return false;
  }
  auto has = [&](int cap) { return (data[cap / 32].effective & (1u << (cap % 32))) != 0; };
  std::string m;
  if (!has(CAP_SYS_ADMIN)) m = "CAP_SYS_ADMIN";
  if (!has(CAP_NET_ADMIN)) m += std::string(m.empty() ? "" : " and ") + "CAP_NET_ADMIN";
  *missing = m;
  return m.empty();
}

std::vector<std::string> DefaultConfigPaths(const Identity& id) {
  std::vector<std::string> paths;
  std::error_code ec;
  if (fs::is_directory("/etc/tunnels", ec)) paths.push_back("/etc/tunnels");
  if (!id.home.empty()) {
    const fs::path user = fs::path(id.home) / ".config" / "tunnels";
    if (fs::is_directory(user, ec)) paths.push_back(user.string());
  }
  return paths;
}

}  // namespace

std::vector<std::string> DefaultConfigPaths() { return DefaultConfigPaths(FindInvoker()); }

namespace {

// Runs `fn` on a thread that has joined the network namespace `netns_fd`;
// sockets made there stay in that namespace. Returns false (with `error`)
// when the thread cannot join it.
template <typename Fn>
bool InNetns(int netns_fd, Fn&& fn, std::string* error) {
  bool joined = false;
  std::thread t([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      *error = Errno("cannot enter the sandbox's network namespace (setns)");
      return;
    }
    joined = true;
    fn();
  });
  t.join();
  return joined;
}

bool BringUpLoopback(std::string* error) {
  Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  if (fd.get() < 0 || ::ioctl(fd.get(), SIOCGIFFLAGS, &request) != 0) {
    *error = Errno("cannot read the flags of the sandbox's lo");
    return false;
  }
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (::ioctl(fd.get(), SIOCSIFFLAGS, &request) != 0) {
    *error = Errno("cannot bring up the sandbox's lo");
    return false;
  }
  return true;
}

// --- the sandbox's init -----------------------------------------------------

struct Plan {
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

bool MountSandboxFiles(const Plan& plan) {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    Say(Errno("cannot make the sandbox's mounts private"));
    return false;
  }
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    Say(Errno("cannot mount /proc for the sandbox"));
    return false;
  }
  // systemd-resolved's varlink and D-Bus-facing sockets, and nscd's cache:
  // programs that ask them would get answers from outside the sandbox.
  std::vector<std::string> hidden;
  for (const char* dir : {"/run/systemd/resolve", "/run/nscd", "/var/run/nscd"}) {
    struct stat st {};
    if (::lstat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
      if (::mount("tunnels", dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") != 0) {
        Say(Errno(std::string("cannot hide ") + dir));
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
    Fd created(::open(resolv.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  }
  if (::mount(plan.resolv_conf.c_str(), resolv.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    Say(Errno("cannot mount the sandbox's resolv.conf over " + resolv));
    return false;
  }
  if (::access("/etc/nsswitch.conf", F_OK) == 0 &&
      ::mount(plan.nsswitch.c_str(), "/etc/nsswitch.conf", nullptr, MS_BIND, nullptr) != 0) {
    Say(Errno("cannot mount the sandbox's nsswitch.conf"));
    return false;
  }
  return true;
}

// The null-terminated list of pointers execve() takes, into `strings`
// (which must outlive it).
std::vector<char*> ExecList(const std::vector<std::string>& strings) {
  std::vector<char*> list;
  for (const std::string& s : strings) list.push_back(const_cast<char*>(s.c_str()));
  list.push_back(nullptr);
  return list;
}

[[noreturn]] void ExecProgram(const Plan& plan, const sigset_t& original_mask) {
  for (int sig : kForwarded) ::signal(sig, SIG_DFL);
  ::signal(SIGCHLD, SIG_DFL);
  ::signal(SIGPIPE, SIG_DFL);  // tunnels ignores it; the program gets the default
  ::sigprocmask(SIG_SETMASK, &original_mask, nullptr);
  if (!plan.same_user) {
    if (::setgroups(plan.identity.groups.size(), plan.identity.groups.data()) != 0 ||
        ::setgid(plan.identity.gid) != 0 || ::setuid(plan.identity.uid) != 0) {
      Say(Errno("cannot become user " + plan.identity.name));
      ::_exit(kSetupFailed);
    }
  }
  // Nothing in the sandbox regains privileges through a setuid binary, nor
  // types into the caller's terminal (see seccomp.h).
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    Say(Errno("cannot set no_new_privs for the program"));
    ::_exit(kSetupFailed);
  }
  if (const std::string why = BlockTerminalInjection(); !why.empty()) {
    Say(why);
    ::_exit(kSetupFailed);
  }
  if (::chdir(plan.cwd.c_str()) != 0) {
    Say(Errno("cannot enter " + plan.cwd + " in the sandbox"));
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

[[noreturn]] void SandboxInit(const Plan& plan, int go, const sigset_t& original_mask) {
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
    Say(Errno("cannot start the program (fork)"));
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

// --- tunnels' side ------------------------------------------------------------

// Writes a file the sandbox's program reads as whatever user it runs as:
// mode 0644 whatever the umask (sudo keeps the caller's, 077 for some).
// "" when it cannot be written.
std::string WriteFile(const fs::path& path, const std::string& text) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd || ::fchmod(fd.get(), 0644) != 0 || !netns::WriteAll(fd.get(), text)) return "";
  return path.string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The sandbox's files, in `run-<pid>` under the state directory, removed
// with everything in it; the pid in the name lets a later run or cleanup
// remove the directories of instances that were killed.
class TempDir {
 public:
  explicit TempDir(const std::string& parent) {
    std::error_code ec;
    const fs::path path = fs::path(parent) / ("run-" + std::to_string(::getpid()));
    fs::remove_all(path, ec);  // a dead instance's, with the same pid
    if (::mkdir(path.c_str(), 0700) == 0) path_ = path.string();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Ends init (and with it the sandbox) unless told it is done.
class InitGuard {
 public:
  explicit InitGuard(pid_t pid) : pid_(pid) {}
  ~InitGuard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  void Release() { pid_ = -1; }

 private:
  pid_t pid_;
};

// Whether `pid` is a running process: not a zombie, which is what a killed
// tunnels is for a moment after its guardian has seen it end.
bool Running(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno != EPERM) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const std::size_t end = text.rfind(')');  // the name may hold spaces and ')'
  if (end == std::string::npos || end + 2 >= text.size()) return true;
  const char state = text[end + 2];
  return state != 'Z' && state != 'X';
}

// Removes the `run-<pid>` directories of instances no longer running.
void RemoveStaleFiles(const std::string& state_dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(state_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("run-") || !entry.is_directory(ec)) continue;
    const std::string pid = name.substr(4);
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (Running(std::stoi(pid))) continue;
    fs::remove_all(entry.path(), ec);
  }
}

// A Ctrl-C (SIGINT), SIGTERM or SIGHUP that arrived, blocked, during setup:
// the signal, taken off the pending set, or 0. Setup then stops and what it
// did is undone, instead of starting the program anyway.
int StopRequested() {
  sigset_t stop;
  ::sigemptyset(&stop);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaddset(&stop, sig);
  const timespec now{};
  const int sig = ::sigtimedwait(&stop, nullptr, &now);
  return sig > 0 ? sig : 0;
}

}  // namespace

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
  Fd self(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
  if (self.get() < 0) {
    *error = Errno("cannot start the cleanup guardian (pidfd_open)");
    return false;
  }
  // Everything the child needs, made before fork(): other threads may hold
  // the allocator's locks, so the child only makes system calls.
  std::vector<char*> argv = ExecList(args);
  sigset_t none;
  ::sigemptyset(&none);
  const pid_t pid = ::fork();
  if (pid < 0) {
    *error = Errno("cannot start the cleanup guardian (fork)");
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

int Cleanup(const std::string& state_dir) {
  std::vector<std::string> notes;
  const std::string errors = netns::SandboxLink::CleanupStale(state_dir, &notes);
  for (const std::string& note : notes) std::cout << "tunnels cleanup: " << note << "\n";
  RemoveStaleFiles(state_dir);
  if (errors.empty()) return 0;
  std::cerr << "tunnels cleanup: " << errors << "\n";
  return 1;
}

int Run(const RunOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  auto ms_since = [](std::chrono::steady_clock::time_point t) {
    const std::chrono::duration<double, std::milli> d = std::chrono::steady_clock::now() - t;
    return std::to_string(d.count()) + " ms";
  };
  if (options.command.empty()) {
    std::cerr << "tunnels run: no command given; usage: tunnels run [OPTIONS] -- CMD [ARGS...]\n";
    return 2;
  }
  std::string missing;
  if (!HasCapabilities(&missing)) {
    std::cerr << "tunnels run: needs " << missing
              << " to create the sandbox's namespaces; run it as root, e.g. with sudo.\n";
    return kSetupFailed;
  }
  std::string error;
  const Identity invoker = FindInvoker();
  const auto identity = FindProgramIdentity(invoker, options.user, &error);
  if (!identity) {
    std::cerr << "tunnels run: " << error << "\n";
    return kSetupFailed;
  }
  // Read with the rights of the user who ran sudo: what that user cannot
  // read must not become rules, nor be quoted in a diagnostic.
  config::LoadResult loaded;
  {
    const InvokerRights rights(invoker);
    if (!rights.error().empty()) {
      std::cerr << "tunnels run: " << rights.error() << "\n";
      return kSetupFailed;
    }
    const std::vector<std::string> paths =
        options.config_paths.empty() ? DefaultConfigPaths(*identity) : options.config_paths;
    loaded = paths.empty() ? config::LoadDocuments({}) : config::Load(paths);
  }
  for (const auto& d : loaded.diagnostics) std::cerr << d.ToString() << "\n";
  if (!loaded.ok()) return kSetupFailed;
  config::Config cfg = *loaded.config;
  // Inside the sandbox tunnels' DNS server is 127.0.0.1:53, whatever the
  // configuration says for system mode; --strict refuses names without rules.
  cfg.options.dns_bind_address = "127.0.0.1";
  cfg.options.dns_port = 53;
  if (options.strict) cfg.options.block_undefined_domains = true;
  const config::Log log(options.level, cfg.options.silent_log);
  // -v: which files the rules came from, as `tunnels check` lists them.
  if (cfg.files.empty()) {
    log.Debug("CONFIG", "no configuration file loaded; no rules apply");
  } else {
    std::string names;
    for (const std::string& f : cfg.files) names += (names.empty() ? "" : ", ") + f;
    log.Debug("CONFIG", "loaded " + names);
  }
  // Reports, after every object below is gone, how long undoing took.
  std::optional<std::chrono::steady_clock::time_point> ended;
  struct TeardownReport {
    const config::Log& log;
    const std::optional<std::chrono::steady_clock::time_point>& ended;
    ~TeardownReport() {
      if (!ended) return;
      const std::chrono::duration<double, std::milli> d = std::chrono::steady_clock::now() - *ended;
      log.Debug("RUN", "cleaned up in " + std::to_string(d.count()) + " ms");
    }
  } teardown_report{log, ended};

  // Before the stack: its sockets must be closed before the io_context goes.
  StackIo io;
  // EPIPE instead of SIGPIPE for a write to a vanished peer (see system.cc).
  ::signal(SIGPIPE, SIG_IGN);
  const auto stack = Stack::Create(cfg, log, /*check_upstream_loop=*/false, &error);
  if (!stack) {
    log.Error("RUN", error);
    return kSetupFailed;
  }
  log.Debug("RUN", "configuration loaded after " + ms_since(started));
  if (std::string why = netns::PrepareStateDirectory(options.state_dir); !why.empty()) {
    log.Error("RUN", why);
    return kSetupFailed;
  }
  if (const std::string errors = netns::SandboxLink::CleanupStale(options.state_dir);
      !errors.empty()) {
    log.Warning("RUN", "cannot undo everything a killed instance left: " + errors);
  }
  RemoveStaleFiles(options.state_dir);
  log.Debug("RUN", "stale state checked after " + ms_since(started));

  TempDir files(options.state_dir);
  if (files.path().empty()) {
    log.Error("RUN", Errno("cannot create a directory under " + options.state_dir));
    return kSetupFailed;
  }
  Plan plan;
  plan.command = options.command;
  plan.identity = *identity;
  plan.report_leftovers = options.level >= config::LogLevel::kInfo;
  plan.same_user = options.user.empty() && !UnderSudo(invoker);
  plan.cwd = fs::current_path().string();
  {
    std::vector<std::string> caller;
    for (char** e = environ; *e; ++e) caller.emplace_back(*e);
    plan.environment = plan.same_user ? caller
                                      : ProgramEnvironment(caller, identity->name, identity->home,
                                                           identity->shell);
  }
  plan.resolv_conf = WriteFile(fs::path(files.path()) / "resolv.conf", SandboxResolvConf());
  plan.nsswitch = WriteFile(fs::path(files.path()) / "nsswitch.conf",
                            SandboxNsswitch(ReadFile("/etc/nsswitch.conf")));
  if (plan.resolv_conf.empty() || plan.nsswitch.empty()) {
    log.Error("RUN",
              Errno("cannot write the sandbox's resolv.conf and nsswitch.conf in " + files.path()));
    return kSetupFailed;
  }

  // Signals stay blocked from here on: tunnels reads them from a signalfd,
  // init with sigwaitinfo; the program gets the original mask back.
  sigset_t handled;
  ::sigemptyset(&handled);
  for (int sig : kForwarded) ::sigaddset(&handled, sig);
  ::sigaddset(&handled, SIGCHLD);
  sigset_t original_mask;
  ::sigprocmask(SIG_BLOCK, &handled, &original_mask);

  int go_pipe[2];
  if (::pipe2(go_pipe, O_CLOEXEC) != 0) {
    log.Error("RUN", Errno("pipe"));
    return kSetupFailed;
  }
  Fd go_read(go_pipe[0]);
  Fd go_write(go_pipe[1]);
  // Like fork(), with the child in new namespaces. tunnels has no thread
  // yet, so the child may carry on in this code.
  const long child = ::syscall(SYS_clone, CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | SIGCHLD,
                               nullptr, nullptr, nullptr, 0);
  if (child < 0) {
    log.Error("RUN", Errno("cannot create the sandbox's namespaces (clone)"));
    return kSetupFailed;
  }
  if (child == 0) {
    go_write.Reset();
    SandboxInit(plan, go_read.get(), original_mask);
  }
  const pid_t init = static_cast<pid_t>(child);
  InitGuard guard(init);
  go_read.Reset();
  auto interrupted = [&](int sig) {
    log.Error("RUN", std::string(::strsignal(sig)) +
                         " during setup: the program was not started, and what was set up "
                         "is undone");
    return 128 + sig;
  };
  if (const int sig = StopRequested(); sig != 0) return interrupted(sig);

  Fd netns(::open(("/proc/" + std::to_string(init) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  if (netns.get() < 0) {
    log.Error("RUN", Errno("cannot open the sandbox's network namespace"));
    return kSetupFailed;
  }
  // The two halves of the setup touch different namespaces and each waits
  // on the kernel (an nftables commit takes milliseconds), so they run at
  // once: the sandbox's side on a thread inside its network namespace, the
  // caller's side (veth, NAT) here.
  std::unique_ptr<netns::Interception> interception;
  std::string sandbox_error;
  bool listening = false;
  bool entered = false;
  std::thread sandbox_side([&] {
    entered = InNetns(
        netns.get(),
        [&] {
          // 127.0.0.1 exists only once lo is up, and the link may not have
          // brought it up yet.
          if (!BringUpLoopback(&sandbox_error)) return;
          resolver::DnsServer::Options dns;
          dns.address = asio::ip::make_address("127.0.0.1");
          dns.port = 53;
          dns.packet_size = cfg.options.dns_packet_size;
          if (!stack->Listen(io, dns, &sandbox_error)) return;
          netns::InterceptionSpec spec;
          spec.network = cfg.options.private_addresses.address;
          spec.prefix_length = cfg.options.private_addresses.length;
          spec.listener_port = stack->engine().port();
          spec.table_name = cfg.options.nft_table;
          spec.owned = false;  // the sandbox's namespace dies with us; see InterceptionSpec
          interception = netns::Interception::Create(spec, &sandbox_error);
          listening = interception != nullptr;
        },
        &sandbox_error);
  });
  // Before the first change to this side: a process that undoes them if
  // tunnels is killed (see StartGuardian).
  if (!options.strict &&
      !StartGuardian({"tunnels", "cleanup", "--state-dir", options.state_dir, "--run-only"},
                     &error)) {
    log.Warning("RUN", error);
  }
  netns::SandboxLinkSpec link_spec;
  link_spec.sandbox_netns_fd = netns.get();
  link_spec.name_prefix = "tnl" + std::to_string(::getpid());
  link_spec.outbound = !options.strict;
  link_spec.table_name = "tunnels_run_" + std::to_string(::getpid());
  link_spec.state_dir = options.state_dir;
  const auto link = netns::SandboxLink::Create(link_spec, &error);
  log.Debug("RUN", "link ready after " + ms_since(started));
  sandbox_side.join();
  log.Debug("RUN", "sandbox side ready after " + ms_since(started));
  if (!link) {
    log.Error("RUN", error);
    return kSetupFailed;
  }
  for (const std::string& note : link->notes()) log.Info("RUN", note);
  for (const std::string& warning : link->warnings()) log.Warning("RUN", warning);
  if (!entered || !listening) {
    log.Error("RUN", sandbox_error);
    return kSetupFailed;
  }
  // The sandbox's table goes with its namespace; Remove() would run here,
  // in the caller's.
  if (const int sig = StopRequested(); sig != 0) {
    interception->Abandon();
    return interrupted(sig);
  }
  RaiseFileLimit(log);

  Fd signals(::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK));
  if (signals.get() < 0) {
    log.Error("RUN", Errno("signalfd"));
    return kSetupFailed;
  }
  // The last moment before the program starts.
  if (const int sig = StopRequested(); sig != 0) {
    interception->Abandon();
    return interrupted(sig);
  }
  stack->Start();
  if (::write(go_write.get(), "g", 1) != 1) {
    log.Error("RUN", Errno("cannot start the sandbox"));
    return kSetupFailed;
  }
  go_write.Reset();
  log.Info("RUN", "sandbox ready: " + std::to_string(cfg.rules.size()) + " rules" +
                      (options.strict ? ", strict" : ""));

  int exit_status = kSetupFailed;
  asio::posix::stream_descriptor signal_stream(io, ::fcntl(signals.get(), F_DUPFD_CLOEXEC, 0));
  signalfd_siginfo info{};
  std::function<void()> read_signal = [&] {
    signal_stream.async_read_some(
        asio::buffer(&info, sizeof info), [&](const boost::system::error_code& ec, std::size_t n) {
          if (ec) return;
          if (n == sizeof info) {
            const int sig = static_cast<int>(info.ssi_signo);
            if (sig == SIGCHLD) {
              int status = 0;
              if (::waitpid(init, &status, WNOHANG) == init) {
                guard.Release();
                exit_status = WIFEXITED(status)
                                  ? WEXITSTATUS(status)
                                  : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
                stack->Stop();
                io.stop();
                return;
              }
            } else if (info.ssi_code != SI_KERNEL) {
              // Sent by a process (kill, systemd, a supervisor): pass it on.
              // From the terminal, the program got it already.
              ::kill(init, sig);
            }
          }
          read_signal();
        });
  };
  read_signal();
  asio::steady_timer expiry(io);
  ScheduleExpiry(expiry, stack->pool(),
                 std::max<std::chrono::seconds>(std::chrono::seconds(1),
                                                cfg.options.address_cleanup_time / 8));
  io.run();
  io.EndPendingWork();
  log.Debug("RUN", "program ended after " + ms_since(started));
  ended = std::chrono::steady_clock::now();
  // The sandbox's namespace goes away with its last process and our last
  // reference to it, and takes the route and table with it.
  interception->Abandon();
  return exit_status;
}

}  // namespace tunnels::launcher
