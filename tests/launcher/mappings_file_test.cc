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
}  // namespace tunnels::launcher
