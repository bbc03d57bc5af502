#include "netns/sandbox_side.h"

#include <linux/capability.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>

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
  spec.table_name = "tunnels_redirects";
  spec.owned = false;
  return spec;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The sandbox's namespace as a fake, with every call and the listener's
// start in one journal.
struct Fixture {
  std::shared_ptr<FakeState> sandbox = std::make_shared<FakeState>();
  std::shared_ptr<Calls> journal = std::make_shared<Calls>();
  std::string error;
  bool listen_fails = false;

  Fixture() {
    sandbox->label = "sandbox";
    sandbox->journal = journal;
  }

  std::unique_ptr<Interception> SetUp() {
    return SetUpSandboxSide(
        std::make_unique<FakeKernel>(sandbox), Spec(),
        [this](std::uint16_t* port, std::string* why) {
          // Listening needs 127.0.0.1, which exists only once lo is up.
          journal->push_back(std::string("listen, lo ") +
                             (sandbox->links["lo"].up ? "up" : "down"));
          if (listen_fails) {
            *why = "cannot listen on 127.0.0.1:53: Address already in use";
            return false;
          }
          *port = 4444;
          return true;
        },
        &error);
  }
};

TEST_CASE("the sandbox side brings lo up, listens inside, then intercepts to the listener") {
  Fixture f;
  auto interception = f.SetUp();
  REQUIRE(interception != nullptr);
  CHECK(f.error.empty());
  CHECK(*f.journal ==
        Calls{"sandbox: link-up lo", "sandbox: run-in-netns", "listen, lo up",
              "sandbox: find-table tunnels_redirects", "sandbox: nft-create tunnels_redirects",
              "sandbox: delete-route 198.18.0.0/15 exact", "sandbox: add-route 198.18.0.0/15"});
  REQUIRE(f.sandbox->scripts.size() == 1);
  CHECK(Contains(f.sandbox->scripts[0], "127.0.0.1:4444"));
  // The namespace goes with the sandbox: abandoned, nothing is undone.
  interception->Abandon();
  interception.reset();
  REQUIRE(f.journal->size() == 8);
  CHECK(f.journal->back() == "sandbox: destroyed");
}

TEST_CASE("lo that will not come up stops the setup with the operation, errno text and a hint") {
  Fixture f;
  f.sandbox->fail["link-up"] = Status::Errno(EPERM);
  CHECK(f.SetUp() == nullptr);
  CHECK(Contains(f.error, "ip link set lo up"));
  CHECK(Contains(f.error, "loopback interface lo"));
  CHECK(Contains(f.error, std::strerror(EPERM)));
  CHECK(Contains(f.error, "CAP_NET_ADMIN"));
  // Nothing listens, nothing is intercepted, and the Kernel is gone.
  CHECK(*f.journal == Calls{"sandbox: link-up lo", "sandbox: destroyed"});
}

TEST_CASE("a namespace that cannot be entered stops the setup before listening") {
  Fixture f;
  f.sandbox->fail["run-in-netns"] =
      Status{EPERM, "cannot enter the network namespace: Operation not permitted"};
  CHECK(f.SetUp() == nullptr);
  CHECK(Contains(f.error, "cannot listen in the sandbox"));
  CHECK(Contains(f.error, "cannot enter the network namespace: Operation not permitted"));
  CHECK(Contains(f.error, "CAP_SYS_ADMIN"));
  CHECK(*f.journal == Calls{"sandbox: link-up lo", "sandbox: run-in-netns", "sandbox: destroyed"});
}

TEST_CASE("a listener that fails is reported as it said, and nothing is intercepted") {
  Fixture f;
  f.listen_fails = true;
  CHECK(f.SetUp() == nullptr);
  CHECK(f.error == "cannot listen on 127.0.0.1:53: Address already in use");
  CHECK(*f.journal == Calls{"sandbox: link-up lo", "sandbox: run-in-netns", "listen, lo up",
                            "sandbox: destroyed"});
}

TEST_CASE("an interception that fails is reported with the kernel's text") {
  Fixture f;
  f.sandbox->fail["nft-create"] = Status{ENOENT, "No such file or directory"};
  CHECK(f.SetUp() == nullptr);
  CHECK(Contains(f.error, "No such file or directory"));
  CHECK(std::count(f.journal->begin(), f.journal->end(), "listen, lo up") == 1);
  CHECK(f.sandbox->tables.empty());
  CHECK(f.journal->back() == "sandbox: destroyed");
}

TEST_CASE("missing capabilities are named, all of them when the kernel does not say") {
  const auto sys_admin = std::uint64_t{1} << CAP_SYS_ADMIN;
  const auto net_admin = std::uint64_t{1} << CAP_NET_ADMIN;
  const std::initializer_list<Capability> both = {{CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
                                                  {CAP_NET_ADMIN, "CAP_NET_ADMIN"}};
  CHECK(MissingCapabilities(sys_admin | net_admin, both) == "");
  CHECK(MissingCapabilities(net_admin, both) == "CAP_SYS_ADMIN");
  CHECK(MissingCapabilities(sys_admin, both) == "CAP_NET_ADMIN");
  CHECK(MissingCapabilities(0, both) == "CAP_SYS_ADMIN and CAP_NET_ADMIN");
  CHECK(MissingCapabilities(std::nullopt, both) == "CAP_SYS_ADMIN and CAP_NET_ADMIN");
  // Capabilities above 31 are in the second word of capget's answer.
  CHECK(MissingCapabilities(std::uint64_t{1} << CAP_BPF, {{CAP_BPF, "CAP_BPF"}}) == "");
}

}  // namespace
}  // namespace tunnels::netns
