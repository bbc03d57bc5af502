// The promises LoadDocuments makes for any input, as checks that return
// what is wrong (empty when nothing is), shared by the robustness test and
// the fuzzer so that both hold the loader to the same standard.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "config/options.h"
#include "config/pattern.h"
#include "config/rules.h"
#include "tests/config/temp_dir.h"

namespace tunnels::testing {

using config::Action;
using config::Config;
using config::Decision;
using config::Diagnostic;
using config::DnsAction;
using config::Document;
using config::LoadResult;
using config::PortRange;
using config::Protocol;
using config::Rule;
using config::RuleSet;
using config::Severity;
using config::SourceLocation;

// A loader with a resolv.conf of its own, so that results never depend on
// the machine's.
struct LoadFixture {
  TempDir dir;
  config::LoadOptions options;
  LoadFixture() { options.system_resolv_conf = dir.Write("resolv.conf", "nameserver 192.0.2.1\n"); }

  LoadResult Docs(const std::vector<Document>& docs) const {
    return config::LoadDocuments(docs, options);
  }
  LoadResult One(const std::string& text) const { return Docs({{"a.yml", text}}); }
};

// Every diagnostic of a result, one a line, as printed.
inline std::string AllDiagnostics(const LoadResult& r) {
  std::string s;
  for (const Diagnostic& d : r.diagnostics) s += d.ToString() + "\n";
  return s;
}

// Every main option set to the example value of its table entry, one a line
// in table order.
inline std::string EveryOptionExample() {
  std::string s;
  for (const config::MainOption& o : config::MainOptions()) {
    s.append(o.key).append(": ").append(o.example).append("\n");
  }
  return s;
}

// Entries of a proxies section, a to e: every address form and the older
// separate keys of socks5 and http proxies.
inline constexpr const char* kSocksAndHttpProxies =
    R"(  a: {type: socks5, address: "alice:se:cr@t@socks.example.net:8072"}
  b: {type: socks5, address: 127.0.0.1}
  c: {type: http, address: proxy.example.net}
  d: {type: socks5, address: "[::1]:9050", username: $RANDOM, password: $RANDOM}
  e: {type: http, address: 10.0.0.1, port: 3128, username: u, password: p}
)";

// Lengths of the lines of `text` split at '\n', as yaml-cpp counts lines.
inline std::vector<std::size_t> LineLengths(std::string_view text) {
  std::vector<std::size_t> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) {
      out.push_back(text.size() - start);
      return out;
    }
    out.push_back(nl - start);
    start = nl + 1;
  }
}

// The lines of each document, measured once for all the places to check.
class DocumentLines {
 public:
  explicit DocumentLines(const std::vector<Document>& docs) {
    for (const Document& d : docs) lengths_.emplace(d.name, LineLengths(d.text));
  }

  // What is wrong with `where` as a place in the documents; "" if nothing.
  std::string Check(const SourceLocation& where) const {
    const auto doc = lengths_.find(where.file);
    if (doc == lengths_.end()) return "names a file that is not a document: " + where.ToString();
    if (where.line == 0) {
      return where.column == 0 ? "" : "has a column but no line: " + where.ToString();
    }
    const std::vector<std::size_t>& lines = doc->second;
    // One line past the end is where an error at the end of the text points.
    if (where.line < 1 || static_cast<std::size_t>(where.line) > lines.size() + 1) {
      return "has a line outside the document (" + std::to_string(lines.size()) +
             " lines): " + where.ToString();
    }
    const std::size_t length = static_cast<std::size_t>(where.line) <= lines.size()
                                   ? lines[static_cast<std::size_t>(where.line) - 1]
                                   : 0;
    // The column just past the last character is where "missing X" errors point.
    if (where.column < 1 || static_cast<std::size_t>(where.column) > length + 1) {
      return "has a column outside its line (" + std::to_string(length) +
             " bytes): " + where.ToString();
    }
    return "";
  }

 private:
  std::map<std::string, std::vector<std::size_t>> lengths_;
};

inline bool Covers(const Rule& rule, std::uint16_t port, Protocol protocol) {
  if (rule.ports.empty()) return protocol == Protocol::kTcp;
  return std::any_of(rule.ports.begin(), rule.ports.end(),
                     [&](const PortRange& r) { return r.Contains(protocol, port); });
}

inline std::string DescribeDecision(const Decision& d) {
  return std::string("dns=") + tunnels::config::ToString(d.dns) +
         " action=" + tunnels::config::ToString(d.action) +
         " rule=" + (d.rule ? d.rule->pattern + "@" + d.rule->where.ToString() : "(none)");
}

// The invariants of one decision, whatever the name.
inline std::string CheckDecision(const Config& config, const Decision& d, std::string_view name,
                                 std::uint16_t port, Protocol protocol) {
  const std::string what = "Decide(" + std::string(name) + ", " + std::to_string(port) + "/" +
                           tunnels::config::ToString(protocol) + ") = " + DescribeDecision(d) +
                           ": ";
  const bool block_undefined = config.options.block_undefined_domains;
  if (d.action == Action::kRefuse) {
    if (d.rule != nullptr) return what + "a refusal names a rule";
    if (d.dns == DnsAction::kForward)
      return what + "a refused name is forwarded, so it has no rule";
    return "";
  }
  if (d.rule == nullptr) {
    const bool consistent = block_undefined
                                ? d.dns == DnsAction::kBlock && d.action == Action::kBlock
                                : d.dns == DnsAction::kForward && d.action == Action::kDirect;
    return consistent ? "" : what + "a name without a rule is not treated as undefined";
  }
  const Rule& r = *d.rule;
  if (!Covers(r, port, protocol)) return what + "the winning rule does not cover the port";
  if (d.dns == DnsAction::kForward) return what + "a ruled name is forwarded";
  const bool block = r.proxies == std::vector<std::string>{"block"};
  const bool direct = r.proxies == std::vector<std::string>{"direct"};
  if ((d.action == Action::kBlock) != block || (d.action == Action::kDirect) != direct) {
    return what + "the action does not follow the rule's proxies";
  }
  if (d.action == Action::kProxy &&
      !std::equal(d.proxies.begin(), d.proxies.end(), r.proxies.begin(), r.proxies.end())) {
    return what + "the proxies are not the rule's";
  }
  if (d.action != Action::kProxy && !d.proxies.empty()) return what + "proxies without kProxy";
  if (!block && d.forced_addresses.size() != r.forced_addresses.size()) {
    return what + "the forced addresses are not the rule's";
  }
  return "";
}

// A name that a pattern certainly matches: stars become a label, and a
// leading dot (the name itself and everything under it) is dropped.
inline std::string WitnessOf(const std::string& pattern) {
  std::string name = pattern.starts_with('.') ? pattern.substr(1) : pattern;
  std::string out;
  std::size_t start = 0;
  while (start <= name.size()) {
    const std::size_t dot = name.find('.', start);
    const std::string label = name.substr(start, dot == std::string::npos ? dot : dot - start);
    if (!out.empty() || start > 0) out.push_back('.');
    out += label == "*" ? "x" : label;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return out;
}

// The rule engine's answer worked out the slow and obvious way: every
// pattern tried on the name, and the DNS answer from the winner at every
// port where the winner can change. RuleSet::Decide, with its hash tables,
// must agree with it on every name.
class ReferenceEngine {
 public:
  struct Answer {
    DnsAction dns = DnsAction::kForward;
    Action action = Action::kDirect;
    const Rule* rule = nullptr;
  };

  explicit ReferenceEngine(const Config& config) : config_(config) {
    for (const Rule& r : config.rules) {
      std::string error;
      patterns_.push_back(*tunnels::config::ParsePattern(r.pattern, &error));
    }
  }

  // The rules whose pattern matches `name`, by index.
  std::vector<std::size_t> Matches(std::string_view name) const {
    char buf[256];
    std::size_t len = 0;
    std::vector<std::size_t> matches;
    if (tunnels::config::NormalizeName(name, buf, &len)) {
      for (std::size_t i = 0; i < patterns_.size(); ++i) {
        if (patterns_[i].Matches(std::string_view(buf, len))) matches.push_back(i);
      }
    }
    return matches;
  }

  // The decision for a name that `matches` (from Matches()) match.
  Answer Decide(const std::vector<std::size_t>& matches, std::uint16_t port,
                Protocol protocol) const {
    Answer a;
    if (matches.empty()) {
      const bool block = config_.options.block_undefined_domains;
      a.dns = block ? DnsAction::kBlock : DnsAction::kForward;
      a.action = block ? Action::kBlock : Action::kDirect;
      return a;
    }
    // Some rule covers the port and protocol, or the name still exists
    // (with a fake address) and the connection is refused.
    const Rule* winner = Winner(matches, port, protocol);
    a.rule = winner;
    a.action = winner == nullptr ? Action::kRefuse : ActionOf(*winner);
    // The name gets a fake address unless a block rule wins wherever any
    // rule covers. Winners change only where some range starts or ends.
    a.dns = DnsAction::kBlock;
    for (std::size_t i : matches) {
      for (const PortRange& r : PortsOf(config_.rules[i])) {
        for (const int p : {static_cast<int>(r.first), r.last + 1}) {
          if (p > 65535) continue;
          const Rule* w = Winner(matches, static_cast<std::uint16_t>(p), r.protocol);
          if (w != nullptr && ActionOf(*w) != Action::kBlock) a.dns = DnsAction::kFake;
        }
      }
    }
    return a;
  }

 private:
  static std::span<const PortRange> PortsOf(const Rule& r) {
    static const PortRange kAllTcp{Protocol::kTcp, 1, 65535};
    return r.ports.empty() ? std::span<const PortRange>(&kAllTcp, 1)
                           : std::span<const PortRange>(r.ports);
  }
  static Action ActionOf(const Rule& r) {
    if (r.proxies.size() == 1 && r.proxies[0] == "block") return Action::kBlock;
    if (r.proxies.size() == 1 && r.proxies[0] == "direct") return Action::kDirect;
    return Action::kProxy;
  }
  // The most specific matching rule that covers the port: most literal
  // labels, then most literal labels at the right end, then the first.
  const Rule* Winner(const std::vector<std::size_t>& matches, std::uint16_t port,
                     Protocol protocol) const {
    const Rule* best = nullptr;
    std::size_t best_index = 0;
    for (std::size_t i : matches) {
      if (!Covers(config_.rules[i], port, protocol)) continue;
      const auto key = [&](std::size_t k) {
        return std::pair(patterns_[k].literal_labels, patterns_[k].anchored_right);
      };
      if (best == nullptr || key(i) > key(best_index)) {
        best = &config_.rules[i];
        best_index = i;
      }
    }
    return best;
  }

  const Config& config_;
  std::vector<tunnels::config::Pattern> patterns_;
};

// `extra_names` are decided too, besides names made from the rules, up to
// `max_names` in all.
inline std::string CheckRuleSet(const Config& config,
                                const std::vector<std::string>& extra_names = {},
                                std::size_t max_names = 200) {
  const RuleSet rules(config);
  if (rules.size() != config.rules.size()) return "RuleSet::size() differs from the rule count";
  std::set<std::string> known = {"direct", "block"};
  for (const auto& [name, unused] : config.proxies) known.insert(name);
  std::vector<std::string> names = {
      "unmatched-name.invalid", "x", "a.b.c.d.e.f.g", "", ".", "a..b", std::string(300, 'a'),
      "UPPER.Example.COM."};
  // Names from the rules, leaving room for at least half of the extra ones.
  const std::size_t from_rules = max_names - std::min(extra_names.size(), max_names / 2);
  for (const Rule& r : config.rules) {
    for (const std::string& p : r.proxies) {
      if (!known.contains(p)) return "rule '" + r.pattern + "' uses unknown proxy '" + p + "'";
    }
    const std::string witness = WitnessOf(r.pattern);
    if (names.size() < from_rules) {
      names.push_back(witness);
      names.push_back("sub." + witness);
    }
    // The rule's own witness, on a port the rule covers, must be decided by
    // some rule, never treated as undefined.
    const std::uint16_t port = r.ports.empty() ? 80 : r.ports.front().first;
    const Protocol protocol = r.ports.empty() ? Protocol::kTcp : r.ports.front().protocol;
    char buf[256];
    std::size_t len = 0;
    if (tunnels::config::NormalizeName(witness, buf, &len)) {
      const Decision d = rules.Decide(witness, port, protocol);
      if (d.rule == nullptr || d.action == Action::kRefuse) {
        return "rule '" + r.pattern + "' at " + r.where.ToString() +
               " does not decide its own name '" + witness + "': " + DescribeDecision(d);
      }
    }
  }
  names.insert(names.end(), extra_names.begin(), extra_names.end());
  if (names.size() > max_names) names.resize(max_names);
  const ReferenceEngine reference(config);
  for (const std::string& name : names) {
    const std::vector<std::size_t> matches = reference.Matches(name);
    for (const auto& [port, protocol] : {std::pair<std::uint16_t, Protocol>{80, Protocol::kTcp},
                                         {443, Protocol::kUdp},
                                         {22, Protocol::kTcp},
                                         {65535, Protocol::kTcp}}) {
      const Decision d = rules.Decide(name, port, protocol);
      if (std::string v = CheckDecision(config, d, name, port, protocol); !v.empty()) return v;
      const ReferenceEngine::Answer want = reference.Decide(matches, port, protocol);
      const bool same_rule =
          (d.rule == nullptr) == (want.rule == nullptr) &&
          (d.rule == nullptr || (d.rule->where.ToString() == want.rule->where.ToString() &&
                                 d.rule->pattern == want.rule->pattern));
      if (d.dns != want.dns || d.action != want.action || !same_rule) {
        Decision w;
        w.dns = want.dns;
        w.action = want.action;
        w.rule = want.rule;
        return "Decide(" + name + ", " + std::to_string(port) + "/" +
               tunnels::config::ToString(protocol) + ") = " + DescribeDecision(d) +
               ", but matching every pattern gives " + DescribeDecision(w);
      }
      if (port == 80 && rules.DecideDns(name) != d.dns) return "DecideDns differs from Decide";
      // Case and the trailing dot do not change a decision.
      std::string upper = name;
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      const Decision u = rules.Decide(upper + (name.ends_with('.') ? "" : "."), port, protocol);
      if (!name.empty() && !name.ends_with('.') && (u.rule != d.rule || u.action != d.action)) {
        return "Decide(" + name + ") changes with case or a trailing dot";
      }
    }
  }
  for (const RuleSet::Tie& t : rules.FindTies()) {
    if (t.earlier == nullptr || t.later == nullptr) return "FindTies returned a null rule";
  }
  return "";
}

// Every promise of LoadDocuments for `docs`; an empty string when all hold.
inline std::string CheckResult(const std::vector<Document>& docs, const LoadResult& r,
                               const std::vector<std::string>& extra_names = {},
                               std::size_t max_names = 200) {
  const DocumentLines lines(docs);
  bool any_error = false;
  for (const Diagnostic& d : r.diagnostics) {
    if (d.message.empty()) return "a diagnostic without a message at " + d.where.ToString();
    // The loader turns an exception while reading a file into this rather
    // than crash; it is still a bug. (No message starts with text from the
    // file, so a file cannot fake this.)
    if (d.message.starts_with("internal error")) return "a bug: " + d.ToString();
    if (std::string v = lines.Check(d.where); !v.empty()) {
      return "diagnostic '" + d.ToString() + "' " + v;
    }
    any_error = any_error || d.severity == Severity::kError;
  }
  if (r.ok() == any_error) {
    return r.ok() ? "ok() although there is an error" : "not ok() although there is no error";
  }
  if (!r.ok()) return "";
  const Config& c = *r.config;
  std::vector<std::string> names;
  for (const Document& d : docs) names.push_back(d.name);
  if (c.files != names) return "Config::files is not the list of documents";
  if (c.options.upstream_dns.empty()) return "ok() without an upstream DNS server";
  for (const Rule& rule : c.rules) {
    if (std::string v = lines.Check(rule.where); !v.empty()) {
      return "rule '" + rule.pattern + "' " + v;
    }
    if (rule.proxies.empty()) return "rule '" + rule.pattern + "' has no proxy";
  }
  for (const auto& [name, proxy] : c.proxies) {
    if (std::string v = lines.Check(proxy.where); !v.empty()) return "proxy '" + name + "' " + v;
  }
  return CheckRuleSet(c, extra_names, max_names);
}

}  // namespace tunnels::testing
