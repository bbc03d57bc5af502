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

// Why an address that the upstream DNS server gave for a name must not be
// connected to, or "" when it may. Answers in loopback, 0.0.0.0/8 (and ::),
// link-local, multicast, the reserved 240.0.0.0/4 and the fake range would
// let whoever controls a name's DNS reach this host's own services, or
// tunnels itself (DNS rebinding; as dnsmasq --stop-dns-rebind and unbound's
// private-address refuse them). The private ranges (RFC 1918, ULA fc00::/7)
// only when `allow_private` is false: intranet names answered with them are
// what a `direct` rule for an intranet is for. "localhost" and names under
// it may be loopback (RFC 6761 says they are).
struct AnswerPolicy {
  std::uint32_t fake_network = 0xC6120000u;  // host byte order
  int fake_prefix_length = 15;
  bool allow_private = true;
};
std::string RefusedAnswer(const std::string& host, const boost::asio::ip::address& address,
                          const AnswerPolicy& policy);

class NameResolver {
 public:
  explicit NameResolver(resolver::Upstream& upstream, const config::Log* log = nullptr)
      : upstream_(upstream), log_(log) {}
  ~NameResolver();
  NameResolver(const NameResolver&) = delete;
  NameResolver& operator=(const NameResolver&) = delete;

  // The IPv4 addresses of `host`, then its IPv6 ones; an IP literal gives
  // itself. With `check`, the addresses RefusedAnswer refuses are left
  // out (and logged); without it (a forcedAddress the user wrote) none is.
  // Empty with `error` set when there are none. Only from the engine's
  // thread (the io_context's), like everything else here.
  boost::asio::awaitable<std::vector<boost::asio::ip::address>> Resolve(const std::string& host,
                                                                        std::string* error,
                                                                        bool check = true);

  // Which answers Resolve refuses from now on (a reload may change it).
  void SetPolicy(const AnswerPolicy& policy) { policy_ = policy; }

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

  // The addresses of `addresses` that `policy_` allows; `error` says why
  // there are none left.
  std::vector<boost::asio::ip::address> Allowed(const std::string& host,
                                                std::vector<boost::asio::ip::address> addresses,
                                                std::string* error) const;

  resolver::Upstream& upstream_;
  const config::Log* log_;  // for refused answers; none in some tests
  AnswerPolicy policy_;
  std::uint16_t next_id_ = 1;
  AddressCache cache_;
  // The lookups under way, by name, for requests that arrive meanwhile.
  std::unordered_map<std::string, std::shared_ptr<Lookup>> in_flight_;
  // Expires with this resolver: see Resolve().
  std::shared_ptr<const bool> alive_ = std::make_shared<const bool>(true);
};

}  // namespace tunnels::proxies
