#include "resolver/upstream.h"

#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <sstream>

#include "resolver/deadline.h"
#include "resolver/dns_message.h"

namespace tunnels::resolver {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using asio::ip::udp;
using Bytes = std::vector<std::uint8_t>;

std::string Text(const udp::endpoint& e) {
  std::ostringstream s;
  s << e;
  return s.str();
}

// Whether `reply` answers `query`: same ID and the same question, names
// compared without regard to case (servers may change the case back).
bool Answers(std::span<const std::uint8_t> reply, std::span<const std::uint8_t> query) {
  const auto reply_header = PeekHeader(reply);
  const auto query_id = ReadId(query);
  if (!reply_header || !query_id || !reply_header->qr || reply_header->id != *query_id) {
    return false;
  }
  const auto rq = PeekQuestion(reply);
  const auto qq = PeekQuestion(query);
  if (!qq) return true;  // a question-less query (never forwarded) matches anything
  // FORMERR, NOTIMP, REFUSED and the like may come without the question;
  // the ID on a connected socket is what ties them to the query.
  if (!rq) return reply_header->qdcount == 0 && reply_header->rcode != 0;
  return rq->type == qq->type && rq->klass == qq->klass &&
         LowercaseName(rq->name) == LowercaseName(qq->name);
}

}  // namespace

Upstream::Upstream(Options options, const config::Log& log)
    : options_(std::move(options)),
      log_(log),
      random_(std::random_device{}()),
      receive_buffer_(options_.packet_size) {}

asio::awaitable<std::optional<Bytes>> Upstream::Forward(Bytes query, Transport transport) {
  const auto client_id = ReadId(query);
  if (!client_id || options_.servers.empty()) co_return std::nullopt;
  const auto start = std::chrono::steady_clock::now();
  const auto give_up = start + options_.timeout;
  const std::size_t n = options_.servers.size();
  const std::size_t first = static_cast<std::size_t>(random_() % n);
  // Every server gets two chances at most, so that servers which refuse at
  // once (nothing listening) end in SERVFAIL at once instead of spinning.
  for (std::size_t attempt = 0; attempt < 2 * n; ++attempt) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= give_up) break;
    const udp::endpoint& server = options_.servers[(first + attempt) % n];
    RewriteId(query, static_cast<std::uint16_t>(random_()));
    const auto deadline = std::min(give_up, now + options_.try_timeout);
    // Not a ?: expression: GCC 12 mishandles the temporaries of co_await
    // inside one (a use after free, found by ASan).
    std::optional<Bytes> reply;
    if (transport == Transport::kTcp) {
      reply = co_await TryTcp(server, query, deadline);
    } else {
      reply = co_await TryUdp(server, query, deadline);
    }
    if (reply) {
      RewriteId(*reply, *client_id);
      co_return reply;
    }
  }
  co_return std::nullopt;
}

asio::awaitable<std::optional<Bytes>> Upstream::TryUdp(
    const udp::endpoint& server, const Bytes& query,
    std::chrono::steady_clock::time_point deadline) {
  auto executor = co_await asio::this_coro::executor;
  auto socket = std::make_shared<udp::socket>(executor);
  boost::system::error_code ec;
  socket->open(server.protocol(), ec);
  // connect() makes the kernel drop datagrams from any other address and
  // report ICMP port-unreachable as ECONNREFUSED, so a dead server fails fast.
  if (!ec) socket->connect(server, ec);
  if (ec) {
    log_.Limited("DNS", config::LogLevel::kWarning,
                 "upstream " + Text(server) + ": " + ec.message());
    co_return std::nullopt;
  }
  Deadline<udp::socket> guard(socket, deadline);
  // Sent and read with plain system calls: a UDP send does not wait, and
  // each asio operation would cost an allocation and a system call more.
  const int fd = socket->native_handle();
  if (::send(fd, query.data(), query.size(), MSG_DONTWAIT) < 0) {
    ec.assign(errno, boost::system::system_category());
  }
  // Replies are read into one buffer and copied out at their size: a fresh
  // dnsPacketSize buffer per query (64 KiB by default) cost more than all
  // the rest of forwarding. Nothing suspends between reading into the
  // buffer and copying out, so no two reads share it.
  std::span<std::uint8_t> buffer = receive_buffer_;
  while (!ec) {
    co_await socket->async_wait(udp::socket::wait_read,
                                asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    // MSG_TRUNC: the datagram's real length, also when it did not fit.
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      ec.assign(errno, boost::system::system_category());
      break;
    }
    const std::size_t size = static_cast<std::size_t>(n);
    const std::span<const std::uint8_t> reply(buffer.data(), std::min(size, buffer.size()));
    if (Answers(reply, query)) {
      if (size <= buffer.size()) co_return Bytes(reply.begin(), reply.end());
      // Over dnsPacketSize: what was read is cut short, and passing it on
      // would hand the client a message whose counts lie. Tell it to ask
      // over TCP instead, as a server does whose answer does not fit.
      log_.Limited("DNS", config::LogLevel::kInfo,
                   "upstream " + Text(server) + ": a reply of " + std::to_string(size) +
                       " bytes is over dnsPacketSize; the client is told to use TCP");
      const QueryParseResult parsed = ParseQuery(query);
      if (!parsed.ok()) co_return std::nullopt;
      auto truncated = BuildTruncatedReply(*parsed.query, ReplyOptions{kMinUdpSize, 1232});
      if (!truncated) co_return std::nullopt;
      co_return std::move(*truncated);
    }
    log_.Limited("DNS", config::LogLevel::kInfo,
                 "upstream " + Text(server) + ": ignored a reply that does not match the query");
  }
  log_.Limited("DNS", config::LogLevel::kInfo,
               "upstream " + Text(server) + " (udp): " +
                   (guard.expired() ? std::string("no answer in time") : ec.message()));
  co_return std::nullopt;
}

asio::awaitable<std::optional<Bytes>> Upstream::TryTcp(
    const udp::endpoint& server, const Bytes& query,
    std::chrono::steady_clock::time_point deadline) {
  auto executor = co_await asio::this_coro::executor;
  auto socket = std::make_shared<tcp::socket>(executor);
  const tcp::endpoint target(server.address(), server.port());
  boost::system::error_code ec;
  Deadline<tcp::socket> guard(socket, deadline);
  co_await socket->async_connect(target, asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) {
    const std::uint8_t length[2] = {static_cast<std::uint8_t>(query.size() >> 8),
                                    static_cast<std::uint8_t>(query.size() & 0xff)};
    const std::array<asio::const_buffer, 2> out = {asio::buffer(length), asio::buffer(query)};
    co_await asio::async_write(*socket, out, asio::redirect_error(asio::use_awaitable, ec));
  }
  std::uint8_t length[2] = {};
  if (!ec) {
    co_await asio::async_read(*socket, asio::buffer(length),
                              asio::redirect_error(asio::use_awaitable, ec));
  }
  if (!ec) {
    const std::size_t size = (std::size_t{length[0]} << 8) | length[1];
    if (size < kHeaderSize || size > options_.packet_size) {
      log_.Limited("DNS", config::LogLevel::kInfo,
                   "upstream " + Text(server) + " (tcp): reply of " + std::to_string(size) +
                       " bytes is outside 12..dnsPacketSize");
      co_return std::nullopt;
    }
    Bytes reply(size);
    co_await asio::async_read(*socket, asio::buffer(reply),
                              asio::redirect_error(asio::use_awaitable, ec));
    if (!ec && Answers(reply, query)) co_return reply;
    if (!ec) {
      log_.Limited("DNS", config::LogLevel::kInfo,
                   "upstream " + Text(server) + " (tcp): reply does not match the query");
      co_return std::nullopt;
    }
  }
  log_.Limited("DNS", config::LogLevel::kInfo,
               "upstream " + Text(server) + " (tcp): " +
                   (guard.expired() ? std::string("no answer in time") : ec.message()));
  co_return std::nullopt;
}

}  // namespace tunnels::resolver
