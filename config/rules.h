// The rule engine: answers "what happens to NAME:PORT/PROTO?" for a loaded
// configuration. Compiled once into lookup tables; Decide() does not allocate
// (short of a name that both block and other rules match, with over 32 rules
// or 64 port ranges among them).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace tunnels::config {

// What the DNS server does with a name.
enum class DnsAction {
  kFake,     // answer with a fake address from privateAddresses
  kForward,  // ask the upstream servers and return their answer unmodified
  kBlock,    // answer with the blackhole address / an empty answer
};
const char* ToString(DnsAction a);

// What the proxy engine does with a connection.
enum class Action {
  kProxy,   // through `proxies`, in order
  kDirect,  // to the real address
  kBlock,   // refuse: a block rule or an undefined name under blockUndefinedDomains
  kRefuse,  // the name has rules, but none covers this port and protocol
};
const char* ToString(Action a);

struct Decision {
  DnsAction dns = DnsAction::kForward;
  Action action = Action::kDirect;
  // The winning rule, or null when no rule covers the port (refuse) or no
  // rule matches the name. Points into the RuleSet, which outlives it.
  const Rule* rule = nullptr;
  // Proxies to try in order (empty unless action is kProxy).
  std::span<const std::string> proxies;
  std::span<const Target> forced_addresses;
};

// Lowercases `name` and strips one trailing dot; returns false for a name
// that is not a valid DNS name (empty label, label over 63 or name over 253
// characters). `out` must hold 254 characters.
bool NormalizeName(std::string_view name, char* out, std::size_t* out_len);

class RuleSet {
 public:
  // `config` must be valid (it came from Load). The RuleSet copies what it needs.
  explicit RuleSet(const Config& config);
  ~RuleSet();
  RuleSet(RuleSet&&) noexcept;
  RuleSet& operator=(RuleSet&&) noexcept;

  Decision Decide(std::string_view name, std::uint16_t port, Protocol protocol) const;
  // The DNS part alone: depends on the name only.
  DnsAction DecideDns(std::string_view name) const;

  // Pairs of rules that match the same names and ports with the same
  // specificity, decided only by load order (reported by `tunnels check`).
  struct Tie {
    const Rule* earlier;
    const Rule* later;
  };
  std::vector<Tie> FindTies() const;

  std::size_t size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tunnels::config
