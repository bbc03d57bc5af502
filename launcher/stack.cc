#include "launcher/stack.h"

#include <sstream>

#include "config/options.h"

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
  // The options that need a restart keep their running values, so that the
  // rest of tunnels (pool, sockets) and the new rules agree; the others
  // take their new ones.
  std::vector<std::string> restart;
  config::Config next = config;
  next.options = was;
  for (const config::MainOption& option : config::MainOptions()) {
    if (option.reload == config::Reload::kApplied) {
      option.copy(next.options, now);
    } else if (!option.same(was, now)) {
      restart.emplace_back(option.key);
    }
  }
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
