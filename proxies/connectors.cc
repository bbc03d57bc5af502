// The socks5, http and direct connectors.
#include <sys/socket.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <sstream>

#include "proxies/codecs.h"
#include "proxies/connector.h"
#include "proxies/name_resolver.h"
#include "proxies/wakeup.h"
#include "resolver/deadline.h"

namespace tunnels::proxies {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using Bytes = std::vector<std::uint8_t>;

std::string Text(const tcp::endpoint& e) {
  std::ostringstream s;
  s << e;
  return s.str();
}

// Reads from `socket` into `buffer` until `parse` is done or fails. Bytes
// after what the parser consumed stay in `buffer`.
template <typename Parse>
asio::awaitable<ParseResult> ReadReply(tcp::socket& socket, Bytes& buffer, std::size_t limit,
                                       Parse&& parse, boost::system::error_code& ec) {
  for (;;) {
    if (!buffer.empty()) {
      ParseResult r = parse(std::span<const std::uint8_t>(buffer));
      if (r.state != ParseResult::State::kNeedMore) co_return r;
    }
    if (buffer.size() >= limit) co_return ParseResult::Error("reply too long");
    std::uint8_t chunk[4096];
    const std::size_t n = co_await socket.async_read_some(
        asio::buffer(chunk, std::min(sizeof chunk, limit - buffer.size())),
        asio::redirect_error(asio::use_awaitable, ec));
    if (ec)
      co_return ParseResult::Error(ec == asio::error::eof ? "the proxy closed the connection"
                                                          : ec.message());
    buffer.insert(buffer.end(), chunk, chunk + n);
  }
}

// What the socks5 and http connectors share: the proxy, reaching it, and
// naming it in every error.
class ProxyConnector : public Connector {
 public:
  ProxyConnector(const config::Proxy& proxy, ConnectorContext& context)
      : proxy_(proxy), context_(context) {}

  const std::string& name() const override { return proxy_.name; }

 protected:
  // "socks5 proxy 'tor' (127.0.0.1:9050): ", the start of every error.
  std::string Prefix() const {
    return std::string(config::ToString(proxy_.type)) + " proxy '" + proxy_.name + "' (" +
           proxy_.address.ToString() + "): ";
  }

  // A connection to the proxy itself (its name resolved through
  // upstreamDns); null with `error` set.
  asio::awaitable<std::shared_ptr<tcp::socket>> ConnectToProxy(Clock::time_point deadline,
                                                               std::string* error) {
    std::string connect_error;
    auto socket = co_await ConnectTcp(context_.resolver, proxy_.address.host, proxy_.address.port,
                                      deadline, &connect_error);
    if (!socket) {
      *error = Prefix() + connect_error;
      co_return nullptr;
    }
    co_return std::make_shared<tcp::socket>(std::move(*socket));
  }

  config::Proxy proxy_;
  ConnectorContext& context_;
};

class Socks5Connector : public ProxyConnector {
 public:
  using ProxyConnector::ProxyConnector;

  asio::awaitable<std::optional<Stream>> Connect(const Target& target, Clock::time_point deadline,
                                                 std::string* error) override {
    auto shared = co_await ConnectToProxy(deadline, error);
    if (!shared) co_return std::nullopt;
    resolver::Deadline<tcp::socket> guard(shared, deadline);
    boost::system::error_code ec;
    Bytes buffer;
    auto fail = [&](const std::string& what) {
      *error = Prefix() + (guard.expired() ? "no answer in time during the handshake" : what);
      return std::nullopt;
    };

    const bool password = proxy_.credentials.has_value();
    co_await asio::async_write(*shared, asio::buffer(Socks5Greeting(password)),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return fail(ec.message());
    std::uint8_t method = 0xff;
    ParseResult r = co_await ReadReply(
        *shared, buffer, 2, [&](auto b) { return ParseSocks5MethodChoice(b, &method); }, ec);
    if (r.state != ParseResult::State::kDone) co_return fail(r.error);
    buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    if (method == kSocks5MethodPassword && password) {
      const Bytes request =
          Socks5PasswordRequest(context_.Credential(proxy_.credentials->username),
                                context_.Credential(proxy_.credentials->password));
      co_await asio::async_write(*shared, asio::buffer(request),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return fail(ec.message());
      bool ok = false;
      r = co_await ReadReply(
          *shared, buffer, 2, [&](auto b) { return ParseSocks5PasswordReply(b, &ok); }, ec);
      if (r.state != ParseResult::State::kDone) co_return fail(r.error);
      if (!ok) co_return fail("username/password rejected");
      buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    } else if (method != kSocks5MethodNone) {
      co_return fail(
          method == 0xff
              ? std::string("the server accepts none of the offered "
                            "authentication methods" +
                            std::string(password ? "" : " (it may want a username and password)"))
              : "the server chose an unoffered method " + std::to_string(method));
    }
    const auto request = Socks5ConnectRequest(target.host, target.port);
    if (!request) co_return fail("name too long for SOCKS5: " + target.host);
    co_await asio::async_write(*shared, asio::buffer(*request),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return fail(ec.message());
    std::uint8_t code = 0xff;
    r = co_await ReadReply(
        *shared, buffer, 4 + 256 + 2, [&](auto b) { return ParseSocks5ConnectReply(b, &code); },
        ec);
    if (r.state != ParseResult::State::kDone) co_return fail(r.error);
    if (code != 0x00) {
      co_return fail("cannot reach " + target.ToString() + ": " + Socks5ReplyText(code));
    }
    buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    if (guard.expired()) co_return fail("");  // closed by the deadline meanwhile
    co_return Stream{std::move(*shared), std::move(buffer), {}};
  }
};

class HttpConnector : public ProxyConnector {
 public:
  using ProxyConnector::ProxyConnector;

  asio::awaitable<std::optional<Stream>> Connect(const Target& target, Clock::time_point deadline,
                                                 std::string* error) override {
    auto shared = co_await ConnectToProxy(deadline, error);
    if (!shared) co_return std::nullopt;
    resolver::Deadline<tcp::socket> guard(shared, deadline);
    boost::system::error_code ec;
    auto fail = [&](const std::string& what) {
      *error = Prefix() + (guard.expired() ? "no answer in time to CONNECT" : what);
      return std::nullopt;
    };
    std::string credentials;
    if (proxy_.credentials) {
      credentials = context_.Credential(proxy_.credentials->username) + ":" +
                    context_.Credential(proxy_.credentials->password);
    }
    const std::string request = HttpConnectRequest(target.host, target.port, credentials);
    co_await asio::async_write(*shared, asio::buffer(request),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return fail(ec.message());
    Bytes buffer;
    int status = 0;
    std::string status_line;
    const ParseResult r = co_await ReadReply(
        *shared, buffer, 16 * 1024 + 4096,
        [&](auto b) { return ParseHttpConnectReply(b, &status, &status_line); }, ec);
    if (r.state != ParseResult::State::kDone) co_return fail(r.error);
    if (status < 200 || status > 299) {
      co_return fail("CONNECT " + target.ToString() + " answered \"" + status_line + "\"");
    }
    // Whatever followed the header is already the target's data.
    buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    if (guard.expired()) co_return fail("");  // closed by the deadline meanwhile
    co_return Stream{std::move(*shared), std::move(buffer), {}};
  }
};

class DirectConnector : public Connector {
 public:
  explicit DirectConnector(ConnectorContext& context) : context_(context) {}

  asio::awaitable<std::optional<Stream>> Connect(const Target& target, Clock::time_point deadline,
                                                 std::string* error) override {
    std::string connect_error;
    auto socket = co_await ConnectTcp(context_.resolver, target.host, target.port, deadline,
                                      &connect_error, !target.user_written);
    if (!socket) {
      *error = "direct: " + connect_error;
      co_return std::nullopt;
    }
    co_return Stream{std::move(*socket), {}, {}};
  }

  const std::string& name() const override { return name_; }

 private:
  ConnectorContext& context_;
  std::string name_ = "direct";
};

}  // namespace

std::string Target::ToString() const { return config::Endpoint{host, port}.ToString(); }

std::string ConnectorContext::Credential(const std::string& value) {
  if (value != config::Credentials::kRandomPlaceholder) return value;
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string out(random_credentials_length, 'x');
  for (char& c : out) c = kChars[random() % (sizeof kChars - 1)];
  return out;
}

namespace {

// RFC 8305's connection attempt delay: how long an attempt to one address
// runs alone before the next address is tried beside it.
constexpr std::chrono::milliseconds kAttemptDelay{250};

// One connection attempt, by `deadline`, from a socket with kEngineMark.
asio::awaitable<boost::system::error_code> Attempt(std::shared_ptr<tcp::socket> socket,
                                                   tcp::endpoint endpoint,
                                                   Clock::time_point deadline) {
  boost::system::error_code ec;
  socket->open(endpoint.protocol(), ec);
  if (ec) co_return ec;
  // EPERM without CAP_NET_ADMIN: the connection goes unmarked, which only
  // loses the second line of defence against connecting to itself.
  const int mark = static_cast<int>(kEngineMark);
  (void)::setsockopt(socket->native_handle(), SOL_SOCKET, SO_MARK, &mark, sizeof mark);
  resolver::Deadline<tcp::socket> guard(socket, deadline);
  co_await socket->async_connect(endpoint, asio::redirect_error(asio::use_awaitable, ec));
  if (guard.expired()) ec = asio::error::timed_out;
  co_return ec;
}

// The attempts to a name's addresses, in order, each given kAttemptDelay
// before the next one starts beside it (at once when it has failed
// already), all until `deadline`; the first connection wins (RFC 8305,
// section 5). So an address whose SYNs are dropped delays a connection by
// 250 ms, not by the whole connect timeout. Awaits every attempt before it
// returns (the losers are closed, so they end at once). Null when every
// attempt failed, with their errors in `errors`.
asio::awaitable<std::shared_ptr<tcp::socket>> Race(const std::vector<asio::ip::address>& addresses,
                                                   std::uint16_t port, Clock::time_point deadline,
                                                   std::string* errors) {
  struct State {
    explicit State(const asio::any_io_executor& executor) : progress(executor) {}
    Wakeup progress;  // whenever an attempt ends
    std::shared_ptr<tcp::socket> winner;
    std::size_t running = 0;
    std::string errors;  // "address:port: why; ..."
  };
  const auto executor = co_await asio::this_coro::executor;
  auto state = std::make_shared<State>(executor);
  std::vector<std::shared_ptr<tcp::socket>> sockets;
  for (std::size_t i = 0; i < addresses.size() && !state->winner; ++i) {
    if (Clock::now() >= deadline) break;
    const tcp::endpoint endpoint(addresses[i], port);
    auto socket = std::make_shared<tcp::socket>(executor);
    sockets.push_back(socket);
    ++state->running;
    asio::co_spawn(
        executor,
        [state, socket, endpoint, deadline]() -> asio::awaitable<void> {
          const boost::system::error_code ec = co_await Attempt(socket, endpoint, deadline);
          if (state->winner) co_return;
          if (!ec) {
            state->winner = socket;
          } else {
            state->errors +=
                (state->errors.empty() ? "" : "; ") + Text(endpoint) + ": " + ec.message();
          }
        },
        [state](std::exception_ptr) {  // an exception (bad_alloc) counts as a failed attempt
          --state->running;
          state->progress.Notify();
        });
    if (i + 1 == addresses.size()) break;
    const Clock::time_point next = std::min(deadline, Clock::now() + kAttemptDelay);
    while (!state->winner && state->running > 0 && Clock::now() < next) {
      co_await state->progress.Wait(next);
    }
  }
  while (!state->winner && state->running > 0) co_await state->progress.Wait();
  boost::system::error_code ignored;
  for (const auto& socket : sockets) {
    if (socket != state->winner) socket->close(ignored);
  }
  while (state->running > 0) co_await state->progress.Wait();
  *errors = std::move(state->errors);
  co_return state->winner;
}

}  // namespace

asio::awaitable<std::optional<tcp::socket>> ConnectTcp(NameResolver& resolver,
                                                       const std::string& host, std::uint16_t port,
                                                       Clock::time_point deadline,
                                                       std::string* error, bool check) {
  const auto addresses = co_await resolver.Resolve(host, error, check);
  if (addresses.empty()) co_return std::nullopt;
  std::shared_ptr<tcp::socket> socket;
  std::string errors;
  if (Clock::now() >= deadline) {
    // Nothing tried: "no time left" below.
  } else if (addresses.size() == 1) {
    // The common case (a proxy's address, a name with one address): no race
    // to set up on the way of every connection.
    const tcp::endpoint endpoint(addresses.front(), port);
    socket = std::make_shared<tcp::socket>(co_await asio::this_coro::executor);
    const boost::system::error_code ec = co_await Attempt(socket, endpoint, deadline);
    if (ec) {
      errors = Text(endpoint) + ": " + ec.message();
      socket.reset();
    }
  } else {
    socket = co_await Race(addresses, port, deadline, &errors);
    // Not the first address: the ones before it are slow or dead, so the
    // next connections start with this one.
    boost::system::error_code ec;
    const asio::ip::address winner = socket ? socket->remote_endpoint(ec).address() : addresses[0];
    if (!ec && winner != addresses.front()) resolver.Prefer(host, winner);
  }
  if (socket) {
    boost::system::error_code ignored;
    socket->set_option(tcp::no_delay(true), ignored);
    co_return std::move(*socket);
  }
  *error = errors.empty() ? "no time left to connect" : "cannot connect to " + errors;
  // Every address failed: the next connection looks the name up again.
  if (!errors.empty()) resolver.Forget(host);
  co_return std::nullopt;
}

std::unique_ptr<Connector> MakeSocks5Connector(const config::Proxy& proxy,
                                               ConnectorContext& context) {
  return std::make_unique<Socks5Connector>(proxy, context);
}

std::unique_ptr<Connector> MakeHttpConnector(const config::Proxy& proxy,
                                             ConnectorContext& context) {
  return std::make_unique<HttpConnector>(proxy, context);
}

std::unique_ptr<Connector> MakeDirectConnector(ConnectorContext& context) {
  return std::make_unique<DirectConnector>(context);
}

}  // namespace tunnels::proxies
