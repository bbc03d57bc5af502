// Copies bytes both ways between a client and a server until both sides are
// done, keeping half-closes (a client that shuts down its write side still
// gets the whole answer) and turning a reset on one side into a reset on the
// other.
#pragma once

#include "proxies/connector.h"

namespace tunnels::proxies {

struct RelayResult {
  std::uint64_t to_server = 0;
  std::uint64_t to_client = 0;
  std::string error;  // empty when both sides ended cleanly
};

// `pending` is sent to the client first. The bytes move with splice(2)
// through a pipe per direction, so they never enter user space. A direction
// holds its pipe only while bytes are in it (empty pipes go back to a
// per-thread pool), so an idle connection costs its two sockets and no pipe;
// a direction that carries a bulk transfer asks for a 1 MiB pipe.
// `server_reset` (Stream::reset), when set at the server's end of stream,
// turns that end into a reset of the client.
boost::asio::awaitable<RelayResult> Relay(
    std::shared_ptr<boost::asio::ip::tcp::socket> client,
    std::shared_ptr<boost::asio::ip::tcp::socket> server, std::vector<std::uint8_t> pending,
    std::shared_ptr<const std::atomic<bool>> server_reset = nullptr);

}  // namespace tunnels::proxies
