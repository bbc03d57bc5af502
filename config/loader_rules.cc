// Rules: reading them, and checking them against each other.
#include <algorithm>
#include <unordered_map>

#include "config/loader.h"
#include "config/pattern.h"
#include "config/text.h"

namespace tunnels::config::internal {

namespace {

// One spelling of a pattern per set of names it matches (lowercase, no
// trailing dot), to find the same pattern written twice.
std::string PatternKey(const Pattern& p) {
  std::string s = p.subtree ? "." : "";
  for (std::size_t i = 0; i < p.labels.size(); ++i) {
    if (i) s.push_back('.');
    s += p.labels[i];
  }
  return s;
}

}  // namespace

void Loader::ReadRule(const std::string& key, const YAML::Node& key_node, const YAML::Node& value) {
  // The action, shared by every pattern of the key.
  Rule base;
  std::vector<Pos> proxy_at;
  if (value.IsNull()) {
    Error(Where(key_node), "rule '" + key + "' has no proxy");
    return;
  }
  // yaml-cpp's Node::operator= writes through to the node it refers to, so
  // the proxy node is held in an optional and never assigned to.
  std::optional<YAML::Node> proxy_node;
  if (!value.IsMap()) proxy_node.emplace(value);
  if (value.IsMap()) {
    ForEachEntry(value, "rule '" + key + "'",
                 [&](const std::string& k, const YAML::Node& kn, const YAML::Node& v) {
                   if (k == "proxy") {
                     proxy_node.emplace(v);
                   } else if (k == "forcedAddress") {
                     for (const ListItem& item : ReadList(v, "forcedAddress")) {
                       std::string error;
                       if (auto hp = ParseHostPort(item.text, &error)) {
                         base.forced_addresses.push_back(Target{hp->host, hp->port});
                       } else {
                         Error(At(item.at), "forcedAddress: " + error);
                       }
                     }
                   } else {
                     std::string message = "rule '" + key + "': unknown option '" + k + "'";
                     if (auto hint = Closest(k, {"proxy", "forcedAddress"})) {
                       message += "; did you mean '" + *hint + "'?";
                     }
                     Error(Where(kn), message);
                   }
                 });
    if (!proxy_node) {
      Error(Where(key_node), "rule '" + key + "' has no 'proxy'");
      return;
    }
  }
  for (ListItem& item : ReadList(*proxy_node, Subject("the proxy list of rule", key))) {
    base.proxies.push_back(std::move(item.text));
    proxy_at.push_back(item.at);
  }
  if (base.proxies.empty()) return;

  auto pieces = SplitWithOffsets(key_node.Scalar(), ',');
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    const std::string_view piece = pieces[k].first;
    const std::size_t offset = pieces[k].second;
    const Pos at_piece = PosIn(key_node, offset);
    if (piece.empty()) {
      Error(At(at_piece), "empty pattern in rule '" + key + "'");
      continue;
    }
    const std::size_t at = piece.find('@');
    const std::string_view pattern_text = Trim(piece.substr(0, at));
    std::string error;
    auto pattern = ParsePattern(pattern_text, &error);
    if (!pattern) {
      Error(At(at_piece), error + ": '" + std::string(pattern_text) + "'");
      continue;
    }
    RawRule raw;
    raw.key = PatternKey(*pattern);
    // The last pattern of the key (nearly always the only one) takes the
    // action instead of a copy.
    const bool last = k + 1 == pieces.size();
    raw.rule = last ? std::move(base) : base;
    raw.proxy_at = last ? std::move(proxy_at) : proxy_at;
    raw.rule.pattern = std::string(pattern_text);
    raw.rule.where = At(at_piece);
    if (at != std::string_view::npos) {
      const std::string ports(piece.substr(at + 1));
      if (Trim(ports).empty()) {
        Error(raw.rule.where, "'@' must be followed by ports, such as '@web' or '@t8080'");
        continue;
      }
      const std::size_t ports_offset = offset + at + 1;
      for (const auto& [item, item_offset] : SplitWithOffsets(ports, '+')) {
        raw.port_items.push_back(item);
        raw.port_where.push_back(WhereIn(key_node, ports_offset + item_offset));
      }
    }
    rules_.push_back(std::move(raw));
  }
}

namespace {

bool Overlap(const std::vector<PortRange>& a, const std::vector<PortRange>& b) {
  for (const PortRange& x : a) {
    for (const PortRange& y : b) {
      if (x.protocol == y.protocol && x.first <= y.last && y.first <= x.last) return true;
    }
  }
  return false;
}

const std::vector<PortRange>& AllTcp() {
  static const std::vector<PortRange> all = {PortRange{Protocol::kTcp, 1, 65535}};
  return all;
}

}  // namespace

void Loader::CheckRules(Config* config) {
  std::vector<std::string> proxy_names = {"direct", "block"};
  for (const auto& [n, unused] : proxies_) proxy_names.push_back(n);
  std::set<std::string> used;
  // Rules with the same pattern, as chains through config->rules: the last
  // one of each pattern, and for each rule the one before it.
  constexpr std::size_t kNoRule = static_cast<std::size_t>(-1);
  std::unordered_map<std::string_view, std::size_t> last_by_pattern;
  last_by_pattern.reserve(rules_.size());
  std::vector<std::size_t> previous_same;
  previous_same.reserve(rules_.size());
  config->rules.reserve(rules_.size());

  for (RawRule& raw : rules_) {
    bool ok = true;
    if (!raw.port_items.empty()) {
      auto ports = ResolvePortItems(raw.port_items, raw.port_where);
      if (!ports) {
        ok = false;
      } else {
        raw.rule.ports = std::move(*ports);
      }
    }
    const auto& proxies = raw.rule.proxies;
    auto proxy_where = [&](std::size_t i) {
      return SourceLocation{raw.rule.where.file, raw.proxy_at[i].line, raw.proxy_at[i].column};
    };
    for (std::size_t i = 0; i < proxies.size(); ++i) {
      const std::string& p = proxies[i];
      if (p == "block" && proxies.size() > 1) {
        Error(proxy_where(i), "'block' cannot be part of a failover list; use it alone");
        ok = false;
      } else if (std::find(proxy_names.begin(), proxy_names.end(), p) == proxy_names.end()) {
        std::string message = "rule '" + raw.rule.pattern + "' uses unknown proxy '" + p + "'";
        if (auto hint = Closest(p, proxy_names)) message += "; did you mean '" + *hint + "'?";
        Error(proxy_where(i), message);
        ok = false;
      }
      used.insert(p);
      if (std::count(proxies.begin(), proxies.end(), p) > 1 &&
          std::find(proxies.begin(), proxies.end(), p) != proxies.begin() + static_cast<long>(i)) {
        Warning(proxy_where(i), "proxy '" + p + "' is listed twice in the same rule");
      }
    }
    if (!raw.rule.forced_addresses.empty() && proxies.size() == 1 && proxies[0] == "block") {
      Warning(raw.rule.where, "forcedAddress has no effect on a 'block' rule");
    }
    if (!ok) continue;
    const std::size_t index = config->rules.size();
    const auto [last, first_of_pattern] = last_by_pattern.emplace(raw.key, index);
    previous_same.push_back(first_of_pattern ? kNoRule : last->second);
    if (!first_of_pattern) {
      // Compared oldest first, so that diagnostics come in load order.
      std::vector<std::size_t> same;
      for (std::size_t other = last->second; other != kNoRule; other = previous_same[other]) {
        same.push_back(other);
      }
      for (auto it = same.rbegin(); it != same.rend(); ++it) {
        const Rule& a = config->rules[*it];
        const auto& pa = a.ports.empty() ? AllTcp() : a.ports;
        const auto& pb = raw.rule.ports.empty() ? AllTcp() : raw.rule.ports;
        if (!Overlap(pa, pb)) continue;
        if (!a.SameAction(raw.rule)) {
          Error(raw.rule.where, "pattern '" + raw.rule.pattern +
                                    "' is bound to a different action for the same ports at " +
                                    a.where.ToString());
        } else {
          Warning(raw.rule.where,
                  "rule '" + raw.rule.pattern + "' repeats the one at " + a.where.ToString());
        }
      }
      last->second = index;
    }
    config->rules.push_back(std::move(raw.rule));
  }
  for (const auto& [name, proxy] : proxies_) {
    if (!used.contains(name)) {
      Warning(proxy.where, "proxy '" + name + "' is defined but no rule uses it");
    }
  }
}

}  // namespace tunnels::config::internal
