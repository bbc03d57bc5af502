// Copies bytes both ways between a client and a server until both sides are
// done, keeping half-closes (a client that shuts down its write side still
// gets the whole answer) and turning a reset on one side into a reset on the
// other.
#pragma once

#include <functional>

#include "proxies/connector.h"

namespace tunnels::proxies {

// Ends the connections that moved no byte, either way, for their idle
// timeout (the caller's `on_idle` resets both sides: a FIN would tell the
// client that the server finished). One per thread that carries connections:
// a single timer sweeps them all, instead of a timer per connection, and it
// runs only while connections are watched, so an idle tunnels never wakes up
// for it. Single-threaded: use it on its executor's thread only.
class IdleWatch {
 public:
  explicit IdleWatch(boost::asio::any_io_executor executor);
  ~IdleWatch();
  IdleWatch(const IdleWatch&) = delete;
  IdleWatch& operator=(const IdleWatch&) = delete;

  // The timeout of the connections watched from now on (the engine's
  // current connectionIdleTimeout); zero: never.
  void SetTimeout(Clock::duration timeout);
  Clock::duration timeout() const;

  struct State;  // shared with the sweeping coroutine, which may outlive the watch
  struct Entry;

  // One watched connection; it is watched until this is destroyed (or reset).
  class Watching {
   public:
    Watching() = default;
    Watching(Watching&&) noexcept = default;
    Watching& operator=(Watching&& other) noexcept;
    ~Watching();
    // Whoever moves the connection's bytes counts them here.
    void Moved(std::uint64_t bytes);
    // Whether the watch ended the connection.
    bool fired() const;

   private:
    friend class IdleWatch;
    std::shared_ptr<State> state_;
    std::shared_ptr<Entry> entry_;
  };

  // Watches a connection with `timeout` (zero: an empty Watching); after
  // `timeout` to 1.25 x `timeout` without a byte, `on_idle` runs, once.
  Watching Watch(Clock::duration timeout, std::function<void()> on_idle);

 private:
  std::shared_ptr<State> state_;
};

// `pending` is sent to the client first. The bytes move with splice(2)
// through a pipe per direction, so they never enter user space. A direction
// holds its pipe only while bytes are in it (empty pipes go back to a
// per-thread pool), so an idle connection costs its two sockets and no pipe;
// a direction that carries a bulk transfer asks for a 1 MiB pipe. With
// `idle`, the relay is reset when it stays idle for the watch's timeout.
boost::asio::awaitable<RelayResult> Relay(std::shared_ptr<boost::asio::ip::tcp::socket> client,
                                          std::shared_ptr<boost::asio::ip::tcp::socket> server,
                                          std::vector<std::uint8_t> pending,
                                          IdleWatch* idle = nullptr);

// RelayResult::error of a connection the idle watch ended.
std::string IdleReason(Clock::duration timeout);

}  // namespace tunnels::proxies
