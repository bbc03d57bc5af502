#include "netns/sandbox_link.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <functional>

#include "netns/unique_fd.h"
#include "tests/netns/fake_kernel.h"
#include "tests/netns/temp_dir.h"

namespace tunnels::netns {
namespace {

namespace fs = std::filesystem;
using testing::FakeKernel;
using testing::FakeState;
using Calls = std::vector<std::string>;

Ipv4Network Net(const std::string& text) { return FakeKernel::Parse(text); }

// A private directory with a state directory and a stand-in for /proc/sys.
struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("netns-sandbox") {
    fs::create_directories(dir / "state");
    fs::create_directories(dir / "sys/net/ipv4");
  }
};

using testing::ReadFile;

struct Fixture {
  TempDir temp;
  std::shared_ptr<Calls> journal = std::make_shared<Calls>();
  std::shared_ptr<FakeState> caller = std::make_shared<FakeState>();
  std::vector<std::shared_ptr<FakeState>> sandboxes;
  std::string error;

  explicit Fixture(const std::string& forward = "0") {
    caller->journal = journal;
    caller->netns_id = "4:100";
    caller->routes = {Net("0.0.0.0/0"), Net("192.0.2.0/24")};
    caller->links["eth0"] = testing::FakeLink{"", 0, true, {"192.0.2.2/24"}, "", {}};
    SetForward(forward);
  }

  // A new sandbox namespace; its fd is 10, 11, ...
  int NewSandbox() {
    auto sandbox = std::make_shared<FakeState>();
    sandbox->label = "sandbox" + std::to_string(sandboxes.size() + 1);
    sandbox->netns_id = "4:" + std::to_string(200 + sandboxes.size());
    sandbox->journal = journal;
    const int fd = 10 + static_cast<int>(sandboxes.size());
    caller->namespaces[fd] = sandbox;
    sandboxes.push_back(sandbox);
    return fd;
  }

  SandboxLinkSpec Spec(const std::string& n = "1") {
    SandboxLinkSpec spec;
    spec.sandbox_netns_fd = NewSandbox();
    spec.name_prefix = "tnl" + n;
    spec.table_name = "tunnels_run_" + n;
    spec.state_dir = (temp.dir / "state").string();
    spec.sysctl_root = (temp.dir / "sys").string();
    spec.overlap_teardown = false;  // the calls in a fixed order; see the test of it below
    return spec;
  }

  std::unique_ptr<SandboxLink> Create(const SandboxLinkSpec& spec) {
    error.clear();
    auto it = caller->namespaces.find(spec.sandbox_netns_fd);
    auto sandbox =
        it != caller->namespaces.end() ? it->second.lock() : std::make_shared<FakeState>();
    return SandboxLink::Create(spec, std::make_unique<FakeKernel>(caller),
                               std::make_unique<FakeKernel>(sandbox), &error);
  }

  // A link whose teardown deletes its table and its veth pair at once (the
  // spec's default; Spec() turns it off).
  std::unique_ptr<SandboxLink> CreateOverlapping() {
    SandboxLinkSpec spec = Spec();
    spec.overlap_teardown = true;
    auto link = Create(spec);
    REQUIRE(link != nullptr);
    return link;
  }

  std::string CleanupStale(std::vector<std::string>* notes) {
    FakeKernel kernel(caller);
    return SandboxLink::CleanupStale((temp.dir / "state").string(), kernel,
                                     (temp.dir / "sys").string(), notes);
  }

  std::string Forward() const { return ReadFile(temp.dir / "sys/net/ipv4/ip_forward"); }
  void SetForward(const std::string& value) const {
    std::ofstream(temp.dir / "sys/net/ipv4/ip_forward") << value << "\n";
  }
  std::vector<std::string> StateFiles() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(temp.dir / "state")) {
      if (e.path().extension() == ".state") names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  void WriteState(const std::string& name, const std::string& text) const {
    std::ofstream(temp.dir / "state" / name) << text;
  }
  Calls Take() {
    Calls calls = std::move(*journal);
    journal->clear();
    return calls;
  }
  // Nothing of any instance left in the caller's namespace.
  bool CallerClean() const {
    return caller->tables.empty() && caller->links.count("tnl1h") == 0 &&
           caller->links.count("tnl2h") == 0;
  }
};

const Calls kCreateCalls = {
    "caller: find-table tunnels_run_1",
    "caller: find-link tnl1h",
    "caller: list-routes",
    "caller: list-addresses",
    "caller: add-veth tnl1h tnl1s fd=10 group=7630444",
    "caller: sysctl net/ipv6/conf/tnl1h/disable_ipv6=1",
    "caller: add-address tnl1h 100.64.0.1/30",
    "caller: link-up tnl1h",
    "sandbox1: link-up lo",
    "sandbox1: sysctl net/ipv6/conf/tnl1s/disable_ipv6=1",
    "sandbox1: add-address tnl1s 100.64.0.2/30",
    "sandbox1: link-up tnl1s",
    "sandbox1: add-default-route via 100.64.0.1 dev tnl1s",
    "caller: nft-create tunnels_run_1",
    "sandbox1: destroyed",
};

TEST_CASE("Create links the sandbox out in order; the destructor undoes it in reverse") {
  Fixture f;
  auto link = f.Create(f.Spec());
  REQUIRE(link != nullptr);
  CHECK(f.error.empty());
  CHECK(f.Take() == kCreateCalls);
  CHECK(link->network() == Net("100.64.0.0/30"));
  CHECK(link->caller_address() == 0x64400001u);
  CHECK(link->sandbox_address() == 0x64400002u);
  CHECK(link->caller_interface() == "tnl1h");
  CHECK(link->sandbox_interface() == "tnl1s");
  CHECK(link->drops_other_forwarding());
  CHECK(link->notes().empty());

  // The kernel's view.
  const auto& host = f.caller->links.at("tnl1h");
  CHECK(host.up);
  CHECK(host.group == kSandboxLinkGroup);
  CHECK(host.addresses == std::vector<std::string>{"100.64.0.1/30"});
  const auto& sandbox = *f.sandboxes[0];
  CHECK(sandbox.links.at("lo").up);
  CHECK(sandbox.links.at("tnl1s").up);
  CHECK(sandbox.links.at("tnl1s").addresses == std::vector<std::string>{"100.64.0.2/30"});
  CHECK(sandbox.default_routes == std::vector<std::string>{"via 100.64.0.1 dev tnl1s"});
  CHECK(sandbox.sysctls.at("net/ipv6/conf/tnl1s/disable_ipv6") == "1");
  CHECK(f.caller->tables == std::set<std::string>{"tunnels_run_1"});
  CHECK(f.caller->scripts.back() ==
        SandboxLinkNftScript(link->spec(), link->network(), true, false));
  CHECK(f.Forward() == "1\n");

  // The state file, locked while the instance lives.
  CHECK(f.StateFiles() == std::vector<std::string>{"tnl1.state"});
  CHECK(link->state_file() == (f.temp.dir / "state/tnl1.state").string());
  const std::string state = ReadFile(link->state_file());
  CHECK_THAT(state, Catch::Contains("\nnetns=4:100\ntable=tunnels_run_1\nlink=tnl1h\n"
                                    "network=100.64.0.0/30\nip_forward_before=0\n"));
  CHECK_THAT(state, Catch::Contains("pid=" + std::to_string(getpid()) + "\n"));
  {
    UniqueFd fd(open(link->state_file().c_str(), O_RDONLY | O_CLOEXEC));
    CHECK(flock(fd.get(), LOCK_EX | LOCK_NB) != 0);
    CHECK(errno == EWOULDBLOCK);
  }

  link.reset();
  CHECK(f.Take() == Calls{"caller: nft-delete tunnels_run_1", "caller: delete-link tnl1h",
                          "caller: destroyed"});
  CHECK(f.Forward() == "0\n");
  CHECK(f.CallerClean());
  CHECK(f.sandboxes[0]->links.count("tnl1s") == 0);  // went with its peer
  CHECK(f.StateFiles().empty());
}

TEST_CASE("Teardown deletes the table and the veth pair at once, and both are gone") {
  Fixture f;
  auto link = f.CreateOverlapping();
  f.Take();
  CHECK(link->Remove().empty());
  Calls calls = f.Take();
  // On two threads: in either order.
  std::sort(calls.begin(), calls.end());
  CHECK(calls == Calls{"caller: delete-link tnl1h", "caller: nft-delete tunnels_run_1"});
  CHECK(f.Forward() == "0\n");
  CHECK(f.CallerClean());
  CHECK(f.StateFiles().empty());
}

TEST_CASE("A failed deletion beside the other is reported, and the state file stays") {
  Fixture f;
  auto link = f.CreateOverlapping();
  f.caller->fail["delete-link"] = Status{EBUSY, "Device or resource busy"};
  const std::string errors = link->Remove();
  CHECK_THAT(errors, Catch::Contains("delete the veth pair tnl1h"));
  CHECK(f.caller->tables.empty());  // the table went all the same
  CHECK(f.StateFiles() == std::vector<std::string>{"tnl1.state"});
}

TEST_CASE("The nft script: NAT for the /30, forwarding for the sandboxes only") {
  SandboxLinkSpec spec;
  spec.name_prefix = "tnl42";
  spec.table_name = "tunnels_run_42";
  const std::string common =
      "table ip tunnels_run_42 {\n"
      "  flags owner\n"
      "  chain postrouting {\n"
      "    type nat hook postrouting priority srcnat; policy accept;\n"
      "    ip saddr 100.64.0.8/30 oifname != \"tnl42h\" masquerade\n"
      "  }\n"
      "  chain forward {\n"
      "    type filter hook forward priority filter; policy accept;\n"
      "    iifgroup 7630444 oifgroup 7630444 drop\n"
      "    iifname \"tnl42h\" accept\n"
      "    oifname \"tnl42h\" ct state established,related accept\n";
  CHECK(SandboxLinkNftScript(spec, Net("100.64.0.8/30"), false, false) == common + "  }\n}\n");
  // A leftover table of the same name is deleted in the same transaction.
  CHECK(SandboxLinkNftScript(spec, Net("100.64.0.8/30"), false, true) ==
        "add table ip tunnels_run_42\ndelete table ip tunnels_run_42\n" + common + "  }\n}\n");
  CHECK(SandboxLinkNftScript(spec, Net("100.64.0.8/30"), true, false) ==
        common +
            "    iifgroup 7630444 accept\n"
            "    oifgroup 7630444 ct state established,related accept\n"
            "    drop\n"
            "  }\n}\n");
}

TEST_CASE("ChooseLinkNetwork: the first /30 that overlaps no route and no address") {
  const Ipv4Network range = Net("100.64.0.0/10");
  Ipv4Network chosen;
  // Routes broader than the range do not count: the default route, a VPN's halves.
  REQUIRE(ChooseLinkNetwork(range, {Net("0.0.0.0/0"), Net("0.0.0.0/1"), Net("64.0.0.0/2")}, {},
                            &chosen));
  CHECK(chosen == Net("100.64.0.0/30"));
  // A route inside the range, or equal to a /30, or just touching its first address.
  REQUIRE(ChooseLinkNetwork(
      range, {Net("100.64.0.0/24"), Net("100.64.1.0/30"), Net("100.64.1.5/32")}, {}, &chosen));
  CHECK(chosen == Net("100.64.1.8/30"));
  // Addresses: the address itself, and its network unless broader than the range.
  REQUIRE(ChooseLinkNetwork(range, {}, {Net("100.64.0.2/8"), Net("100.64.0.5/29")}, &chosen));
  CHECK(chosen == Net("100.64.0.8/30"));
  // Unsorted input, overlapping intervals.
  REQUIRE(ChooseLinkNetwork(
      range, {Net("100.64.0.8/29"), Net("100.64.0.0/29"), Net("100.64.0.4/30")}, {}, &chosen));
  CHECK(chosen == Net("100.64.0.16/30"));
  // A route for the whole range (CGNAT, Tailscale) takes every /30.
  CHECK_FALSE(ChooseLinkNetwork(range, {Net("100.64.0.0/10")}, {}, &chosen));
  // The last /30 of the address space, and nothing after it.
  REQUIRE(ChooseLinkNetwork(Net("255.255.255.248/29"), {Net("255.255.255.248/30")}, {}, &chosen));
  CHECK(chosen == Net("255.255.255.252/30"));
  CHECK_FALSE(ChooseLinkNetwork(Net("255.255.255.248/29"),
                                {Net("255.255.255.250/31"), Net("255.255.255.253/32")}, {},
                                &chosen));
  // Other tables count too (the fake reports them like main).
  REQUIRE(ChooseLinkNetwork(Net("10.99.0.0/16"), {Net("10.0.0.0/8"), Net("10.99.0.1/32")}, {},
                            &chosen));
  CHECK(chosen == Net("10.99.0.4/30"));
}

TEST_CASE("Create avoids the caller's routes and addresses") {
  Fixture f;
  f.caller->routes.push_back(Net("100.64.0.0/22"));     // e.g. in a policy-routing table
  f.caller->addresses.push_back(Net("100.64.4.1/32"));  // without a prefix route
  auto link = f.Create(f.Spec());
  REQUIRE(link != nullptr);
  CHECK(link->network() == Net("100.64.4.4/30"));
}

TEST_CASE("No free /30: an error before anything changes") {
  Fixture f;
  f.caller->routes.push_back(Net("100.64.0.0/10"));
  auto link = f.Create(f.Spec());
  CHECK(link == nullptr);
  CHECK(f.error ==
        "cannot choose an address for the sandbox's link: every /30 of 100.64.0.0/10 overlaps a "
        "route or an address here (see `ip route show table all` and `ip address`); choose "
        "another link range");
  CHECK(f.caller->links.count("tnl1h") == 0);
  CHECK(f.caller->tables.empty());
  CHECK(f.Forward() == "0\n");
  CHECK(f.StateFiles().empty());
}

TEST_CASE("Two sandboxes at once: different /30s; the last one turns forwarding off") {
  Fixture f;
  auto first = f.Create(f.Spec("1"));
  REQUIRE(first != nullptr);
  CHECK(f.Forward() == "1\n");
  auto second = f.Create(f.Spec("2"));
  REQUIRE(second != nullptr);
  CHECK(first->network() == Net("100.64.0.0/30"));
  CHECK(second->network() == Net("100.64.0.4/30"));
  // The second found forwarding on, but recorded that it was off before
  // tunnels: it drops others' traffic too, and answers for turning it off.
  CHECK(second->drops_other_forwarding());
  CHECK_THAT(ReadFile(second->state_file()), Catch::Contains("ip_forward_before=0\n"));
  CHECK(f.StateFiles() == std::vector<std::string>{"tnl1.state", "tnl2.state"});

  SECTION("the first goes first") {
    first.reset();
    CHECK(f.Forward() == "1\n");  // the second still needs it
    second.reset();
    CHECK(f.Forward() == "0\n");
  }
  SECTION("the second goes first") {
    second.reset();
    CHECK(f.Forward() == "1\n");
    first.reset();
    CHECK(f.Forward() == "0\n");
  }
  CHECK(f.CallerClean());
  CHECK(f.StateFiles().empty());
}

TEST_CASE("A live instance with the same name prefix is left alone") {
  Fixture f;
  auto first = f.Create(f.Spec("1"));
  REQUIRE(first != nullptr);
  SandboxLinkSpec spec = f.Spec("1");
  spec.table_name = "other_table";
  f.Take();
  CHECK(f.Create(spec) == nullptr);
  CHECK(f.error == "another instance with the name prefix tnl1 is running (its state file " +
                       first->state_file() + " is locked); choose another name prefix");
  CHECK(f.Take() == Calls{"caller: destroyed", "sandbox2: destroyed"});
  CHECK(f.caller->links.count("tnl1h") == 1);
  CHECK_THAT(ReadFile(first->state_file()), Catch::Contains("table=tunnels_run_1\n"));
  first.reset();
  CHECK(f.CallerClean());
}

TEST_CASE("Forwarding on before: left alone, and no drop rules") {
  Fixture f("1");
  auto link = f.Create(f.Spec());
  REQUIRE(link != nullptr);
  CHECK_FALSE(link->drops_other_forwarding());
  CHECK(f.caller->scripts.back() ==
        SandboxLinkNftScript(link->spec(), link->network(), false, false));
  CHECK_THAT(ReadFile(link->state_file()), Catch::Contains("ip_forward_before=1\n"));
  link.reset();
  CHECK(f.Forward() == "1\n");
  CHECK(f.CallerClean());
}

TEST_CASE("Someone else turns forwarding off meanwhile: not turned on again, not touched") {
  Fixture f;
  auto link = f.Create(f.Spec());
  REQUIRE(link != nullptr);
  f.SetForward("0");
  link.reset();
  CHECK(f.Forward() == "0\n");
}

TEST_CASE("Strict: nothing in the caller's namespace, only lo up in the sandbox") {
  Fixture f;
  SandboxLinkSpec spec = f.Spec();
  spec.outbound = false;
  spec.name_prefix = "";  // not needed
  spec.table_name = "";
  auto link = f.Create(spec);
  REQUIRE(link != nullptr);
  CHECK(f.Take() == Calls{"sandbox1: link-up lo", "sandbox1: destroyed"});
  CHECK_FALSE(link->outbound());
  CHECK(link->network() == Ipv4Network{});
  CHECK(link->caller_address() == 0);
  CHECK(link->caller_interface().empty());
  CHECK(link->state_file().empty());
  CHECK(f.StateFiles().empty());
  CHECK(f.Forward() == "0\n");
  CHECK(link->Remove().empty());
  link.reset();
  CHECK(f.Take() == Calls{"caller: destroyed"});  // never used
}

TEST_CASE("A failed step undoes the earlier ones in reverse, naming what failed") {
  struct Case {
    std::string kind;
    bool in_sandbox;
    std::string message;
    Calls undo;  // the calls after the failure
  };
  const Status perm{EPERM, "Operation not permitted"};
  const std::string perm_hint =
      ": Operation not permitted (changing interfaces, routes and nftables needs CAP_NET_ADMIN "
      "in the caller's network namespace and in the sandbox's: run tunnels as root)";
  const Calls undo_veth = {"caller: delete-link tnl1h", "caller: destroyed"};
  const std::vector<Case> cases = {
      {"add-veth",
       false,
       "cannot create the veth pair tnl1h/tnl1s" + perm_hint,
       {"caller: destroyed"}},
      {"sysctl", false, "cannot disable IPv6 on tnl1h" + perm_hint, undo_veth},
      {"add-address", false, "cannot add the address 100.64.0.1/30 to tnl1h" + perm_hint,
       undo_veth},
      {"link-up", false, "cannot bring up tnl1h" + perm_hint, undo_veth},
      {"link-up", true, "cannot bring up lo in the sandbox" + perm_hint, undo_veth},
      {"sysctl", true, "cannot disable IPv6 on tnl1s in the sandbox" + perm_hint, undo_veth},
      {"add-address", true,
       "cannot add the address 100.64.0.2/30 to tnl1s in the sandbox" + perm_hint, undo_veth},
      {"add-default-route", true,
       "cannot add the route default via 100.64.0.1 dev tnl1s in the sandbox" + perm_hint,
       undo_veth},
      {"nft-create", false, "cannot create the nftables table ip tunnels_run_1" + perm_hint,
       undo_veth},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.kind << (c.in_sandbox ? " in the sandbox" : " in the caller's")) {
      Fixture f;
      SandboxLinkSpec spec = f.Spec();
      (c.in_sandbox ? f.sandboxes[0] : f.caller)->fail[c.kind] = perm;
      auto link = f.Create(spec);
      CHECK(link == nullptr);
      CHECK(f.error == c.message);
      Calls calls = f.Take();
      // The calls after the failing one.
      const std::string failed = (c.in_sandbox ? "sandbox1: " : "caller: ") + c.kind;
      auto at = std::find_if(calls.begin(), calls.end(),
                             [&](const std::string& s) { return s.rfind(failed, 0) == 0; });
      REQUIRE(at != calls.end());
      Calls after(at + 1, calls.end());
      after.erase(std::remove(after.begin(), after.end(), "sandbox1: destroyed"), after.end());
      CHECK(after == c.undo);
      CHECK(f.CallerClean());
      CHECK(f.sandboxes[0]->links.count("tnl1s") == 0);
      CHECK(f.Forward() == "0\n");
      CHECK(f.StateFiles().empty());
    }
  }
}

TEST_CASE("IPv6 missing from the kernel (ENOENT for disable_ipv6) is not an error") {
  Fixture f;
  f.caller->fail["sysctl"] = Status::Errno(ENOENT);
  auto spec = f.Spec();
  f.sandboxes[0]->fail["sysctl"] = Status::Errno(ENOENT);
  auto link = f.Create(spec);
  REQUIRE(link != nullptr);
}

TEST_CASE("Turning forwarding on fails: everything else is undone") {
  Fixture f;
  // Reads "0", refuses writes even from root (a sysfs attribute without a
  // store method); absent, the case cannot be built here.
  const fs::path read_only = "/sys/class/net/lo/dormant";
  if (!fs::exists(read_only) || ReadFile(read_only) != "0\n") {
    WARN("skipped: " << read_only << " is not a read-only file reading 0 here");
    return;
  }
  fs::remove(f.temp.dir / "sys/net/ipv4/ip_forward");
  fs::create_symlink(read_only, f.temp.dir / "sys/net/ipv4/ip_forward");
  auto link = f.Create(f.Spec());
  CHECK(link == nullptr);
  CHECK_THAT(f.error, Catch::StartsWith("cannot set the kernel parameter net.ipv4.ip_forward ("));
  Calls calls = f.Take();
  calls.erase(std::remove(calls.begin(), calls.end(), "sandbox1: destroyed"), calls.end());
  REQUIRE(calls.size() >= 3);
  CHECK(Calls(calls.end() - 3, calls.end()) == Calls{"caller: nft-delete tunnels_run_1",
                                                     "caller: delete-link tnl1h",
                                                     "caller: destroyed"});
  CHECK(f.CallerClean());
  CHECK(f.StateFiles().empty());
}

TEST_CASE("ip_forward unreadable: an error before anything changes") {
  Fixture f;
  fs::remove(f.temp.dir / "sys/net/ipv4/ip_forward");
  auto link = f.Create(f.Spec());
  CHECK(link == nullptr);
  CHECK_THAT(f.error, Catch::StartsWith("cannot read the kernel parameter net.ipv4.ip_forward ("));
  CHECK(f.caller->links.count("tnl1h") == 0);
  CHECK(f.StateFiles().empty());
}

TEST_CASE("Spec checks come first") {
  Fixture f;
  const std::vector<std::pair<std::function<void(SandboxLinkSpec&)>, std::string>> cases = {
      {[](SandboxLinkSpec& s) { s.sandbox_netns_fd = -1; },
       "no file descriptor of the sandbox's network namespace (got -1)"},
      {[](SandboxLinkSpec& s) { s.name_prefix = "tnl1234567890ab"; },
       "'tnl1234567890ab' cannot be an interface name prefix: it takes 1 to 14 letters, digits, "
       "'_' or '-', starting with a letter or '_' (the interfaces are <prefix>h and <prefix>s)"},
      {[](SandboxLinkSpec& s) { s.name_prefix = "a/b"; },
       "'a/b' cannot be an interface name prefix: it takes 1 to 14 letters, digits, '_' or '-', "
       "starting with a letter or '_' (the interfaces are <prefix>h and <prefix>s)"},
      {[](SandboxLinkSpec& s) { s.table_name = "1x"; },
       "'1x' cannot be an nftables table name: it takes up to 64 letters, digits, '_' or '-', "
       "starting with a letter or '_'"},
      {[](SandboxLinkSpec& s) { s.link_range_length = 31; },
       "the link range must be 1 to 30 bits long, not /31"},
      {[](SandboxLinkSpec& s) { s.link_range = 0x64400001u; },
       "the link range 100.64.0.1/10 has host bits set; its network address is 100.64.0.0/10"},
      {[](SandboxLinkSpec& s) {
         s.link_range = 0x7F000000u;
         s.link_range_length = 16;
       },
       "the link range 127.0.0.0/16 overlaps 127.0.0.0/8, which ordinary interfaces cannot use; "
       "choose another, such as 100.64.0.0/10"},
      {[](SandboxLinkSpec& s) {
         s.link_range = 0xF0000000u;
         s.link_range_length = 8;
       },
       "the link range 240.0.0.0/8 overlaps 224.0.0.0/3, which ordinary interfaces cannot use; "
       "choose another, such as 100.64.0.0/10"},
      {[](SandboxLinkSpec& s) { s.state_dir = "run"; },
       "the state directory must be an absolute path, not 'run'"},
  };
  for (const auto& [mutate, message] : cases) {
    SandboxLinkSpec spec = f.Spec();
    mutate(spec);
    CHECK(CheckSandboxLinkSpec(spec) == message);
    CHECK(f.Create(spec) == nullptr);
    CHECK(f.error == message);
  }
  // Not a single call to either kernel but their destruction.
  for (const std::string& call : f.Take()) CHECK_THAT(call, Catch::EndsWith(": destroyed"));
}

TEST_CASE("A table a running process owns is not taken over; a leftover one is replaced") {
  Fixture f;
  SECTION("owned") {
    f.caller->owned["tunnels_run_1"] = "tunnels";
    f.caller->tables.insert("tunnels_run_1");
    CHECK(f.Create(f.Spec()) == nullptr);
    CHECK(f.error ==
          "the nftables table ip tunnels_run_1 belongs to the running process 'tunnels', most "
          "likely another tunnels; stop it first, or choose another table name");
    CHECK(f.caller->links.count("tnl1h") == 0);
    CHECK(f.StateFiles().empty());
  }
  SECTION("leftover") {
    f.caller->tables.insert("tunnels_run_1");
    auto link = f.Create(f.Spec());
    REQUIRE(link != nullptr);
    CHECK(link->notes() ==
          std::vector<std::string>{"replaced the leftover nftables table ip tunnels_run_1 of an "
                                   "earlier instance"});
    CHECK_THAT(f.caller->scripts.back(),
               Catch::StartsWith("add table ip tunnels_run_1\ndelete table ip tunnels_run_1\n"));
  }
}

TEST_CASE("An interface with the caller end's name: replaced if tunnels', refused otherwise") {
  Fixture f;
  SECTION("a tunnels veth") {
    f.caller->links["tnl1h"] = testing::FakeLink{"veth", kSandboxLinkGroup, true, {}, "", {}};
    auto link = f.Create(f.Spec());
    REQUIRE(link != nullptr);
    CHECK(link->notes() ==
          std::vector<std::string>{"removed the leftover veth pair tnl1h of an earlier instance"});
  }
  SECTION("someone else's") {
    f.caller->links["tnl1h"] = testing::FakeLink{"dummy", 0, true, {}, "", {}};
    CHECK(f.Create(f.Spec()) == nullptr);
    CHECK(f.error ==
          "cannot create the veth pair tnl1h/tnl1s: an interface named tnl1h exists and is not "
          "a tunnels veth (see `ip link show tnl1h`); remove it, or choose another name prefix");
    CHECK(f.caller->links.at("tnl1h").kind == "dummy");
    CHECK(f.StateFiles().empty());
  }
}

TEST_CASE("Remove: already gone counts as removed; a failure keeps the state file") {
  Fixture f;
  auto link = f.Create(f.Spec());
  REQUIRE(link != nullptr);
  SECTION("gone") {
    // The sandbox died (veth gone) and someone deleted the table.
    f.caller->links.erase("tnl1h");
    f.caller->tables.clear();
    CHECK(link->Remove().empty());
    CHECK(f.StateFiles().empty());
    CHECK(f.Forward() == "0\n");
  }
  SECTION("failure") {
    f.caller->fail["delete-link"] = Status{EBUSY, "Device or resource busy"};
    const std::string errors = link->Remove();
    CHECK(errors == "cannot delete the veth pair tnl1h: Device or resource busy (" +
                        link->state_file() +
                        " stays, for `CleanupStale` once this process is gone)");
    CHECK(f.StateFiles() == std::vector<std::string>{"tnl1.state"});
    CHECK(link->Remove().empty());  // once
    // Unlocked now: a cleanup finishes the job.
    f.caller->fail.clear();
    std::vector<std::string> notes;
    CHECK(f.CleanupStale(&notes).empty());
    CHECK(f.CallerClean());
    CHECK(f.StateFiles().empty());
  }
}

std::string StaleRecord(const std::string& n, const std::string& netns, const std::string& before) {
  return "pid=999" + n + "\nnetns=" + netns + "\ntable=tunnels_run_" + n + "\nlink=tnl" + n +
         "h\nnetwork=100.64.0.0/30\nip_forward_before=" + before + "\n";
}

TEST_CASE("CleanupStale undoes what a killed instance left, and nothing of a live one") {
  Fixture f;
  // A live instance (the flock held), with forwarding recorded as 0.
  auto live = f.Create(f.Spec("1"));
  REQUIRE(live != nullptr);
  // A killed one: its table would be gone with its owner; leave one as if
  // a copy of its socket outlived it, unowned, and its veth.
  f.WriteState("tnl2.state", StaleRecord("2", "4:100", "0"));
  f.caller->tables.insert("tunnels_run_2");
  f.caller->links["tnl2h"] = testing::FakeLink{"veth", kSandboxLinkGroup, true, {}, "", {}};
  // One of another namespace, and one that is not a state file.
  f.WriteState("tnl3.state", StaleRecord("3", "4:999", "0"));
  f.WriteState("junk.state", "hello\n");

  std::vector<std::string> notes;
  CHECK(f.CleanupStale(&notes).empty());
  const std::string dir = (f.temp.dir / "state").string();
  CHECK(notes ==
        std::vector<std::string>{
            "removed " + dir + "/junk.state, which is not a complete state file",
            "removed the nftables table ip tunnels_run_2 of the killed instance " + dir +
                "/tnl2.state (pid 9992)",
            "removed the veth pair tnl2h of the killed instance " + dir + "/tnl2.state (pid 9992)",
            "left " + dir + "/tnl3.state alone: it belongs to another network namespace (4:999)",
        });
  // The live instance still needs forwarding.
  CHECK(f.Forward() == "1\n");
  CHECK(f.StateFiles() == std::vector<std::string>{"tnl1.state", "tnl3.state"});
  CHECK(f.caller->tables == std::set<std::string>{"tunnels_run_1"});
  CHECK(f.caller->links.count("tnl1h") == 1);
  CHECK(f.caller->links.count("tnl2h") == 0);
}

TEST_CASE("CleanupStale turns forwarding off when no live instance needs it") {
  Fixture f("1");
  f.WriteState("tnl2.state", StaleRecord("2", "4:100", "0"));
  std::vector<std::string> notes;
  CHECK(f.CleanupStale(&notes).empty());
  CHECK(f.Forward() == "0\n");
  CHECK(notes.size() == 1);
  CHECK_THAT(notes[0], Catch::StartsWith("set net.ipv4.ip_forward back to 0, which the killed "
                                         "instance "));
  CHECK(f.StateFiles().empty());

  SECTION("but not when it recorded 1") {
    f.SetForward("1");
    f.WriteState("tnl2.state", StaleRecord("2", "4:100", "1"));
    CHECK(f.CleanupStale(nullptr).empty());
    CHECK(f.Forward() == "1\n");
    CHECK(f.StateFiles().empty());
  }
}

TEST_CASE("CleanupStale leaves a table a running process owns, and a foreign interface") {
  Fixture f("1");
  f.WriteState("tnl2.state", StaleRecord("2", "4:100", "1"));
  f.caller->tables.insert("tunnels_run_2");
  f.caller->owned["tunnels_run_2"] = "sleep";
  f.caller->links["tnl2h"] = testing::FakeLink{"dummy", 0, true, {}, "", {}};
  std::vector<std::string> notes;
  CHECK(f.CleanupStale(&notes).empty());
  CHECK(notes.size() == 2);
  CHECK_THAT(notes[0], Catch::EndsWith("alone: the running process 'sleep' owns it"));
  CHECK(notes[1] ==
        "left the interface tnl2h alone: it is not a tunnels veth (group 0, kind "
        "'dummy')");
  CHECK(f.caller->links.count("tnl2h") == 1);
}

TEST_CASE("CleanupStale: a failure keeps the state file for another try") {
  Fixture f;
  f.WriteState("tnl2.state", StaleRecord("2", "4:100", "1"));
  f.caller->links["tnl2h"] = testing::FakeLink{"veth", kSandboxLinkGroup, true, {}, "", {}};
  f.caller->fail["delete-link"] = Status{EBUSY, "Device or resource busy"};
  const std::string errors = f.CleanupStale(nullptr);
  CHECK_THAT(errors, Catch::StartsWith("cannot delete the interface tnl2h: Device or resource "
                                       "busy ("));
  CHECK_THAT(errors, Catch::EndsWith("tnl2.state stays for another try)"));
  CHECK(f.StateFiles() == std::vector<std::string>{"tnl2.state"});
}

TEST_CASE("Create cleans up a killed instance first, and takes over its duty for forwarding") {
  Fixture f;
  // An instance turned forwarding on and was killed; its record is stale.
  f.SetForward("1");
  f.WriteState("tnl7.state", StaleRecord("7", "4:100", "0"));
  auto link = f.Create(f.Spec());
  REQUIRE(link != nullptr);
  CHECK(f.StateFiles() == std::vector<std::string>{"tnl1.state"});
  // Forwarding stayed on (no flapping), and this instance answers for it.
  CHECK(f.Forward() == "1\n");
  CHECK(link->drops_other_forwarding());
  CHECK_THAT(ReadFile(link->state_file()), Catch::Contains("ip_forward_before=0\n"));
  link.reset();
  CHECK(f.Forward() == "0\n");
}

TEST_CASE("CleanupStale on a directory that does not exist does nothing") {
  Fixture f;
  FakeKernel kernel(f.caller);
  std::vector<std::string> notes;
  CHECK(SandboxLink::CleanupStale((f.temp.dir / "nope").string(), kernel,
                                  (f.temp.dir / "sys").string(), &notes)
            .empty());
  CHECK(notes.empty());
  CHECK_FALSE(fs::exists(f.temp.dir / "nope"));
}

void WriteSysctl(const fs::path& root, const std::string& path, const std::string& value) {
  fs::create_directories((root / path).parent_path());
  std::ofstream(root / path) << value << "\n";
}

TEST_CASE("What turning ip_forward off rewrites is recorded first and written back after") {
  // The kernel's inet_forward_change: off sets all.accept_redirects to 1,
  // default and every interface's forwarding to 0. The fake /proc/sys does
  // not do it by itself; the test does, where the kernel would.
  Fixture f;
  const fs::path sys = f.temp.dir / "sys";
  WriteSysctl(sys, "net/ipv4/conf/all/accept_redirects", "0");  // a hardened host
  WriteSysctl(sys, "net/ipv4/conf/default/forwarding", "0");
  WriteSysctl(sys, "net/ipv4/conf/eth0/forwarding", "1");  // set by its admin alone
  WriteSysctl(sys, "net/ipv4/conf/wlan0/forwarding", "0");
  WriteSysctl(sys, "net/ipv4/conf/gone0/forwarding", "1");
  const std::string side =
      "net/ipv4/conf/all/accept_redirects:0 net/ipv4/conf/eth0/forwarding:1 "
      "net/ipv4/conf/gone0/forwarding:1";
  CHECK(ForwardingSideSettings(sys.string()) == side);

  SECTION("by the instance that turned forwarding on") {
    auto link = f.Create(f.Spec());
    REQUIRE(link != nullptr);
    CHECK_THAT(ReadFile(link->state_file()),
               Catch::Contains("ip_forward_before=0\nip_forward_side=" + side + "\n"));
    // On and off again, as the kernel does it; gone0 went away meanwhile.
    WriteSysctl(sys, "net/ipv4/conf/all/accept_redirects", "1");
    WriteSysctl(sys, "net/ipv4/conf/eth0/forwarding", "0");
    fs::remove_all(sys / "net/ipv4/conf/gone0");
    link.reset();
    CHECK(f.Forward() == "0\n");
    CHECK(ReadFile(sys / "net/ipv4/conf/all/accept_redirects") == "0\n");
    CHECK(ReadFile(sys / "net/ipv4/conf/eth0/forwarding") == "1\n");
    CHECK(ReadFile(sys / "net/ipv4/conf/wlan0/forwarding") == "0\n");
    CHECK(!fs::exists(sys / "net/ipv4/conf/gone0"));
  }
  SECTION("by CleanupStale after a SIGKILL") {
    f.WriteState("tnl2.state", StaleRecord("2", "4:100", "0") +
                                   "ip_forward_side=net/ipv4/conf/eth0/forwarding:1\n");
    f.SetForward("1");
    WriteSysctl(sys, "net/ipv4/conf/eth0/forwarding", "0");
    std::vector<std::string> notes;
    CHECK(f.CleanupStale(&notes).empty());
    CHECK(f.Forward() == "0\n");
    CHECK(ReadFile(sys / "net/ipv4/conf/eth0/forwarding") == "1\n");
    REQUIRE(notes.size() == 1);
    CHECK_THAT(notes[0], Catch::EndsWith(", and wrote back net/ipv4/conf/eth0/forwarding:1"));
  }
  SECTION("by the last of two instances, which takes the record over") {
    auto first = f.Create(f.Spec("1"));
    REQUIRE(first != nullptr);
    auto second = f.Create(f.Spec("2"));
    REQUIRE(second != nullptr);
    CHECK_THAT(ReadFile(second->state_file()), Catch::Contains("ip_forward_side=" + side + "\n"));
    first.reset();
    CHECK(f.Forward() == "1\n");
    WriteSysctl(sys, "net/ipv4/conf/eth0/forwarding", "0");
    second.reset();
    CHECK(f.Forward() == "0\n");
    CHECK(ReadFile(sys / "net/ipv4/conf/eth0/forwarding") == "1\n");
  }
}

TEST_CASE("Side settings from a state file: only those parameters, only numbers") {
  Fixture f;
  const fs::path sys = f.temp.dir / "sys";
  WriteSysctl(sys, "net/ipv4/conf/eth0/forwarding", "0");
  for (const std::string bad :
       {"net/ipv4/conf/all/forwarding:1", "net/ipv4/ip_forward:1", "../../etc/passwd:1",
        "net/ipv4/conf/eth0/forwarding:x", "net/ipv4/conf/eth0/forwarding",
        "net/ipv4/conf/a/b/forwarding:1", "net/ipv4/conf/eth0/rp_filter:0"}) {
    CAPTURE(bad);
    CHECK_THAT(
        RestoreForwardingSideSettings("net/ipv4/conf/eth0/forwarding:1 " + bad, sys.string()),
        Catch::StartsWith("malformed forwarding setting"));
    CHECK(ReadFile(sys / "net/ipv4/conf/eth0/forwarding") == "0\n");  // nothing written
  }
  CHECK(RestoreForwardingSideSettings("", sys.string()).empty());
  CHECK(RestoreForwardingSideSettings("net/ipv4/conf/eth0/forwarding:1", sys.string()).empty());
  CHECK(ReadFile(sys / "net/ipv4/conf/eth0/forwarding") == "1\n");
}

TEST_CASE("Forward chains of other firewalls that drop by policy are found") {
  // As `nft list chains` prints them with Docker (iptables-nft) and ufw.
  const std::string listing =
      "table ip filter {\n"
      "\tchain DOCKER {\n\t}\n"
      "\tchain INPUT {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n"
      "\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n"
      "}\n"
      "table inet ufw {\n"
      "\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n"
      "}\n"
      "table inet open {\n"
      "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n"
      "}\n"
      "table ip6 filter6 {\n"
      "\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n"
      "}\n";
  CHECK(ForwardDropChains(listing) ==
        std::vector<std::string>{"ip filter FORWARD", "inet ufw forward"});
  CHECK(ForwardDropChains("").empty());
}

TEST_CASE("Create warns about a forward chain that will drop the sandbox's traffic") {
  Fixture f;
  f.caller->chains_listing =
      "table ip filter {\n\tchain FORWARD {\n"
      "\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n";
  auto link = f.Create(f.Spec());
  REQUIRE(link != nullptr);
  REQUIRE(link->warnings().size() == 1);
  CHECK_THAT(link->warnings()[0], Catch::StartsWith("the nftables chain ip filter FORWARD drops"));
  CHECK_THAT(link->warnings()[0],
             Catch::Contains("nft insert rule ip filter FORWARD iifgroup 7630444 accept"));

  SECTION("and says nothing without one") {
    f.caller->chains_listing.clear();
    auto second = f.Create(f.Spec("2"));
    REQUIRE(second != nullptr);
    CHECK(second->warnings().empty());
  }
}

}  // namespace
}  // namespace tunnels::netns
