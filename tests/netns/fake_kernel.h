// A Kernel that changes nothing: it records every call, keeps a model of
// the tables and routes, and fails the calls a test asks it to.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "netns/kernel.h"

namespace tunnels::netns::testing {

struct FakeState;

// One interface of a FakeState.
struct FakeLink {
  std::string kind = "veth";
  std::uint32_t group = 0;
  bool up = false;
  std::vector<std::string> addresses;  // "100.64.0.1/30"
  std::string peer;                    // a veth's other end
  std::weak_ptr<FakeState> peer_namespace;
};

// One network namespace as a FakeKernel sees it.
struct FakeState {
  // One line per call: "find-table NAME", "nft-create NAME", "nft-delete
  // NAME", "add-route NETWORK", "delete-route NETWORK exact|any",
  // "add-veth NAME PEER fd=FD group=G", "delete-link NAME", "find-link
  // NAME", "link-up NAME", "add-address NAME A/LEN", "add-default-route
  // via A dev NAME", "list-routes", "list-addresses", "sysctl PATH=VALUE",
  // "run-in-netns", and "destroyed" when the Kernel object goes away.
  std::vector<std::string> calls;
  std::vector<std::string> scripts;  // every nft script, in order
  std::string chains_listing;        // what ListNftChains returns (not a recorded call)
  // If set, every call is also appended here as "<label>: <call>", to check
  // the order of calls across namespaces.
  std::shared_ptr<std::vector<std::string>> journal;
  std::string label = "caller";

  std::set<std::string> tables;              // tables ip NAME that exist
  std::map<std::string, std::string> owned;  // owned by another process: NAME -> its name
  std::map<std::string, bool> local_routes;  // NETWORK -> added by a Kernel (exact)
  std::set<std::string> other_routes;        // non-local routes in table local

  std::map<std::string, FakeLink> links;       // lo is there from the start, down
  std::vector<Ipv4Network> routes;             // what ListRoutes reports besides connected ones
  std::vector<Ipv4Network> addresses;          // addresses on interfaces not in `links`
  std::vector<std::string> default_routes;     // "via A dev NAME"
  std::map<std::string, std::string> sysctls;  // PATH -> value written
  std::string netns_id = "0:1";
  // Other namespaces by the fd that refers to them (AddVethPair's peer_netns_fd).
  std::map<int, std::weak_ptr<FakeState>> namespaces;

  // The call kind ("find-table", "nft-create", ...) -> what it returns
  // instead of doing anything.
  std::map<std::string, Status> fail;

  // Held by every call: SandboxLink may call RunNft and a link call from
  // two threads at once.
  std::recursive_mutex mutex;

  FakeState() { links["lo"] = FakeLink{"", 0, false, {"127.0.0.1/8"}, "", {}}; }
};

class FakeKernel final : public Kernel {
 public:
  explicit FakeKernel(std::shared_ptr<FakeState> state) : state_(std::move(state)) {}
  ~FakeKernel() override {
    const std::lock_guard lock(state_->mutex);
    state_->calls.push_back("destroyed");
    if (state_->journal) state_->journal->push_back(state_->label + ": destroyed");
    // Like the real kernel: tables with `flags owner` die with their socket.
    for (const std::string& name : mine_) state_->tables.erase(name);
  }

  Status AddLocalRoute(const Ipv4Network& network) override {
    const std::lock_guard lock(state_->mutex);
    const std::string net = network.ToString();
    if (auto s = Call("add-route", net)) return *s;
    if (state_->local_routes.count(net) != 0 || state_->other_routes.count(net) != 0) {
      return Status::Errno(EEXIST);
    }
    state_->local_routes[net] = true;
    return Status::Ok();
  }

  Status DeleteLocalRoute(const Ipv4Network& network, bool exact) override {
    const std::lock_guard lock(state_->mutex);
    const std::string net = network.ToString();
    if (auto s = Call("delete-route", net + (exact ? " exact" : " any"))) return *s;
    auto it = state_->local_routes.find(net);
    if (it == state_->local_routes.end() || (exact && !it->second)) return Status::Errno(ESRCH);
    state_->local_routes.erase(it);
    return Status::Ok();
  }

  Status RunNft(const std::string& script) override {
    const std::lock_guard lock(state_->mutex);
    state_->scripts.push_back(script);
    const std::string del = "delete table ip ";
    if (script.rfind(del, 0) == 0) {
      const std::string name =
          script.substr(del.size(), script.find_first_of(" \n", del.size()) - del.size());
      if (auto s = Call("nft-delete", name)) return *s;
      if (state_->tables.erase(name) == 0) return Status{ENOENT, "No such file or directory"};
      mine_.erase(name);
      return Status::Ok();
    }
    // A creating script starts with "add table ip NAME" (replacing a
    // leftover) or "table ip NAME {".
    const std::string add = "add table ip ", table = "table ip ";
    const std::size_t at = script.rfind(add, 0) == 0 ? add.size() : table.size();
    const std::string name = script.substr(at, script.find_first_of(" \n", at) - at);
    if (auto s = Call("nft-create", name)) return *s;
    if (state_->owned.count(name) != 0) {
      return Status{EPERM, "Could not process rule: Operation not permitted"};
    }
    state_->tables.insert(name);
    mine_.insert(name);
    return Status::Ok();
  }

  Status ListNftChains(std::string* listing) override {
    const std::lock_guard lock(state_->mutex);
    *listing = state_->chains_listing;
    return Status::Ok();
  }

  Status FindNftTable(const std::string& name, NftTable* table) override {
    const std::lock_guard lock(state_->mutex);
    *table = {};
    if (auto s = Call("find-table", name)) return *s;
    table->exists = state_->tables.count(name) != 0;
    if (auto it = state_->owned.find(name); it != state_->owned.end()) {
      table->owned = true;
      table->owner = it->second;
    }
    return Status::Ok();
  }

  Status AddVethPair(const std::string& name, const std::string& peer, int peer_netns_fd,
                     std::uint32_t group) override {
    const std::lock_guard lock(state_->mutex);
    if (auto s = Call("add-veth", name + " " + peer + " fd=" + std::to_string(peer_netns_fd) +
                                      " group=" + std::to_string(group))) {
      return *s;
    }
    auto it = state_->namespaces.find(peer_netns_fd);
    std::shared_ptr<FakeState> other = it == state_->namespaces.end() ? nullptr : it->second.lock();
    if (!other) return Status::Errno(EBADF);
    if (state_->links.count(name) != 0 || other->links.count(peer) != 0) {
      return Status::Errno(EEXIST);
    }
    state_->links[name] = FakeLink{"veth", group, false, {}, peer, other};
    other->links[peer] = FakeLink{"veth", 0, false, {}, name, state_};
    return Status::Ok();
  }

  Status DeleteLink(const std::string& name) override {
    const std::lock_guard lock(state_->mutex);
    if (auto s = Call("delete-link", name)) return *s;
    auto it = state_->links.find(name);
    if (it == state_->links.end()) return Status::Errno(ENODEV);
    // Like the kernel: a veth's peer goes too, wherever it is.
    if (auto other = it->second.peer_namespace.lock()) other->links.erase(it->second.peer);
    state_->links.erase(it);
    return Status::Ok();
  }

  Status FindLink(const std::string& name, LinkInfo* info) override {
    const std::lock_guard lock(state_->mutex);
    *info = {};
    if (auto s = Call("find-link", name)) return *s;
    if (auto it = state_->links.find(name); it != state_->links.end()) {
      info->exists = true;
      info->kind = it->second.kind;
      info->group = it->second.group;
    }
    return Status::Ok();
  }

  Status SetLinkUp(const std::string& name) override {
    const std::lock_guard lock(state_->mutex);
    if (auto s = Call("link-up", name)) return *s;
    auto it = state_->links.find(name);
    if (it == state_->links.end()) return Status::Errno(ENODEV);
    it->second.up = true;
    return Status::Ok();
  }

  Status AddAddress(const std::string& name, const Ipv4Network& address) override {
    const std::lock_guard lock(state_->mutex);
    const std::string text = address.ToString();
    if (auto s = Call("add-address", name + " " + text)) return *s;
    auto it = state_->links.find(name);
    if (it == state_->links.end()) return Status::Errno(ENODEV);
    auto& list = it->second.addresses;
    if (std::find(list.begin(), list.end(), text) != list.end()) return Status::Errno(EEXIST);
    list.push_back(text);
    return Status::Ok();
  }

  Status AddDefaultRoute(std::uint32_t gateway, const std::string& name) override {
    const std::lock_guard lock(state_->mutex);
    const std::string text = "via " + Ipv4AddressString(gateway) + " dev " + name;
    if (auto s = Call("add-default-route", text)) return *s;
    if (state_->links.count(name) == 0) return Status::Errno(ENODEV);
    if (!state_->default_routes.empty()) return Status::Errno(EEXIST);
    state_->default_routes.push_back(text);
    return Status::Ok();
  }

  Status ListRoutes(std::vector<Ipv4Network>* routes) override {
    const std::lock_guard lock(state_->mutex);
    routes->clear();
    if (auto s = Call("list-routes", "")) return *s;
    *routes = state_->routes;
    // The connected routes of the interfaces' addresses, as the kernel adds them.
    for (const Ipv4Network& n : LinkAddresses()) {
      const std::uint32_t mask = n.prefix_length == 0 ? 0 : ~0u << (32 - n.prefix_length);
      routes->push_back({n.address & mask, n.prefix_length});
    }
    return Status::Ok();
  }

  Status ListAddresses(std::vector<Ipv4Network>* addresses) override {
    const std::lock_guard lock(state_->mutex);
    addresses->clear();
    if (auto s = Call("list-addresses", "")) return *s;
    *addresses = state_->addresses;
    for (const Ipv4Network& n : LinkAddresses()) addresses->push_back(n);
    return Status::Ok();
  }

  Status WriteSysctl(const std::string& path, const std::string& value) override {
    const std::lock_guard lock(state_->mutex);
    if (auto s = Call("sysctl", path + "=" + value)) return *s;
    state_->sysctls[path] = value;
    return Status::Ok();
  }

  std::string NetnsId() override { return state_->netns_id; }

  // Runs `f` here, on this thread: the fake has no namespace to enter.
  Status RunInNetns(const std::function<Status()>& f) override {
    {
      const std::lock_guard lock(state_->mutex);
      if (auto s = Call("run-in-netns", "")) return *s;
    }
    return f();
  }

  // "100.64.0.1/30" -> {0x64400001, 30}
  static Ipv4Network Parse(const std::string& text) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    int length = 32;
    std::sscanf(text.c_str(), "%u.%u.%u.%u/%d", &a, &b, &c, &d, &length);
    return {(a << 24) | (b << 16) | (c << 8) | d, length};
  }

 private:
  // Every address of every link; the caller holds the state's mutex.
  std::vector<Ipv4Network> LinkAddresses() const {
    std::vector<Ipv4Network> out;
    for (const auto& [name, link] : state_->links) {
      for (const std::string& a : link.addresses) out.push_back(Parse(a));
    }
    return out;
  }

  // Records the call; the Status to return when the test made it fail.
  std::optional<Status> Call(const std::string& kind, const std::string& object) {
    const std::string line = object.empty() ? kind : kind + " " + object;
    state_->calls.push_back(line);
    if (state_->journal) state_->journal->push_back(state_->label + ": " + line);
    if (auto it = state_->fail.find(kind); it != state_->fail.end()) return it->second;
    return std::nullopt;
  }

  std::shared_ptr<FakeState> state_;
  std::set<std::string> mine_;
};

}  // namespace tunnels::netns::testing
