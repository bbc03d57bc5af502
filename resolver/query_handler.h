// What the DNS server does with one query: answer it from the rules and the
// fake-address pool, forward it, or drop it. No I/O here, so that the logic
// is unit-tested and fuzzed without sockets.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "config/log.h"
#include "config/rules.h"
#include "resolver/fake_pool.h"

namespace tunnels::resolver {

enum class Transport { kUdp, kTcp };

class QueryHandler {
 public:
  struct Options {
    std::uint32_t fake_ttl = 900;     // addressCleanupTime / 4
    std::uint32_t block_ttl = 60;     // for the blackhole answer
    std::size_t packet_size = 65535;  // dnsPacketSize
  };

  // `rules`, `pool` and `log` must outlive the handler.
  QueryHandler(const config::RuleSet& rules, FakePool& pool, Options options,
               const config::Log& log);

  enum class Kind {
    kReply,    // send `reply`
    kForward,  // send the query to the upstream servers
    kDrop,     // send nothing (not a query, or too short to answer)
  };
  struct Outcome {
    Kind kind = Kind::kDrop;
    std::vector<std::uint8_t> reply;
    std::string name;  // the question's name, for the log
    // What was wrong with a malformed query, for a log line; the caller
    // adds who sent it, which only it knows.
    std::string problem{};
  };
  Outcome Handle(std::span<const std::uint8_t> query, Transport transport) const;

  // The rules for the queries from now on (a reload). Handle() is
  // synchronous, so no query is ever decided by a mix of two rule sets.
  void SetRules(std::shared_ptr<const config::RuleSet> rules);

  // The largest reply for a transport, as dnsPacketSize and the client allow.
  std::size_t packet_size() const { return options_.packet_size; }

 private:
  Outcome Reply(std::vector<std::uint8_t> bytes, std::string name) const;

  std::shared_ptr<const config::RuleSet> rules_;  // not owned when from the constructor
  FakePool& pool_;
  Options options_;
  const config::Log& log_;
};

}  // namespace tunnels::resolver
