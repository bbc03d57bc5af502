// Resolves names through the upstream DNS servers directly, never through
// tunnels' own DNS server: a proxy's host name or a `direct` target must get
// its real address, not a fake one (which would loop back into tunnels).
//
// Each name costs one lookup per TTL: answers are kept in an AddressCache
// (negative ones too, briefly), concurrent requests for a name share one
// lookup, and a lookup asks for A and AAAA at the same time.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "proxies/address_cache.h"
#include "proxies/connector.h"
#include "resolver/upstream.h"

namespace tunnels::proxies {

class NameResolver {
 public:
  explicit NameResolver(resolver::Upstream& upstream) : upstream_(upstream) {}
  ~NameResolver();
  NameResolver(const NameResolver&) = delete;
  NameResolver& operator=(const NameResolver&) = delete;

  // The IPv4 addresses of `host`, then its IPv6 ones; an IP literal gives
  // itself. Empty with `error` set when there are none. Only from the
  // engine's thread (the io_context's), like everything else here.
  boost::asio::awaitable<std::vector<boost::asio::ip::address>> Resolve(const std::string& host,
                                                                        std::string* error);

  // Forgets what the cache holds for `host`: none of its addresses could be
  // reached, so the next connection asks again instead of trying the same
  // addresses until their TTL runs out (a server that moved, say).
  void Forget(const std::string& host) { cache_.Erase(host); }
  // `address` of `host` took a connection when the one before it did not:
  // the next connections try it first.
  void Prefer(const std::string& host, const boost::asio::ip::address& address) {
    cache_.Promote(host, address);
  }
  // Forgets every answer (a reload: see Engine::Update).
  void ForgetAll() { cache_.Clear(); }

  // What the cache holds: for tests and the log.
  std::size_t cached() const { return cache_.size(); }

 private:
  struct Lookup;
  // One lookup: A and AAAA at once; stores what may be kept.
  boost::asio::awaitable<AddressCache::Answer> Ask(const std::string& host);

  resolver::Upstream& upstream_;
  std::uint16_t next_id_ = 1;
  AddressCache cache_;
  // The lookups under way, by name, for requests that arrive meanwhile.
  std::unordered_map<std::string, std::shared_ptr<Lookup>> in_flight_;
  // Expires with this resolver: see Resolve().
  std::shared_ptr<const bool> alive_ = std::make_shared<const bool>(true);
};

}  // namespace tunnels::proxies
