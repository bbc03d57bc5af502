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

// Ends the relays that moved no byte, either way, for their idle timeout,
// with a reset on both sides (a FIN would tell the client that the server
// finished). One per engine: a single timer sweeps every relay, instead of a
// timer per connection, and it runs only while relays are registered, so an
// idle tunnels never wakes up for it.
class IdleWatch {
 public:
  explicit IdleWatch(boost::asio::any_io_executor executor);
  ~IdleWatch();
  IdleWatch(const IdleWatch&) = delete;
  IdleWatch& operator=(const IdleWatch&) = delete;

  // For the relays that start from now on; zero: they are never ended for
  // being idle. A relay is ended between its timeout and a quarter more.
  void SetTimeout(Clock::duration timeout);
  Clock::duration timeout() const;

  struct State;  // shared with the sweeping coroutine, which may outlive the watch
  const std::shared_ptr<State>& state() const { return state_; }

 private:
  std::shared_ptr<State> state_;
};

// `pending` is sent to the client first. The bytes move with splice(2)
// through a pipe per direction, so they never enter user space. A direction
// holds its pipe only while bytes are in it (empty pipes go back to a
// per-thread pool), so an idle connection costs its two sockets and no pipe;
// a direction that carries a bulk transfer asks for a 1 MiB pipe.
// `server_reset` (Stream::reset), when set at the server's end of stream,
// turns that end into a reset of the client. With `idle`, the relay is
// ended when it stays idle for the watch's timeout.
boost::asio::awaitable<RelayResult> Relay(
    std::shared_ptr<boost::asio::ip::tcp::socket> client,
    std::shared_ptr<boost::asio::ip::tcp::socket> server, std::vector<std::uint8_t> pending,
    std::shared_ptr<const std::atomic<bool>> server_reset = nullptr, IdleWatch* idle = nullptr);

}  // namespace tunnels::proxies
