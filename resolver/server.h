// The DNS server: UDP and TCP on dnsBindAddress:dnsPort, answering through a
// QueryHandler and forwarding through an Upstream. One thread (the
// io_context's); one coroutine per TCP client and per forwarded query.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "config/log.h"
#include "resolver/query_handler.h"
#include "resolver/upstream.h"

namespace tunnels::resolver {

class DnsServer {
 public:
  struct Options {
    boost::asio::ip::address address = boost::asio::ip::make_address("127.0.0.1");
    std::uint16_t port = 53;  // 0: the kernel chooses (the same port for UDP and TCP)
    std::size_t packet_size = 65535;
    std::size_t max_tcp_clients = 256;
    std::size_t max_forwards_in_flight = 4096;
    std::chrono::seconds tcp_idle_timeout{10};
  };

  // Binds both sockets; on failure returns null and sets `error` to a
  // sentence naming the operation, the address, the system's reason and a hint.
  static std::unique_ptr<DnsServer> Create(boost::asio::io_context& io, Options options,
                                           const QueryHandler& handler, Upstream& upstream,
                                           const config::Log& log, std::string* error);
  ~DnsServer();

  boost::asio::ip::udp::endpoint udp_endpoint() const;
  boost::asio::ip::tcp::endpoint tcp_endpoint() const;

  void Start();
  void Stop();

 private:
  struct Impl;
  explicit DnsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tunnels::resolver
