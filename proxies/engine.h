// The proxy engine: accepts the connections that the interception sends to
// its transparent listener, turns the fake destination address back into the
// name, asks the rules what to do, and relays through the rule's proxies.
#pragma once

#include <boost/asio/io_context.hpp>
#include <map>
#include <memory>
#include <string>

#include "config/config.h"
#include "config/log.h"
#include "config/rules.h"
#include "proxies/connector.h"
#include "resolver/fake_pool.h"
#include "resolver/upstream.h"

namespace tunnels::proxies {

class Engine {
 public:
  struct Options {
    // The listener's address; connections arrive here through the nftables
    // tproxy rule, so the port is whatever the kernel chose.
    boost::asio::ip::address listen_address = boost::asio::ip::make_address("127.0.0.1");
    std::uint16_t port = 0;
    std::chrono::milliseconds connect_timeout{10000};  // per proxy tried, handshake included
  };

  // Opens the transparent listener; null with `error` set on failure. Every
  // reference must outlive the engine.
  static std::unique_ptr<Engine> Create(boost::asio::io_context& io, Options options,
                                        std::shared_ptr<const config::Config> config,
                                        std::shared_ptr<const config::RuleSet> rules,
                                        resolver::FakePool& pool, resolver::Upstream& upstream,
                                        const config::Log& log, std::string* error);
  ~Engine();

  // New connections from now on follow `config` and `rules` (a reload);
  // live ones keep the configuration and connectors they started with,
  // which are retired (Connector::Retire): an old ssh session serves its
  // channels until they end, and is not kept up or reconnected for more.
  // The answers kept for `direct` and proxy names are forgotten.
  void Update(std::shared_ptr<const config::Config> config,
              std::shared_ptr<const config::RuleSet> rules);

  std::uint16_t port() const;
  void Start();
  // Stops accepting connections; those that exist go on (a graceful stop).
  void Stop();
  // Stop(), and ends at once the connections that connectors carry on
  // threads of their own (ssh), and those threads, in every configuration
  // generation still alive: on the engine's thread, before its io_context
  // stops, so that nothing of the engine runs or waits elsewhere after.
  void Shutdown();
  std::size_t active_connections() const;
  // Those of them that are carrying bytes: past their proxy's handshake.
  // After Stop(), the others end as soon as their connector returns, and a
  // graceful stop need not wait for them (one waiting for an SSH session
  // that is down could wait for the whole connect timeout).
  std::size_t relaying_connections() const;

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tunnels::proxies
