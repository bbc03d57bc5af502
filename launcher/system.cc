#include "launcher/system.h"

#include <linux/capability.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <sstream>
#include <thread>

#include "config/config.h"
#include "launcher/guardian.h"
#include "launcher/mappings_file.h"
#include "launcher/privilege.h"
#include "launcher/stack.h"
#include "netns/interception.h"
#include "netns/journal.h"
#include "netns/kernel.h"
#include "netns/resolv_conf.h"

namespace tunnels::launcher {
namespace {

namespace asio = boost::asio;

// How long live connections may take to finish after SIGTERM or SIGINT.
constexpr std::chrono::seconds kDrainTime{10};
// How often the mappings are saved (when they changed).
constexpr std::chrono::seconds kSaveEvery{10};

template <typename T>
std::string Text(const T& value) {
  std::ostringstream s;
  s << value;
  return s.str();
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Whether this process has CAP_NET_ADMIN in its effective set.
bool HasNetAdmin() {
  const std::optional<std::uint64_t> effective = netns::EffectiveCapabilities();
  // Unknown: let the kernel decide later.
  return !effective ||
         netns::MissingCapabilities(effective, {{CAP_NET_ADMIN, "CAP_NET_ADMIN"}}).empty();
}

// Where the upstream DNS servers come from when no file sets upstreamDns:
// once tunnels has taken resolv.conf over, the original is the backup.
config::LoadOptions LoadOptionsFor(const config::Options& o) {
  config::LoadOptions l;
  l.system_resolv_conf = o.overwrite_resolvconf && Exists(o.resolvconf_backup_path)
                             ? o.resolvconf_backup_path
                             : o.resolvconf_path;
  return l;
}

// Undoes journal entries with the real kernel, opened only when there is
// something to undo (so that a cleanup with nothing to do needs no
// privileges).
class LazySystemUndoer : public netns::Undoer {
 public:
  std::string Undo(const netns::JournalEntry& entry) override {
    if (!undoer_) {
      std::string error;
      kernel_ = netns::LinuxKernel(&error);
      if (!kernel_) return error;
      undoer_ = std::make_unique<netns::SystemUndoer>(*kernel_);
    }
    return undoer_->Undo(entry);
  }

 private:
  std::unique_ptr<netns::Kernel> kernel_;
  std::unique_ptr<netns::SystemUndoer> undoer_;
};

// Each of these loops ends when its timer or signal set is cancelled (or
// the io_context goes); their errors are redirected, not thrown.

// Saves the mappings every kSaveEvery (Save writes only what changed).
asio::awaitable<void> SavePeriodically(asio::steady_timer& timer, MappingsStore& saver) {
  for (;;) {
    boost::system::error_code ec;
    timer.expires_after(kSaveEvery);
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
    saver.Save();
  }
}

asio::awaitable<void> ExpirePeriodically(asio::steady_timer& timer, resolver::FakePool& pool,
                                         std::chrono::seconds every) {
  for (;;) {
    boost::system::error_code ec;
    timer.expires_after(every);
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
    pool.Expire();
  }
}

// Everything tunnels system changed, undone in reverse order; "" or the
// failures. Safe to call more than once.
struct Changes {
  netns::Journal* journal = nullptr;
  std::unique_ptr<netns::Interception> interception;
  bool resolv_conf = false;  // taken over, to be restored
  std::string resolv_conf_path, resolv_conf_backup;

  std::string RestoreResolvConf() {
    if (!resolv_conf) return "";
    std::string why = netns::RestoreResolvConf(resolv_conf_path, resolv_conf_backup);
    if (why.empty()) resolv_conf = false;
    return why;
  }

  std::string UndoAll() {
    std::string errors = RestoreResolvConf();
    if (interception) {
      const std::string why = interception->Remove();
      if (!why.empty()) errors += (errors.empty() ? "" : "; ") + why;
      interception.reset();
    }
    if (errors.empty() && journal != nullptr) journal->Finish();
    return errors;
  }
};

}  // namespace

void SpawnLogged(asio::io_context& io, asio::awaitable<void> task, const config::Log& log,
                 const std::string& module) {
  asio::co_spawn(io, std::move(task), [&log, module](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log.Error(module, std::string("a background task ended on an internal error: ") + ex.what());
    }
  });
}

void ScheduleExpiry(asio::steady_timer& timer, resolver::FakePool& pool, std::chrono::seconds every,
                    const config::Log& log) {
  auto& io = static_cast<asio::io_context&>(timer.get_executor().context());
  SpawnLogged(io, ExpirePeriodically(timer, pool, every), log, "DNS");
}

void RaiseFileLimit(const config::Log& log) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    log.Warning("ENGINE",
                "cannot raise the limit of open files; many connections at once may fail");
  }
}

int CleanupSystem(const std::string& state_dir, const std::string& resolv_conf,
                  const std::string& backup, bool forget, bool journal_only) {
  LazySystemUndoer undoer;
  std::vector<std::string> notes;
  struct stat st {};
  const std::string journal = state_dir + "/" + netns::kSystemJournalName;
  const bool had_journal = ::stat(journal.c_str(), &st) == 0;
  const std::string errors =
      netns::Journal::CleanupStale(state_dir, netns::kSystemJournalName, undoer, &notes, forget);
  for (const std::string& note : notes) std::cout << "tunnels cleanup: " << note << "\n";
  if (!errors.empty()) {
    std::cerr << "tunnels cleanup: " << errors << "\n";
    return 1;
  }
  // A journal still there belongs to a running instance (or failed above).
  // Gone, it cannot say what to undo; tunnels' resolv.conf beside its
  // backup says it well enough, and a machine without DNS is the worst a
  // lost journal leaves behind. Not after --forget dropped one: what it
  // could not undo is the user's now.
  if (!journal_only && !had_journal && ::stat(journal.c_str(), &st) != 0 && errno == ENOENT &&
      netns::IsTunnelsResolvConf(resolv_conf) && ::lstat(backup.c_str(), &st) == 0) {
    if (std::string why = netns::RestoreResolvConf(resolv_conf, backup); !why.empty()) {
      std::cerr << "tunnels cleanup: " << why << "\n";
      return 1;
    }
    std::cout << "tunnels cleanup: put " << resolv_conf << " back from " << backup
              << " (tunnels' own was left there with no journal, as after a reboot)\n";
  }
  return 0;
}

int RunSystem(const SystemOptions& options) {
  // Under sudo, the configuration (at start and at every SIGHUP) is read
  // with the rights of the user who ran sudo, as `tunnels run` reads it.
  const Identity invoker = FindInvoker();
  config::LoadResult loaded = LoadAsInvoker(invoker, options.paths);
  for (const auto& d : loaded.diagnostics) std::cerr << d.ToString() << "\n";
  if (!loaded.ok()) return 1;
  const config::Log log(options.level, loaded.config->options.silent_log, 2,
                        !config::StderrIsJournal());

  // Up front: without it, the first change would fail half way.
  if (!HasNetAdmin()) {
    log.Error("SYSTEM",
              "tunnels system needs CAP_NET_ADMIN to add its route and nftables table: run it "
              "as root; nothing was changed");
    return 1;
  }

  // Once tunnels has taken resolv.conf over (or a killed instance left it
  // so), the original, and with it the upstream servers, is the backup.
  if (!loaded.config->options.upstream_dns_origin.empty() &&
      LoadOptionsFor(loaded.config->options).system_resolv_conf !=
          loaded.config->options.resolvconf_path) {
    loaded = LoadAsInvoker(invoker, options.paths, LoadOptionsFor(loaded.config->options));
    if (!loaded.ok()) {
      for (const auto& d : loaded.diagnostics) std::cerr << d.ToString() << "\n";
      return 1;
    }
  }
  const config::Options o = loaded.config->options;
  std::string error;

  // A write to a connection whose other end is gone (splice into a reset
  // client, or an ssh channel's write into a client that reset) must
  // fail that connection with EPIPE, not kill tunnels with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  // Before the stack: its sockets must be closed before the io_context goes.
  StackIo io;
  // Taken over before the first change: from here on SIGINT, SIGTERM and
  // SIGHUP are queued for the handlers below instead of killing tunnels
  // halfway through its setup, with its route and resolv.conf in place.
  asio::signal_set hangup(io, SIGHUP);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  const auto stack = Stack::Create(*loaded.config, log, /*check_upstream_loop=*/true, &error);
  if (!stack) {
    log.Error("DNS", error);
    return 1;
  }
  boost::system::error_code ec;
  resolver::DnsServer::Options dns;
  dns.address = asio::ip::make_address(o.dns_bind_address, ec);
  dns.port = o.dns_port;
  dns.packet_size = o.dns_packet_size;
  if (!stack->Listen(io, dns, &error)) {
    log.Error("DNS", error);
    return 1;
  }
  // The journal before the first change: it says what a killed instance
  // left, which is undone first, and records each change before it is made.
  const std::string state_dir = o.state_directory;
  const auto journal = netns::Journal::Open(state_dir, netns::kSystemJournalName, &error);
  if (!journal) {
    log.Error("SYSTEM", error);
    return 1;
  }
  // What this start will change, each journaled before it is made.
  const netns::JournalEntry table_entry{"nft-table", {{"name", o.nft_table}}};
  const netns::JournalEntry route_entry{"route", {{"network", o.private_addresses.ToString()}}};
  const netns::JournalEntry resolv_conf_entry{
      "resolvconf", {{"path", o.resolvconf_path}, {"backup", o.resolvconf_backup_path}}};
  const bool takes_resolv_conf = o.overwrite_resolvconf && o.dns_port == 53;
  {
    LazySystemUndoer undoer;
    std::vector<std::string> notes;
    const std::string errors = journal->UndoLeftovers(undoer, &notes);
    for (const std::string& note : notes)
      log.Info("SYSTEM", "earlier instance's leftover: " + note);
    if (!errors.empty()) {
      // Left by an instance that was killed or whose own undo failed. Only
      // what this configuration would touch again blocks the start.
      std::vector<netns::JournalEntry> planned = {table_entry, route_entry};
      if (takes_resolv_conf) planned.push_back(resolv_conf_entry);
      bool blocking = false;
      for (const auto& left : journal->leftovers()) {
        for (const auto& mine : planned) blocking = blocking || netns::Overlaps(left, mine);
      }
      const std::string hint =
          "; fix that, then run `tunnels cleanup` (or `tunnels cleanup "
          "--forget` to drop the journal " +
          journal->path() + ")";
      if (blocking) {
        log.Error("SYSTEM",
                  "cannot undo what an earlier instance left, which this configuration would "
                  "change again: " +
                      errors + hint);
        return 1;
      }
      log.Warning("SYSTEM",
                  "cannot undo what an earlier instance left (this configuration "
                  "does not touch it, so tunnels starts): " +
                      errors + hint);
    }
  }
  // Started by hand, not by the unit (whose ExecStopPost runs cleanup, and
  // which systemd marks with INVOCATION_ID): a guardian undoes the journal
  // once this process has ended, even by SIGKILL. Only this state
  // directory's journal: see StartGuardian.
  if (std::getenv("INVOCATION_ID") == nullptr &&
      !StartGuardian({"tunnels", "cleanup", "--state-dir", state_dir, "--system-only"}, &error)) {
    log.Warning("SYSTEM", error);
  }
  MappingsStore saver(state_dir, o.private_addresses.ToString(), stack->pool(), log);
  saver.Load();
  RaiseFileLimit(log);

  // The changes to the system, last, so that every error above leaves it
  // as it was; each one journaled before it is made.
  Changes changes;
  changes.journal = journal.get();
  auto fail = [&](const std::string& module, const std::string& message) {
    log.Error(module, message);
    if (std::string errors = changes.UndoAll(); !errors.empty()) {
      log.Error("SYSTEM", "undoing the changes made so far failed too: " + errors +
                              "; run `tunnels cleanup` once that is fixed");
    }
    return 1;
  };
  netns::InterceptionSpec spec;
  spec.network = o.private_addresses.address;
  spec.prefix_length = o.private_addresses.length;
  spec.listener_port = stack->engine().port();
  spec.table_name = o.nft_table;
  if (!journal->Record(table_entry, &error) || !journal->Record(route_entry, &error)) {
    return fail("SYSTEM", error);
  }
  changes.interception = netns::Interception::Create(spec, &error);
  if (!changes.interception) return fail("ENGINE", error);
  for (const std::string& note : changes.interception->replaced()) log.Info("ENGINE", note);

  if (o.overwrite_resolvconf && o.dns_port != 53) {
    log.Warning("DNS", "resolv.conf cannot name a port other than 53, so " + o.resolvconf_path +
                           " stays as it is (dnsPort is " + std::to_string(o.dns_port) +
                           "); point programs at " + Text(stack->dns().udp_endpoint()) +
                           " yourself");
  } else if (o.overwrite_resolvconf) {
    if (o.restore_resolvconf && !journal->Record(resolv_conf_entry, &error)) {
      return fail("SYSTEM", error);
    }
    std::vector<std::string> warnings;
    bool reused_backup = false;
    changes.resolv_conf = o.restore_resolvconf;
    changes.resolv_conf_path = o.resolvconf_path;
    changes.resolv_conf_backup = o.resolvconf_backup_path;
    if (!netns::TakeOverResolvConf(
            o.resolvconf_path, o.resolvconf_backup_path,
            netns::ResolvConfContent(o.dns_bind_address, o.resolvconf_backup_path),
            o.make_resolvconf_immutable, &error, &warnings, &reused_backup)) {
      return fail("DNS", error);
    }
    for (const std::string& w : warnings) log.Warning("DNS", w);
    log.Info("DNS", o.resolvconf_path + " now points at " + o.dns_bind_address +
                        (reused_backup ? "; kept the backup an earlier run left in "
                                       : "; the original is in ") +
                        o.resolvconf_backup_path);
  }

  stack->Start();
  log.Info("ENGINE", "intercepting tcp to " + o.private_addresses.ToString() + " (listener port " +
                         std::to_string(stack->engine().port()) + ", nftables table " +
                         o.nft_table + ")");
  log.Info("DNS", "listening on udp " + Text(stack->dns().udp_endpoint()));
  log.Info("DNS", "listening on tcp " + Text(stack->dns().tcp_endpoint()));
  std::string joined;
  for (const auto& u : stack->upstream_servers()) joined += (joined.empty() ? "" : ", ") + Text(u);
  const std::size_t rules = loaded.config->rules.size();
  log.Info("DNS", std::to_string(rules) + (rules == 1 ? " rule" : " rules") +
                      "; other names go to " + joined);

  asio::steady_timer expiry(io);
  ScheduleExpiry(
      expiry, stack->pool(),
      std::max<std::chrono::seconds>(std::chrono::seconds(1), o.address_cleanup_time / 8), log);
  asio::steady_timer save(io);
  SpawnLogged(io, SavePeriodically(save, saver), log, "SYSTEM");

  // SIGHUP: the same files again; only a valid configuration replaces the
  // running one. The files are read and compiled on a thread of their own
  // (a large configuration took seconds) while the running generation keeps
  // serving DNS and connections; the result is applied on the I/O thread.
  // A SIGHUP during a reload is coalesced into one more reload after it.
  bool reloading = false;
  bool reload_again = false;
  std::jthread reader;  // joined before `io` and `stack` go (declared after them)
  std::function<void()> start_reload;
  // `prepared` is set when `next` is ok: compiled on the reading thread.
  auto apply = [&](const config::LoadResult& next, Stack::Prepared* prepared) {
    for (const auto& d : next.diagnostics) {
      log.Write("CONFIG",
                d.severity == config::Severity::kError ? config::LogLevel::kError
                                                       : config::LogLevel::kWarning,
                d.ToString());
    }
    if (!next.ok()) {
      log.Error("CONFIG",
                "the new configuration has errors and was not applied; the running "
                "one stays");
      return;
    }
    const std::vector<std::string> restart = prepared->restart;
    stack->Apply(std::move(*prepared));
    if (!restart.empty()) {
      std::string names;
      for (const auto& n : restart) names += (names.empty() ? "" : ", ") + n;
      log.Warning("CONFIG", "changed options that take effect at a restart only: " + names);
    }
    const std::size_t n = next.config->rules.size();
    log.Info("CONFIG", "reloaded: " + std::to_string(n) + (n == 1 ? " rule" : " rules") +
                           " for new queries and connections; live connections keep theirs");
  };
  start_reload = [&] {
    reloading = true;
    if (reader.joinable()) reader.join();  // finished: it posted its result
    reader = std::jthread([&io, &apply, &reloading, &reload_again, &start_reload, &invoker,
                           paths = options.paths, running = stack->config().options,
                           load_options = LoadOptionsFor(stack->config().options)] {
      auto next = std::make_shared<config::LoadResult>(LoadAsInvoker(invoker, paths, load_options));
      auto prepared = std::make_shared<Stack::Prepared>();
      if (next->ok()) *prepared = Stack::Prepare(running, *next->config);
      asio::post(io, [next, prepared, &apply, &reloading, &reload_again, &start_reload] {
        apply(*next, prepared.get());
        next->config.reset();
        prepared->config.reset();
        prepared->rules.reset();
        // The old generation's rules are freed by now; give a large
        // configuration's memory back to the system.
        ::malloc_trim(0);
        reloading = false;
        if (reload_again) {
          reload_again = false;
          start_reload();
        }
      });
    });
  };
  auto wait_for_hangups = [&]() -> asio::awaitable<void> {
    for (;;) {
      boost::system::error_code sec;
      co_await hangup.async_wait(asio::redirect_error(asio::use_awaitable, sec));
      if (sec) co_return;
      if (reloading) {
        log.Info("CONFIG", "SIGHUP during a reload: reading once more when it ends");
        reload_again = true;
      } else {
        log.Info("CONFIG", "SIGHUP: reading the configuration again");
        start_reload();
      }
    }
  };
  SpawnLogged(io, wait_for_hangups(), log, "CONFIG");

  // SIGTERM, SIGINT: stop accepting, give live connections kDrainTime to
  // finish; a second signal stops at once.
  asio::steady_timer drain(io);
  auto stop_now = [&] {
    stack->Stop();
    expiry.cancel();
    save.cancel();
    drain.cancel();
    hangup.cancel();
    signals.cancel();
    io.stop();
  };
  // A second signal while draining stops at once.
  auto wait_for_second = [&]() -> asio::awaitable<void> {
    boost::system::error_code again;
    co_await signals.async_wait(asio::redirect_error(asio::use_awaitable, again));
    if (!again) stop_now();
  };
  auto wait_for_stop = [&]() -> asio::awaitable<void> {
    boost::system::error_code sec;
    const int signal = co_await signals.async_wait(asio::redirect_error(asio::use_awaitable, sec));
    if (sec) co_return;
    const std::size_t live = stack->engine().relaying_connections();
    log.Info("DNS", std::string("stopping on ") + (signal == SIGINT ? "SIGINT" : "SIGTERM") +
                        (live == 0 ? std::string()
                                   : "; waiting up to " + std::to_string(kDrainTime.count()) +
                                         " s for " + std::to_string(live) + " live connections"));
    stack->engine().Stop();
    // Programs get the real DNS servers back at once, not after the drain.
    if (std::string why = changes.RestoreResolvConf(); !why.empty()) log.Error("DNS", why);
    const auto drain_until = std::chrono::steady_clock::now() + kDrainTime;
    SpawnLogged(io, wait_for_second(), log, "SYSTEM");
    // Connections still connecting are not waited for: see
    // Engine::relaying_connections.
    while (stack->engine().relaying_connections() != 0 &&
           std::chrono::steady_clock::now() < drain_until) {
      boost::system::error_code dec;
      drain.expires_after(std::chrono::milliseconds(50));
      co_await drain.async_wait(asio::redirect_error(asio::use_awaitable, dec));
      if (dec) co_return;
    }
    const std::size_t left = stack->engine().relaying_connections();
    if (left > 0) log.Info("ENGINE", "ending " + std::to_string(left) + " live connections");
    stop_now();
  };
  SpawnLogged(io, wait_for_stop(), log, "SYSTEM");
  io.run();
  io.EndPendingWork();

  saver.Save();
  if (std::string errors = changes.UndoAll(); !errors.empty()) {
    log.Error("SYSTEM", "cannot undo every change: " + errors + "; the journal " + journal->path() +
                            " keeps them for `tunnels cleanup`");
    return 1;
  }
  log.Info("SYSTEM", "stopped; every change undone");
  return 0;
}

}  // namespace tunnels::launcher
