#include "launcher/system.h"

#include <sys/resource.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <iostream>
#include <sstream>

#include "config/config.h"
#include "launcher/stack.h"
#include "netns/interception.h"

namespace tunnels::launcher {
namespace {

namespace asio = boost::asio;

template <typename T>
std::string Text(const T& value) {
  std::ostringstream s;
  s << value;
  return s.str();
}

}  // namespace

void ScheduleExpiry(asio::steady_timer& timer, resolver::FakePool& pool,
                    std::chrono::seconds every) {
  timer.expires_after(every);
  timer.async_wait([&timer, &pool, every](const boost::system::error_code& ec) {
    if (ec) return;
    pool.Expire();
    ScheduleExpiry(timer, pool, every);
  });
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

int RunSystem(const SystemOptions& options) {
  const config::LoadResult loaded = config::Load(options.paths);
  for (const auto& d : loaded.diagnostics) std::cerr << d.ToString() << "\n";
  if (!loaded.ok()) return 1;
  const config::Options& o = loaded.config->options;
  const config::Log log(options.level, o.silent_log);

  // A write to a connection whose other end is gone (splice into a reset
  // client, or into a channel's socketpair that its ssh session closed) must
  // fail that connection with EPIPE, not kill tunnels with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  // Before the stack: its sockets must be closed before the io_context goes.
  asio::io_context io(1);
  std::string error;
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
  RaiseFileLimit(log);
  // The only change to the system, made last so that every error above
  // leaves it as it was; undone when `interception` goes out of scope.
  netns::InterceptionSpec spec;
  spec.network = o.private_addresses.address;
  spec.prefix_length = o.private_addresses.length;
  spec.listener_port = stack->engine().port();
  spec.table_name = o.iptables_chain;
  const auto interception = netns::Interception::Create(spec, &error);
  if (!interception) {
    log.Error("ENGINE", error);
    return 1;
  }
  if (o.overwrite_resolvconf) {
    log.Warning("DNS", "overwriteResolvconf is true, but this version does not change " +
                           o.resolvconf_path + " yet; point it at " +
                           Text(stack->dns().udp_endpoint()) + " yourself");
  }
  stack->Start();
  log.Info("ENGINE", "intercepting tcp to " + o.private_addresses.ToString() + " (listener port " +
                         std::to_string(stack->engine().port()) + ", nftables table " +
                         o.iptables_chain + ")");
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
      std::max<std::chrono::seconds>(std::chrono::seconds(1), o.address_cleanup_time / 8));
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& sec, int signal) {
    if (sec) return;
    log.Info("DNS", std::string("stopping on ") + (signal == SIGINT ? "SIGINT" : "SIGTERM"));
    stack->Stop();
    expiry.cancel();
    io.stop();
  });
  io.run();
  return 0;
}

}  // namespace tunnels::launcher
