#include "proxies/address_cache.h"

#include <algorithm>
#include <limits>

namespace tunnels::proxies {

std::chrono::seconds CacheTtl(const resolver::Message& reply) {
  using std::chrono::seconds;
  if (!reply.answers.empty()) {
    std::uint32_t ttl = std::numeric_limits<std::uint32_t>::max();
    for (const resolver::ResourceRecord& rr : reply.answers) ttl = std::min(ttl, rr.ttl);
    return std::min(seconds(ttl), kMaxPositiveTtl);
  }
  for (const resolver::ResourceRecord& rr : reply.authorities) {
    // SOA RDATA ends with SERIAL, REFRESH, RETRY, EXPIRE and MINIMUM, 32 bits
    // each, after two names of at least one byte each.
    if (rr.type != resolver::dns_type::kSoa || rr.rdata.size() < 22) continue;
    const std::uint8_t* m = rr.rdata.data() + rr.rdata.size() - 4;
    const std::uint32_t minimum = std::uint32_t{m[0]} << 24 | std::uint32_t{m[1]} << 16 |
                                  std::uint32_t{m[2]} << 8 | std::uint32_t{m[3]};
    return std::min(seconds(std::min(rr.ttl, minimum)), kMaxNegativeTtl);
  }
  return kDefaultNegativeTtl;
}

const AddressCache::Answer* AddressCache::Find(const std::string& host, Clock::time_point now) {
  const auto it = entries_.find(host);
  if (it == entries_.end()) return nullptr;
  if (it->second.expires <= now) {
    entries_.erase(it);
    return nullptr;
  }
  return &it->second.answer;
}

void AddressCache::Store(const std::string& host, Answer answer, std::chrono::seconds ttl,
                         Clock::time_point now) {
  if (ttl <= std::chrono::seconds::zero() || capacity_ == 0) return;
  const Clock::time_point expires = now + ttl;
  if (auto it = entries_.find(host); it != entries_.end()) {
    it->second = Entry{std::move(answer), expires};
    return;
  }
  if (entries_.size() >= capacity_) MakeRoom(now);
  entries_.emplace(host, Entry{std::move(answer), expires});
}

void AddressCache::Promote(const std::string& host, const boost::asio::ip::address& address) {
  const auto it = entries_.find(host);
  if (it == entries_.end()) return;
  auto& addresses = it->second.answer.addresses;
  const auto found = std::find(addresses.begin(), addresses.end(), address);
  if (found != addresses.end()) std::rotate(addresses.begin(), found, found + 1);
}

void AddressCache::MakeRoom(Clock::time_point now) {
  // Linear, but only when full, and a full sweep frees every expired entry
  // at once: the cost is spread over the stores that filled it.
  std::erase_if(entries_, [now](const auto& kv) { return kv.second.expires <= now; });
  if (entries_.size() < capacity_) return;
  const auto soonest = std::min_element(entries_.begin(), entries_.end(), [](auto& a, auto& b) {
    return a.second.expires < b.second.expires;
  });
  entries_.erase(soonest);
}

}  // namespace tunnels::proxies
