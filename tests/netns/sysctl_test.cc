#include "netns/sysctl.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <memory>

#include "tests/netns/temp_dir.h"

namespace tunnels::netns {
namespace {

namespace fs = std::filesystem;

// A private stand-in for /proc/sys.
struct Root : testing::TempDir {
  Root() : TempDir("netns-sysctl") {}
  std::string error;

  std::string Get(const std::string& relative) const { return Read(relative); }

  // Sets `key` to `value` under this root, which must succeed.
  std::unique_ptr<Sysctl> MustSet(const std::string& key, const std::string& value) {
    auto setting = Sysctl::Set(key, value, &error, dir.string());
    INFO(error);
    REQUIRE(setting != nullptr);
    return setting;
  }
};

TEST_CASE("Sysctl writes a different value and restores the old one") {
  Root root;
  root.Put("net/ipv4/ip_forward", "0\n");
  auto setting = root.MustSet("net.ipv4.ip_forward", "1");
  CHECK(root.error.empty());
  CHECK(setting->changed());
  CHECK(setting->previous() == "0");
  CHECK(root.Get("net/ipv4/ip_forward") == "1\n");
  setting.reset();
  CHECK(root.Get("net/ipv4/ip_forward") == "0\n");
}

TEST_CASE("Sysctl does not write a value that is already set") {
  Root root;
  // As the kernel prints multi-number values: tabs and a newline.
  root.Put("net/ipv4/ip_local_port_range", "32768\t60999\n");
  auto setting = root.MustSet("net.ipv4.ip_local_port_range", "32768 60999");
  CHECK_FALSE(setting->changed());
  CHECK(setting->Restore().empty());
  setting.reset();
  CHECK(root.Get("net/ipv4/ip_local_port_range") == "32768\t60999\n");  // never written
}

TEST_CASE("Sysctl leaves a value that someone else changed since") {
  Root root;
  root.Put("net/ipv4/ip_forward", "0\n");
  auto setting = root.MustSet("net.ipv4.ip_forward", "1");
  root.Put("net/ipv4/ip_forward", "2\n");
  CHECK(setting->Restore().empty());
  CHECK(root.Get("net/ipv4/ip_forward") == "2\n");
}

TEST_CASE("Sysctl restores once") {
  Root root;
  root.Put("a/b", "x\n");
  auto setting = root.MustSet("a.b", "y");
  CHECK(setting->Restore().empty());
  CHECK(root.Get("a/b") == "x\n");
  root.Put("a/b", "y");  // as if set again by someone else
  setting.reset();
  CHECK(root.Get("a/b") == "y");
}

TEST_CASE("Sysctl keys: dotted, with '/' for a dot in a name, or as a path") {
  Root root;
  root.Put("net/ipv4/conf/eth0.1/forwarding", "0\n");
  auto dotted = root.MustSet("net.ipv4.conf.eth0/1.forwarding", "1");
  CHECK(root.Get("net/ipv4/conf/eth0.1/forwarding") == "1\n");
  dotted.reset();
  auto path = root.MustSet("net/ipv4/conf/eth0.1/forwarding", "1");
  CHECK(root.Get("net/ipv4/conf/eth0.1/forwarding") == "1\n");
  CHECK(path->key() == "net/ipv4/conf/eth0.1/forwarding");
}

TEST_CASE("Sysctl refuses malformed keys") {
  Root root;
  for (const char* key :
       {"", ".", "net..x", "net/../x", "/etc/passwd", "net.", "a b", "..", "net/./x"}) {
    std::string error;
    CHECK(Sysctl::Set(key, "1", &error, root.dir.string()) == nullptr);
    CHECK_THAT(error, Catch::Contains("is not a kernel parameter name"));
  }
}

TEST_CASE("Sysctl names the parameter, the path and the errno text") {
  Root root;
  std::string error;
  CHECK(Sysctl::Set("net.ipv4.nope", "1", &error, root.dir.string()) == nullptr);
  CHECK(error == "cannot read the kernel parameter net.ipv4.nope (" + root.dir.string() +
                     "/net/ipv4/nope): No such file or directory (this kernel has no such "
                     "parameter, or not in this network namespace)");
}

TEST_CASE("Sysctl::Get reads a value without its newline") {
  Root root;
  root.Put("net/ipv4/ip_forward", "1\n");
  std::string value, error;
  CHECK(Sysctl::Get("net.ipv4.ip_forward", &value, &error, root.dir.string()));
  CHECK(value == "1");
  CHECK_FALSE(Sysctl::Get("net.ipv4.nope", &value, &error, root.dir.string()));
  CHECK_THAT(error, Catch::StartsWith("cannot read the kernel parameter net.ipv4.nope ("));
  CHECK_FALSE(Sysctl::Get("a b", &value, &error, root.dir.string()));
  CHECK_THAT(error, Catch::Contains("is not a kernel parameter name"));
}

TEST_CASE("Sysctl::Adopt restores someone else's change, only if it is still there") {
  Root root;
  root.Put("net/ipv4/ip_forward", "1\n");
  std::string error;
  auto adopted = Sysctl::Adopt("net.ipv4.ip_forward", "1", "0", &error, root.dir.string());
  REQUIRE(adopted != nullptr);
  CHECK(adopted->changed());
  CHECK(adopted->previous() == "0");
  CHECK(root.Get("net/ipv4/ip_forward") == "1\n");  // nothing written yet
  adopted.reset();
  CHECK(root.Get("net/ipv4/ip_forward") == "0\n");

  root.Put("net/ipv4/ip_forward", "0\n");  // turned off by someone meanwhile
  adopted = Sysctl::Adopt("net.ipv4.ip_forward", "1", "0", &error, root.dir.string());
  root.Put("net/ipv4/ip_forward", "1\n");
  root.Put("net/ipv4/ip_forward", "2\n");
  CHECK(adopted->Restore().empty());
  CHECK(root.Get("net/ipv4/ip_forward") == "2\n");
  CHECK(Sysctl::Adopt("..", "1", "0", &error, root.dir.string()) == nullptr);
}

TEST_CASE("Sysctl::Release leaves the value for someone else to restore") {
  Root root;
  root.Put("net/ipv4/ip_forward", "0\n");
  auto setting = root.MustSet("net.ipv4.ip_forward", "1");
  setting->Release();
  CHECK_FALSE(setting->changed());
  CHECK(setting->Restore().empty());
  setting.reset();
  CHECK(root.Get("net/ipv4/ip_forward") == "1\n");
}

TEST_CASE("Sysctl reports a refused write of the real /proc/sys") {
  // Read-only for everyone, root included.
  std::string error;
  CHECK(Sysctl::Set("kernel.osrelease", "x", &error) == nullptr);
  CHECK_THAT(error, Catch::StartsWith("cannot set the kernel parameter kernel.osrelease "
                                      "(/proc/sys/kernel/osrelease) to x: "));
}

}  // namespace
}  // namespace tunnels::netns
