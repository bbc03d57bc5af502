// Domain name patterns (internal to the config library).
//
//   a.b.c    the name a.b.c only
//   .b.c     b.c and every name under it
//   *        as the first or last label: one or more labels; elsewhere: one label
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tunnels::config {

struct Pattern {
  enum class Kind {
    kExact,   // literal labels only, no leading '.'
    kSuffix,  // ".a.b" or "*.a.b" (or "*" alone) with literal labels otherwise
    kGeneral  // anything else: matched label by label, slower
  };
  Kind kind = Kind::kExact;
  bool subtree = false;             // leading '.'
  std::vector<std::string> labels;  // lowercase; "*" is a wildcard
  // For kExact and kSuffix: the literal part, e.g. "a.b" of "*.a.b".
  std::string base;
  // For kSuffix: whether the base itself matches (".a.b" yes, "*.a.b" no).
  bool matches_base = false;
  // Specificity: more literal labels first, then literal labels anchored
  // at the right end of the pattern.
  int literal_labels = 0;
  int anchored_right = 0;

  // Whether the (normalised, lowercase, no trailing dot) `name` matches.
  bool Matches(std::string_view name) const;
  // The same for a name already split into labels, which lets the rule
  // engine split a name once for all its patterns, without allocating.
  bool MatchesLabels(std::span<const std::string_view> name_labels) const;
  // A name this pattern matches, for finding overlaps between patterns.
  std::string Witness() const;
};

// Parses a pattern; on failure returns nullopt and sets `error`.
std::optional<Pattern> ParsePattern(std::string_view text, std::string* error);

// Splits a normalised name into labels (views into `name`).
std::vector<std::string_view> SplitLabels(std::string_view name);

}  // namespace tunnels::config
