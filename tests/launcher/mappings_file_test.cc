#include "launcher/mappings_file.h"

#include <catch2/catch.hpp>
#include <map>

#include "tests/config/temp_dir.h"

namespace tunnels::launcher {
namespace {

using Mapping = resolver::FakePool::Mapping;

std::unique_ptr<resolver::FakePool> Pool(std::uint32_t network, int length) {
  resolver::FakePool::Options o;
  o.network = network;
  o.prefix_length = length;
  std::string error;
  auto pool = resolver::FakePool::Create(o, &error);
  REQUIRE(pool);
  return pool;
}

TEST_CASE("Saved mappings come back at the same addresses in a new pool") {
  auto pool = Pool(0xC6120000u, 15);
  std::map<std::string, std::uint32_t> before;
  for (const char* name : {"a.example", "b.example", "c.example"}) {
    const auto r = pool->Allocate(name);
    REQUIRE(r.address);
    before[name] = *r.address;
  }
  const std::string text = SerializeMappings("198.18.0.0/15", pool->Snapshot());
  std::vector<Mapping> loaded;
  std::string why;
  REQUIRE(ParseMappings(text, "198.18.0.0/15", &loaded, &why));
  auto next = Pool(0xC6120000u, 15);
  CHECK(next->Restore(loaded) == 3);
  for (const auto& [name, address] : before) {
    const auto m = next->Lookup(address);
    REQUIRE(m);
    CHECK(m->name == name);
  }
  const auto fresh = next->Allocate("d.example");
  REQUIRE(fresh.address);
  for (const auto& [name, address] : before) CHECK(*fresh.address != address);
}

TEST_CASE("Mappings for another range, or not mappings at all, are refused") {
  std::vector<Mapping> loaded;
  std::string why;
  const std::string text = "# tunnels mappings for 10.0.0.0/16\n10.0.0.1 a.example\n";
  CHECK_FALSE(ParseMappings(text, "198.18.0.0/15", &loaded, &why));
  CHECK(why == "it is for privateAddresses 10.0.0.0/16, not 198.18.0.0/15");
  CHECK_FALSE(ParseMappings("nameserver 1.1.1.1\n", "198.18.0.0/15", &loaded, &why));
  CHECK_FALSE(ParseMappings("", "198.18.0.0/15", &loaded, &why));
  // Bad lines and a line cut short are skipped, the rest kept.
  REQUIRE(ParseMappings(text + "garbage\n300.1.1.1 x\n10.0.0.2 b.example\n10.0.0.3 c.ex",
                        "10.0.0.0/16", &loaded, &why));
  REQUIRE(loaded.size() == 2);
  CHECK(loaded[1].name == "b.example");
  CHECK(loaded[1].address == 0x0A000002u);
}

TEST_CASE("WriteFileAtomically replaces the whole file and leaves no temporary one") {
  testing::TempDir dir;
  const std::string path = (dir.path() / "mappings").string();
  std::string error;
  REQUIRE(WriteFileAtomically(path, "one\n", &error));
  REQUIRE(WriteFileAtomically(path, "two\n", &error));
  std::string text;
  bool missing = true;
  REQUIRE(ReadFile(path, &text, &missing, &error));
  CHECK(text == "two\n");
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  CHECK_FALSE(ReadFile((dir.path() / "none").string(), &text, &missing, &error));
  CHECK(missing);
  CHECK_FALSE(WriteFileAtomically((dir.path() / "no/such/dir").string(), "x", &error));
  CHECK(error.find("cannot create") != std::string::npos);
}

}  // namespace
TEST_CASE("MergeMappings: a later mapping replaces an earlier one of its address or its name") {
  const std::vector<Mapping> earlier = {{"a", 1, 0, {}}, {"b", 2, 0, {}}, {"c", 3, 0, {}}};
  const std::vector<Mapping> later = {{"d", 1, 0, {}}, {"b", 4, 0, {}}, {"e", 5, 0, {}}};
  std::vector<std::pair<std::string, std::uint32_t>> got;
  for (const auto& m : MergeMappings(earlier, later)) got.emplace_back(m.name, m.address);
  CHECK(got ==
        std::vector<std::pair<std::string, std::uint32_t>>{{"c", 3}, {"d", 1}, {"b", 4}, {"e", 5}});
  // One mapping replacing two: "e" takes c's address, and was at 5 before.
  got.clear();
  for (const auto& m : MergeMappings(MergeMappings(earlier, later), {{"e", 3, 0, {}}})) {
    got.emplace_back(m.name, m.address);
  }
  CHECK(got == std::vector<std::pair<std::string, std::uint32_t>>{{"d", 1}, {"b", 4}, {"e", 3}});
}

namespace {

std::string Read(const std::filesystem::path& path) {
  std::string text, error;
  bool missing = false;
  REQUIRE(ReadFile(path.string(), &text, &missing, &error));
  return text;
}

// Each mapping of `pool` as "name=address", in address order.
std::vector<std::string> Names(resolver::FakePool& pool) {
  std::vector<std::string> out;
  for (const auto& m : pool.Snapshot()) out.push_back(m.name + "=" + std::to_string(m.address));
  return out;
}

}  // namespace

TEST_CASE("MappingsStore: a mapping is on disk before its address is handed out") {
  testing::TempDir dir;
  const config::Log log(config::LogLevel::kError, {});
  const std::string range = "10.0.0.0/30";  // two usable addresses
  std::vector<std::string> before;
  {
    auto pool = Pool(0x0A000000u, 30);
    MappingsStore store(dir.path().string(), range, *pool, log);
    store.Load();  // nothing to load: empty files
    CHECK(Read(dir.path() / "mappings") == "# tunnels mappings for 10.0.0.0/30\n");
    CHECK(Read(dir.path() / "mappings.added") == "# tunnels mappings for 10.0.0.0/30\n");
    REQUIRE(pool->Allocate("a.example").address == 0x0A000001u);
    CHECK(Read(dir.path() / "mappings.added") ==
          "# tunnels mappings for 10.0.0.0/30\n10.0.0.1 a.example\n");
    store.Save();  // into `mappings`; `mappings.added` emptied
    CHECK(Read(dir.path() / "mappings") ==
          "# tunnels mappings for 10.0.0.0/30\n10.0.0.1 a.example\n");
    CHECK(Read(dir.path() / "mappings.added") == "# tunnels mappings for 10.0.0.0/30\n");
    REQUIRE(pool->Allocate("b.example").address == 0x0A000002u);
    // The pool is full: c.example gets a.example's address, idle longest.
    REQUIRE(pool->Allocate("c.example").address == 0x0A000001u);
    before = Names(*pool);
    // Killed here: no Save(). The store's end only stops observing.
  }
  auto pool = Pool(0x0A000000u, 30);
  MappingsStore store(dir.path().string(), range, *pool, log);
  store.Load();
  CHECK(Names(*pool) == before);
  CHECK(Names(*pool) == std::vector<std::string>{"c.example=167772161", "b.example=167772162"});
  // Loading wrote one file again and emptied the other.
  CHECK(Read(dir.path() / "mappings") ==
        "# tunnels mappings for 10.0.0.0/30\n10.0.0.1 c.example\n10.0.0.2 b.example\n");
  CHECK(Read(dir.path() / "mappings.added") == "# tunnels mappings for 10.0.0.0/30\n");
}

TEST_CASE("MappingsStore: files for another range are replaced, not appended to") {
  testing::TempDir dir;
  const config::Log log(config::LogLevel::kError, {});
  dir.Write("mappings", "# tunnels mappings for 10.9.0.0/16\n10.9.0.1 old.example\n");
  dir.Write("mappings.added", "# tunnels mappings for 10.9.0.0/16\n10.9.0.2 older.example\n");
  auto pool = Pool(0x0A000000u, 30);
  MappingsStore store(dir.path().string(), "10.0.0.0/30", *pool, log);
  store.Load();
  CHECK(pool->size() == 0);
  REQUIRE(pool->Allocate("a.example").address);
  CHECK(Read(dir.path() / "mappings") == "# tunnels mappings for 10.0.0.0/30\n");
  CHECK(Read(dir.path() / "mappings.added") ==
        "# tunnels mappings for 10.0.0.0/30\n10.0.0.1 a.example\n");
}

}  // namespace tunnels::launcher
