#include "config/rules.h"

#include <catch2/catch.hpp>

#include "tests/config/temp_dir.h"

using namespace tunnels::config;
using tunnels::testing::TempDir;

namespace {

struct Engine {
  TempDir dir;
  Config config;
  std::unique_ptr<RuleSet> rules;

  explicit Engine(const std::string& text) {
    LoadOptions options;
    options.system_resolv_conf = dir.Write("resolv.conf", "nameserver 192.0.2.1\n");
    LoadResult r = LoadDocuments({{"r.yml",
                                   "proxies:\n  tor: {type: socks5, address: h}\n"
                                   "  vps: {type: http, address: h}\n" +
                                       text}},
                                 options);
    std::string all;
    for (const auto& d : r.diagnostics) all += d.ToString() + "\n";
    INFO(all);
    REQUIRE(r.ok());
    config = *r.config;
    rules = std::make_unique<RuleSet>(config);
  }

  Decision D(const char* name, std::uint16_t port = 443, Protocol p = Protocol::kTcp) const {
    return rules->Decide(name, port, p);
  }
  std::string Winner(const char* name, std::uint16_t port = 443) const {
    const Decision d = D(name, port);
    return d.rule ? d.rule->pattern : "(none)";
  }
};

}  // namespace

TEST_CASE("a ruled name gets a fake address and goes through the proxy", "[rules]") {
  Engine e("rules:\n  .example.com@web: tor\n");
  const Decision d = e.D("www.example.com", 443);
  CHECK(d.dns == DnsAction::kFake);
  CHECK(d.action == Action::kProxy);
  REQUIRE(d.proxies.size() == 1);
  CHECK(d.proxies[0] == "tor");
  REQUIRE(d.rule != nullptr);
  CHECK(d.rule->where.ToString() == "r.yml:5:3");
  CHECK(e.D("example.com", 80).action == Action::kProxy);
}

TEST_CASE("names are matched case-insensitively and without the trailing dot", "[rules]") {
  Engine e("rules:\n  .example.com: tor\n");
  CHECK(e.D("WWW.Example.COM.").action == Action::kProxy);
  CHECK(e.D("www.example.com..").action == Action::kDirect);  // not a valid name
}

TEST_CASE("a port the rule does not cover is refused, DNS still fake", "[rules]") {
  Engine e("rules:\n  .example.com@web: tor\n");
  const Decision d = e.D("example.com", 22);
  CHECK(d.dns == DnsAction::kFake);
  CHECK(d.action == Action::kRefuse);
  CHECK(d.rule == nullptr);
  CHECK(e.D("example.com", 443, Protocol::kUdp).action == Action::kProxy);  // QUIC is in https
  CHECK(e.D("example.com", 80, Protocol::kUdp).action == Action::kRefuse);
}

TEST_CASE("no @ports means every TCP port and no UDP port", "[rules]") {
  Engine e("rules:\n  a.com: tor\n");
  CHECK(e.D("a.com", 1).action == Action::kProxy);
  CHECK(e.D("a.com", 65535).action == Action::kProxy);
  CHECK(e.D("a.com", 53, Protocol::kUdp).action == Action::kRefuse);
}

TEST_CASE("names without a rule are forwarded, or blocked with blockUndefinedDomains", "[rules]") {
  Engine fwd("rules:\n  a.com: tor\n");
  CHECK(fwd.D("b.com").dns == DnsAction::kForward);
  CHECK(fwd.D("b.com").action == Action::kDirect);
  Engine blk("blockUndefinedDomains: true\nrules:\n  a.com: tor\n");
  CHECK(blk.D("b.com").dns == DnsAction::kBlock);
  CHECK(blk.D("b.com").action == Action::kBlock);
  CHECK(blk.D("a.com").dns == DnsAction::kFake);
}

TEST_CASE("block and direct rules", "[rules]") {
  Engine e("rules:\n  ads.com: block\n  .lan: direct\n");
  CHECK(e.D("ads.com").dns == DnsAction::kBlock);
  CHECK(e.D("ads.com").action == Action::kBlock);
  CHECK(e.D("printer.lan").dns == DnsAction::kFake);
  CHECK(e.D("printer.lan").action == Action::kDirect);
  CHECK(e.D("printer.lan").proxies.empty());
}

TEST_CASE("the most specific rule wins: literal labels, then right anchoring, then order",
          "[rules]") {
  Engine e(R"(rules:
  "*": vps
  .google.*: vps
  "*.google.com": tor
  mail.google.com: direct
  .com: block
  www.*.org: direct
  "*.example.org": tor
)");
  CHECK(e.Winner("mail.google.com") == "mail.google.com");
  CHECK(e.Winner("www.google.com") == "*.google.com");
  // ".com" and ".google.*" have one literal label each, but ".com" has it at
  // the right end; "*.google.com" needs one more label.
  CHECK(e.Winner("google.com") == ".com");
  CHECK(e.Winner("google.de") == ".google.*");
  CHECK(e.Winner("other.com") == ".com");
  CHECK(e.Winner("local") == "*");
  // Two literal labels each; "*.example.org" has both at the right end.
  CHECK(e.Winner("www.example.org") == "*.example.org");
}

TEST_CASE("a more specific rule that does not cover the port does not hide a wider one",
          "[rules]") {
  Engine e("rules:\n  .example.com: tor\n  www.example.com@ssh: vps\n");
  CHECK(e.Winner("www.example.com", 22) == "www.example.com");
  CHECK(e.Winner("www.example.com", 443) == ".example.com");
}

TEST_CASE("DNS is blocked only when a block rule wins on every port", "[rules]") {
  Engine e(R"(rules:
  .example.com: tor
  ads.example.com: block
  half.example.com@web: block
)");
  CHECK(e.D("ads.example.com").dns == DnsAction::kBlock);
  CHECK(e.D("half.example.com").dns == DnsAction::kFake);  // port 22 still goes through tor
  CHECK(e.D("half.example.com", 443).action == Action::kBlock);
  CHECK(e.D("half.example.com", 22).action == Action::kProxy);
}

TEST_CASE("failover lists and forced addresses reach the decision", "[rules]") {
  Engine e(R"(rules:
  a.com: tor, vps, direct
  b.com:
    proxy: tor
    forcedAddress: x.example, 10.0.0.1:8080
)");
  const Decision a = e.D("a.com");
  REQUIRE(a.proxies.size() == 3);
  CHECK(a.proxies[2] == "direct");
  const Decision b = e.D("b.com");
  REQUIRE(b.forced_addresses.size() == 2);
  CHECK(b.forced_addresses[1].ToString() == "10.0.0.1:8080");
}

TEST_CASE("equal specificity is decided by load order and reported as a tie", "[rules]") {
  Engine e(
      "rules:\n  x.com: tor\n  .x.com: vps\n  \"*.y.com\": tor\n  .y.com: vps\n  "
      "z.com: tor\n  .z.com: tor\n");
  CHECK(e.Winner("x.com") == "x.com");
  CHECK(e.Winner("a.y.com") == "*.y.com");
  const auto ties = e.rules->FindTies();
  REQUIRE(ties.size() == 2);  // same action for z.com: no tie worth reporting
  CHECK(ties[0].earlier->pattern == "x.com");
  CHECK(ties[0].later->pattern == ".x.com");
  CHECK(ties[1].earlier->pattern == "*.y.com");
}

TEST_CASE("NormalizeName rejects what is not a DNS name", "[rules]") {
  char buf[256];
  std::size_t len = 0;
  CHECK(NormalizeName("A.b.", buf, &len));
  CHECK(std::string(buf, len) == "a.b");
  CHECK_FALSE(NormalizeName("", buf, &len));
  CHECK_FALSE(NormalizeName(".", buf, &len));
  CHECK_FALSE(NormalizeName("a..b", buf, &len));
  CHECK_FALSE(NormalizeName(".a", buf, &len));
  CHECK_FALSE(NormalizeName(std::string(64, 'a'), buf, &len));
  CHECK_FALSE(NormalizeName(std::string(254, 'a'), buf, &len));
}
