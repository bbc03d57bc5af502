#include "resolver/server.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <list>
#include <optional>
#include <sstream>

#include "resolver/deadline.h"
#include "resolver/dns_message.h"
#include "resolver/port_owner.h"

namespace tunnels::resolver {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using asio::ip::udp;
using Bytes = std::vector<std::uint8_t>;

// Datagrams taken from the kernel, and replies handed back to it, per system
// call (recvmmsg, sendmmsg): under load, one call per batch instead of one
// per query, and the replies reach the client in bursts, so that it too
// wakes up less often.
constexpr std::size_t kUdpBatch = 64;
// Datagrams served in a row before other work (forwarded replies, TCP
// clients) gets a turn.
constexpr std::size_t kUdpBudget = 256;
// Queries one TCP client may have in flight (forwards plus replies not yet
// written) before we stop reading from it.
constexpr std::size_t kMaxTcpPending = 64;
// The UDP receive buffer asked for, so that a burst of queries waits in the
// kernel instead of being dropped (the default, about 200 KiB, holds fewer
// than 200 small datagrams). The kernel caps it at net.core.rmem_max unless
// we may force it (CAP_NET_ADMIN).
constexpr int kUdpReceiveBuffer = 1 << 20;

// Sends `count` datagrams with as few sendmmsg() calls as the kernel allows.
void SendAll(int fd, mmsghdr* messages, std::size_t count) {
  std::size_t sent = 0;
  while (sent < count) {
    const int n = ::sendmmsg(fd, messages + sent, static_cast<unsigned>(count - sent), 0);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // A full send buffer drops the replies, as the network would; the
      // clients retry.
      break;
    } else {
      ++sent;  // this one reply cannot be sent (e.g. the route is gone); the others may
    }
  }
}

template <typename Endpoint>
std::string Text(const Endpoint& e) {
  std::ostringstream s;
  s << e;
  return s.str();
}

// The sender of a datagram, from what recvmmsg() wrote; none when it is not
// an IP address.
std::optional<udp::endpoint> Peer(const sockaddr_storage& peer, socklen_t length) {
  udp::endpoint e;
  if (length > e.capacity()) return std::nullopt;
  std::memcpy(e.data(), &peer, length);
  e.resize(length);
  return e;
}

// "127.0.0.1:5353", for a log line.
std::string PeerText(const sockaddr_storage& peer, socklen_t length) {
  const auto e = Peer(peer, length);
  return e ? Text(*e) : "?";
}

// "name/TYPE" of a query, for a log line.
std::string QuestionText(std::span<const std::uint8_t> query) {
  const auto q = PeekQuestion(query);
  if (!q) return "a query";
  return (q->name.empty() ? std::string(".") : q->name) + "/" + std::to_string(q->type);
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
  auto reply = BuildTruncatedReply(*parsed.query, ReplyOptions{max_size, kAdvertisedUdpSize});
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
  // The TCP clients being served. When every slot is taken, the one idle
  // the longest makes room for a new client: otherwise idle connections
  // held open would lock everyone else out of TCP.
  struct TcpClient {
    explicit TcpClient(std::shared_ptr<tcp::socket> s)
        : socket(std::move(s)), wake(socket->get_executor()) {}
    std::shared_ptr<tcp::socket> socket;
    bool reading = true;  // waiting for the next query
    std::chrono::steady_clock::time_point idle_since = std::chrono::steady_clock::now();
    bool evicted = false;
    // Pipelined queries are answered concurrently (RFC 7766 section
    // 6.2.1.1), so that a fake answer never waits behind a forward to a
    // slow upstream; replies go out in the order they are ready, one write
    // at a time.
    std::size_t forwards = 0;
    std::deque<Bytes> replies;
    bool writing = false;
    // Cancelled when a forward or a write ends, for a reader that waits for
    // room under kMaxTcpPending.
    asio::steady_timer wake;
    bool idle() const { return reading && forwards == 0 && replies.empty() && !writing; }
    void Wake() {
      wake.cancel();
      if (idle()) idle_since = std::chrono::steady_clock::now();
    }
  };
  std::list<std::shared_ptr<TcpClient>> tcp_client_list;
  std::size_t tcp_clients = 0;  // those not evicted
  std::size_t forwards_in_flight = 0;
  bool stopped = false;
  // Forwarded replies ready to go back to their clients. They are sent
  // together, by one sendmmsg() once the handlers that are ready have run,
  // because upstream replies tend to arrive together under load.
  struct ReadyReply {
    Bytes bytes;
    udp::endpoint client;
  };
  std::vector<ReadyReply> ready_replies;
  std::vector<ReadyReply> sending_replies;
  bool flush_posted = false;

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
  // unnoticed. `what` + `detail` names it in the log.
  void Spawn(asio::awaitable<void> work, const char* what, std::string detail = {}) {
    asio::co_spawn(
        io, std::move(work), [this, what, detail = std::move(detail)](std::exception_ptr e) {
          if (!e) return;
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            log.Limited("DNS", config::LogLevel::kWarning, what + detail + " ended: " + ex.what());
          }
        });
  }

  asio::awaitable<void> ServeUdp();
  // Serves what recvmmsg() returned in `batch`, sending the direct replies
  // back with sendmmsg().
  struct UdpBatch;
  void ServeUdpBatch(UdpBatch& batch, std::size_t received);
  asio::awaitable<void> ForwardUdp(Bytes query, udp::endpoint client);
  void SendLater(Bytes reply, const udp::endpoint& client);
  void FlushReplies();
  asio::awaitable<void> ServeTcp();
  asio::awaitable<void> ServeTcpClient(std::list<std::shared_ptr<TcpClient>>::iterator self);
  asio::awaitable<void> ForwardTcp(std::shared_ptr<TcpClient> client, Bytes query);
  void QueueTcpReply(const std::shared_ptr<TcpClient>& client, Bytes reply);
  asio::awaitable<void> WriteTcp(std::shared_ptr<TcpClient> client);
  // Under pressure (over half the TCP slots taken) idle clients get a fifth
  // of the idle timeout, at least a second, as unbound does: slots free
  // themselves before anyone has to be evicted.
  std::chrono::steady_clock::duration TcpIdleTimeout() const {
    if (tcp_clients * 2 <= options.max_tcp_clients) return options.tcp_idle_timeout;
    return std::max<std::chrono::steady_clock::duration>(options.tcp_idle_timeout / 5,
                                                         std::chrono::seconds(1));
  }
  // Closes the client idle the longest; false when every client is busy.
  bool EvictOldestIdle();
};

// The buffers of one recvmmsg()/sendmmsg() round, reused for the life of the
// server.
struct DnsServer::Impl::UdpBatch {
  explicit UdpBatch(std::size_t slot_size)
      : slot(slot_size),
        // Left uninitialised: the pages that no datagram is ever written to
        // are never touched, so the memory used follows the queries' size.
        buffers(new std::uint8_t[kUdpBatch * slot_size]) {
    for (std::size_t i = 0; i < kUdpBatch; ++i) {
      in_iov[i] = {buffers.get() + i * slot, slot};
      in[i].msg_hdr = {};
      in[i].msg_hdr.msg_iov = &in_iov[i];
      in[i].msg_hdr.msg_iovlen = 1;
    }
  }
  // Before each recvmmsg(): the kernel overwrites the lengths it reports.
  void Reset() {
    for (std::size_t i = 0; i < kUdpBatch; ++i) {
      in[i].msg_hdr.msg_name = &peers[i];
      in[i].msg_hdr.msg_namelen = sizeof(peers[i]);
      in[i].msg_hdr.msg_flags = 0;
      in[i].msg_len = 0;
    }
  }

  std::size_t slot;
  std::unique_ptr<std::uint8_t[]> buffers;  // kUdpBatch slots of `slot` bytes
  std::array<sockaddr_storage, kUdpBatch> peers{};
  std::array<iovec, kUdpBatch> in_iov{};
  std::array<mmsghdr, kUdpBatch> in{};
  std::array<Bytes, kUdpBatch> replies;
  std::array<iovec, kUdpBatch> out_iov{};
  std::array<mmsghdr, kUdpBatch> out{};
};

asio::awaitable<void> DnsServer::Impl::ServeUdp() {
  UdpBatch batch(std::min(options.packet_size, kMaxMessageSize));
  const int fd = udp_socket.native_handle();
  boost::system::error_code ec;
  while (!stopped) {
    co_await udp_socket.async_wait(udp::socket::wait_read,
                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (stopped || ec == asio::error::operation_aborted) break;
      continue;
    }
    // Drain what is queued before waiting again: one wake-up per burst
    // instead of one per packet. Past the budget, let the other handlers
    // that are ready run, then go on draining.
    std::size_t served = 0;
    while (!stopped) {
      if (served >= kUdpBudget) {
        co_await asio::post(io, asio::use_awaitable);
        served = 0;
        continue;
      }
      batch.Reset();
      const int n = ::recvmmsg(fd, batch.in.data(), kUdpBatch, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EINTR) continue;
        // EAGAIN, or an error queued on the socket (e.g. ICMP for an earlier
        // reply), reported once: the wait finds any datagrams behind it.
        break;
      }
      if (n == 0) break;
      ServeUdpBatch(batch, static_cast<std::size_t>(n));
      served += static_cast<std::size_t>(n);
      // A short batch emptied the queue: wait (asio re-checks readiness
      // when the wait starts) rather than ask again only to hear EAGAIN.
      if (static_cast<std::size_t>(n) < kUdpBatch) break;
    }
  }
}

void DnsServer::Impl::ServeUdpBatch(UdpBatch& batch, std::size_t received) {
  std::size_t replies = 0;
  for (std::size_t i = 0; i < received && !stopped; ++i) {
    const msghdr& h = batch.in[i].msg_hdr;
    const std::span<const std::uint8_t> query(batch.buffers.get() + i * batch.slot,
                                              batch.in[i].msg_len);
    QueryHandler::Outcome outcome = handler.Handle(query, Transport::kUdp);
    if (!outcome.problem.empty()) {
      log.Limited("DNS", config::LogLevel::kInfo,
                  outcome.problem + " (from " + PeerText(batch.peers[i], h.msg_namelen) + ")");
    }
    switch (outcome.kind) {
      case QueryHandler::Kind::kReply: {
        Bytes& reply = batch.replies[replies];
        reply = std::move(outcome.reply);
        batch.out_iov[replies] = {reply.data(), reply.size()};
        msghdr& o = batch.out[replies].msg_hdr;
        o = {};
        o.msg_name = &batch.peers[i];
        o.msg_namelen = h.msg_namelen;
        o.msg_iov = &batch.out_iov[replies];
        o.msg_iovlen = 1;
        ++replies;
        break;
      }
      case QueryHandler::Kind::kForward: {
        if (forwards_in_flight >= options.max_forwards_in_flight) {
          log.Limited("DNS", config::LogLevel::kWarning,
                      "too many queries waiting for upstream servers; dropping one for " +
                          outcome.name + " from " + PeerText(batch.peers[i], h.msg_namelen));
          break;
        }
        const auto client = Peer(batch.peers[i], h.msg_namelen);
        if (!client) break;  // not from an IP socket
        ++forwards_in_flight;
        Spawn(ForwardUdp(Bytes(query.begin(), query.end()), *client), "forwarding a query for ",
              std::move(outcome.name));
        break;
      }
      case QueryHandler::Kind::kDrop:
        break;
    }
  }
  SendAll(udp_socket.native_handle(), batch.out.data(), replies);
}

asio::awaitable<void> DnsServer::Impl::ForwardUdp(Bytes query, udp::endpoint client) {
  struct Count {
    std::size_t& n;
    ~Count() { --n; }
  } count{forwards_in_flight};
  std::optional<Bytes> reply = co_await upstream.Forward(query, Transport::kUdp);
  // Every client takes 512 bytes; only a larger reply, or none, needs the
  // query read again.
  if (!reply || reply->size() > kMinUdpSize) {
    const auto parsed = ParseQuery(query);
    const std::size_t limit =
        parsed.ok() ? MaxUdpReplySize(*parsed.query, options.packet_size) : kMinUdpSize;
    if (!reply) {
      log.Limited("DNS", config::LogLevel::kWarning,
                  "no upstream server answered in time for " + QuestionText(query) + " from " +
                      Text(client) + "; answering SERVFAIL");
      reply = ServFail(query, limit);
    } else if (reply->size() > limit) {
      reply = Truncated(query, limit);
    }
  }
  if (!reply || stopped) co_return;
  SendLater(std::move(*reply), client);
}

void DnsServer::Impl::SendLater(Bytes reply, const udp::endpoint& client) {
  ready_replies.push_back(ReadyReply{std::move(reply), client});
  if (flush_posted) return;
  flush_posted = true;
  asio::post(io, [this] { FlushReplies(); });
}

void DnsServer::Impl::FlushReplies() {
  flush_posted = false;
  if (stopped) {
    ready_replies.clear();
    return;
  }
  // Swapped out, so that the vectors keep their capacity from round to round.
  sending_replies.swap(ready_replies);
  std::array<iovec, kUdpBatch> iov{};
  std::array<mmsghdr, kUdpBatch> out{};
  for (std::size_t first = 0; first < sending_replies.size(); first += kUdpBatch) {
    const std::size_t count = std::min(kUdpBatch, sending_replies.size() - first);
    for (std::size_t i = 0; i < count; ++i) {
      ReadyReply& r = sending_replies[first + i];
      iov[i] = {r.bytes.data(), r.bytes.size()};
      out[i].msg_hdr = {};
      out[i].msg_hdr.msg_name = r.client.data();
      out[i].msg_hdr.msg_namelen = static_cast<socklen_t>(r.client.size());
      out[i].msg_hdr.msg_iov = &iov[i];
      out[i].msg_hdr.msg_iovlen = 1;
    }
    SendAll(udp_socket.native_handle(), out.data(), count);
  }
  sending_replies.clear();
}

asio::awaitable<void> DnsServer::Impl::ServeTcp() {
  asio::steady_timer backoff(io);
  while (!stopped) {
    auto socket = std::make_shared<tcp::socket>(io);
    boost::system::error_code ec;
    co_await acceptor.async_accept(*socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (stopped || ec == asio::error::operation_aborted) break;
      if (ec == asio::error::connection_aborted) continue;  // that client is gone; the next
      // EMFILE and friends: say so, and keep serving UDP and the clients
      // there are. The connection stays queued, so accepting again at once
      // would fail at once, in a loop that starves everything else.
      log.Limited("DNS", config::LogLevel::kWarning, "accepting a TCP client: " + ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (tcp_clients >= options.max_tcp_clients && !EvictOldestIdle()) {
      boost::system::error_code ignored;
      const auto peer = socket->remote_endpoint(ignored);
      log.Limited("DNS", config::LogLevel::kWarning,
                  "too many TCP clients (" + std::to_string(options.max_tcp_clients) +
                      "), all busy; closing the newest, " + Text(peer));
      continue;  // the socket closes here
    }
    ++tcp_clients;
    const auto self =
        tcp_client_list.insert(tcp_client_list.end(), std::make_shared<TcpClient>(socket));
    Spawn(ServeTcpClient(self), "a DNS client over TCP");
  }
}

bool DnsServer::Impl::EvictOldestIdle() {
  auto oldest = tcp_client_list.end();
  for (auto it = tcp_client_list.begin(); it != tcp_client_list.end(); ++it) {
    if ((*it)->evicted || !(*it)->idle()) continue;
    if (oldest == tcp_client_list.end() || (*it)->idle_since < (*oldest)->idle_since) oldest = it;
  }
  if (oldest == tcp_client_list.end()) return false;
  boost::system::error_code ignored;
  log.Limited("DNS", config::LogLevel::kInfo,
              "too many TCP clients (" + std::to_string(options.max_tcp_clients) +
                  "); closing the one idle the longest, " +
                  Text((*oldest)->socket->remote_endpoint(ignored)));
  (*oldest)->evicted = true;
  --tcp_clients;
  // Its coroutine sees the read fail and ends, removing the entry.
  (*oldest)->socket->close(ignored);
  return true;
}

asio::awaitable<void> DnsServer::Impl::ServeTcpClient(
    std::list<std::shared_ptr<TcpClient>>::iterator self) {
  const std::shared_ptr<TcpClient> client = *self;
  const std::shared_ptr<tcp::socket>& socket = client->socket;
  struct Entry {
    Impl& impl;
    std::list<std::shared_ptr<TcpClient>>::iterator self;
    ~Entry() {
      if (!(*self)->evicted) --impl.tcp_clients;
      impl.tcp_client_list.erase(self);
    }
  } entry{*this, self};
  const std::size_t limit = std::min(options.packet_size, kMaxMessageSize);
  Bytes query;
  while (!stopped) {
    boost::system::error_code ec;
    // A client that sends queries without reading the replies is not read
    // from until it does: what it can make us hold stays bounded.
    while (client->forwards + client->replies.size() >= kMaxTcpPending) {
      client->wake.expires_at(asio::steady_timer::time_point::max());
      co_await client->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopped || !socket->is_open()) co_return;
    }
    std::uint8_t length[2] = {};
    {
      // A client that sends nothing for a while is closed: TCP clients are
      // few and each holds a file descriptor.
      Deadline<tcp::socket> idle(socket, std::chrono::steady_clock::now() + TcpIdleTimeout());
      client->reading = true;
      if (client->idle()) client->idle_since = std::chrono::steady_clock::now();
      co_await asio::async_read(*socket, asio::buffer(length),
                                asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      client->reading = false;
      const std::size_t size = (std::size_t{length[0]} << 8) | length[1];
      if (size > limit) {
        boost::system::error_code ignored;
        log.Limited("DNS", config::LogLevel::kInfo,
                    "TCP client " + Text(socket->remote_endpoint(ignored)) + " sent a message of " +
                        std::to_string(size) + " bytes, over dnsPacketSize; closing");
        co_return;
      }
      query.resize(size);
      co_await asio::async_read(*socket, asio::buffer(query),
                                asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
    }
    QueryHandler::Outcome outcome = handler.Handle(query, Transport::kTcp);
    if (!outcome.problem.empty()) {
      boost::system::error_code ignored;
      log.Limited("DNS", config::LogLevel::kInfo,
                  outcome.problem + " (from " + Text(socket->remote_endpoint(ignored)) + ", tcp)");
    }
    if (outcome.kind == QueryHandler::Kind::kDrop) co_return;
    if (outcome.kind == QueryHandler::Kind::kForward) {
      ++client->forwards;
      Spawn(ForwardTcp(client, query), "forwarding a query over TCP for ", QuestionText(query));
      continue;
    }
    QueueTcpReply(client, std::move(outcome.reply));
  }
}

asio::awaitable<void> DnsServer::Impl::ForwardTcp(std::shared_ptr<TcpClient> client, Bytes query) {
  struct Done {
    TcpClient& c;
    ~Done() {
      --c.forwards;
      c.Wake();
    }
  } done{*client};
  const std::size_t limit = std::min(options.packet_size, kMaxMessageSize);
  std::optional<Bytes> reply = co_await upstream.Forward(query, Transport::kTcp);
  if (!reply) {
    boost::system::error_code ignored;
    log.Limited("DNS", config::LogLevel::kWarning,
                "no upstream server answered in time for " + QuestionText(query) + " from " +
                    Text(client->socket->remote_endpoint(ignored)) + " (tcp); answering SERVFAIL");
    reply = ServFail(query, limit);
  }
  if (reply && client->socket->is_open()) QueueTcpReply(client, std::move(*reply));
}

void DnsServer::Impl::QueueTcpReply(const std::shared_ptr<TcpClient>& client, Bytes reply) {
  client->replies.push_back(std::move(reply));
  if (client->writing) return;
  client->writing = true;
  Spawn(WriteTcp(client), "a DNS reply over TCP");
}

asio::awaitable<void> DnsServer::Impl::WriteTcp(std::shared_ptr<TcpClient> client) {
  struct Done {
    TcpClient& c;
    ~Done() {
      c.writing = false;
      c.Wake();
    }
  } done{*client};
  while (!client->replies.empty()) {
    const Bytes reply = std::move(client->replies.front());
    client->replies.pop_front();
    const std::uint8_t out_length[2] = {static_cast<std::uint8_t>(reply.size() >> 8),
                                        static_cast<std::uint8_t>(reply.size() & 0xff)};
    const std::array<asio::const_buffer, 2> out = {asio::buffer(out_length), asio::buffer(reply)};
    Deadline<tcp::socket> write_deadline(
        client->socket, std::chrono::steady_clock::now() + options.tcp_idle_timeout);
    boost::system::error_code ec;
    co_await asio::async_write(*client->socket, out, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      // The reader sees the socket closed and ends the client.
      client->replies.clear();
      boost::system::error_code ignored;
      client->socket->close(ignored);
      co_return;
    }
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
      *error += PortInUseHint(options.port);
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
  // Best effort: the default buffer still works, with more drops under bursts.
  const int fd = impl->udp_socket.native_handle();
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &kUdpReceiveBuffer, sizeof kUdpReceiveBuffer) !=
      0) {
    asio::socket_base::receive_buffer_size current;
    boost::system::error_code ignored;
    impl->udp_socket.get_option(current, ignored);
    if (!ignored && current.value() < kUdpReceiveBuffer) {
      impl->udp_socket.set_option(asio::socket_base::receive_buffer_size(kUdpReceiveBuffer),
                                  ignored);
    }
  }
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
