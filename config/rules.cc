// The rule engine.
//
// Exact names and plain suffix patterns (".a.b", "*.a.b") - nearly every rule
// real users write - live in two hash tables keyed by name, so a lookup costs
// one probe per label of the name. Other wildcard patterns are matched one by
// one; the README warns that they are slower.
#include "config/rules.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <unordered_map>

#include "config/pattern.h"

namespace tunnels::config {
namespace {

struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Index =
    std::unordered_map<std::string, std::vector<std::uint32_t>, NameHash, std::equal_to<>>;

struct Compiled {
  Pattern pattern;
  Action action = Action::kProxy;
  std::uint32_t index = 0;  // load order
};

const std::vector<PortRange>& AllTcp() {
  static const std::vector<PortRange> all = {PortRange{Protocol::kTcp, 1, 65535}};
  return all;
}

bool Covers(const Rule& rule, std::uint16_t port, Protocol protocol) {
  if (rule.ports.empty()) return protocol == Protocol::kTcp;
  for (const PortRange& r : rule.ports) {
    if (r.Contains(protocol, port)) return true;
  }
  return false;
}

// Whether every port of `ranges` is inside the union of `covered`.
bool FullyCovered(const std::vector<PortRange>& ranges, std::vector<PortRange> covered) {
  std::sort(covered.begin(), covered.end(),
            [](const PortRange& a, const PortRange& b) { return a.first < b.first; });
  for (const PortRange& r : ranges) {
    int next = r.first;  // the first port of r not yet known to be covered
    for (const PortRange& c : covered) {
      if (c.protocol != r.protocol) continue;
      if (c.first > next) break;
      next = std::max(next, c.last + 1);
      if (next > r.last) break;
    }
    if (next <= r.last) return false;
  }
  return true;
}

Action ActionOf(const Rule& r) {
  if (r.proxies.size() == 1 && r.proxies[0] == "block") return Action::kBlock;
  if (r.proxies.size() == 1 && r.proxies[0] == "direct") return Action::kDirect;
  return Action::kProxy;
}

bool SameAction(const Rule& a, const Rule& b) {
  if (a.proxies != b.proxies || a.forced_addresses.size() != b.forced_addresses.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.forced_addresses.size(); ++i) {
    if (a.forced_addresses[i].host != b.forced_addresses[i].host ||
        a.forced_addresses[i].port != b.forced_addresses[i].port) {
      return false;
    }
  }
  return true;
}

bool PortsOverlap(const Rule& a, const Rule& b) {
  const auto& pa = a.ports.empty() ? AllTcp() : a.ports;
  const auto& pb = b.ports.empty() ? AllTcp() : b.ports;
  for (const PortRange& x : pa) {
    for (const PortRange& y : pb) {
      if (x.protocol == y.protocol && x.first <= y.last && y.first <= x.last) return true;
    }
  }
  return false;
}

}  // namespace

bool NormalizeName(std::string_view name, char* out, std::size_t* out_len) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > 253) return false;
  std::size_t label = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
    } else if (++label > 63) {
      return false;
    }
    out[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (label == 0) return false;
  *out_len = name.size();
  return true;
}

struct RuleSet::Impl {
  std::vector<Rule> rules;
  std::vector<Compiled> compiled;
  Index exact;                         // exact patterns, and the base of ".a.b"
  Index suffix;                        // ".a.b" and "*.a.b": names strictly under a.b
  std::vector<std::uint32_t> any;      // "*": every name
  std::vector<std::uint32_t> general;  // everything else, matched one by one
  bool block_undefined = false;

  // Calls fn(rule index) for every rule whose pattern matches `name`.
  template <typename Fn>
  void ForEachMatch(std::string_view name, Fn&& fn) const {
    if (const auto it = exact.find(name); it != exact.end()) {
      for (std::uint32_t i : it->second) fn(i);
    }
    if (!suffix.empty()) {
      for (std::size_t dot = name.find('.'); dot != std::string_view::npos;
           dot = name.find('.', dot + 1)) {
        if (const auto it = suffix.find(name.substr(dot + 1)); it != suffix.end()) {
          for (std::uint32_t i : it->second) fn(i);
        }
      }
    }
    for (std::uint32_t i : any) fn(i);
    for (std::uint32_t i : general) {
      if (compiled[i].pattern.Matches(name)) fn(i);
    }
  }

  bool Better(std::uint32_t a, std::uint32_t b) const {
    const Pattern& pa = compiled[a].pattern;
    const Pattern& pb = compiled[b].pattern;
    if (pa.literal_labels != pb.literal_labels) return pa.literal_labels > pb.literal_labels;
    if (pa.anchored_right != pb.anchored_right) return pa.anchored_right > pb.anchored_right;
    return a < b;
  }

  bool SameSpecificity(std::uint32_t a, std::uint32_t b) const {
    const Pattern& pa = compiled[a].pattern;
    const Pattern& pb = compiled[b].pattern;
    return pa.literal_labels == pb.literal_labels && pa.anchored_right == pb.anchored_right;
  }

  // The DNS answer for a name that several rules match: fake if, for some
  // port, the rule that wins is not a block rule.
  DnsAction DnsForMany(std::string_view name) const {
    std::vector<std::uint32_t> matches;
    ForEachMatch(name, [&](std::uint32_t i) { matches.push_back(i); });
    std::sort(matches.begin(), matches.end(),
              [&](std::uint32_t a, std::uint32_t b) { return Better(a, b); });
    std::vector<PortRange> covered;
    for (std::uint32_t i : matches) {
      const Rule& r = rules[i];
      const auto& ports = r.ports.empty() ? AllTcp() : r.ports;
      if (compiled[i].action != Action::kBlock && !FullyCovered(ports, covered)) {
        return DnsAction::kFake;
      }
      covered.insert(covered.end(), ports.begin(), ports.end());
    }
    return DnsAction::kBlock;
  }
};

RuleSet::RuleSet(const Config& config) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.rules = config.rules;
  m.block_undefined = config.options.block_undefined_domains;
  m.compiled.reserve(m.rules.size());
  for (std::uint32_t i = 0; i < m.rules.size(); ++i) {
    std::string error;
    // Load() validated every pattern, so parsing cannot fail here.
    auto pattern = ParsePattern(m.rules[i].pattern, &error);
    Compiled c{std::move(*pattern), ActionOf(m.rules[i]), i};
    switch (c.pattern.kind) {
      case Pattern::Kind::kExact:
        m.exact[c.pattern.base].push_back(i);
        break;
      case Pattern::Kind::kSuffix:
        if (c.pattern.base.empty()) {
          m.any.push_back(i);
          break;
        }
        if (c.pattern.matches_base) m.exact[c.pattern.base].push_back(i);
        m.suffix[c.pattern.base].push_back(i);
        break;
      case Pattern::Kind::kGeneral:
        m.general.push_back(i);
        break;
    }
    m.compiled.push_back(std::move(c));
  }
}

RuleSet::~RuleSet() = default;
RuleSet::RuleSet(RuleSet&&) noexcept = default;
RuleSet& RuleSet::operator=(RuleSet&&) noexcept = default;

std::size_t RuleSet::size() const { return impl_->rules.size(); }

Decision RuleSet::Decide(std::string_view name, std::uint16_t port, Protocol protocol) const {
  const Impl& m = *impl_;
  Decision d;
  char buf[256];
  std::size_t len = 0;
  int matches = 0;
  std::uint32_t best = 0;
  bool have_best = false;
  std::uint32_t only = 0;
  std::string_view normal;
  if (NormalizeName(name, buf, &len)) {
    normal = std::string_view(buf, len);
    m.ForEachMatch(normal, [&](std::uint32_t i) {
      ++matches;
      only = i;
      if (Covers(m.rules[i], port, protocol) && (!have_best || m.Better(i, best))) {
        best = i;
        have_best = true;
      }
    });
  }
  if (matches == 0) {
    d.dns = m.block_undefined ? DnsAction::kBlock : DnsAction::kForward;
    d.action = m.block_undefined ? Action::kBlock : Action::kDirect;
    return d;
  }
  if (matches == 1) {
    d.dns = m.compiled[only].action == Action::kBlock ? DnsAction::kBlock : DnsAction::kFake;
  } else {
    d.dns = m.DnsForMany(normal);
  }
  if (!have_best) {
    d.action = Action::kRefuse;
    return d;
  }
  const Rule& rule = m.rules[best];
  d.rule = &rule;
  d.action = m.compiled[best].action;
  if (d.action == Action::kProxy) d.proxies = rule.proxies;
  if (d.action != Action::kBlock) d.forced_addresses = rule.forced_addresses;
  return d;
}

DnsAction RuleSet::DecideDns(std::string_view name) const {
  return Decide(name, 0, Protocol::kTcp).dns;
}

std::vector<RuleSet::Tie> RuleSet::FindTies() const {
  const Impl& m = *impl_;
  std::set<std::pair<std::uint32_t, std::uint32_t>> pairs;
  for (std::uint32_t r = 0; r < m.compiled.size(); ++r) {
    const std::string witness = m.compiled[r].pattern.Witness();
    m.ForEachMatch(witness, [&](std::uint32_t c) {
      if (c == r || !m.SameSpecificity(c, r)) return;
      if (!PortsOverlap(m.rules[c], m.rules[r]) || SameAction(m.rules[c], m.rules[r])) return;
      pairs.emplace(std::min(c, r), std::max(c, r));
    });
  }
  std::vector<Tie> out;
  for (const auto& [a, b] : pairs) out.push_back(Tie{&m.rules[a], &m.rules[b]});
  return out;
}

}  // namespace tunnels::config
