#include "proxies/wakeup.h"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tunnels::proxies {

namespace asio = boost::asio;

Wakeup::Wakeup(const asio::any_io_executor& executor)
    : timer_(executor, Clock::time_point::max()) {}

void Wakeup::Notify() { timer_.cancel(); }

asio::awaitable<void> Wakeup::Wait(Clock::time_point until) {
  if (timer_.expiry() != until) timer_.expires_at(until);
  boost::system::error_code ignored;  // operation_aborted: Notify() was called
  co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
}

}  // namespace tunnels::proxies
