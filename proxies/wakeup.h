// Waking coroutines of one thread when another coroutine of that thread has
// done something they wait for (a lookup finished, a connection attempt
// ended). Boost 1.74 has no awaitable operators or channels for this; a timer
// that never expires by itself, cancelled to wake its waiters, is the idiom.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "proxies/connector.h"

namespace tunnels::proxies {

class Wakeup {
 public:
  explicit Wakeup(const boost::asio::any_io_executor& executor);

  // Ends every wait under way. A waiter checks its condition before it
  // waits (all on one thread, so nothing can happen in between).
  void Notify();

  // Returns after Notify() or at `until`, whichever comes first. Waiters that
  // wait at the same time must pass the same `until` (as many waiting for
  // one lookup do with the default): a new expiry ends the other waits.
  boost::asio::awaitable<void> Wait(Clock::time_point until = Clock::time_point::max());

 private:
  boost::asio::steady_timer timer_;
};

}  // namespace tunnels::proxies
