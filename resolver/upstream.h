// Forwards queries for names without a rule to the upstream DNS servers.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/udp.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "config/log.h"
#include "resolver/query_handler.h"

namespace tunnels::resolver {

class Upstream {
 public:
  struct Options {
    std::vector<boost::asio::ip::udp::endpoint> servers;
    std::chrono::milliseconds timeout{5000};      // upstreamDnsTimeout, for all tries
    std::chrono::milliseconds try_timeout{1000};  // one server's chance
    std::size_t packet_size = 65535;              // dnsPacketSize
  };
  Upstream(Options options, const config::Log& log);

  // The reply of an upstream server to `query`, carrying the query's own ID,
  // or nullopt when no server answered in time. Each try uses a fresh socket
  // (a fresh source port) and a random ID, and accepts only a reply from the
  // server asked, with that ID and the same question, so that an off-path
  // attacker has to guess both. A query that came over TCP goes over TCP.
  boost::asio::awaitable<std::optional<std::vector<std::uint8_t>>> Forward(
      std::vector<std::uint8_t> query, Transport transport);

 private:
  boost::asio::awaitable<std::optional<std::vector<std::uint8_t>>> TryUdp(
      const boost::asio::ip::udp::endpoint& server, const std::vector<std::uint8_t>& query,
      std::chrono::steady_clock::time_point deadline);
  boost::asio::awaitable<std::optional<std::vector<std::uint8_t>>> TryTcp(
      const boost::asio::ip::udp::endpoint& server, const std::vector<std::uint8_t>& query,
      std::chrono::steady_clock::time_point deadline);

  Options options_;
  const config::Log& log_;
  // Used from the server's one thread only.
  std::mt19937_64 random_;
  // Where UDP replies land before they are checked and copied out at their
  // size (dnsPacketSize bytes, allocated once rather than per query).
  std::vector<std::uint8_t> receive_buffer_;
};

}  // namespace tunnels::resolver
