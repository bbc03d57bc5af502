#include "launcher/system.h"

#include <sys/resource.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <iostream>
#include <sstream>

#include "config/config.h"
#include "config/rules.h"
#include "netns/interception.h"
#include "proxies/engine.h"
#include "resolver/fake_pool.h"
#include "resolver/query_handler.h"
#include "resolver/server.h"
#include "resolver/upstream.h"

namespace tunnels::launcher {
namespace {

namespace asio = boost::asio;

template <typename T>
std::string Text(const T& value) {
  std::ostringstream s;
  s << value;
  return s.str();
}

// Expires idle mappings now and then, so that memory follows use even when
// no query arrives to trigger it.
void ScheduleExpiry(asio::steady_timer& timer, resolver::FakePool& pool,
                    std::chrono::seconds every) {
  timer.expires_after(every);
  timer.async_wait([&timer, &pool, every](const boost::system::error_code& ec) {
    if (ec) return;
    pool.Expire();
    ScheduleExpiry(timer, pool, every);
  });
}

// Every relayed connection holds two sockets and two pipes; the usual soft
// limit of 1024 descriptors would cap tunnels at about 250 connections.
void RaiseFileLimit(const config::Log& log) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    log.Warning("ENGINE",
                "cannot raise the limit of open files; many connections at once may fail");
  }
}

}  // namespace

int RunSystem(const SystemOptions& options) {
  const config::LoadResult loaded = config::Load(options.paths);
  for (const auto& d : loaded.diagnostics) std::cerr << d.ToString() << "\n";
  if (!loaded.ok()) return 1;
  const config::Config& c = *loaded.config;
  const config::Options& o = c.options;
  const config::Log log(options.level, o.silent_log);

  const config::RuleSet rules(c);
  resolver::FakePool::Options pool_options;
  pool_options.network = o.private_addresses.address;
  pool_options.prefix_length = o.private_addresses.length;
  pool_options.cleanup_time = o.address_cleanup_time;
  std::string error;
  const auto pool = resolver::FakePool::Create(pool_options, &error);
  if (!pool) {
    log.Error("FAKEIP", "privateAddresses " + o.private_addresses.ToString() + ": " + error);
    return 1;
  }

  boost::system::error_code ec;
  const asio::ip::address bind_address = asio::ip::make_address(o.dns_bind_address, ec);
  resolver::Upstream::Options upstream_options;
  for (const config::Endpoint& e : o.upstream_dns) {
    const asio::ip::udp::endpoint server(asio::ip::make_address(e.host, ec), e.port);
    // Forwarding to ourselves would loop each query until it times out.
    if (o.dns_port != 0 && server.port() == o.dns_port &&
        (server.address() == bind_address ||
         (bind_address.is_unspecified() && server.address().is_loopback()))) {
      const auto where = o.origin.find("upstreamDns");
      log.Error("DNS",
                "upstream DNS server " + e.ToString() + " (from " +
                    (where != o.origin.end() ? where->second.ToString() : o.upstream_dns_origin) +
                    ") is tunnels' own address; queries would loop. Set upstreamDns "
                    "to the real DNS servers");
      return 1;
    }
    upstream_options.servers.push_back(server);
  }
  upstream_options.timeout = o.upstream_dns_timeout;
  upstream_options.try_timeout =
      std::min<std::chrono::milliseconds>(std::chrono::milliseconds(1000), o.upstream_dns_timeout);
  upstream_options.packet_size = o.dns_packet_size;

  resolver::QueryHandler::Options handler_options;
  handler_options.fake_ttl =
      static_cast<std::uint32_t>(std::max<std::int64_t>(1, o.address_cleanup_time.count() / 4));
  handler_options.packet_size = o.dns_packet_size;
  const resolver::QueryHandler handler(rules, *pool, handler_options, log);

  asio::io_context io(1);
  resolver::Upstream upstream(upstream_options, log);
  resolver::DnsServer::Options server_options;
  server_options.address = bind_address;
  server_options.port = o.dns_port;
  server_options.packet_size = o.dns_packet_size;
  const auto server =
      resolver::DnsServer::Create(io, server_options, handler, upstream, log, &error);
  if (!server) {
    log.Error("DNS", error);
    return 1;
  }
  RaiseFileLimit(log);
  proxies::Engine::Options engine_options;
  const auto engine =
      proxies::Engine::Create(io, engine_options, c, rules, *pool, upstream, log, &error);
  if (!engine) {
    log.Error("ENGINE", error);
    return 1;
  }
  // The only change to the system, made last so that every error above
  // leaves it as it was; undone when `interception` goes out of scope.
  netns::InterceptionSpec spec;
  spec.network = o.private_addresses.address;
  spec.prefix_length = o.private_addresses.length;
  spec.listener_port = engine->port();
  spec.table_name = o.iptables_chain;
  const auto interception = netns::Interception::Create(spec, &error);
  if (!interception) {
    log.Error("ENGINE", error);
    return 1;
  }
  if (o.overwrite_resolvconf) {
    log.Warning("DNS", "overwriteResolvconf is true, but this version does not change " +
                           o.resolvconf_path + " yet; point it at " + Text(server->udp_endpoint()) +
                           " yourself");
  }
  server->Start();
  engine->Start();
  log.Info("ENGINE", "intercepting tcp to " + o.private_addresses.ToString() + " (listener port " +
                         std::to_string(engine->port()) + ", nftables table " + o.iptables_chain +
                         ")");
  log.Info("DNS", "listening on udp " + Text(server->udp_endpoint()));
  log.Info("DNS", "listening on tcp " + Text(server->tcp_endpoint()));
  std::vector<std::string> upstreams;
  for (const auto& e : upstream_options.servers) upstreams.push_back(Text(e));
  std::string joined;
  for (const auto& u : upstreams) joined += (joined.empty() ? "" : ", ") + u;
  log.Info("DNS", std::to_string(rules.size()) + (rules.size() == 1 ? " rule" : " rules") +
                      "; other names go to " + joined);

  asio::steady_timer expiry(io);
  ScheduleExpiry(
      expiry, *pool,
      std::max<std::chrono::seconds>(std::chrono::seconds(1), o.address_cleanup_time / 8));
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& sec, int signal) {
    if (sec) return;
    log.Info("DNS", std::string("stopping on ") + (signal == SIGINT ? "SIGINT" : "SIGTERM"));
    server->Stop();
    engine->Stop();
    expiry.cancel();
    io.stop();
  });
  io.run();
  return 0;
}

}  // namespace tunnels::launcher
