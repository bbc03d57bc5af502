#include "resolver/fake_pool.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace tunnels::resolver {
namespace {

using std::chrono::seconds;

constexpr std::uint32_t Ip(std::uint32_t a, std::uint32_t b, std::uint32_t c, std::uint32_t d) {
  return (a << 24) | (b << 16) | (c << 8) | d;
}

// A clock that moves only when the test says so.
struct TestClock {
  FakePool::TimePoint now{std::chrono::hours(1000)};
  FakePool::Clock Get() {
    return [this] { return now; };
  }
};

std::unique_ptr<FakePool> MakePool(TestClock& clock, std::uint32_t network, int length,
                                   FakePool::Duration cleanup = seconds(100)) {
  FakePool::Options options;
  options.network = network;
  options.prefix_length = length;
  options.cleanup_time = cleanup;
  options.clock = clock.Get();
  std::string error;
  std::unique_ptr<FakePool> pool = FakePool::Create(options, &error);
  INFO(error);
  REQUIRE(pool != nullptr);
  return pool;
}

std::uint32_t MustAllocate(FakePool& pool, const std::string& name) {
  FakePool::AllocateResult r = pool.Allocate(name);
  INFO(name << ": " << r.error);
  REQUIRE(r.ok());
  return *r.address;
}

TEST_CASE("Create checks the prefix", "[pool]") {
  std::string error;
  FakePool::Options options;
  options.network = Ip(10, 0, 0, 0);
  for (int bad : {0, 31, 32, -1, 33}) {
    options.prefix_length = bad;
    CHECK(FakePool::Create(options, &error) == nullptr);
    CHECK(error.find("prefix length") != std::string::npos);
  }
  options.prefix_length = 8;
  options.network = Ip(10, 0, 0, 1);
  CHECK(FakePool::Create(options, &error) == nullptr);
  CHECK(error == "10.0.0.1/8 has host bits set");
  options.network = Ip(10, 0, 0, 0);
  options.cleanup_time = seconds(-1);
  CHECK(FakePool::Create(options, &error) == nullptr);
  options.cleanup_time = seconds(0);
  CHECK(FakePool::Create(options) != nullptr);

  // The defaults are 198.18.0.0/15.
  const std::unique_ptr<FakePool> pool = FakePool::Create(FakePool::Options{});
  REQUIRE(pool != nullptr);
  CHECK(pool->network() == Ip(198, 18, 0, 0));
  CHECK(pool->prefix_length() == 15);
  CHECK(pool->blackhole() == Ip(198, 19, 255, 255));
  CHECK(pool->capacity() == 131070);
  CHECK(pool->Contains(Ip(198, 18, 0, 0)));
  CHECK(pool->Contains(Ip(198, 19, 255, 255)));
  CHECK_FALSE(pool->Contains(Ip(198, 20, 0, 0)));
  CHECK_FALSE(pool->Contains(Ip(198, 17, 255, 255)));
}

TEST_CASE("the same name keeps its address, different names get different ones", "[pool]") {
  TestClock clock;
  auto pool = MakePool(clock, Ip(198, 18, 0, 0), 15);
  const std::uint32_t a = MustAllocate(*pool, "a.example.com");
  const std::uint32_t b = MustAllocate(*pool, "b.example.com");
  CHECK(a == Ip(198, 18, 0, 1));  // the network address is skipped
  CHECK(b == Ip(198, 18, 0, 2));
  const FakePool::AllocateResult again = pool->Allocate("a.example.com");
  CHECK(again.address == a);
  CHECK_FALSE(again.created);
  CHECK(pool->Allocate("c.example.com").created);
  CHECK(pool->size() == 3);

  const std::optional<FakePool::Mapping> m = pool->Lookup(a);
  REQUIRE(m.has_value());
  CHECK(m->name == "a.example.com");
  CHECK(m->address == a);
  CHECK(m->holds == 0);
  CHECK_FALSE(pool->Lookup(Ip(198, 18, 0, 200)).has_value());
  CHECK_FALSE(pool->Lookup(Ip(1, 2, 3, 4)).has_value());
  CHECK_FALSE(pool->Allocate("").ok());
}

TEST_CASE("mappings expire cleanup_time after their last use", "[pool][expiry]") {
  TestClock clock;
  auto pool = MakePool(clock, Ip(10, 0, 0, 0), 24, seconds(100));
  const std::uint32_t a = MustAllocate(*pool, "a");

  clock.now += seconds(99);
  CHECK(pool->Lookup(a).has_value());
  // Lookup is not a use: a is still due at 100 s.
  clock.now += seconds(1);
  CHECK_FALSE(pool->Lookup(a).has_value());
  CHECK(pool->size() == 0);

  SECTION("a new mapping for the name gets a fresh address, not the freed one") {
    const std::uint32_t again = MustAllocate(*pool, "a");
    CHECK(again != a);
    CHECK(again == Ip(10, 0, 0, 2));
  }
  SECTION("Allocate and Touch count as use") {
    const std::uint32_t b = MustAllocate(*pool, "b");
    clock.now += seconds(60);
    MustAllocate(*pool, "b");
    clock.now += seconds(60);
    CHECK(pool->Lookup(b).has_value());
    REQUIRE(pool->Touch(b));
    clock.now += seconds(99);
    CHECK(pool->Lookup(b).has_value());
    clock.now += seconds(1);
    CHECK_FALSE(pool->Lookup(b).has_value());
    CHECK_FALSE(pool->Touch(b));
  }
  SECTION("Expire reports how many went") {
    MustAllocate(*pool, "b");
    MustAllocate(*pool, "c");
    clock.now += seconds(50);
    MustAllocate(*pool, "d");
    CHECK(pool->Expire() == 0);
    clock.now += seconds(50);
    CHECK(pool->Expire() == 2);
    CHECK(pool->size() == 1);
  }
}

TEST_CASE("a held mapping never expires, and its life restarts at the last release",
          "[pool][hold]") {
  TestClock clock;
  auto pool = MakePool(clock, Ip(10, 0, 0, 0), 24, seconds(100));
  const std::uint32_t a = MustAllocate(*pool, "a");
  CHECK(pool->Hold(a) == "a");
  CHECK(pool->Hold(a) == "a");  // two connections
  CHECK(pool->held() == 1);
  CHECK(pool->Lookup(a)->holds == 2);

  clock.now += seconds(1000);
  CHECK(pool->Expire() == 0);
  CHECK(pool->Lookup(a).has_value());
  CHECK(pool->Release(a));
  clock.now += seconds(1000);
  CHECK(pool->Lookup(a).has_value());
  CHECK(pool->Release(a));  // the last one: counts as use now
  CHECK(pool->held() == 0);
  CHECK_FALSE(pool->Release(a));  // not held any more

  clock.now += seconds(99);
  CHECK(pool->Lookup(a).has_value());
  clock.now += seconds(1);
  CHECK_FALSE(pool->Lookup(a).has_value());

  CHECK_FALSE(pool->Hold(a).has_value());  // unmapped
  CHECK_FALSE(pool->Release(Ip(10, 0, 0, 77)));
}

TEST_CASE("a /30 has two addresses, and the full pool recycles the LRU idle mapping",
          "[pool][recycle]") {
  TestClock clock;
  auto pool = MakePool(clock, Ip(192, 168, 7, 0), 30, seconds(100));
  CHECK(pool->capacity() == 2);
  CHECK(pool->blackhole() == Ip(192, 168, 7, 3));
  const std::uint32_t a = MustAllocate(*pool, "a");
  clock.now += seconds(1);
  const std::uint32_t b = MustAllocate(*pool, "b");
  CHECK(a == Ip(192, 168, 7, 1));
  CHECK(b == Ip(192, 168, 7, 2));

  SECTION("the least recently used idle mapping goes") {
    clock.now += seconds(1);
    const FakePool::AllocateResult c = pool->Allocate("c");
    REQUIRE(c.ok());
    CHECK(c.address == a);
    CHECK(c.evicted == "a");
    CHECK(pool->Lookup(a)->name == "c");
    CHECK(pool->Lookup(b)->name == "b");
  }
  SECTION("use reorders: after using a, b is the older") {
    clock.now += seconds(1);
    MustAllocate(*pool, "a");
    const FakePool::AllocateResult c = pool->Allocate("c");
    CHECK(c.address == b);
    CHECK(c.evicted == "b");
  }
  SECTION("a held mapping is not recycled even when it is the oldest") {
    REQUIRE(pool->Hold(a));
    const FakePool::AllocateResult c = pool->Allocate("c");
    CHECK(c.address == b);
    CHECK(c.evicted == "b");
    CHECK(pool->Lookup(a)->name == "a");
  }
  SECTION("with every mapping held, Allocate fails and says why") {
    REQUIRE(pool->Hold(a));
    REQUIRE(pool->Hold(b));
    const FakePool::AllocateResult c = pool->Allocate("c");
    CHECK_FALSE(c.ok());
    CHECK(c.error == "all 2 addresses of 192.168.7.0/30 are held by live connections");
    // The names that are mapped still resolve.
    CHECK(pool->Allocate("a").address == a);
    // A release makes room again.
    REQUIRE(pool->Release(b));
    CHECK(pool->Allocate("c").address == b);
    CHECK_FALSE(pool->Hold(b) == "b");
  }
  SECTION("expired addresses are reused before anything is recycled") {
    clock.now += seconds(99);  // a expires (100 s), b does not (99 s)
    const FakePool::AllocateResult c = pool->Allocate("c");
    CHECK(c.address == a);
    CHECK_FALSE(c.evicted.has_value());
    CHECK(pool->Lookup(b)->name == "b");
  }
}

TEST_CASE("freed addresses are reused oldest first once fresh ones run out", "[pool]") {
  TestClock clock;
  auto pool = MakePool(clock, Ip(10, 1, 0, 0), 29, seconds(10));
  std::vector<std::uint32_t> first;
  for (int i = 0; i < 6; ++i) {
    first.push_back(MustAllocate(*pool, "n" + std::to_string(i)));
    clock.now += seconds(1);
  }
  CHECK(first.front() == Ip(10, 1, 0, 1));
  CHECK(first.back() == Ip(10, 1, 0, 6));
  clock.now += seconds(20);
  CHECK(pool->Expire() == 6);
  for (int i = 0; i < 6; ++i) {
    const FakePool::AllocateResult r = pool->Allocate("m" + std::to_string(i));
    REQUIRE(r.ok());
    CHECK(r.address == first[static_cast<std::size_t>(i)]);
    CHECK_FALSE(r.evicted.has_value());
  }
}

TEST_CASE("a /15 hands out 131070 distinct addresses, never the network or blackhole",
          "[pool][large]") {
  TestClock clock;
  auto pool = MakePool(clock, Ip(198, 18, 0, 0), 15, std::chrono::hours(1));
  const std::uint32_t network = Ip(198, 18, 0, 0);
  const std::uint32_t blackhole = pool->blackhole();
  std::vector<bool> seen(131072, false);
  for (int i = 0; i < 131070; ++i) {
    const FakePool::AllocateResult r = pool->Allocate("host" + std::to_string(i) + ".test");
    REQUIRE(r.ok());
    REQUIRE(r.created);
    REQUIRE(r.address != network);
    REQUIRE(r.address != blackhole);
    REQUIRE(pool->Contains(*r.address));
    const std::uint32_t index = *r.address - network;
    REQUIRE_FALSE(seen[index]);
    seen[index] = true;
  }
  CHECK(pool->size() == 131070);
  const FakePool::AllocateResult extra = pool->Allocate("one.more");
  REQUIRE(extra.ok());
  CHECK(extra.evicted == "host0.test");
  CHECK(extra.address == Ip(198, 18, 0, 1));
  CHECK(pool->size() == 131070);
}

TEST_CASE("Snapshot and Restore carry the table over", "[pool][persist]") {
  TestClock clock;
  auto pool = MakePool(clock, Ip(10, 0, 0, 0), 24);
  MustAllocate(*pool, "b");
  MustAllocate(*pool, "a");
  const std::uint32_t c = MustAllocate(*pool, "c");
  REQUIRE(pool->Hold(c));
  const std::vector<FakePool::Mapping> snapshot = pool->Snapshot();
  REQUIRE(snapshot.size() == 3);
  CHECK(snapshot[0].name == "b");  // ordered by address
  CHECK(snapshot[0].address == Ip(10, 0, 0, 1));
  CHECK(snapshot[1].name == "a");
  CHECK(snapshot[2].holds == 1);

  auto restored = MakePool(clock, Ip(10, 0, 0, 0), 24);
  std::vector<FakePool::Mapping> input = snapshot;
  input.push_back({"network", Ip(10, 0, 0, 0)});
  input.push_back({"blackhole", Ip(10, 0, 0, 255)});
  input.push_back({"outside", Ip(10, 0, 1, 5)});
  input.push_back({"a", Ip(10, 0, 0, 50)});    // name already restored
  input.push_back({"dup", Ip(10, 0, 0, 1)});   // address already restored
  input.push_back({"", Ip(10, 0, 0, 60)});     // no name
  input.push_back({"late", Ip(10, 0, 0, 4)});  // fine
  CHECK(restored->Restore(input) == 4);
  CHECK(restored->Lookup(Ip(10, 0, 0, 1))->name == "b");
  CHECK(restored->Lookup(Ip(10, 0, 0, 3))->holds == 0);  // restored mappings start idle
  CHECK(restored->Allocate("a").address == Ip(10, 0, 0, 2));
  // New names skip the restored addresses.
  CHECK(MustAllocate(*restored, "new1") == Ip(10, 0, 0, 5));
  // Restored mappings expire like any other.
  clock.now += std::chrono::hours(2);
  CHECK(restored->size() == 0);
}

TEST_CASE("the pool can be used from several threads", "[pool][threads]") {
  auto pool = FakePool::Create(FakePool::Options{Ip(10, 0, 0, 0), 22, seconds(3600), {}, {}});
  REQUIRE(pool != nullptr);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool, t] {
      for (int i = 0; i < 5000; ++i) {
        const auto r = pool->Allocate("n" + std::to_string((i * 7 + t) % 1500));
        if (!r.ok()) continue;
        if (pool->Hold(*r.address)) pool->Release(*r.address);
        pool->Lookup(*r.address);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(pool->held() == 0);
  CHECK(pool->size() <= 1022);
  std::set<std::string> names;
  for (const FakePool::Mapping& m : pool->Snapshot()) CHECK(names.insert(m.name).second);
}

TEST_CASE("changes() counts mappings made and removed, not uses", "[pool]") {
  TestClock clock;
  auto pool = MakePool(clock, Ip(10, 0, 0, 0), 30, seconds(100));  // two addresses
  CHECK(pool->changes() == 0);
  const std::uint32_t a = MustAllocate(*pool, "a");
  CHECK(pool->changes() == 1);
  MustAllocate(*pool, "a");  // the same mapping, used again
  CHECK(pool->Hold(a));
  CHECK(pool->Release(a));
  CHECK(pool->Touch(a));
  CHECK(pool->changes() == 1);
  MustAllocate(*pool, "b");
  MustAllocate(*pool, "c");  // full: recycles a's mapping (one removed, one made)
  CHECK(pool->changes() == 4);
  clock.now += seconds(100);  // both expire
  CHECK(pool->changes() == 6);
}

TEST_CASE("a full pool does not recycle a mapping a client may still hold", "[pool][recycle]") {
  // Answers carry a TTL: a mapping used more recently than that may sit in
  // some client's cache, and that client's next connection to the address
  // would reach the new name instead.
  TestClock clock;
  FakePool::Options options;
  options.network = Ip(192, 168, 7, 0);
  options.prefix_length = 30;
  options.cleanup_time = seconds(400);
  options.answer_ttl = seconds(100);
  options.clock = clock.Get();
  std::string error;
  auto pool = FakePool::Create(options, &error);
  REQUIRE(pool);
  const std::uint32_t a = MustAllocate(*pool, "a");
  clock.now += seconds(10);
  MustAllocate(*pool, "b");
  clock.now += seconds(80);  // a was answered 90 s ago: still within its TTL
  const FakePool::AllocateResult c = pool->Allocate("c");
  CHECK_FALSE(c.ok());
  CHECK_THAT(c.error, Catch::StartsWith("all 2 addresses of 192.168.7.0/30 were handed out "
                                        "within the answers' TTL (100 s)"));
  CHECK(pool->Lookup(a)->name == "a");
  clock.now += seconds(10);  // 100 s: a's answer has run out everywhere
  const FakePool::AllocateResult later = pool->Allocate("c");
  REQUIRE(later.ok());
  CHECK(later.address == a);
  CHECK(later.evicted == "a");
}

}  // namespace
}  // namespace tunnels::resolver
