#include "resolver/fake_pool.h"

#include <algorithm>
#include <utility>

namespace tunnels::resolver {

namespace {

std::string FormatIpv4(std::uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 0xFF) + "." +
         std::to_string((a >> 8) & 0xFF) + "." + std::to_string(a & 0xFF);
}

}  // namespace

std::unique_ptr<FakePool> FakePool::Create(Options options, std::string* error) {
  const auto fail = [error](std::string why) {
    if (error != nullptr) *error = std::move(why);
    return std::unique_ptr<FakePool>();
  };
  if (options.prefix_length < 1 || options.prefix_length > 30) {
    // Longer than /30 leaves no address besides the network and blackhole ones.
    return fail("prefix length /" + std::to_string(options.prefix_length) +
                " is not between /1 and /30");
  }
  const std::uint32_t host_mask = (1u << (32 - options.prefix_length)) - 1;
  if ((options.network & host_mask) != 0) {
    return fail(FormatIpv4(options.network) + "/" + std::to_string(options.prefix_length) +
                " has host bits set");
  }
  if (options.cleanup_time < Duration::zero()) return fail("negative cleanup time");
  const std::uint32_t last = options.network | host_mask;
  // The constructor is private, so make_unique cannot reach it.
  return std::unique_ptr<FakePool>(new FakePool(std::move(options), last));
}

FakePool::FakePool(Options options, std::uint32_t last)
    : network_(options.network),
      prefix_length_(options.prefix_length),
      last_(last),
      cleanup_time_(options.cleanup_time),
      answer_ttl_(options.answer_ttl),
      clock_(std::move(options.clock)),
      next_fresh_(std::uint64_t{options.network} + 1) {}

FakePool::~FakePool() = default;

FakePool::TimePoint FakePool::Now() const {
  return clock_ ? clock_() : std::chrono::steady_clock::now();
}

FakePool::AllocateResult FakePool::Allocate(std::string_view name) {
  AllocateResult result;
  if (name.empty()) {
    result.error = "cannot map the empty (root) name";
    return result;
  }
  std::lock_guard lock(mutex_);
  const TimePoint now = Now();
  ExpireLocked(now);
  if (auto it = by_name_.find(name); it != by_name_.end()) {
    Entry& entry = entries_.at(it->second);
    entry.last_used = now;
    if (entry.holds == 0) idle_.splice(idle_.begin(), idle_, entry.idle_position);
    result.address = it->second;
    return result;
  }
  std::optional<std::uint32_t> address = FreshAddressLocked();
  if (!address) {
    if (idle_.empty()) {
      result.error = "all " + std::to_string(capacity()) + " addresses of " + FormatIpv4(network_) +
                     "/" + std::to_string(prefix_length_) + " are held by live connections";
      return result;
    }
    // The pool is full: recycle the mapping that has gone unused longest,
    // unless a client may still hold its answer.
    const std::uint32_t victim = idle_.back();
    Entry& entry = entries_.at(victim);
    if (now - entry.last_used < answer_ttl_) {
      result.error =
          "all " + std::to_string(capacity()) + " addresses of " + FormatIpv4(network_) + "/" +
          std::to_string(prefix_length_) + " were handed out within the answers' TTL (" +
          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(answer_ttl_).count()) +
          " s); recycling one would send the connections of clients that still "
          "hold it to another name. Widen privateAddresses, or shorten "
          "addressCleanupTime";
      return result;
    }
    result.evicted = entry.name;
    RemoveLocked(victim, entry);
    address = victim;
  }
  AddLocked(name, *address, now);
  if (observer_) observer_(*address, name);
  result.address = address;
  result.created = true;
  return result;
}

std::optional<FakePool::Mapping> FakePool::Lookup(std::uint32_t address) {
  std::lock_guard lock(mutex_);
  ExpireLocked(Now());
  const auto it = entries_.find(address);
  if (it == entries_.end()) return std::nullopt;
  return Mapping{it->second.name, address, it->second.holds, it->second.last_used};
}

std::optional<std::string> FakePool::Hold(std::uint32_t address) {
  std::lock_guard lock(mutex_);
  ExpireLocked(Now());
  const auto it = entries_.find(address);
  if (it == entries_.end()) return std::nullopt;
  Entry& entry = it->second;
  if (entry.holds == 0) {
    // Held mappings leave the idle list, so that neither expiry nor
    // recycling, which only look there, can touch them.
    idle_.erase(entry.idle_position);
    ++held_count_;
  }
  ++entry.holds;
  return entry.name;
}

bool FakePool::Release(std::uint32_t address) {
  std::lock_guard lock(mutex_);
  const TimePoint now = Now();
  ExpireLocked(now);
  const auto it = entries_.find(address);
  if (it == entries_.end() || it->second.holds == 0) return false;
  Entry& entry = it->second;
  if (--entry.holds == 0) {
    entry.last_used = now;
    idle_.push_front(address);
    entry.idle_position = idle_.begin();
    --held_count_;
  }
  return true;
}

bool FakePool::Touch(std::uint32_t address) {
  std::lock_guard lock(mutex_);
  const TimePoint now = Now();
  ExpireLocked(now);
  const auto it = entries_.find(address);
  if (it == entries_.end()) return false;
  Entry& entry = it->second;
  entry.last_used = now;
  if (entry.holds == 0) idle_.splice(idle_.begin(), idle_, entry.idle_position);
  return true;
}

std::size_t FakePool::Expire() {
  std::lock_guard lock(mutex_);
  return ExpireLocked(Now());
}

std::vector<FakePool::Mapping> FakePool::Snapshot() {
  std::lock_guard lock(mutex_);
  ExpireLocked(Now());
  std::vector<Mapping> out;
  out.reserve(entries_.size());
  for (const auto& [address, entry] : entries_) {
    out.push_back(Mapping{entry.name, address, entry.holds, entry.last_used});
  }
  std::sort(out.begin(), out.end(),
            [](const Mapping& a, const Mapping& b) { return a.address < b.address; });
  return out;
}

std::size_t FakePool::Restore(std::span<const Mapping> mappings) {
  std::lock_guard lock(mutex_);
  const TimePoint now = Now();
  ExpireLocked(now);
  std::size_t added = 0;
  for (const Mapping& m : mappings) {
    if (m.name.empty() || !UsableLocked(m.address) || entries_.contains(m.address) ||
        by_name_.contains(m.name)) {
      continue;
    }
    AddLocked(m.name, m.address, now);
    ++added;
  }
  return added;
}

bool FakePool::Contains(std::uint32_t address) const {
  return address >= network_ && address <= last_;
}

std::uint64_t FakePool::capacity() const { return std::uint64_t{last_} - network_ - 1; }

std::uint64_t FakePool::changes() {
  std::lock_guard lock(mutex_);
  ExpireLocked(Now());
  return changes_;
}

std::size_t FakePool::size() {
  std::lock_guard lock(mutex_);
  ExpireLocked(Now());
  return entries_.size();
}

std::size_t FakePool::held() {
  std::lock_guard lock(mutex_);
  return held_count_;
}

std::size_t FakePool::ExpireLocked(TimePoint now) {
  // The idle list is ordered by last use, so the expired ones are a tail.
  std::size_t expired = 0;
  while (!idle_.empty()) {
    const std::uint32_t address = idle_.back();
    Entry& entry = entries_.at(address);
    if (now - entry.last_used < cleanup_time_) break;
    RemoveLocked(address, entry);
    freed_.push_back(address);
    ++expired;
  }
  return expired;
}

std::optional<std::uint32_t> FakePool::FreshAddressLocked() {
  // Restore() may have mapped addresses that these would hand out; each is
  // skipped once, so this stays O(1) amortized.
  while (next_fresh_ < last_) {
    const auto address = static_cast<std::uint32_t>(next_fresh_++);
    if (!entries_.contains(address)) return address;
  }
  while (!freed_.empty()) {
    const std::uint32_t address = freed_.front();
    freed_.pop_front();
    if (!entries_.contains(address)) return address;
  }
  return std::nullopt;
}

void FakePool::RemoveLocked(std::uint32_t address, Entry& entry) {
  ++changes_;
  // by_name_'s key points into entry.name: erase it first.
  by_name_.erase(entry.name);
  if (entry.holds == 0) {
    idle_.erase(entry.idle_position);
  } else {
    --held_count_;
  }
  entries_.erase(address);
}

void FakePool::AddLocked(std::string_view name, std::uint32_t address, TimePoint now) {
  ++changes_;
  auto [it, inserted] = entries_.try_emplace(address);
  Entry& entry = it->second;
  entry.name = std::string(name);
  entry.holds = 0;
  entry.last_used = now;
  idle_.push_front(address);
  entry.idle_position = idle_.begin();
  by_name_.emplace(entry.name, address);
}

bool FakePool::UsableLocked(std::uint32_t address) const {
  return address > network_ && address < last_;
}

}  // namespace tunnels::resolver
