#include "launcher/stack.h"

#include <sstream>

namespace tunnels::launcher {

namespace asio = boost::asio;

Stack::Stack(const config::Config& config, const config::Log& log)
    : config_(std::make_shared<const config::Config>(config)),
      log_(log),
      rules_(std::make_shared<const config::RuleSet>(*config_)) {}

std::unique_ptr<Stack> Stack::Create(const config::Config& config, const config::Log& log,
                                     bool check_upstream_loop, std::string* error) {
  std::unique_ptr<Stack> s(new Stack(config, log));
  const config::Options& o = s->config_->options;
  resolver::FakePool::Options pool_options;
  pool_options.network = o.private_addresses.address;
  pool_options.prefix_length = o.private_addresses.length;
  pool_options.cleanup_time = o.address_cleanup_time;
  // As the query handler answers (below): addressCleanupTime / 4, at least 1 s.
  pool_options.answer_ttl =
      std::max<resolver::FakePool::Duration>(std::chrono::seconds(1), o.address_cleanup_time / 4);
  std::string pool_error;
  s->pool_ = resolver::FakePool::Create(pool_options, &pool_error);
  if (!s->pool_) {
    *error = "privateAddresses " + o.private_addresses.ToString() + ": " + pool_error;
    return nullptr;
  }

  boost::system::error_code ec;
  const asio::ip::address bind_address = asio::ip::make_address(o.dns_bind_address, ec);
  for (const config::Endpoint& e : o.upstream_dns) {
    const asio::ip::udp::endpoint server(asio::ip::make_address(e.host, ec), e.port);
    // Forwarding to ourselves would loop each query until it times out.
    if (check_upstream_loop && o.dns_port != 0 && server.port() == o.dns_port &&
        (server.address() == bind_address ||
         (bind_address.is_unspecified() && server.address().is_loopback()))) {
      const auto where = o.origin.find("upstreamDns");
      *error = "upstream DNS server " + e.ToString() + " (from " +
               (where != o.origin.end() ? where->second.ToString() : o.upstream_dns_origin) +
               ") is tunnels' own address; queries would loop. Set upstreamDns to the real DNS "
               "servers";
      return nullptr;
    }
    s->upstream_options_.servers.push_back(server);
  }
  s->upstream_options_.timeout = o.upstream_dns_timeout;
  s->upstream_options_.try_timeout =
      std::min<std::chrono::milliseconds>(std::chrono::milliseconds(1000), o.upstream_dns_timeout);
  s->upstream_options_.packet_size = o.dns_packet_size;
  s->upstream_ = std::make_unique<resolver::Upstream>(s->upstream_options_, log);

  resolver::QueryHandler::Options handler_options;
  handler_options.fake_ttl =
      static_cast<std::uint32_t>(std::max<std::int64_t>(1, o.address_cleanup_time.count() / 4));
  handler_options.packet_size = o.dns_packet_size;
  s->handler_ =
      std::make_unique<resolver::QueryHandler>(*s->rules_, *s->pool_, handler_options, log);
  s->handler_->SetRules(s->rules_);
  return s;
}

bool Stack::Listen(asio::io_context& io, const resolver::DnsServer::Options& dns,
                   std::string* error) {
  server_ = resolver::DnsServer::Create(io, dns, *handler_, *upstream_, log_, error);
  if (!server_) return false;
  engine_ = proxies::Engine::Create(io, proxies::Engine::Options{}, config_, rules_, *pool_,
                                    *upstream_, log_, error);
  return engine_ != nullptr;
}

std::vector<std::string> Stack::Reload(const config::Config& config) {
  Prepared prepared = Prepare(config_->options, config);
  std::vector<std::string> restart = std::move(prepared.restart);
  Apply(std::move(prepared));
  return restart;
}

Stack::Prepared Stack::Prepare(const config::Options& running, const config::Config& config) {
  const config::Options& was = running;
  const config::Options& now = config.options;
  std::vector<std::string> restart;
  auto differs = [&](const char* name, bool changed) {
    if (changed) restart.push_back(name);
  };
  differs("upstreamDns", was.upstream_dns != now.upstream_dns);
  differs("privateAddresses", was.private_addresses.ToString() != now.private_addresses.ToString());
  differs("silentLog", was.silent_log != now.silent_log);
  differs("addressCleanupTime", was.address_cleanup_time != now.address_cleanup_time);
  differs("dnsBindAddress", was.dns_bind_address != now.dns_bind_address);
  differs("dnsPort", was.dns_port != now.dns_port);
  differs("overwriteResolvconf", was.overwrite_resolvconf != now.overwrite_resolvconf);
  differs("restoreResolvConf", was.restore_resolvconf != now.restore_resolvconf);
  differs("makeResolvconfImmutable",
          was.make_resolvconf_immutable != now.make_resolvconf_immutable);
  differs("resolvconfPath", was.resolvconf_path != now.resolvconf_path);
  differs("resolvconfBackupPath", was.resolvconf_backup_path != now.resolvconf_backup_path);
  differs("dnsPacketSize", was.dns_packet_size != now.dns_packet_size);
  differs("upstreamDnsTimeout", was.upstream_dns_timeout != now.upstream_dns_timeout);
  differs("iptablesChain", was.nft_table != now.nft_table);
  differs("stateDirectory", was.state_directory != now.state_directory);

  // The options that need a restart keep their running values, so that the
  // rest of tunnels (pool, sockets) and the new rules agree.
  config::Config next = config;
  next.options = was;
  next.options.block_undefined_domains = now.block_undefined_domains;
  next.options.random_credentials_length = now.random_credentials_length;
  next.options.connection_idle_timeout = now.connection_idle_timeout;
  next.options.allow_private_answers = now.allow_private_answers;
  next.options.max_connections_per_source = now.max_connections_per_source;
  next.options.temporary_bind_port_first = now.temporary_bind_port_first;
  next.options.temporary_bind_port_last = now.temporary_bind_port_last;
  auto next_config = std::make_shared<const config::Config>(std::move(next));
  auto next_rules = std::make_shared<const config::RuleSet>(*next_config);
  return Prepared{std::move(restart), std::move(next_config), std::move(next_rules)};
}

void Stack::Apply(Prepared prepared) {
  handler_->SetRules(prepared.rules);
  if (engine_) engine_->Update(prepared.config, prepared.rules);
  config_ = std::move(prepared.config);
  rules_ = std::move(prepared.rules);
}

void Stack::Start() {
  server_->Start();
  engine_->Start();
}

void Stack::Stop() {
  if (server_) server_->Stop();
  // Shutdown, not Stop: an ssh session's thread holds the coroutines of the
  // connections it carries, and with them their configuration generation
  // and itself; only ending them here lets them go before the stack does.
  if (engine_) engine_->Shutdown();
}

}  // namespace tunnels::launcher
