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
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "config/config.h"
#include "launcher/guardian.h"
#include "launcher/privilege.h"
#include "launcher/sandbox_files.h"
#include "launcher/sandbox_init.h"
#include "launcher/stack.h"
#include "launcher/system.h"
#include "netns/file_io.h"
#include "netns/interception.h"
#include "netns/kernel.h"
#include "netns/run_state.h"
#include "netns/sandbox_link.h"
#include "netns/sandbox_side.h"
#include "netns/unique_fd.h"

namespace tunnels::launcher {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;

using Fd = netns::UniqueFd;

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

// Reads the signals tunnels blocks from `signals` until init has ended:
// passes on those a process sent (kill, systemd, a supervisor; from the
// terminal, the program got them already), and on SIGCHLD reaps init,
// releases `guard` and sets `*exit_status` to init's, which is the
// program's. Also returns if the signalfd fails, leaving the guard to end
// the sandbox.
asio::awaitable<void> WatchSandbox(asio::posix::stream_descriptor& signals, pid_t init,
                                   ChildGuard* guard, int* exit_status) {
  for (;;) {
    signalfd_siginfo info{};
    boost::system::error_code ec;
    const std::size_t n = co_await signals.async_read_some(
        asio::buffer(&info, sizeof info), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
    if (n != sizeof info) continue;
    const int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGCHLD) {
      int status = 0;
      if (::waitpid(init, &status, WNOHANG) == init) {
        guard->Release();
        *exit_status = WIFEXITED(status) ? WEXITSTATUS(status)
                                         : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        co_return;
      }
    } else if (info.ssi_code != SI_KERNEL) {
      ::kill(init, sig);
    }
  }
}

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

std::string MsSince(std::chrono::steady_clock::time_point t) {
  const std::chrono::duration<double, std::milli> d = std::chrono::steady_clock::now() - t;
  return std::to_string(d.count()) + " ms";
}

// The configuration as `tunnels run` uses it; nullopt once the loader's
// diagnostics (or why the files could not be read) went to stderr.
std::optional<config::Config> LoadRunConfig(const RunOptions& options, const Identity& invoker,
                                            const Identity& identity) {
  // Read with the rights of the user who ran sudo: what that user cannot
  // read must not become rules, nor be quoted in a diagnostic.
  const config::LoadResult loaded = LoadAsInvoker(
      invoker, options.config_paths.empty() ? DefaultConfigPaths(identity) : options.config_paths);
  for (const auto& d : loaded.diagnostics) std::cerr << d.ToString() << "\n";
  if (!loaded.ok()) return std::nullopt;
  config::Config cfg = *loaded.config;
  // Inside the sandbox tunnels' DNS server is 127.0.0.1:53, whatever the
  // configuration says for system mode; --strict refuses names without rules.
  cfg.options.dns_bind_address = "127.0.0.1";
  cfg.options.dns_port = 53;
  if (options.strict) cfg.options.block_undefined_domains = true;
  return cfg;
}

// -v: which files the rules came from, as `tunnels check` lists them.
void LogConfigFiles(const config::Config& cfg, const config::Log& log) {
  if (cfg.files.empty()) {
    log.Debug("CONFIG", "no configuration file loaded; no rules apply");
  } else {
    std::string names;
    for (const std::string& f : cfg.files) names += (names.empty() ? "" : ", ") + f;
    log.Debug("CONFIG", "loaded " + names);
  }
}

// What init needs, with the sandbox's files written in `dir`; nullopt with
// `*error` set when they cannot be written.
std::optional<SandboxPlan> MakePlan(const RunOptions& options, const Identity& invoker,
                                    const Identity& identity, const std::string& dir,
                                    std::string* error) {
  SandboxPlan plan;
  plan.command = options.command;
  plan.identity = identity;
  plan.report_leftovers = options.level >= config::LogLevel::kInfo;
  plan.same_user = options.user.empty() && !UnderSudo(invoker);
  plan.cwd = fs::current_path().string();
  {
    std::vector<std::string> caller;
    for (char** e = environ; *e; ++e) caller.emplace_back(*e);
    plan.environment =
        plan.same_user ? caller
                       : ProgramEnvironment(caller, identity.name, identity.home, identity.shell);
  }
  plan.resolv_conf = WriteFile(fs::path(dir) / "resolv.conf", SandboxResolvConf());
  plan.nsswitch =
      WriteFile(fs::path(dir) / "nsswitch.conf", SandboxNsswitch(ReadFile("/etc/nsswitch.conf")));
  if (plan.resolv_conf.empty() || plan.nsswitch.empty()) {
    *error = ErrnoText("cannot write the sandbox's resolv.conf and nsswitch.conf in " + dir);
    return std::nullopt;
  }
  return plan;
}

// Both sides of the sandbox's network. Destroyed in reverse: the link goes
// first, as it did when both were locals of Run.
struct Network {
  std::unique_ptr<netns::Interception> interception;
  std::unique_ptr<netns::SandboxLink> link;
};

// Sets up the network of the sandbox whose network namespace `netns_fd`
// refers to, starting the guardian before the first change on this side.
// False once it has logged why not.
bool SetUpNetwork(const RunOptions& options, const config::Config& cfg, Stack& stack, StackIo& io,
                  int netns_fd, const config::Log& log,
                  std::chrono::steady_clock::time_point started, Network* network) {
  // The two halves of the setup touch different namespaces and each waits
  // on the kernel (an nftables commit takes milliseconds), so they run at
  // once: the sandbox's side on a thread inside its network namespace, the
  // caller's side (veth, NAT) here.
  std::string sandbox_error;
  std::thread sandbox_side([&] {
    std::unique_ptr<netns::Kernel> kernel = netns::LinuxKernelIn(netns_fd, &sandbox_error);
    if (!kernel) return;
    netns::InterceptionSpec spec;
    spec.network = cfg.options.private_addresses.address;
    spec.prefix_length = cfg.options.private_addresses.length;
    spec.table_name = cfg.options.nft_table;
    spec.owned = false;  // the sandbox's namespace dies with us; see InterceptionSpec
    network->interception = netns::SetUpSandboxSide(
        std::move(kernel), spec,
        [&](std::uint16_t* listener_port, std::string* listen_error) {
          resolver::DnsServer::Options dns;
          dns.address = asio::ip::make_address("127.0.0.1");
          dns.port = 53;
          dns.packet_size = cfg.options.dns_packet_size;
          if (!stack.Listen(io, dns, listen_error)) return false;
          *listener_port = stack.engine().port();
          return true;
        },
        &sandbox_error);
  });
  std::string error;
  // Before the first change to this side: a process that undoes them if
  // tunnels is killed (see StartGuardian).
  if (!options.strict &&
      !StartGuardian({"tunnels", "cleanup", "--state-dir", options.state_dir, "--run-only"},
                     &error)) {
    log.Warning("RUN", error);
  }
  netns::SandboxLinkSpec link_spec;
  link_spec.sandbox_netns_fd = netns_fd;
  link_spec.name_prefix = "tnl" + std::to_string(::getpid());
  link_spec.outbound = !options.strict;
  link_spec.table_name = "tunnels_run_" + std::to_string(::getpid());
  link_spec.state_dir = options.state_dir;
  network->link = netns::SandboxLink::Create(link_spec, &error);
  log.Debug("RUN", "link ready after " + MsSince(started));
  sandbox_side.join();
  log.Debug("RUN", "sandbox side ready after " + MsSince(started));
  if (!network->link) {
    log.Error("RUN", error);
    return false;
  }
  for (const std::string& note : network->link->notes()) log.Info("RUN", note);
  for (const std::string& warning : network->link->warnings()) log.Warning("RUN", warning);
  if (!network->interception) {
    log.Error("RUN", sandbox_error);
    return false;
  }
  return true;
}

// Blocks the signals that tunnels and init take, into `*handled`: from
// here on tunnels reads them from a signalfd, init with sigwaitinfo, and
// the program gets the original mask back. Then clones init, which waits
// for a 'g' on the pipe whose write end goes to `*go`. Its pid, or -1 once
// it has logged why not.
pid_t CloneInit(const SandboxPlan& plan, const config::Log& log, sigset_t* handled, Fd* go) {
  ::sigemptyset(handled);
  for (int sig : kForwarded) ::sigaddset(handled, sig);
  ::sigaddset(handled, SIGCHLD);
  sigset_t original_mask;
  ::sigprocmask(SIG_BLOCK, handled, &original_mask);

  int go_pipe[2];
  if (::pipe2(go_pipe, O_CLOEXEC) != 0) {
    log.Error("RUN", ErrnoText("pipe"));
    return -1;
  }
  Fd go_read(go_pipe[0]);
  *go = Fd(go_pipe[1]);
  // Like fork(), with the child in new namespaces. tunnels has no thread
  // yet, so the child may carry on in this code.
  const long child = ::syscall(SYS_clone, CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | SIGCHLD,
                               nullptr, nullptr, nullptr, 0);
  if (child < 0) {
    log.Error("RUN", ErrnoText("cannot create the sandbox's namespaces (clone)"));
    return -1;
  }
  if (child == 0) {
    go->Reset();
    SandboxInit(plan, go_read.get(), original_mask);
  }
  go_read.Reset();
  return static_cast<pid_t>(child);
}

// Serves the sandbox, whose init is `init`, until init has ended, reading
// the blocked signals from `signal_fd`; init's exit status, the program's.
int Serve(const config::Config& cfg, Stack& stack, StackIo& io, int signal_fd, pid_t init,
          ChildGuard* guard, const config::Log& log) {
  int exit_status = kSetupFailed;
  asio::posix::stream_descriptor signal_stream(io, ::fcntl(signal_fd, F_DUPFD_CLOEXEC, 0));
  asio::co_spawn(io, WatchSandbox(signal_stream, init, guard, &exit_status),
                 [&](std::exception_ptr e) {
                   if (e) log.Error("RUN", "stopped watching the sandbox on an internal error");
                   stack.Stop();
                   io.stop();
                 });
  asio::steady_timer expiry(io);
  ScheduleExpiry(
      expiry, stack.pool(),
      std::max<std::chrono::seconds>(std::chrono::seconds(1), cfg.options.address_cleanup_time / 8),
      log);
  io.run();
  io.EndPendingWork();
  return exit_status;
}

}  // namespace

int Cleanup(const std::string& state_dir) {
  std::vector<std::string> notes;
  const std::string errors = netns::CleanupStaleRuns(state_dir, &notes);
  for (const std::string& note : notes) std::cout << "tunnels cleanup: " << note << "\n";
  if (errors.empty()) return 0;
  std::cerr << "tunnels cleanup: " << errors << "\n";
  return 1;
}

int Run(const RunOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  if (options.command.empty()) {
    std::cerr << "tunnels run: no command given; usage: tunnels run [OPTIONS] -- CMD [ARGS...]\n";
    return 2;
  }
  if (const std::string missing = netns::MissingCapabilities(
          netns::EffectiveCapabilities(),
          {{CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}, {CAP_NET_ADMIN, "CAP_NET_ADMIN"}});
      !missing.empty()) {
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
  const std::optional<config::Config> loaded = LoadRunConfig(options, invoker, *identity);
  if (!loaded) return kSetupFailed;
  const config::Config& cfg = *loaded;
  const config::Log log(options.level, cfg.options.silent_log);
  LogConfigFiles(cfg, log);
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
  log.Debug("RUN", "configuration loaded after " + MsSince(started));
  if (std::string why = netns::PrepareStateDirectory(options.state_dir); !why.empty()) {
    log.Error("RUN", why);
    return kSetupFailed;
  }
  if (const std::string errors = netns::CleanupStaleRuns(options.state_dir); !errors.empty()) {
    log.Warning("RUN", "cannot undo everything a killed instance left: " + errors);
  }
  log.Debug("RUN", "stale state checked after " + MsSince(started));

  netns::RunDirectory files(options.state_dir);
  if (files.path().empty()) {
    log.Error("RUN", ErrnoText("cannot create a directory under " + options.state_dir));
    return kSetupFailed;
  }
  const std::optional<SandboxPlan> plan =
      MakePlan(options, invoker, *identity, files.path(), &error);
  if (!plan) {
    log.Error("RUN", error);
    return kSetupFailed;
  }

  sigset_t handled;
  Fd go_write;
  const pid_t init = CloneInit(*plan, log, &handled, &go_write);
  if (init < 0) return kSetupFailed;
  ChildGuard guard(init);
  auto interrupted = [&](int sig) {
    log.Error("RUN", std::string(::strsignal(sig)) +
                         " during setup: the program was not started, and what was set up "
                         "is undone");
    return 128 + sig;
  };
  if (const int sig = StopRequested(); sig != 0) return interrupted(sig);

  Fd netns(::open(("/proc/" + std::to_string(init) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  if (netns.get() < 0) {
    log.Error("RUN", ErrnoText("cannot open the sandbox's network namespace"));
    return kSetupFailed;
  }
  Network network;
  if (!SetUpNetwork(options, cfg, *stack, io, netns.get(), log, started, &network)) {
    return kSetupFailed;
  }
  // The sandbox's table goes with its namespace; Remove() would run here,
  // in the caller's.
  if (const int sig = StopRequested(); sig != 0) {
    network.interception->Abandon();
    return interrupted(sig);
  }
  RaiseFileLimit(log);

  Fd signals(::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK));
  if (signals.get() < 0) {
    log.Error("RUN", ErrnoText("signalfd"));
    return kSetupFailed;
  }
  // The last moment before the program starts.
  if (const int sig = StopRequested(); sig != 0) {
    network.interception->Abandon();
    return interrupted(sig);
  }
  stack->Start();
  if (::write(go_write.get(), "g", 1) != 1) {
    log.Error("RUN", ErrnoText("cannot start the sandbox"));
    return kSetupFailed;
  }
  go_write.Reset();
  log.Info("RUN", "sandbox ready: " + std::to_string(cfg.rules.size()) + " rules" +
                      (options.strict ? ", strict" : ""));

  const int exit_status = Serve(cfg, *stack, io, signals.get(), init, &guard, log);
  log.Debug("RUN", "program ended after " + MsSince(started));
  ended = std::chrono::steady_clock::now();
  // The sandbox's namespace goes away with its last process and our last
  // reference to it, and takes the route and table with it.
  network.interception->Abandon();
  return exit_status;
}

}  // namespace tunnels::launcher