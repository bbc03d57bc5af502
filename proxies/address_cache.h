// The answers of upstreamDns that NameResolver has seen, kept for as long as
// their TTLs allow, so that a `direct` rule or a proxy given by name costs
// one lookup per TTL rather than two round trips per connection.
//
// No I/O and no clock of its own: the caller passes the time, so that tests
// control it. Not thread-safe; NameResolver uses it from the engine's thread.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

#include "resolver/dns_message.h"

namespace tunnels::proxies {

// The longest a positive answer is kept, whatever its TTL: a name that moves
// is followed within the hour even if its zone asks for a day.
inline constexpr std::chrono::seconds kMaxPositiveTtl{3600};
// The longest a negative answer (NXDOMAIN, or no record of a type) is kept,
// and how long when the reply has no SOA to say (RFC 2308, section 5); also
// the longest the addresses of one family are kept when the lookup of the
// other failed.
inline constexpr std::chrono::seconds kMaxNegativeTtl{300};
inline constexpr std::chrono::seconds kDefaultNegativeTtl{30};

// How long `reply` (NOERROR or NXDOMAIN) may be kept: the smallest TTL of its
// answer records, capped at kMaxPositiveTtl; for a reply without answers,
// the smaller of its SOA's TTL and MINIMUM field, capped at kMaxNegativeTtl,
// or kDefaultNegativeTtl without an SOA. Zero means "do not keep".
std::chrono::seconds CacheTtl(const resolver::Message& reply);

class AddressCache {
 public:
  using Clock = std::chrono::steady_clock;

  struct Answer {
    std::vector<boost::asio::ip::address> addresses;  // IPv4 first, then IPv6
    std::string error;                                // why there are none
  };

  // At most `capacity` names; a store beyond drops the expired ones first,
  // then the one closest to expiry.
  explicit AddressCache(std::size_t capacity = 4096) : capacity_(capacity) {}

  // The answer for `host`, or null when there is none or it has expired
  // (then it is dropped). Valid until the next Store.
  const Answer* Find(const std::string& host, Clock::time_point now);

  // Keeps `answer` for `ttl` from `now`, replacing an older one; a zero TTL
  // (or a zero capacity) keeps nothing.
  void Store(const std::string& host, Answer answer, std::chrono::seconds ttl,
             Clock::time_point now);

  void Erase(const std::string& host) { entries_.erase(host); }
  // Moves `address` to the front of `host`'s answer, if it is in it.
  void Promote(const std::string& host, const boost::asio::ip::address& address);
  void Clear() { entries_.clear(); }

  std::size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    Answer answer;
    Clock::time_point expires;
  };
  void MakeRoom(Clock::time_point now);

  std::size_t capacity_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace tunnels::proxies
