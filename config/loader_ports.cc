// Port aliases: the built-in ones, those of the files, and resolving them.
#include <algorithm>
#include <cctype>
#include <tuple>

#include "config/builtin_ports.h"
#include "config/loader.h"
#include "config/text.h"

namespace tunnels::config::internal {

const Loader::Builtins& Loader::BuiltinAliases() {
  static const Builtins builtins = [] {
    const LoadOptions options;
    Loader loader(options, NoBuiltins{});
    for (const BuiltinPortFile& f : BuiltinPortFiles()) {
      loader.AddDocument(Document{std::string("<built-in>/") + f.name, f.text}, /*builtin=*/true);
    }
    Builtins b;
    for (const auto& [name, unused] : loader.aliases_) {
      if (auto r = loader.ResolveAlias(name)) b.resolved.emplace(name, std::move(*r));
    }
    b.raw = std::move(loader.aliases_);
    return b;
  }();
  return builtins;
}

const RawAlias* Loader::FindAlias(const std::string& name) const {
  if (const auto it = aliases_.find(name); it != aliases_.end()) return &it->second;
  if (builtins_ != nullptr) {
    if (const auto it = builtins_->raw.find(name); it != builtins_->raw.end()) return &it->second;
  }
  return nullptr;
}

std::optional<PortRange> Loader::ParseRawPort(const std::string& item) const {
  if (item.size() < 2 || (item[0] != 't' && item[0] != 'u') ||
      !std::isdigit(static_cast<unsigned char>(item[1]))) {
    return std::nullopt;
  }
  PortRange r;
  r.protocol = item[0] == 't' ? Protocol::kTcp : Protocol::kUdp;
  const std::string_view rest = std::string_view(item).substr(1);
  const std::size_t dash = rest.find('-');
  const auto first = ParsePort(rest.substr(0, dash));
  const auto last = dash == std::string_view::npos ? first : ParsePort(rest.substr(dash + 1));
  if (!first || !last) return PortRange{r.protocol, 0, 0};  // reported by the caller
  r.first = *first;
  r.last = *last;
  return r;
}

void Loader::ReadPortAlias(const std::string& name, const YAML::Node& key_node,
                           const YAML::Node& value, bool builtin) {
  const SourceLocation here = Where(key_node);
  RawAlias alias;
  alias.where = here;
  alias.builtin = builtin;
  if (!std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
      })) {
    Error(here, "port alias '" + name + "': a name has letters, digits, '_', '-' and '.' only");
    return;
  }
  if (ParseRawPort(name)) {
    Error(here,
          "port alias '" + name + "' looks like a raw port (tNNN or uNNN); pick another name");
    return;
  }
  if (value.IsScalar()) {
    for (const auto& [item, offset] : SplitWithOffsets(value.Scalar(), '+')) {
      alias.items.push_back(item);
      alias.item_where.push_back(WhereIn(value, offset));
    }
  } else if (value.IsSequence()) {
    for (const auto& item : value) {
      if (!ExpectScalar(item, "port alias '" + name + "'")) continue;
      alias.items.push_back(std::string(Trim(item.Scalar())));
      alias.item_where.push_back(Where(item));
    }
  } else {
    Error(value.IsNull() ? here : Where(value),
          "port alias '" + name + "' needs a value such as 't80 + t443' or 'http + https'");
    return;
  }
  if (const auto it = aliases_.find(name); it != aliases_.end() && !it->second.builtin) {
    std::vector<std::string> a = it->second.items;
    std::vector<std::string> b = alias.items;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    if (a != b) {
      Error(here, "port alias '" + name + "' is already defined differently at " +
                      it->second.where.ToString());
    }
    return;
  }
  aliases_[name] = std::move(alias);
}

std::optional<std::vector<PortRange>> Loader::ResolvePortItems(
    const std::vector<std::string>& items, const std::vector<SourceLocation>& where) {
  std::vector<PortRange> out;
  bool ok = true;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::string& item = items[i];
    if (item.empty()) {
      Error(where[i], "empty port item (a '+' with nothing on one side)");
      ok = false;
      continue;
    }
    if (auto raw = ParseRawPort(item)) {
      if (raw->first == 0 || raw->first > raw->last) {
        Error(where[i], "'" + item +
                            "' is not a valid port or range (tNNN, uNNN or tFIRST-LAST, "
                            "ports 1-65535)");
        ok = false;
      } else {
        out.push_back(*raw);
      }
      continue;
    }
    if (FindAlias(item) == nullptr) {
      // In name order, which the hint's tie-break depends on.
      std::set<std::string> all;
      for (const auto& [n, unused] : aliases_) all.insert(n);
      if (builtins_ != nullptr) {
        for (const auto& [n, unused] : builtins_->raw) all.insert(n);
      }
      const std::vector<std::string> names(all.begin(), all.end());
      std::string message = "unknown port alias '" + item + "'";
      if (auto hint = Closest(item, names)) message += "; did you mean '" + *hint + "'?";
      Error(where[i], message);
      ok = false;
      continue;
    }
    if (resolving_.contains(item)) {
      Error(where[i], "port alias '" + item + "' refers back to itself (a cycle)");
      ok = false;
      continue;
    }
    auto resolved = ResolveAlias(item);
    if (!resolved) {
      ok = false;
      continue;
    }
    out.insert(out.end(), resolved->begin(), resolved->end());
  }
  if (!ok) return std::nullopt;
  std::sort(out.begin(), out.end(), [](const PortRange& a, const PortRange& b) {
    return std::tie(a.protocol, a.first, a.last) < std::tie(b.protocol, b.first, b.last);
  });
  // Merge overlapping and adjacent ranges so that matching stays short.
  std::vector<PortRange> merged;
  for (const PortRange& r : out) {
    if (!merged.empty() && merged.back().protocol == r.protocol &&
        static_cast<unsigned>(r.first) <= static_cast<unsigned>(merged.back().last) + 1) {
      merged.back().last = std::max(merged.back().last, r.last);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

std::optional<std::vector<PortRange>> Loader::ResolveAlias(const std::string& name) {
  if (const auto it = resolved_aliases_.find(name); it != resolved_aliases_.end()) {
    return it->second;
  }
  if (failed_aliases_.contains(name)) return std::nullopt;  // reported once already
  if (builtins_ != nullptr && !shadowed_ && !aliases_.contains(name)) {
    if (const auto it = builtins_->resolved.find(name); it != builtins_->resolved.end()) {
      return it->second;
    }
  }
  const RawAlias& alias = *FindAlias(name);
  resolving_.insert(name);
  auto result = ResolvePortItems(alias.items, alias.item_where);
  resolving_.erase(name);
  if (result) {
    resolved_aliases_[name] = *result;
  } else {
    failed_aliases_.insert(name);
  }
  return result;
}

}  // namespace tunnels::config::internal
