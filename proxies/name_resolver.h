// Resolves names through the upstream DNS servers directly, never through
// tunnels' own DNS server: a proxy's host name or a `direct` target must get
// its real address, not a fake one (which would loop back into tunnels).
#pragma once

#include "proxies/connector.h"
#include "resolver/upstream.h"

namespace tunnels::proxies {

class NameResolver {
 public:
  explicit NameResolver(resolver::Upstream& upstream) : upstream_(upstream) {}

  // The IPv4 addresses of `host`, then its IPv6 ones; an IP literal gives
  // itself. Empty with `error` set when there are none.
  boost::asio::awaitable<std::vector<boost::asio::ip::address>> Resolve(const std::string& host,
                                                                        std::string* error);

 private:
  resolver::Upstream& upstream_;
  std::uint16_t next_id_ = 1;
};

}  // namespace tunnels::proxies
