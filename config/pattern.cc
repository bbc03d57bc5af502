#include "config/pattern.h"

#include <algorithm>
#include <cctype>

namespace tunnels::config {
namespace {

// ASCII only, as DNS names are compared; std::isalnum would ask the locale.
bool ValidLabelChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Matches pattern labels [pb, pe) against name labels [nb, ne) exactly, one
// label each, where a "*" matches any single label.
bool MatchFixed(const std::vector<std::string>& p, std::size_t pb, std::size_t pe,
                std::span<const std::string_view> n, std::size_t nb) {
  for (std::size_t i = pb; i < pe; ++i) {
    const std::string_view label = n[nb + (i - pb)];
    if (p[i] != "*" && p[i] != label) return false;
  }
  return true;
}

}  // namespace

std::vector<std::string_view> SplitLabels(std::string_view name) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (start <= name.size()) {
    const std::size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) {
      out.push_back(name.substr(start));
      break;
    }
    out.push_back(name.substr(start, dot - start));
    start = dot + 1;
  }
  return out;
}

std::optional<Pattern> ParsePattern(std::string_view text, std::string* error) {
  Pattern p;
  if (text.empty()) {
    *error = "empty domain pattern";
    return std::nullopt;
  }
  if (text.front() == '.') {
    p.subtree = true;
    text.remove_prefix(1);
  }
  if (!text.empty() && text.back() == '.') text.remove_suffix(1);  // absolute form
  if (text.empty()) {
    *error = "a domain pattern needs at least one label";
    return std::nullopt;
  }
  if (text.size() > 253) {
    *error = "domain pattern is longer than 253 characters";
    return std::nullopt;
  }
  // One pass, without a string per label but the label itself: rule sets
  // of 100,000 patterns are parsed twice each (by the loader and the engine).
  std::string lowered(text);
  for (char& c : lowered) c = AsciiLower(c);
  p.labels.reserve(static_cast<std::size_t>(std::count(text.begin(), text.end(), '.')) + 1);
  for (std::size_t start = 0;;) {
    const std::size_t dot = text.find('.', start);
    const std::size_t end = dot == std::string_view::npos ? text.size() : dot;
    const std::string_view label = text.substr(start, end - start);
    if (label.empty()) {
      *error = "empty label (two dots in a row) in domain pattern";
      return std::nullopt;
    }
    if (label.size() > 63) {
      *error = "label longer than 63 characters in domain pattern";
      return std::nullopt;
    }
    if (label != "*") {
      for (char c : label) {
        if (!ValidLabelChar(c)) {
          *error = std::string("character '") + c +
                   "' is not allowed in a domain pattern (letters, digits, '-', '_', and '*' as "
                   "a whole label)";
          return std::nullopt;
        }
      }
    }
    p.labels.emplace_back(lowered, start, end - start);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }

  const std::size_t n = p.labels.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (p.labels[i] != "*") ++p.literal_labels;
  }
  for (std::size_t i = n; i-- > 0;) {
    if (p.labels[i] == "*") break;
    ++p.anchored_right;
  }

  const bool lead_star = p.labels.front() == "*";
  const std::size_t first_literal = lead_star ? 1 : 0;
  const bool rest_literal =
      std::none_of(p.labels.begin() + static_cast<std::ptrdiff_t>(first_literal), p.labels.end(),
                   [](const std::string& l) { return l == "*"; });
  if (rest_literal && !lead_star && !p.subtree) {
    p.kind = Pattern::Kind::kExact;
    p.base = std::move(lowered);
  } else if (rest_literal && (lead_star != p.subtree || (lead_star && n == 1))) {
    // ".a.b" (base matches too), "*.a.b" or "*" (one or more labels before).
    p.kind = Pattern::Kind::kSuffix;
    // The labels after the star, "a.b" of "*.a.b": the text after "*.".
    p.base = lead_star ? (n == 1 ? std::string() : lowered.substr(2)) : std::move(lowered);
    p.matches_base = !lead_star;
  } else {
    p.kind = Pattern::Kind::kGeneral;
  }
  return p;
}

bool Pattern::Matches(std::string_view name) const {
  switch (kind) {
    case Kind::kExact:
      return name == base;
    case Kind::kSuffix: {
      if (base.empty()) return !name.empty();
      if (name.size() == base.size()) return matches_base && name == base;
      return name.size() > base.size() + 1 && name.ends_with(base) &&
             name[name.size() - base.size() - 1] == '.';
    }
    case Kind::kGeneral:
      break;
  }
  return MatchesLabels(SplitLabels(name));
}

bool Pattern::MatchesLabels(std::span<const std::string_view> n) const {
  switch (kind) {
    case Kind::kExact:
    case Kind::kSuffix: {
      // Rebuilt only for completeness; the rule engine looks these up by name.
      std::string name;
      for (std::size_t i = 0; i < n.size(); ++i) {
        if (i) name.push_back('.');
        name += n[i];
      }
      return Matches(name);
    }
    case Kind::kGeneral:
      break;
  }
  const std::size_t m = labels.size();
  const bool lead_star = labels.front() == "*";
  const bool trail_star = m > 1 && labels.back() == "*";
  // Labels that must match one for one, between the variable-length ends.
  const std::size_t core_begin = lead_star ? 1 : 0;
  const std::size_t core_end = trail_star ? m - 1 : m;
  const std::size_t core = core_end - core_begin;
  // Labels the left end must absorb: none, zero or more (".x"), one or more ("*.x").
  const std::size_t lead_min = lead_star ? 1 : 0;
  const bool lead_any = lead_star || subtree;
  const std::size_t k_min = trail_star ? 1 : 0;
  if (n.size() < core + lead_min + k_min) return false;
  const std::size_t k_max = trail_star ? n.size() - core - lead_min : 0;
  for (std::size_t k = k_min; k <= k_max; ++k) {
    const std::size_t left = n.size() - k - core;
    if (left < lead_min || (!lead_any && left != 0)) continue;
    if (MatchFixed(labels, core_begin, core_end, n, left)) return true;
  }
  return false;
}

std::string Pattern::Witness() const {
  std::string s;
  for (const std::string& l : labels) {
    if (!s.empty()) s.push_back('.');
    s += (l == "*") ? "x" : l;
  }
  return s;
}

}  // namespace tunnels::config
