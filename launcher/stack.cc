#include "launcher/stack.h"

#include <sstream>

namespace tunnels::launcher {

namespace asio = boost::asio;

Stack::Stack(const config::Config& config, const config::Log& log)
    : config_(config), log_(log), rules_(config_) {}

std::unique_ptr<Stack> Stack::Create(const config::Config& config, const config::Log& log,
                                     bool check_upstream_loop, std::string* error) {
  std::unique_ptr<Stack> s(new Stack(config, log));
  const config::Options& o = s->config_.options;
  resolver::FakePool::Options pool_options;
  pool_options.network = o.private_addresses.address;
  pool_options.prefix_length = o.private_addresses.length;
  pool_options.cleanup_time = o.address_cleanup_time;
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
      std::make_unique<resolver::QueryHandler>(s->rules_, *s->pool_, handler_options, log);
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

void Stack::Start() {
  server_->Start();
  engine_->Start();
}

void Stack::Stop() {
  if (server_) server_->Stop();
  if (engine_) engine_->Stop();
}

}  // namespace tunnels::launcher
