// The table of fake addresses: which name each handed-out address of the
// private range stands for.
//
// The DNS server calls Allocate() for a name that a rule sends through a
// proxy; the connection engine later turns the address a client connects to
// back into the name, holding the mapping for as long as the connection
// lives. A mapping that is neither queried nor used for `cleanup_time` is
// forgotten; a held one never is.
//
// Addresses: in network/length, the first address (the network address) and
// the last one (all host bits set) are never handed out. The last one is the
// blackhole address, which the server answers for blocked names. A /30 thus
// has two usable addresses, the default 198.18.0.0/15 has 131070.
//
// Which address a new name gets, in order of preference: one never handed out
// before (so that a client's stale DNS cache meets a stale address as late as
// possible), then one freed by expiry (oldest first), then the mapping that
// has been idle longest is recycled. Only when every mapping is held by a
// connection does Allocate() fail.
//
// Thread-safe: every member function takes one mutex. Every operation is O(1)
// amortized (hash maps and an LRU list of idle mappings); memory grows with
// the mappings made, never with the size of the range.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tunnels::resolver {

class FakePool {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Duration = std::chrono::steady_clock::duration;
  // Injectable so that tests control time; steady_clock::now when empty.
  using Clock = std::function<TimePoint()>;

  struct Options {
    std::uint32_t network = 0xC6120000u;  // host byte order; 198.18.0.0
    int prefix_length = 15;               // 1..30
    Duration cleanup_time = std::chrono::hours(1);
    // The TTL of the fake answers. A full pool recycles only a mapping last
    // used longer ago than this: a client may still hold a younger answer,
    // and its connections would reach the new name. Zero: any idle one.
    Duration answer_ttl{};
    Clock clock;
  };

  struct Mapping {
    std::string name;
    std::uint32_t address = 0;  // host byte order
    std::uint32_t holds = 0;    // live connections
    TimePoint last_used{};      // the last query, or the last release

    friend bool operator==(const Mapping&, const Mapping&) = default;
  };

  struct AllocateResult {
    std::optional<std::uint32_t> address;
    std::string error;     // why there is no address
    bool created = false;  // a new mapping rather than the name's existing one
    // The name whose idle mapping was recycled to make this one, if any.
    std::optional<std::string> evicted;

    bool ok() const { return address.has_value(); }
  };

  // Null, with `*error` saying why, for a prefix that is not 1..30 bits long
  // or has host bits set, or a negative cleanup time.
  static std::unique_ptr<FakePool> Create(Options options, std::string* error = nullptr);

  FakePool(const FakePool&) = delete;
  FakePool& operator=(const FakePool&) = delete;
  ~FakePool();

  // The name's address, mapping it if need be; counts as a use of the
  // mapping. Names are compared byte for byte: pass them normalized.
  AllocateResult Allocate(std::string_view name);

  // Told of every mapping Allocate() makes, before Allocate() returns it (so
  // before any client can have seen the address), under the pool's lock:
  // keep it short, and do not call back into the pool. For saving mappings
  // as they are made (launcher/mappings_file.h). Set it before the pool is
  // shared between threads.
  using Observer = std::function<void(std::uint32_t address, std::string_view name)>;
  void SetObserver(Observer observer) { observer_ = std::move(observer); }

  // The mapping of `address`, without counting as a use.
  std::optional<Mapping> Lookup(std::uint32_t address);

  // Pins the mapping for a connection and returns its name, in one step so
  // that the mapping cannot change in between; nullopt when the address is
  // not mapped. Every successful Hold() needs one Release().
  std::optional<std::string> Hold(std::uint32_t address);
  // Ends a Hold(); the last one counts as a use. False when the address is
  // not held.
  bool Release(std::uint32_t address);
  // Counts as a use (e.g. a PTR query for the address); false when unmapped.
  bool Touch(std::uint32_t address);

  // Forgets the mappings idle for cleanup_time; returns how many. Every
  // other operation does this first, so calling it is only needed to free
  // memory when the pool is otherwise unused.
  std::size_t Expire();

  // Every mapping, ordered by address: what a later run can Restore().
  std::vector<Mapping> Snapshot();
  // Adds mappings (only name and address are used; they start idle, as if
  // used now). Entries whose address is outside the usable range, or whose
  // name or address is already mapped, are skipped. Returns how many were
  // added.
  std::size_t Restore(std::span<const Mapping> mappings);

  bool Contains(std::uint32_t address) const;  // within the prefix at all
  std::uint32_t network() const { return network_; }
  int prefix_length() const { return prefix_length_; }
  std::uint32_t blackhole() const { return last_; }
  std::uint64_t capacity() const;  // addresses that can be handed out
  std::size_t size();              // current mappings
  // How many mappings have been made or removed so far: Snapshot() can
  // differ from an earlier one only if this did. Cheap, unlike Snapshot().
  std::uint64_t changes();
  std::size_t held();  // mappings with holds > 0

 private:
  struct Entry {
    std::string name;
    std::uint32_t holds = 0;
    TimePoint last_used{};
    std::list<std::uint32_t>::iterator idle_position;  // valid when holds == 0
  };

  FakePool(Options options, std::uint32_t last);

  TimePoint Now() const;
  // Requires mutex_ held, as do the rest.
  std::size_t ExpireLocked(TimePoint now);
  std::optional<std::uint32_t> FreshAddressLocked();
  void RemoveLocked(std::uint32_t address, Entry& entry);
  void AddLocked(std::string_view name, std::uint32_t address, TimePoint now);
  bool UsableLocked(std::uint32_t address) const;

  const std::uint32_t network_;
  const int prefix_length_;
  const std::uint32_t last_;  // the blackhole
  const Duration cleanup_time_;
  const Duration answer_ttl_;
  const Clock clock_;
  Observer observer_;

  std::mutex mutex_;
  // Address -> mapping. Nodes never move, so by_name_ keys can point into
  // the names they hold.
  std::unordered_map<std::uint32_t, Entry> entries_;
  std::unordered_map<std::string_view, std::uint32_t> by_name_;
  // Idle mappings (holds == 0), most recently used first: the back is the
  // first to expire and the first to recycle.
  std::list<std::uint32_t> idle_;
  // The next address never handed out, up to last_ (exclusive).
  std::uint64_t next_fresh_;
  // Addresses freed by expiry, oldest first.
  std::deque<std::uint32_t> freed_;
  std::size_t held_count_ = 0;
  std::uint64_t changes_ = 0;
};

}  // namespace tunnels::resolver
