// A Kernel that changes nothing: it records every call, keeps a model of
// the tables and routes, and fails the calls a test asks it to.
#pragma once

#include <cerrno>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "netns/kernel.h"

namespace tunnels::netns::testing {

struct FakeState {
  // One line per call: "find-table NAME", "nft-create NAME", "nft-delete
  // NAME", "add-route NETWORK", "delete-route NETWORK exact|any", and
  // "destroyed" when the Kernel object goes away.
  std::vector<std::string> calls;
  std::vector<std::string> scripts;  // every nft script, in order

  std::set<std::string> tables;              // tables ip NAME that exist
  std::map<std::string, std::string> owned;  // owned by another process: NAME -> its name
  std::map<std::string, bool> local_routes;  // NETWORK -> added by a Kernel (exact)
  std::set<std::string> other_routes;        // non-local routes in table local

  // The call kind ("find-table", "nft-create", ...) -> what it returns
  // instead of doing anything.
  std::map<std::string, Status> fail;
};

class FakeKernel final : public Kernel {
 public:
  explicit FakeKernel(std::shared_ptr<FakeState> state) : state_(std::move(state)) {}
  ~FakeKernel() override {
    state_->calls.push_back("destroyed");
    // Like the real kernel: tables with `flags owner` die with their socket.
    for (const std::string& name : mine_) state_->tables.erase(name);
  }

  Status AddLocalRoute(const Ipv4Network& network) override {
    const std::string net = network.ToString();
    if (auto s = Call("add-route", net)) return *s;
    if (state_->local_routes.count(net) != 0 || state_->other_routes.count(net) != 0) {
      return Status::Errno(EEXIST);
    }
    state_->local_routes[net] = true;
    return Status::Ok();
  }

  Status DeleteLocalRoute(const Ipv4Network& network, bool exact) override {
    const std::string net = network.ToString();
    if (auto s = Call("delete-route", net + (exact ? " exact" : " any"))) return *s;
    auto it = state_->local_routes.find(net);
    if (it == state_->local_routes.end() || (exact && !it->second)) return Status::Errno(ESRCH);
    state_->local_routes.erase(it);
    return Status::Ok();
  }

  Status RunNft(const std::string& script) override {
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
    const std::string add = "add table ip ";
    const std::string name = script.substr(add.size(), script.find('\n') - add.size());
    if (auto s = Call("nft-create", name)) return *s;
    if (state_->owned.count(name) != 0) {
      return Status{EPERM, "Could not process rule: Operation not permitted"};
    }
    state_->tables.insert(name);
    mine_.insert(name);
    return Status::Ok();
  }

  Status FindNftTable(const std::string& name, NftTable* table) override {
    *table = {};
    if (auto s = Call("find-table", name)) return *s;
    table->exists = state_->tables.count(name) != 0;
    if (auto it = state_->owned.find(name); it != state_->owned.end()) {
      table->owned = true;
      table->owner = it->second;
    }
    return Status::Ok();
  }

 private:
  // Records the call; the Status to return when the test made it fail.
  std::optional<Status> Call(const std::string& kind, const std::string& object) {
    state_->calls.push_back(kind + " " + object);
    if (auto it = state_->fail.find(kind); it != state_->fail.end()) return it->second;
    return std::nullopt;
  }

  std::shared_ptr<FakeState> state_;
  std::set<std::string> mine_;
};

}  // namespace tunnels::netns::testing
