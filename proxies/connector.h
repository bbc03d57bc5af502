// The one interface behind which every kind of upstream sits: socks5, http
// (CONNECT), ssh, direct. The engine asks a Connector for a stream to
// host:port; how it gets there is the connector's business.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/log.h"

namespace tunnels::proxies {

class NameResolver;

using Clock = std::chrono::steady_clock;

// Where a connection should go: a host name (resolved by the proxy) or an
// IP literal, and a port.
struct Target {
  std::string host;
  std::uint16_t port = 0;
  // Written by the user (a forcedAddress): its name's addresses are used
  // whatever they are, while a name a program asked for has the answers
  // that could reach this host itself refused (see RefusedAnswer).
  bool user_written = false;
  std::string ToString() const;
};

// How a relayed connection ended.
struct RelayResult {
  std::uint64_t to_server = 0;
  std::uint64_t to_client = 0;
  std::string error;  // empty when both sides ended cleanly
};

// A connected stream to the target, ready to relay.
struct Stream {
  boost::asio::ip::tcp::socket socket;
  // Bytes the proxy sent right after its handshake reply: the first bytes
  // from the target, which must reach the client first.
  std::vector<std::uint8_t> pending;
  // Set instead of `socket` by a connector that moves the bytes itself (ssh:
  // its session thread reads and writes the client's socket directly,
  // instead of through a socketpair that the engine would relay: no extra
  // copy, thread hop or descriptors per connection). Called at most once, with the
  // client's socket, which it takes over, and the connection's idle timeout
  // (zero: none); completes when the connection has ended, with the same
  // result as Relay. Destroyed uncalled, it releases what it holds.
  std::function<boost::asio::awaitable<RelayResult>(
      std::shared_ptr<boost::asio::ip::tcp::socket> client, Clock::duration idle_timeout)>
      carry;
};

class Connector {
 public:
  virtual ~Connector() = default;

  // Connects to `target` by `deadline`. On failure returns nullopt and sets
  // `error` to a sentence that names the proxy and the reason.
  virtual boost::asio::awaitable<std::optional<Stream>> Connect(const Target& target,
                                                                Clock::time_point deadline,
                                                                std::string* error) = 0;
  virtual const std::string& name() const = 0;

  // A reload replaced the configuration generation this connector belongs
  // to: it goes on serving the connections it has, and keeps nothing up
  // for new ones (an ssh session closes once no connection uses it, and is
  // not reconnected).
  virtual void Retire() {}
  // tunnels is stopping, on the engine's thread before its io_context
  // stops: ends every connection this connector carries itself
  // (Stream::carry) and every thread it runs, before returning. The
  // engine's coroutines that waited for them are then queued on the
  // engine's io_context, or destroyed.
  virtual void Stop() {}
};

// What connectors share: the resolver for names that must be resolved
// locally (a proxy's own host name, the targets of `direct`), and the
// source of $RANDOM credentials.
struct ConnectorContext {
  NameResolver& resolver;
  const config::Log& log;
  std::uint32_t random_credentials_length = 16;
  std::mt19937_64 random{std::random_device{}()};
  // What owns this context and the connectors made with it (the engine's
  // configuration generation), for work that must keep them alive while it
  // runs on another thread's behalf; empty when nothing does.
  std::weak_ptr<const void> owner{};

  // Replaces a "$RANDOM" field by a fresh random string.
  std::string Credential(const std::string& value);
};

std::unique_ptr<Connector> MakeSocks5Connector(const config::Proxy& proxy,
                                               ConnectorContext& context);
std::unique_ptr<Connector> MakeHttpConnector(const config::Proxy& proxy, ConnectorContext& context);
std::unique_ptr<Connector> MakeDirectConnector(ConnectorContext& context);

// Opens a TCP connection to host:port, resolving a name through `resolver`
// (with `check`: see NameResolver::Resolve) and trying its addresses in
// order, the next one 250 ms after the one before unless that one failed
// sooner (RFC 8305), by `deadline`. Its socket carries kEngineMark.
boost::asio::awaitable<std::optional<boost::asio::ip::tcp::socket>> ConnectTcp(
    NameResolver& resolver, const std::string& host, std::uint16_t port, Clock::time_point deadline,
    std::string* error, bool check = true);

// The mark (SO_MARK) of every socket the engine connects out with, so that
// tunnels' nftables rules never hand its own connections back to it (an
// upstream answer in the fake range, say): they refuse them instead. Must
// match netns::kEngineMark. Setting it needs CAP_NET_ADMIN; without it the
// sockets go unmarked (NameResolver's answer checks still apply).
inline constexpr std::uint32_t kEngineMark = 0x4000;

}  // namespace tunnels::proxies
