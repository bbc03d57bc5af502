// Deadlines for Boost.Asio operations. Boost 1.74 has no awaitable
// operators, so a timer closes the socket instead; the handler holds the
// socket by shared_ptr, so it can never outlive it. Closing, not cancelling:
// a cancel reaches only the operation pending at that moment, and when the
// timer fires between two operations (the first one's completion already
// queued), the next one would wait without a deadline. After a close every
// operation fails at once, and `expired()` tells why.
//
// So work that completed at the deadline may still find its socket closed:
// whoever keeps the socket past the guard checks `expired()` first.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>

namespace tunnels::resolver {

template <typename Socket>
class Deadline {
 public:
  Deadline(std::shared_ptr<Socket> socket, std::chrono::steady_clock::time_point when)
      : timer_(std::make_shared<boost::asio::steady_timer>(socket->get_executor(), when)) {
    timer_->async_wait([socket = std::move(socket), timer = timer_,
                        expired = expired_](const boost::system::error_code& ec) {
      if (ec) return;  // cancelled: the operation finished in time
      *expired = true;
      boost::system::error_code ignored;
      socket->close(ignored);
    });
  }
  ~Deadline() { timer_->cancel(); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  bool expired() const { return *expired_; }

 private:
  std::shared_ptr<boost::asio::steady_timer> timer_;
  std::shared_ptr<bool> expired_ = std::make_shared<bool>(false);
};

}  // namespace tunnels::resolver
