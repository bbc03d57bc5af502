#include "proxies/relay.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>

namespace tunnels::proxies {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

// A pipe whose two ends close with it.
class Pipe {
 public:
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
      read_ = fds[0];
      write_ = fds[1];
    } else {
      error_ = errno;
    }
  }
  ~Pipe() {
    if (read_ >= 0) ::close(read_);
    if (write_ >= 0) ::close(write_);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  bool ok() const { return read_ >= 0; }
  int error() const { return error_; }
  int read_end() const { return read_; }
  int write_end() const { return write_; }

 private:
  int read_ = -1;
  int write_ = -1;
  int error_ = 0;
};

// At most this much is moved per splice call; a pipe holds 64 KiB by default.
constexpr std::size_t kChunk = 1 << 20;

struct Direction {
  std::uint64_t bytes = 0;
  std::string error;
};

// Moves bytes from `from` to `to` until `from` reaches end of stream, then
// shuts down `to`'s write side.
asio::awaitable<Direction> Pump(tcp::socket& from, tcp::socket& to) {
  Direction d;
  Pipe pipe;
  if (!pipe.ok()) {
    d.error = std::string("pipe: ") + std::strerror(pipe.error());
    co_return d;
  }
  const int in = from.native_handle();
  const int out = to.native_handle();
  boost::system::error_code ec;
  for (;;) {
    const ssize_t n =
        ::splice(in, nullptr, pipe.write_end(), nullptr, kChunk, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n == 0) break;  // end of stream
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        co_await from.async_wait(tcp::socket::wait_read,
                                 asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
          d.error = ec.message();
          co_return d;
        }
        continue;
      }
      d.error = std::strerror(errno);
      co_return d;
    }
    std::size_t in_pipe = static_cast<std::size_t>(n);
    while (in_pipe > 0) {
      const ssize_t m = ::splice(pipe.read_end(), nullptr, out, nullptr, in_pipe,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (m < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          co_await to.async_wait(tcp::socket::wait_write,
                                 asio::redirect_error(asio::use_awaitable, ec));
          if (ec) {
            d.error = ec.message();
            co_return d;
          }
          continue;
        }
        d.error = std::strerror(errno);
        co_return d;
      }
      in_pipe -= static_cast<std::size_t>(m);
      d.bytes += static_cast<std::uint64_t>(m);
    }
  }
  to.shutdown(tcp::socket::shutdown_send, ec);
  co_return d;
}

// Ends both sockets at once, with a reset, so that the side that did not
// fail learns of it right away instead of waiting on a dead connection.
void Abort(tcp::socket& a, tcp::socket& b) {
  boost::system::error_code ignored;
  for (tcp::socket* s : {&a, &b}) {
    if (!s->is_open()) continue;
    s->set_option(asio::socket_base::linger(true, 0), ignored);
    s->close(ignored);
  }
}

}  // namespace

asio::awaitable<RelayResult> Relay(std::shared_ptr<tcp::socket> client,
                                   std::shared_ptr<tcp::socket> server,
                                   std::vector<std::uint8_t> pending) {
  RelayResult result;
  boost::system::error_code ec;
  client->native_non_blocking(true, ec);
  if (!ec) server->native_non_blocking(true, ec);
  if (!ec && !pending.empty()) {
    co_await asio::async_write(*client, asio::buffer(pending),
                               asio::redirect_error(asio::use_awaitable, ec));
    result.to_client += pending.size();
  }
  if (ec) {
    result.error = ec.message();
    Abort(*client, *server);
    co_return result;
  }

  // The server-to-client half runs as its own coroutine; this one does the
  // other half and then waits for it. A timer that never expires on its own
  // serves as the "done" signal.
  auto executor = co_await asio::this_coro::executor;
  auto done = std::make_shared<asio::steady_timer>(executor, asio::steady_timer::time_point::max());
  auto down = std::make_shared<std::optional<Direction>>();
  asio::co_spawn(
      executor,
      [client, server, down, done]() -> asio::awaitable<void> {
        *down = co_await Pump(*server, *client);
        if (!(*down)->error.empty()) Abort(*client, *server);
        done->cancel();
      },
      [down, done](std::exception_ptr e) {
        // Pump reports errors as values; an exception here is a bug, and the
        // relay still has to end.
        if (e && !*down) *down = Direction{0, "internal error in relay"};
        done->cancel();
      });
  Direction up = co_await Pump(*client, *server);
  if (!up.error.empty()) Abort(*client, *server);
  if (!*down) {
    co_await done->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  result.to_server = up.bytes;
  result.to_client += (*down) ? (*down)->bytes : 0;
  if (!up.error.empty()) {
    result.error = "client side: " + up.error;
  } else if (*down && !(*down)->error.empty()) {
    result.error = "server side: " + (*down)->error;
  }
  boost::system::error_code ignored;
  client->close(ignored);
  server->close(ignored);
  co_return result;
}

}  // namespace tunnels::proxies
