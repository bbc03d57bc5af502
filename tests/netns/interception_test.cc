#include "netns/interception.h"

#include <catch2/catch.hpp>
#include <cerrno>

#include "tests/netns/fake_kernel.h"

namespace tunnels::netns {
namespace {

using testing::FakeKernel;
using testing::FakeState;
using Calls = std::vector<std::string>;

InterceptionSpec Spec() {
  InterceptionSpec spec;
  spec.network = 0xC6120000u;  // 198.18.0.0
  spec.prefix_length = 15;
  spec.listener_port = 4444;
  spec.table_name = "tunnels_redirects";
  return spec;
}

struct Fixture {
  std::shared_ptr<FakeState> state = std::make_shared<FakeState>();
  std::string error;

  std::unique_ptr<Interception> Create(const InterceptionSpec& spec = Spec()) {
    return Interception::Create(spec, std::make_unique<FakeKernel>(state), &error);
  }
  // The calls made since the last Take().
  Calls Take() {
    Calls calls = std::move(state->calls);
    state->calls.clear();
    return calls;
  }
  bool Clean() const { return state->tables.empty() && state->local_routes.empty(); }
};

const std::string kFind = "find-table tunnels_redirects";
const std::string kCreateTable = "nft-create tunnels_redirects";
const std::string kDeleteTable = "nft-delete tunnels_redirects";
const std::string kRemoveLeftoverRoute = "delete-route 198.18.0.0/15 exact";
const std::string kAddRoute = "add-route 198.18.0.0/15";
const std::string kDeleteRoute = "delete-route 198.18.0.0/15 exact";

TEST_CASE("Create adds the table, then the route; the destructor undoes them in reverse") {
  Fixture f;
  auto interception = f.Create();
  REQUIRE(interception != nullptr);
  CHECK(f.error.empty());
  CHECK(f.Take() == Calls{kFind, kCreateTable, kRemoveLeftoverRoute, kAddRoute});
  CHECK(f.state->tables == std::set<std::string>{"tunnels_redirects"});
  CHECK(f.state->local_routes == std::map<std::string, bool>{{"198.18.0.0/15", true}});
  CHECK(interception->replaced().empty());
  // Nothing to replace, so nothing deleted: that would cost a grace period.
  REQUIRE(f.state->scripts.size() == 1);
  CHECK(f.state->scripts[0].find("delete") == std::string::npos);

  interception.reset();
  // Removed explicitly before the kernel's sockets close.
  CHECK(f.Take() == Calls{kDeleteRoute, kDeleteTable, "destroyed"});
  CHECK(f.Clean());
}

TEST_CASE("Remove undoes once and reports nothing when all went well") {
  Fixture f;
  auto interception = f.Create();
  REQUIRE(interception != nullptr);
  f.Take();
  CHECK(interception->Remove().empty());
  CHECK(f.Take() == Calls{kDeleteRoute, kDeleteTable});
  CHECK(f.Clean());
  CHECK(interception->Remove().empty());
  interception.reset();
  CHECK(f.Take() == Calls{"destroyed"});
}

TEST_CASE("Leftovers of a killed instance are replaced and reported") {
  Fixture f;
  f.state->tables.insert("tunnels_redirects");    // not owned: its process is gone
  f.state->local_routes["198.18.0.0/15"] = true;  // as tunnels adds it
  auto interception = f.Create();
  REQUIRE(interception != nullptr);
  // The leftover table goes in the same transaction that creates the new
  // one; the leftover route goes right before the new route is added.
  CHECK(f.Take() == Calls{kFind, kCreateTable, kRemoveLeftoverRoute, kAddRoute});
  REQUIRE(f.state->scripts.size() == 1);
  const std::string& script = f.state->scripts[0];
  const auto add = script.find("add table ip tunnels_redirects\n");
  const auto del = script.find("delete table ip tunnels_redirects\n");
  const auto create = script.find("table ip tunnels_redirects {");
  CHECK(add == 0);
  CHECK(add < del);
  CHECK(del < create);
  CHECK(create != std::string::npos);
  REQUIRE(interception->replaced().size() == 2);
  CHECK_THAT(interception->replaced()[0],
             Catch::Contains("leftover nftables table ip tunnels_redirects"));
  CHECK_THAT(interception->replaced()[1],
             Catch::Contains("leftover route local 198.18.0.0/15 dev lo table local"));
  CHECK(f.state->local_routes == std::map<std::string, bool>{{"198.18.0.0/15", true}});

  interception.reset();
  CHECK(f.Clean());
}

TEST_CASE("A table owned by a running process stops Create before any change") {
  Fixture f;
  f.state->tables.insert("tunnels_redirects");
  f.state->owned["tunnels_redirects"] = "tunnels";
  f.state->local_routes["198.18.0.0/15"] = true;  // that instance's route
  CHECK(f.Create() == nullptr);
  CHECK(f.Take() == Calls{kFind, "destroyed"});
  CHECK_THAT(f.error, Catch::Contains("nftables table ip tunnels_redirects"));
  CHECK_THAT(f.error, Catch::Contains("running process 'tunnels'"));
  CHECK_THAT(f.error, Catch::Contains("another tunnels"));
  CHECK(f.state->local_routes.size() == 1);
  CHECK(f.state->tables.size() == 1);
}

TEST_CASE("A failing nft transaction changes nothing else") {
  Fixture f;
  f.state->fail["nft-create"] = Status{EPERM, "Could not process rule: Operation not permitted"};
  CHECK(f.Create() == nullptr);
  CHECK(f.Take() == Calls{kFind, kCreateTable, "destroyed"});
  CHECK(f.error ==
        "cannot create the nftables table ip tunnels_redirects: Could not process rule: "
        "Operation not permitted (changing routes and nftables needs CAP_NET_ADMIN in this "
        "network namespace: run tunnels as root)");
  CHECK(f.Clean());
}

TEST_CASE("When the route cannot be added, the table is removed again before Create returns") {
  Fixture f;
  f.state->fail["add-route"] = Status::Errno(EPERM);
  CHECK(f.Create() == nullptr);
  CHECK(f.Take() ==
        Calls{kFind, kCreateTable, kRemoveLeftoverRoute, kAddRoute, kDeleteTable, "destroyed"});
  CHECK_THAT(f.error, Catch::StartsWith("cannot add the route local 198.18.0.0/15 dev lo table "
                                        "local: Operation not permitted"));
  CHECK_THAT(f.error, Catch::Contains("CAP_NET_ADMIN"));
  CHECK(f.Clean());
}

TEST_CASE("When the leftover route cannot be removed, the table is removed again") {
  Fixture f;
  f.state->fail["delete-route"] = Status::Errno(EPERM);
  CHECK(f.Create() == nullptr);
  CHECK(f.Take() == Calls{kFind, kCreateTable, kRemoveLeftoverRoute, kDeleteTable, "destroyed"});
  CHECK_THAT(f.error, Catch::StartsWith("cannot remove the leftover route local 198.18.0.0/15"));
  CHECK(f.Clean());
}

TEST_CASE("A local route for the range that tunnels did not add is left alone") {
  // An AnyIP route of the administrator's (or of another program's): not a
  // leftover of ours, so it stays, and the add says why it cannot proceed.
  Fixture f;
  f.state->local_routes["198.18.0.0/15"] = false;
  CHECK(f.Create() == nullptr);
  CHECK(f.state->local_routes.count("198.18.0.0/15") == 1);
  CHECK_THAT(f.error, Catch::Contains("ip route show table local"));
  CHECK(f.Take() ==
        Calls{kFind, kCreateTable, kRemoveLeftoverRoute, kAddRoute, kDeleteTable, "destroyed"});
}

TEST_CASE("Another route for the range in table local is a conflict with a hint") {
  Fixture f;
  f.state->other_routes.insert("198.18.0.0/15");
  CHECK(f.Create() == nullptr);
  CHECK_THAT(f.error, Catch::Contains("File exists"));
  CHECK_THAT(f.error, Catch::Contains("ip route show table local"));
  CHECK(f.Clean());
}

TEST_CASE("A failing rollback is reported along with the first failure") {
  Fixture f;
  f.state->fail["add-route"] = Status::Errno(ENOMEM);
  f.state->fail["nft-delete"] = Status{EBUSY, "Could not process rule: Device or resource busy"};
  CHECK(f.Create() == nullptr);
  CHECK_THAT(f.error, Catch::StartsWith("cannot add the route"));
  CHECK_THAT(f.error, Catch::Contains("undoing the earlier steps failed too: cannot delete the "
                                      "nftables table ip tunnels_redirects: Could not process "
                                      "rule: Device or resource busy"));
}

TEST_CASE("Remove goes on after a failure and reports it") {
  Fixture f;
  auto interception = f.Create();
  REQUIRE(interception != nullptr);
  f.Take();
  f.state->fail["delete-route"] = Status::Errno(EPERM);
  const std::string errors = interception->Remove();
  CHECK_THAT(errors, Catch::StartsWith("cannot delete the route local 198.18.0.0/15 dev lo "
                                       "table local: Operation not permitted"));
  CHECK(f.Take() == Calls{kDeleteRoute, kDeleteTable});
  CHECK(f.state->tables.empty());
}

TEST_CASE("Remove counts what is already gone as removed") {
  Fixture f;
  auto interception = f.Create();
  REQUIRE(interception != nullptr);
  f.state->local_routes.clear();  // `ip route flush table local`, say
  f.state->tables.clear();        // `nft flush ruleset` as the owner would
  CHECK(interception->Remove().empty());
}

TEST_CASE("A table name nft cannot parse gets a hint about iptablesChain") {
  Fixture f;
  InterceptionSpec spec = Spec();
  spec.table_name = "tcp";
  f.state->fail["find-table"] = Status{0, "syntax error, unexpected tcp, expecting string"};
  CHECK(f.Create(spec) == nullptr);
  CHECK(f.Take() == Calls{"find-table tcp", "destroyed"});
  CHECK_THAT(f.error, Catch::StartsWith("cannot read the nftables table ip tcp: syntax error"));
  CHECK_THAT(f.error, Catch::Contains("iptablesChain"));
}

TEST_CASE("A missing kernel feature gets a hint") {
  Fixture f;
  f.state->fail["nft-create"] = Status{ENOENT, "Could not process rule: No such file or directory"};
  CHECK(f.Create() == nullptr);
  CHECK_THAT(f.error, Catch::Contains("the kernel lacks an nftables feature"));
}

TEST_CASE("A bad spec is refused without touching the kernel") {
  auto refused = [](InterceptionSpec spec, const std::string& why) {
    Fixture f;
    CHECK(f.Create(spec) == nullptr);
    CHECK_THAT(f.error, Catch::Contains(why));
    CHECK(f.Take() == Calls{"destroyed"});
    CHECK(CheckSpec(spec) == f.error);
  };
  InterceptionSpec spec = Spec();
  spec.prefix_length = 0;
  refused(spec, "1 to 30 bits long, not /0");
  spec.prefix_length = 31;
  refused(spec, "1 to 30 bits long, not /31");
  spec = Spec();
  spec.network = 0xC6120001u;
  refused(spec, "198.18.0.1/15 has host bits set; its network address is 198.18.0.0/15");
  spec = Spec();
  spec.listener_port = 0;
  refused(spec, "port must not be 0");
  for (const char* name : {"", "0abc", "-abc", "a b", "a.b", "a\"b", "a;b", "täble"}) {
    spec = Spec();
    spec.table_name = name;
    refused(spec, "cannot be an nftables table name");
  }
  spec.table_name = std::string(65, 'a');
  refused(spec, "cannot be an nftables table name");
}

TEST_CASE("Usable specs") {
  InterceptionSpec spec = Spec();
  for (const char* name : {"tunnels_redirects", "_x", "a-b", "A1", "tunnels-1"}) {
    spec.table_name = name;
    CHECK(CheckSpec(spec).empty());
  }
  spec.table_name = std::string(64, 'a');
  CHECK(CheckSpec(spec).empty());
  spec.network = 0x0A000000u;
  spec.prefix_length = 30;
  CHECK(CheckSpec(spec).empty());
  spec.network = 0x80000000u;
  spec.prefix_length = 1;
  CHECK(CheckSpec(spec).empty());
}

TEST_CASE("The blackhole is the last address of the range") {
  InterceptionSpec spec = Spec();
  CHECK(BlackholeAddress(spec) == 0xC613FFFFu);  // 198.19.255.255
  spec.network = 0x0A000000u;
  spec.prefix_length = 30;
  CHECK(BlackholeAddress(spec) == 0x0A000003u);
}

TEST_CASE("The nft script") {
  InterceptionSpec spec = Spec();
  spec.table_name = "my-table";
  spec.listener_port = 31337;
  spec.network = 0x0A400000u;  // 10.64.0.0
  spec.prefix_length = 10;
  const std::string script = NftScript(spec, false);
  INFO(script);
  CHECK_THAT(script, Catch::StartsWith("table ip my-table {\n  flags owner\n"));
  // Only a leftover is deleted first: a transaction that deletes waits for
  // a grace period.
  CHECK(NftScript(spec, true) == "add table ip my-table\ndelete table ip my-table\n" + script);
  spec.owned = false;
  CHECK_THAT(NftScript(spec, false), Catch::StartsWith("table ip my-table {\n  chain prerouting"));
  CHECK_THAT(script,
             Catch::Contains("type filter hook prerouting priority mangle; policy accept;"));
  const std::string others = "ip daddr != 10.64.0.0/10 accept\n";
  const std::string blackhole =
      "ip daddr 10.127.255.255 tcp flags & (fin|syn|rst|ack) == syn reject with tcp reset\n";
  const std::string tproxy =
      "meta l4proto tcp tproxy to 127.0.0.1:31337 "
      "meta mark set meta mark | 0x00002000 accept\n";
  const std::string refuse = "    tcp flags & (fin|syn|rst|ack) == syn reject with tcp reset\n";
  const std::string udp = "    meta l4proto udp reject with icmp type port-unreachable\n";
  // Order matters: other addresses leave first, the blackhole before
  // tproxy, the resets after it.
  const auto o = script.find(others), b = script.find(blackhole), t = script.find(tproxy),
             r = script.find(refuse), u = script.find(udp);
  REQUIRE(o != std::string::npos);
  REQUIRE(b != std::string::npos);
  CHECK(o < b);
  REQUIRE(t != std::string::npos);
  REQUIRE(r != std::string::npos);
  REQUIRE(u != std::string::npos);
  CHECK(b < t);
  CHECK(t < r);
  CHECK(r < u);
  // Neighbours' packets and the engine's own are never intercepted: their
  // rules come before tproxy.
  const auto n = script.find("    iif != \"lo\" drop\n");
  const auto m = script.find(
      "    meta mark & 0x00004000 == 0x00004000 meta l4proto tcp reject with tcp reset\n");
  REQUIRE(n != std::string::npos);
  REQUIRE(m != std::string::npos);
  CHECK(o < n);
  CHECK(n < t);
  CHECK(m < t);
  CHECK_THAT(script, Catch::EndsWith("  }\n}\n"));
}

}  // namespace
}  // namespace tunnels::netns
