// The running parts of tunnels for one configuration: rules, fake-address
// pool, upstream forwarder, DNS server and proxy engine. Shared by
// `tunnels system` and `tunnels run`, which differ only in where the
// listening sockets are made.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/log.h"
#include "config/rules.h"
#include "proxies/engine.h"
#include "resolver/fake_pool.h"
#include "resolver/query_handler.h"
#include "resolver/server.h"
#include "resolver/upstream.h"

namespace tunnels::launcher {

// The io_context a Stack runs on. Coroutines suspended in it (a query being
// forwarded, a DNS client over TCP, a relayed connection) hold guards that
// refer to the stack's parts: a count in the DNS server, a hold on a fake
// address. ~io_context destroys them, but only after the stack, since the
// stack's sockets must be closed before the io_context goes. Calling
// EndPendingWork() once run() has returned destroys them while the stack is
// whole; the stack's sockets and timers are then closed as usual (asio
// expects objects to outlive the shutdown of their io_context's services).
class StackIo : public boost::asio::io_context {
 public:
  StackIo() : io_context(1) {}
  void EndPendingWork() { shutdown(); }
};

class Stack {
 public:
  // Builds the parts that open no socket; null with `error` set when the
  // configuration cannot run (an upstream that loops back, a bad range).
  static std::unique_ptr<Stack> Create(const config::Config& config, const config::Log& log,
                                       bool check_upstream_loop, std::string* error);

  // Opens the DNS server and the engine's listener in the calling thread's
  // network namespace. Both use `io`.
  bool Listen(boost::asio::io_context& io, const resolver::DnsServer::Options& dns,
              std::string* error);
  void Start();
  // Stops the DNS server and the engine, ending at once the connections
  // carried over ssh (Engine::Shutdown); call it before the io_context stops.
  void Stop();

  // Makes new queries and connections follow `config` (a reload); live
  // connections and every mapping stay. Returns the options that differ but
  // take effect only at a restart (the listening sockets, the fake range,
  // upstream DNS, ...), for a warning; the rest of the old values stay.
  std::vector<std::string> Reload(const config::Config& config);

  // Reload in two halves, so that the costly one (compiling the rule set)
  // can run off the I/O thread: Prepare touches no Stack state (`running`
  // is a copy of config().options taken on the I/O thread), Apply swaps.
  struct Prepared {
    std::vector<std::string> restart;
    std::shared_ptr<const config::Config> config;
    std::shared_ptr<const config::RuleSet> rules;
  };
  [[nodiscard]] static Prepared Prepare(const config::Options& running,
                                        const config::Config& config);
  void Apply(Prepared prepared);

  const config::Config& config() const { return *config_; }
  resolver::DnsServer& dns() { return *server_; }
  proxies::Engine& engine() { return *engine_; }
  resolver::FakePool& pool() { return *pool_; }
  const std::vector<boost::asio::ip::udp::endpoint>& upstream_servers() const {
    return upstream_options_.servers;
  }

 private:
  Stack(const config::Config& config, const config::Log& log);

  std::shared_ptr<const config::Config> config_;
  const config::Log& log_;
  std::shared_ptr<const config::RuleSet> rules_;
  std::unique_ptr<resolver::FakePool> pool_;
  resolver::Upstream::Options upstream_options_;
  std::unique_ptr<resolver::Upstream> upstream_;
  std::unique_ptr<resolver::QueryHandler> handler_;
  std::unique_ptr<resolver::DnsServer> server_;
  std::unique_ptr<proxies::Engine> engine_;
};

}  // namespace tunnels::launcher
