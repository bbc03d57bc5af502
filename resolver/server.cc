#include "resolver/server.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <sstream>

#include "resolver/deadline.h"
#include "resolver/dns_message.h"

namespace tunnels::resolver {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using asio::ip::udp;
using Bytes = std::vector<std::uint8_t>;

template <typename Endpoint>
std::string Text(const Endpoint& e) {
  std::ostringstream s;
  s << e;
  return s.str();
}

// The reply when no upstream server answered: SERVFAIL for the same question.
std::optional<Bytes> ServFail(std::span<const std::uint8_t> query, std::size_t max_size) {
  const QueryParseResult parsed = ParseQuery(query);
  if (!parsed.ok()) return std::nullopt;
  ReplyOptions options;
  options.max_size = max_size;
  auto reply = BuildEmptyReply(*parsed.query, RCode::kServFail, options);
  if (!reply) return std::nullopt;
  return std::move(*reply);
}

// A forwarded reply too large for what the client accepts over UDP: an empty
// reply with TC set, so that the client asks again over TCP.
std::optional<Bytes> Truncated(std::span<const std::uint8_t> query, std::size_t max_size) {
  const QueryParseResult parsed = ParseQuery(query);
  if (!parsed.ok()) return std::nullopt;
  Message m = MakeReply(*parsed.query, RCode::kNoError, ReplyOptions{max_size, 1232});
  m.header.tc = true;
  auto reply = Encode(m, max_size);
  if (!reply) return std::nullopt;
  return std::move(*reply);
}

}  // namespace

struct DnsServer::Impl {
  asio::io_context& io;
  Options options;
  const QueryHandler& handler;
  Upstream& upstream;
  const config::Log& log;
  udp::socket udp_socket;
  tcp::acceptor acceptor;
  std::size_t tcp_clients = 0;
  std::size_t forwards_in_flight = 0;
  bool stopped = false;

  Impl(asio::io_context& io_context, Options o, const QueryHandler& h, Upstream& u,
       const config::Log& l)
      : io(io_context),
        options(o),
        handler(h),
        upstream(u),
        log(l),
        udp_socket(io_context),
        acceptor(io_context) {}

  // Every coroutine the server starts ends through here, so that none ends
  // unnoticed.
  void Spawn(asio::awaitable<void> work, std::string what) {
    asio::co_spawn(io, std::move(work), [this, what = std::move(what)](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log.Limited("DNS", config::LogLevel::kWarning, what + " ended: " + ex.what());
      }
    });
  }

  asio::awaitable<void> ServeUdp();
  asio::awaitable<void> ForwardUdp(Bytes query, udp::endpoint client);
  asio::awaitable<void> ServeTcp();
  asio::awaitable<void> ServeTcpClient(std::shared_ptr<tcp::socket> socket);
};

asio::awaitable<void> DnsServer::Impl::ServeUdp() {
  Bytes buffer(options.packet_size);
  udp::endpoint client;
  boost::system::error_code ec;
  while (!stopped) {
    co_await udp_socket.async_wait(udp::socket::wait_read,
                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (stopped || ec == asio::error::operation_aborted) break;
      continue;
    }
    // Drain what is queued before waiting again: one wake-up per burst
    // instead of one per packet.
    for (int i = 0; i < 256 && !stopped; ++i) {
      const std::size_t n = udp_socket.receive_from(asio::buffer(buffer), client, 0, ec);
      if (ec == asio::error::would_block) break;
      if (ec) continue;  // e.g. ICMP errors reported on the socket
      const std::span<const std::uint8_t> query(buffer.data(), n);
      QueryHandler::Outcome outcome = handler.Handle(query, Transport::kUdp);
      switch (outcome.kind) {
        case QueryHandler::Kind::kReply:
          // A full send buffer drops the reply, as the network would; the
          // client retries.
          udp_socket.send_to(asio::buffer(outcome.reply), client, 0, ec);
          break;
        case QueryHandler::Kind::kForward:
          if (forwards_in_flight >= options.max_forwards_in_flight) {
            log.Limited(
                "DNS", config::LogLevel::kWarning,
                "too many queries waiting for upstream servers; dropping one for " + outcome.name);
            break;
          }
          ++forwards_in_flight;
          Spawn(ForwardUdp(Bytes(query.begin(), query.end()), client),
                "forwarding a query for " + outcome.name);
          break;
        case QueryHandler::Kind::kDrop:
          break;
      }
    }
  }
}

asio::awaitable<void> DnsServer::Impl::ForwardUdp(Bytes query, udp::endpoint client) {
  struct Count {
    std::size_t& n;
    ~Count() { --n; }
  } count{forwards_in_flight};
  std::optional<Bytes> reply = co_await upstream.Forward(query, Transport::kUdp);
  const auto parsed = ParseQuery(query);
  const std::size_t limit =
      parsed.ok() ? MaxUdpReplySize(*parsed.query, options.packet_size) : kMinUdpSize;
  if (!reply) {
    log.Limited("DNS", config::LogLevel::kWarning,
                "no upstream server answered in time; answering SERVFAIL");
    reply = ServFail(query, limit);
  } else if (reply->size() > limit) {
    reply = Truncated(query, limit);
  }
  if (!reply || stopped) co_return;
  boost::system::error_code ec;
  co_await udp_socket.async_send_to(asio::buffer(*reply), client,
                                    asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<void> DnsServer::Impl::ServeTcp() {
  while (!stopped) {
    auto socket = std::make_shared<tcp::socket>(io);
    boost::system::error_code ec;
    co_await acceptor.async_accept(*socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (stopped || ec == asio::error::operation_aborted) break;
      // EMFILE and friends: say so, and keep serving UDP and other clients.
      log.Limited("DNS", config::LogLevel::kWarning, "accepting a TCP client: " + ec.message());
      continue;
    }
    if (tcp_clients >= options.max_tcp_clients) {
      log.Limited("DNS", config::LogLevel::kWarning, "too many TCP clients; closing the newest");
      continue;  // the socket closes here
    }
    ++tcp_clients;
    Spawn(ServeTcpClient(socket), "a DNS client over TCP");
  }
}

asio::awaitable<void> DnsServer::Impl::ServeTcpClient(std::shared_ptr<tcp::socket> socket) {
  struct Count {
    std::size_t& n;
    ~Count() { --n; }
  } count{tcp_clients};
  const std::size_t limit = std::min(options.packet_size, kMaxMessageSize);
  Bytes query;
  while (!stopped) {
    boost::system::error_code ec;
    std::uint8_t length[2] = {};
    {
      // A client that sends nothing for a while is closed: TCP clients are
      // few and each holds a file descriptor.
      Deadline<tcp::socket> idle(socket,
                                 std::chrono::steady_clock::now() + options.tcp_idle_timeout);
      co_await asio::async_read(*socket, asio::buffer(length),
                                asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      const std::size_t size = (std::size_t{length[0]} << 8) | length[1];
      if (size > limit) {
        log.Limited("DNS", config::LogLevel::kInfo,
                    "TCP client sent a message of " + std::to_string(size) +
                        " bytes, over dnsPacketSize; closing");
        co_return;
      }
      query.resize(size);
      co_await asio::async_read(*socket, asio::buffer(query),
                                asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
    }
    QueryHandler::Outcome outcome = handler.Handle(query, Transport::kTcp);
    if (outcome.kind == QueryHandler::Kind::kDrop) co_return;
    if (outcome.kind == QueryHandler::Kind::kForward) {
      std::optional<Bytes> reply = co_await upstream.Forward(query, Transport::kTcp);
      if (!reply) {
        log.Limited("DNS", config::LogLevel::kWarning,
                    "no upstream server answered in time; answering SERVFAIL");
        reply = ServFail(query, limit);
      }
      if (!reply) co_return;
      outcome.reply = std::move(*reply);
    }
    const std::uint8_t out_length[2] = {static_cast<std::uint8_t>(outcome.reply.size() >> 8),
                                        static_cast<std::uint8_t>(outcome.reply.size() & 0xff)};
    const std::array<asio::const_buffer, 2> out = {asio::buffer(out_length),
                                                   asio::buffer(outcome.reply)};
    Deadline<tcp::socket> write_deadline(
        socket, std::chrono::steady_clock::now() + options.tcp_idle_timeout);
    co_await asio::async_write(*socket, out, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
  }
}

DnsServer::DnsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DnsServer::~DnsServer() = default;

std::unique_ptr<DnsServer> DnsServer::Create(asio::io_context& io, Options options,
                                             const QueryHandler& handler, Upstream& upstream,
                                             const config::Log& log, std::string* error) {
  auto impl = std::make_unique<Impl>(io, options, handler, upstream, log);
  boost::system::error_code ec;
  const udp::endpoint udp_at(options.address, options.port);
  auto fail = [&](const char* what, const std::string& where) {
    *error = std::string("cannot ") + what + " " + where + ": " + ec.message();
    if (ec == asio::error::address_in_use) {
      *error +=
          " (another DNS server, such as systemd-resolved or dnsmasq, may be listening "
          "there; stop it, or set dnsBindAddress or dnsPort)";
    } else if (ec == asio::error::access_denied) {
      *error += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)";
    } else if (ec == boost::system::errc::address_not_available) {
      *error += " (no interface has that address; check dnsBindAddress)";
    }
    return nullptr;
  };
  impl->udp_socket.open(udp_at.protocol(), ec);
  if (!ec) impl->udp_socket.bind(udp_at, ec);
  if (ec) return fail("listen on udp", Text(udp_at));
  impl->udp_socket.non_blocking(true, ec);
  // The same port for TCP, also when the kernel chose it for UDP.
  const tcp::endpoint tcp_at(options.address, impl->udp_socket.local_endpoint().port());
  impl->acceptor.open(tcp_at.protocol(), ec);
  if (!ec) impl->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(tcp_at, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen on tcp", Text(tcp_at));
  return std::unique_ptr<DnsServer>(new DnsServer(std::move(impl)));
}

udp::endpoint DnsServer::udp_endpoint() const { return impl_->udp_socket.local_endpoint(); }
tcp::endpoint DnsServer::tcp_endpoint() const { return impl_->acceptor.local_endpoint(); }

void DnsServer::Start() {
  impl_->Spawn(impl_->ServeUdp(), "the UDP server");
  impl_->Spawn(impl_->ServeTcp(), "the TCP server");
}

void DnsServer::Stop() {
  impl_->stopped = true;
  boost::system::error_code ignored;
  impl_->udp_socket.cancel(ignored);
  impl_->acceptor.close(ignored);
}

}  // namespace tunnels::resolver
