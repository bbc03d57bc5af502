#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <sstream>

#include "config/config.h"
#include "tests/config/load_checks.h"

using namespace tunnels::config;

namespace {

using Fixture = tunnels::testing::LoadFixture;

std::string All(const LoadResult& r) { return tunnels::testing::AllDiagnostics(r); }

// The single error of a result, as printed.
std::string OnlyError(const LoadResult& r) {
  std::vector<std::string> errors;
  for (const auto& d : r.diagnostics) {
    if (d.severity == Severity::kError) errors.push_back(d.ToString());
  }
  INFO(All(r));
  REQUIRE(errors.size() == 1);
  REQUIRE_FALSE(r.ok());
  return errors[0];
}

const Rule& RuleAt(const LoadResult& r, std::size_t i) {
  INFO(All(r));
  REQUIRE(r.ok());
  REQUIRE(r.config->rules.size() > i);
  return r.config->rules[i];
}

std::string SeedText() {
  std::ifstream in(std::string(TUNNELS_SOURCE_DIR) + "/tests/fuzz/corpus/config/seed-example.yml");
  REQUIRE(in);  // a missing copy would silently test nothing
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("defaults follow the original, with the three documented changes", "[loader]") {
  Fixture f;
  const LoadResult r = f.One("");
  INFO(All(r));
  REQUIRE(r.ok());
  const Options& o = r.config->options;
  CHECK_FALSE(o.block_undefined_domains);
  CHECK(o.private_addresses.ToString() == "198.18.0.0/15");
  CHECK(o.upstream_dns_timeout == std::chrono::seconds(5));
  CHECK(o.connection_idle_timeout == std::chrono::seconds(7200));
  CHECK(o.upstream_dns == std::vector<Endpoint>{{"192.0.2.1", 53}});
  CHECK(o.upstream_dns_origin == f.options.system_resolv_conf);
  CHECK(o.random_credentials_length == 16);
  CHECK(o.address_cleanup_time == std::chrono::hours(1));
  CHECK(o.dns_bind_address == "127.0.0.1");
  CHECK(o.dns_port == 53);
  CHECK(o.overwrite_resolvconf);
  CHECK(o.restore_resolvconf);
  CHECK(o.make_resolvconf_immutable);
  CHECK(o.resolvconf_path == "/etc/resolv.conf");
  CHECK(o.resolvconf_backup_path == "/etc/resolv.conf.tunnels-backup");
  CHECK(o.state_directory == "/run/tunnels");
  CHECK(o.dns_packet_size == 65535);
  CHECK(o.temporary_bind_ports.first == 30000);
  CHECK(o.temporary_bind_ports.last == 55000);
  CHECK(o.nft_table == "tunnels_redirects");
  CHECK(o.silent_log.empty());
  CHECK(o.origin.empty());
}

TEST_CASE("every main option is read, and where it came from is kept", "[loader]") {
  Fixture f;
  const LoadResult r = f.One(tunnels::testing::EveryOptionExample());
  INFO(All(r));
  REQUIRE(r.ok());
  const Options& o = r.config->options;
  CHECK(o.upstream_dns == std::vector<Endpoint>{{"192.0.2.53", 53}, {"2001:db8::1", 54}});
  CHECK(o.private_addresses.ToString() == "10.99.0.0/16");
  CHECK(o.block_undefined_domains);
  CHECK(o.silent_log == std::vector<std::string>{"DNS", "SRV"});
  CHECK(o.address_cleanup_time == std::chrono::seconds(600));
  CHECK(o.dns_bind_address == "127.0.0.2");
  CHECK(o.dns_port == 5300);
  CHECK_FALSE(o.overwrite_resolvconf);
  CHECK_FALSE(o.restore_resolvconf);
  CHECK_FALSE(o.make_resolvconf_immutable);
  CHECK(o.resolvconf_path == "/tmp/r");
  CHECK(o.resolvconf_backup_path == "/tmp/r.bak");
  CHECK(o.dns_packet_size == 4096);
  CHECK(o.upstream_dns_timeout == std::chrono::milliseconds(2500));
  CHECK(o.connection_idle_timeout == std::chrono::seconds(0));
  CHECK(o.temporary_bind_ports.first == 40000);
  CHECK(o.temporary_bind_ports.last == 41000);
  CHECK(o.nft_table == "my_chain");
  CHECK(o.random_credentials_length == 8);
  CHECK(o.state_directory == "/tmp/state");
  CHECK_FALSE(o.allow_private_answers);
  CHECK(o.max_connections_per_source == 100);
  REQUIRE(o.origin.contains("dnsPort"));
  CHECK(o.origin.at("dnsPort").ToString() == "a.yml:7:1");
  CHECK(o.origin.size() == 21);
  // A YAML list of servers too, with and without ports.
  const LoadResult list =
      f.One(R"(upstreamDns: ["127.0.0.1:5353", 192.0.2.53, "[2001:db8::1]:54"])");
  INFO(All(list));
  REQUIRE(list.ok());
  CHECK(list.config->options.upstream_dns ==
        std::vector<Endpoint>{{"127.0.0.1", 5353}, {"192.0.2.53", 53}, {"2001:db8::1", 54}});
}

TEST_CASE("bad option values are errors at the value", "[loader]") {
  Fixture f;
  CHECK(OnlyError(f.One("dnsPort: 70000")) ==
        "a.yml:1:10: error: dnsPort: expected a whole number from 0 to 65535, not '70000'");
  CHECK(OnlyError(f.One("blockUndefinedDomains: maybe")) ==
        "a.yml:1:24: error: blockUndefinedDomains: expected true or false, not 'maybe'");
  CHECK_THAT(OnlyError(f.One("upstreamDns: dns.example.net")),
             Catch::Contains("a.yml:1:14: error: upstreamDns: 'dns.example.net' is a name"));
  CHECK_THAT(OnlyError(f.One("privateAddresses: 10.1.2.3/16")),
             Catch::Contains("host bits set; did you mean 10.1.0.0/16?"));
  CHECK_THAT(OnlyError(f.One("privateAddresses: 127.0.0.0/8")), Catch::Contains("loopback"));
  CHECK_THAT(OnlyError(f.One("privateAddresses: 10.0.0.0/30")), Catch::Contains("/29"));
  CHECK_THAT(OnlyError(f.One("resolvconfPath: etc/resolv.conf")), Catch::Contains("absolute path"));
  CHECK(OnlyError(f.One("stateDirectory: run/tunnels")) ==
        "a.yml:1:17: error: stateDirectory: expected an absolute path, not 'run/tunnels'");
  CHECK_THAT(OnlyError(f.One("upstreamDnsTimeout: soon")), Catch::Contains("seconds"));
  CHECK_THAT(OnlyError(f.One("connectionIdleTimeout: -1")),
             Catch::Contains("connectionIdleTimeout"));
  CHECK_THAT(OnlyError(f.One("temporaryBindPortRange: 5-1")), Catch::Contains("FIRST-LAST"));
  CHECK_THAT(OnlyError(f.One("upstreamDns: [1.2.3.4, {a: b}]")),
             Catch::Contains("a.yml:1:24: error: each item of upstreamDns"));
}

TEST_CASE("a public privateAddresses range is a warning", "[loader]") {
  Fixture f;
  const LoadResult r = f.One("privateAddresses: 203.0.113.0/24");
  REQUIRE(r.ok());
  CHECK_THAT(All(r), Catch::Contains("warning: privateAddresses: 203.0.113.0/24 is not a private"));
}

TEST_CASE("an unknown option gets a did-you-mean hint", "[loader]") {
  Fixture f;
  CHECK(OnlyError(f.One("\nupstreamDNS: 1.1.1.1")) ==
        "a.yml:2:1: error: unknown option 'upstreamDNS'; did you mean 'upstreamDns'?");
  CHECK(OnlyError(f.One("rule:\n  a.com: direct")) ==
        "a.yml:1:1: error: unknown option 'rule'; did you mean 'rules'?");
}

TEST_CASE("an option set by two files names both places", "[loader]") {
  Fixture f;
  CHECK(OnlyError(f.Docs({{"a.yml", "dnsPort: 53"}, {"b.yml", "\ndnsPort: 54"}})) ==
        "b.yml:2:1: error: option 'dnsPort' is already set at a.yml:1:1; only one file may set it");
  CHECK_THAT(OnlyError(f.One("dnsPort: 53\ndnsPort: 53")),
             Catch::Contains("a.yml:2:1: error: 'dnsPort' appears twice in the file; the first "
                             "is at a.yml:1:1"));
}

TEST_CASE("YAML syntax errors point at the place", "[loader]") {
  Fixture f;
  CHECK_THAT(OnlyError(f.One("rules:\n  a.com: [tor\n")),
             Catch::StartsWith("a.yml:2:1: error: YAML syntax:"));
  CHECK_THAT(OnlyError(f.One("- a\n- b\n")),
             Catch::Contains("a.yml:1:1: error: a configuration file must be a mapping"));
}

TEST_CASE("many errors are all reported in one pass", "[loader]") {
  Fixture f;
  const LoadResult r = f.One(R"(dnsPort: x
blockUndefinedDomains: x
rules:
  a.com: nope
  b.com@nope: direct
)");
  CHECK_FALSE(r.ok());
  CHECK(r.diagnostics.size() == 4);
}

TEST_CASE("upstreamDns falls back to resolv.conf, and is an error when that has none", "[loader]") {
  Fixture f;
  f.options.system_resolv_conf =
      f.dir.Write("r2", "# x\nsearch example\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\n");
  LoadResult r = f.One("");
  REQUIRE(r.ok());
  CHECK(r.config->options.upstream_dns == std::vector<Endpoint>{{"10.0.0.1", 53}, {"fe80::1", 53}});
  f.options.system_resolv_conf = f.dir.Write("r3", "search example\n");
  CHECK_THAT(OnlyError(f.One("")), Catch::Contains("no file sets upstreamDns"));
}

TEST_CASE("socks5 and http proxies: address forms, defaults, older keys", "[loader]") {
  Fixture f;
  const LoadResult r = f.One(std::string("proxies:\n") + tunnels::testing::kSocksAndHttpProxies +
                             "rules:\n  x.com: a, b, c, d, e\n");
  INFO(All(r));
  REQUIRE(r.ok());
  const auto& p = r.config->proxies;
  CHECK(p.at("a").type == ProxyType::kSocks5);
  CHECK(p.at("a").address == Endpoint{"socks.example.net", 8072});
  CHECK(p.at("a").credentials->username == "alice");
  CHECK(p.at("a").credentials->password == "se:cr@t");
  CHECK(p.at("b").address == Endpoint{"127.0.0.1", 1080});
  CHECK_FALSE(p.at("b").credentials.has_value());
  CHECK(p.at("c").address == Endpoint{"proxy.example.net", 80});
  CHECK(p.at("d").address == Endpoint{"::1", 9050});
  CHECK(p.at("d").credentials->username == Credentials::kRandomPlaceholder);
  CHECK(p.at("e").address == Endpoint{"10.0.0.1", 3128});
  CHECK(p.at("e").credentials->password == "p");
  CHECK(RuleAt(r, 0).proxies == std::vector<std::string>{"a", "b", "c", "d", "e"});
}

TEST_CASE("proxy errors", "[loader]") {
  Fixture f;
  CHECK(OnlyError(f.One("proxies:\n  direct: {type: socks5, address: a}")) ==
        "a.yml:2:3: error: 'direct' is a built-in proxy and cannot be redefined");
  CHECK(OnlyError(f.One("proxies:\n  p: {type: sock5, address: a}\nrules: {a.com: p}")) ==
        "a.yml:2:13: error: proxy 'p': unknown type 'sock5'; did you mean 'socks5'?");
  CHECK_THAT(All(f.One("proxies:\n  p: {type: socks5, adress: a}\nrules: {a.com: p}")),
             Catch::Contains("a.yml:2:21: error: proxy 'p' (socks5): unknown option 'adress'; did "
                             "you mean 'address'?"));
  CHECK_THAT(OnlyError(f.One("proxies:\n  p: {type: socks5}\nrules: {a.com: p}")),
             Catch::Contains("a.yml:2:3: error: proxy 'p' has no 'address'"));
  CHECK_THAT(
      OnlyError(f.One("proxies:\n  p: {type: socks5, address: 'a:99999'}\nrules: {a.com: p}")),
      Catch::Contains("is not a port number"));
  CHECK_THAT(
      OnlyError(f.One("proxies:\n  p: {type: socks5, address: 'a:1', port: 2}\nrules: {a.com: p}")),
      Catch::Contains("contradicts"));
  CHECK(OnlyError(f.Docs({{"a.yml", "proxies:\n  p: {type: http, address: a}\nrules: {a.com: p}"},
                          {"b.yml", "proxies:\n  p: {type: http, address: b}"}})) ==
        "b.yml:2:3: error: proxy 'p' is already defined at a.yml:2:3");
}

TEST_CASE("an unused proxy is a warning", "[loader]") {
  Fixture f;
  const LoadResult r = f.One("proxies:\n  p: {type: http, address: a}");
  REQUIRE(r.ok());
  CHECK_THAT(All(r),
             Catch::Contains("a.yml:2:3: warning: proxy 'p' is defined but no rule uses it"));
}

TEST_CASE("ssh proxies: keys, fingerprints in both forms, known_hosts", "[loader]") {
  Fixture f;
  const std::string key = f.dir.Write("id_ed25519", "not really a key");
  const std::string known = f.dir.Write("known_hosts", "");
  const LoadResult r = f.One(R"(proxies:
  vps:
    type: ssh
    address: vps.example.net
    username: bob
    privateKey: )" + key + R"(
    privateKeyPassphrase: pw
    rsaFingerprint: 01:23:45:97:89:AB:cd:ef:01:23:45:97:89:ab:cd:ef
    ed25519Fingerprint: SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s
    knownHostsFile: )" + known +
                             R"(
    parentSocks5Proxy: 127.0.0.1:9050
    keepaliveInterval: 7
rules: {x.com: vps}
)");
  INFO(All(r));
  REQUIRE(r.ok());
  const Proxy& p = r.config->proxies.at("vps");
  CHECK(p.address == Endpoint{"vps.example.net", 22});
  CHECK(p.ssh.username == "bob");
  CHECK(p.ssh.private_key == key);
  CHECK(p.ssh.private_key_passphrase == "pw");
  REQUIRE(p.ssh.fingerprints.size() == 2);
  CHECK(p.ssh.fingerprints[0].key_type == HostKeyType::kRsa);
  CHECK(p.ssh.fingerprints[0].form == Fingerprint::Form::kMd5Hex);
  CHECK(p.ssh.fingerprints[0].value == "01:23:45:97:89:ab:cd:ef:01:23:45:97:89:ab:cd:ef");
  CHECK(p.ssh.fingerprints[1].key_type == HostKeyType::kEd25519);
  CHECK(p.ssh.fingerprints[1].form == Fingerprint::Form::kSha256Base64);
  CHECK(p.ssh.known_hosts_file == known);
  CHECK(p.ssh.parent_socks5 == Endpoint{"127.0.0.1", 9050});
  CHECK(p.ssh.keepalive_interval == std::chrono::seconds(7));
}

TEST_CASE("ssh proxy errors: unpinned host, unreadable key, bad fingerprint", "[loader]") {
  Fixture f;
  const std::string key = f.dir.Write("id", "k");
  const std::string head = "proxies:\n  vps:\n    type: ssh\n    address: h\n    username: u\n";
  CHECK_THAT(OnlyError(f.One(head + "    privateKey: " + key + "\nrules: {x.com: vps}")),
             Catch::Contains("a.yml:2:3: error: ssh proxy 'vps' pins no host key"));
  CHECK(OnlyError(f.One(head + "    privateKey: /nonexistent/id_rsa\n    rsaFingerprint: "
                               "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\nrules: "
                               "{x.com: vps}")) ==
        "a.yml:6:17: error: ssh proxy 'vps': cannot read private key '/nonexistent/id_rsa': No "
        "such file or directory");
  CHECK_THAT(OnlyError(f.One(head + "    privateKey: ~/.ssh/id\n    rsaFingerprint: "
                                    "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\nrules: "
                                    "{x.com: vps}")),
             Catch::Contains("'~' is not expanded"));
  CHECK_THAT(
      OnlyError(f.One(head + "    privateKey: " + key +
                      "\n    rsaFingerprint: 01:23\nrules: {x.com: vps}")),
      Catch::Contains("a.yml:7:21: error: ssh proxy 'vps': rsaFingerprint: expected an MD5"));
  CHECK_THAT(OnlyError(f.One(head + "    privateKey: " + key +
                             "\n    rsaFingerprint: "
                             "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\n"
                             "    keepaliveInterval: 0\nrules: {x.com: vps}")),
             Catch::Contains("a.yml:8:24: error: ssh proxy 'vps': keepaliveInterval: '0' is not "
                             "a number of seconds from 1 to 3600"));
}

TEST_CASE("the seed example loads once its key exists, and names the key line otherwise",
          "[loader]") {
  Fixture f;
  std::string seed = SeedText();
  REQUIRE_FALSE(seed.empty());
  const LoadResult missing = f.Docs({{"seed.yml", seed}});
  if (access("/home/bob/.ssh/id_rsa", R_OK) != 0) {
    CHECK_THAT(OnlyError(missing), Catch::Contains("seed.yml:15:29: error: ssh proxy 'myvps': "
                                                   "cannot read private key"));
  }
  const std::string key = f.dir.Write("id_rsa", "k");
  const std::size_t at = seed.find("/home/bob/.ssh/id_rsa");
  REQUIRE(at != std::string::npos);
  seed.replace(at, std::strlen("/home/bob/.ssh/id_rsa"), key);
  const LoadResult r = f.Docs({{"seed.yml", seed}});
  INFO(All(r));
  REQUIRE(r.ok());
  const Config& c = *r.config;
  CHECK(c.proxies.size() == 3);
  REQUIRE(c.rules.size() == 7);
  CHECK(c.rules[0].pattern == ".google.*");
  CHECK(c.rules[1].pattern == ".example.org");
  CHECK(c.rules[2].pattern == ".example.com");
  CHECK(c.rules[2].where.ToString() == "seed.yml:28:27");
  CHECK(c.rules[3].forced_addresses.size() == 1);
  CHECK(c.rules[3].forced_addresses[0].host == "icanhazip.com");
  CHECK(c.rules[4].forced_addresses.size() == 2);
  // The unquoted "*.onion@web+ssh" key of the original, which YAML alone
  // would read as an alias, with its position in the file as written.
  CHECK(c.rules[5].pattern == "*.onion");
  CHECK(c.rules[5].where.ToString() == "seed.yml:35:9");
  CHECK(c.rules[5].ports == std::vector<PortRange>{{Protocol::kTcp, 22, 22},
                                                   {Protocol::kTcp, 80, 80},
                                                   {Protocol::kTcp, 443, 443}});
  CHECK(c.options.upstream_dns.size() == 3);
  CHECK(c.options.origin.at("upstreamDns").ToString() == "seed.yml:38:1");
}

TEST_CASE("port aliases: raw ports, ranges, nesting, built-ins, overrides", "[loader]") {
  Fixture f;
  const LoadResult r = f.One(R"(ports:
  dns: u53
  mine: t8000-8010 + t8005 + t8011 + u53
  both: mine + web
  listed: [t1, u2]
rules:
  a.com@mine: direct
  b.com@both: direct
  c.com@https: direct
  d.com@dns: direct
  e.com@t7+t9-10: direct
  f.com@listed: direct
)");
  INFO(All(r));
  REQUIRE(r.ok());
  const auto& al = r.config->port_aliases;
  CHECK(al.at("mine") ==
        std::vector<PortRange>{{Protocol::kTcp, 8000, 8011}, {Protocol::kUdp, 53, 53}});
  CHECK(al.at("both").size() == 5);  // t80, t443, t8000-8011, u53, u443
  CHECK(al.at("dns") == std::vector<PortRange>{{Protocol::kUdp, 53, 53}});  // user wins
  CHECK(al.at("domain") ==
        std::vector<PortRange>{{Protocol::kTcp, 53, 53}, {Protocol::kUdp, 53, 53}});
  CHECK(al.at("web").size() == 3);  // t80, t443 and u443 (QUIC) from the services list
  CHECK(al.size() > 300);
  CHECK(RuleAt(r, 2).ports ==
        std::vector<PortRange>{{Protocol::kTcp, 443, 443}, {Protocol::kUdp, 443, 443}});
  CHECK(RuleAt(r, 4).ports ==
        std::vector<PortRange>{{Protocol::kTcp, 7, 7}, {Protocol::kTcp, 9, 10}});
  CHECK(RuleAt(r, 5).ports ==
        std::vector<PortRange>{{Protocol::kTcp, 1, 1}, {Protocol::kUdp, 2, 2}});
}

TEST_CASE("port alias errors: cycles, unknown names, conflicts", "[loader]") {
  Fixture f;
  const LoadResult cycle = f.One("ports:\n  a: b\n  b: c + t1\n  c: a\n");
  CHECK_FALSE(cycle.ok());
  CHECK_THAT(All(cycle), Catch::Contains("refers back to itself (a cycle)"));
  CHECK(OnlyError(f.One("ports:\n  a: t1 + htps\n")) ==
        "a.yml:2:11: error: unknown port alias 'htps'; did you mean 'https'?");
  CHECK(OnlyError(f.One("rules:\n  a.com@webb: direct\n")) ==
        "a.yml:2:9: error: unknown port alias 'webb'; did you mean 'web'?");
  CHECK_THAT(OnlyError(f.One("ports:\n  a: t0\n")), Catch::Contains("not a valid port"));
  CHECK_THAT(OnlyError(f.One("ports:\n  a: t20-10\n")), Catch::Contains("not a valid port"));
  CHECK_THAT(OnlyError(f.One("ports:\n  a: t1 +\n")), Catch::Contains("empty port item"));
  CHECK(OnlyError(f.Docs({{"a.yml", "ports:\n  x: t1"}, {"b.yml", "ports:\n  x: t2"}})) ==
        "b.yml:2:3: error: port alias 'x' is already defined differently at a.yml:2:3");
  const LoadResult same =
      f.Docs({{"a.yml", "ports:\n  x: t1 + t2"}, {"b.yml", "ports:\n  x: t2+t1"}});
  CHECK(same.ok());
}

TEST_CASE("rule values: one proxy, a failover list, a mapping with forcedAddress", "[loader]") {
  Fixture f;
  const LoadResult r = f.One(R"(proxies:
  a: {type: socks5, address: h}
  b: {type: http, address: h}
rules:
  one.com: a
  two.com: a, b, direct
  three.com: [b, a]
  four.com:
    proxy: a
    forcedAddress: "10.0.0.1, host.example:8443, [2001:db8::1]:22, 2001:db8::2, h"
  five.com:
    proxy: [b]
    forcedAddress: [x.example]
  six.com, .seven.com@t22, eight.com : block
)");
  INFO(All(r));
  REQUIRE(r.ok());
  CHECK(RuleAt(r, 0).proxies == std::vector<std::string>{"a"});
  CHECK(RuleAt(r, 1).proxies == std::vector<std::string>{"a", "b", "direct"});
  CHECK(RuleAt(r, 2).proxies == std::vector<std::string>{"b", "a"});
  const auto& forced = RuleAt(r, 3).forced_addresses;
  REQUIRE(forced.size() == 5);
  CHECK(forced[0].ToString() == "10.0.0.1");
  CHECK(forced[1].ToString() == "host.example:8443");
  CHECK(forced[2].ToString() == "[2001:db8::1]:22");
  CHECK(forced[3].ToString() == "2001:db8::2");
  CHECK(RuleAt(r, 4).forced_addresses.size() == 1);
  REQUIRE(r.config->rules.size() == 8);
  CHECK(RuleAt(r, 6).pattern == ".seven.com");
  CHECK(RuleAt(r, 6).where.ToString() == "a.yml:14:12");
  CHECK(RuleAt(r, 6).ports == std::vector<PortRange>{{Protocol::kTcp, 22, 22}});
  CHECK(RuleAt(r, 7).pattern == "eight.com");
}

TEST_CASE("rule errors", "[loader]") {
  Fixture f;
  CHECK(OnlyError(f.One("proxies:\n  tor: {type: socks5, address: h}\nrules:\n  a.com: torr\n")) ==
        "a.yml:4:10: error: rule 'a.com' uses unknown proxy 'torr'; did you mean 'tor'?");
  CHECK(OnlyError(f.One("rules:\n  a.com: direct, block\n")) ==
        "a.yml:2:18: error: 'block' cannot be part of a failover list; use it alone");
  CHECK(OnlyError(f.One("rules:\n  a..com: direct\n")) ==
        "a.yml:2:3: error: empty label (two dots in a row) in domain pattern: 'a..com'");
  CHECK(OnlyError(f.One("rules:\n  a.com, , b.com: direct\n")) ==
        "a.yml:2:9: error: empty pattern in rule 'a.com, , b.com'");
  CHECK_THAT(OnlyError(f.One("rules:\n  a.com:\n")), Catch::Contains("has no proxy"));
  CHECK_THAT(All(f.One("rules:\n  a.com: {proxi: direct}\n")),
             Catch::Contains("unknown option 'proxi'; did you mean 'proxy'?"));
  CHECK_THAT(OnlyError(f.One("rules:\n  a.com: {proxy: direct, forcedAddress: 'a:b'}\n")),
             Catch::Contains("forcedAddress: 'b' is not a port number"));
  CHECK_THAT(OnlyError(f.One("rules:\n  a.com@: direct\n")), Catch::Contains("'@' must be"));
}

TEST_CASE("the same pattern and port bound to two actions is an error naming both", "[loader]") {
  Fixture f;
  CHECK(OnlyError(f.Docs({{"a.yml", "rules:\n  .x.com@web: direct"},
                          {"b.yml", "rules:\n  .X.com@https: block"}})) ==
        "b.yml:2:3: error: pattern '.X.com' is bound to a different action for the same ports "
        "at a.yml:2:3");
  // Different ports are fine.
  CHECK(f.Docs({{"a.yml", "rules:\n  .x.com@http: direct"},
                {"b.yml", "rules:\n  .x.com@https: block"}})
            .ok());
  // The same action twice is a warning only.
  const LoadResult dup = f.One("rules:\n  x.com: direct\n  x.com@t80: direct\n");
  CHECK(dup.ok());
  CHECK_THAT(All(dup), Catch::Contains("warning: rule 'x.com' repeats"));
}

TEST_CASE("files and directories: recursion, order, dotfiles, explicit names", "[loader]") {
  Fixture f;
  f.dir.Write("conf/b.yml", "rules:\n  b.com: direct\n");
  f.dir.Write("conf/a.yaml", "rules:\n  a.com: direct\n");
  f.dir.Write("conf/sub/c.yml", "rules:\n  c.com: direct\n");
  f.dir.Write("conf/.hidden.yml", "broken: [");
  f.dir.Write("conf/.git/x.yml", "broken: [");
  f.dir.Write("conf/notes.txt", "broken: [");
  const std::string other = f.dir.Write("other.conf", "rules:\n  d.com: direct\n");
  const LoadResult r = Load({(f.dir.path() / "conf").string(), other}, f.options);
  INFO(All(r));
  REQUIRE(r.ok());
  REQUIRE(r.config->rules.size() == 4);
  CHECK(r.config->rules[0].pattern == "a.com");
  CHECK(r.config->rules[1].pattern == "b.com");
  CHECK(r.config->rules[2].pattern == "c.com");
  CHECK(r.config->rules[3].pattern == "d.com");
  CHECK(r.config->files.size() == 4);

  const LoadResult missing = Load({(f.dir.path() / "nope.yml").string()}, f.options);
  CHECK_THAT(OnlyError(missing),
             Catch::EndsWith("nope.yml: error: cannot read: No such file or directory"));
}

TEST_CASE("a file named twice is read once", "[loader]") {
  Fixture f;
  const std::string a = f.dir.Write("a.yml", "dnsPort: 5353\n");
  const LoadResult r = Load({a, a, f.dir.path().string()}, f.options);
  INFO(All(r));
  CHECK(r.ok());
}

TEST_CASE("every shipped sample loads", "[loader][samples]") {
  Fixture f;
  const LoadResult r = Load({std::string(TUNNELS_SOURCE_DIR) + "/conf.d.sample"}, f.options);
  INFO(All(r));
  CHECK(r.ok());
  CHECK(r.config->rules.size() > 0);
}

TEST_CASE("hostile directories: link loops, dangling links, link fans", "[loader][walk]") {
  Fixture f;
  namespace fs = std::filesystem;
  const fs::path conf = f.dir.path() / "conf";
  f.dir.Write("conf/a.yml", "rules:\n  a.com: direct\n");
  fs::create_symlink("self.yml", conf / "self.yml");  // a link to itself: ELOOP
  fs::create_symlink("nowhere.yml", conf / "gone.yml");
  const LoadResult r = Load({conf.string()}, f.options);
  const std::string all = All(r);
  INFO(all);
  CHECK_FALSE(r.ok());
  CHECK_THAT(all, Catch::Contains("self.yml: error: cannot follow symbolic link: Too many levels "
                                  "of symbolic links"));
  CHECK_THAT(all, Catch::Contains("gone.yml: error: cannot follow symbolic link: No such file or "
                                  "directory"));

  // Eight links to the directory itself, and one to its parent: without
  // visited-directory tracking this is 9^depth directories to list.
  const fs::path fan = f.dir.path() / "fan";
  f.dir.Write("fan/a.yml", "rules:\n  a.com: direct\n");
  f.dir.Write("fan/sub/b.yml", "rules:\n  b.com: direct\n");
  for (int i = 0; i < 8; ++i) fs::create_symlink(".", fan / ("s" + std::to_string(i)));
  fs::create_symlink("..", fan / "sub" / "up");
  const LoadResult fanned = Load({fan.string()}, f.options);
  INFO(All(fanned));
  REQUIRE(fanned.ok());
  CHECK(fanned.config->rules.size() == 2);
  CHECK(fanned.config->files.size() == 2);
  CHECK_THAT(All(fanned), Catch::Contains("s0: warning: directory already read"));
}

TEST_CASE("files that never end, FIFOs and devices are refused, not read", "[loader][walk]") {
  Fixture f;
  namespace fs = std::filesystem;
  CHECK_THAT(OnlyError(Load({"/dev/zero"}, f.options)),
             Catch::Contains("/dev/zero: error: not a regular file"));
  const std::string fifo = (f.dir.path() / "fifo.yml").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // Nobody writes to it: opened without O_NONBLOCK this would block.
  CHECK_THAT(OnlyError(Load({fifo}, f.options)),
             Catch::Contains("fifo.yml: error: not a regular file"));

  const std::string big = f.dir.Write("big.yml", "");
  fs::resize_file(big, (64u << 20) + 1);  // sparse: costs no disk
  CHECK_THAT(OnlyError(Load({big}, f.options)),
             Catch::Contains("big.yml: error: file is larger than 64 MiB"));
}

TEST_CASE("paths that yield no configuration file fail closed", "[loader][walk]") {
  Fixture f;
  namespace fs = std::filesystem;
  const fs::path empty = f.dir.path() / "empty";
  fs::create_directories(empty);
  CHECK_THAT(OnlyError(Load({empty.string()}, f.options)),
             Catch::Contains("error: no configuration file (*.yml or *.yaml) could be read"));

  // A directory whose only entry is a FIFO: the FIFO is skipped, with a
  // warning, and the directory then yields nothing.
  const fs::path only_fifo = f.dir.path() / "onlyfifo";
  fs::create_directories(only_fifo);
  REQUIRE(::mkfifo((only_fifo / "x.yml").c_str(), 0600) == 0);
  const LoadResult r = Load({only_fifo.string()}, f.options);
  CHECK_THAT(OnlyError(r), Catch::Contains("no configuration file"));
  CHECK_THAT(All(r), Catch::Contains("x.yml: warning: not a regular file"));

  // No paths at all (no -c, and neither default directory exists) stays
  // a configuration of defaults.
  CHECK(Load({}, f.options).ok());
}
