// Places in a document, and the reading helpers every section uses.
#include <algorithm>
#include <unordered_map>

#include "config/loader.h"
#include "config/text.h"

namespace tunnels::config::internal {

SourceLocation Loader::LocateClamped(const YAML::Mark& mark) const {
  if (mark.is_null() || line_lengths_.empty()) return SourceLocation{file_, 0, 0};
  // One line past the last, and one column past the end of a line, are
  // where "missing ..." errors at the end belong.
  const std::size_t line =
      std::min(static_cast<std::size_t>(std::max(mark.line, 0)), line_lengths_.size());
  SourceLocation where = Locate(static_cast<int>(line), std::max(mark.column, 0));
  const std::size_t length = line < line_lengths_.size() ? line_lengths_[line] : 0;
  where.column = std::min(where.column, static_cast<int>(length) + 1);
  return where;
}

Pos Loader::PosIn(const YAML::Node& node, std::size_t offset) const {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null() || mark.line < 0 || mark.column < 0 ||
      static_cast<std::size_t>(mark.line) >= parsed_lines_.size()) {
    return PosOf(node);
  }
  // yaml-cpp marks a quoted scalar at its quote and gives it the tag "!".
  const std::size_t quote = node.Tag() == "!" ? 1 : 0;
  const std::string_view line = parsed_lines_[static_cast<std::size_t>(mark.line)];
  const std::size_t start = static_cast<std::size_t>(mark.column) + quote;
  const std::string& value = node.Scalar();
  // Offsets into the value are columns only while the text reads as the
  // value does; a folded line break or an escape breaks that.
  if (offset > value.size() || start > line.size() ||
      !line.substr(start).starts_with(std::string_view(value).substr(0, offset))) {
    return PosOf(node);
  }
  return PosOf(node, static_cast<int>(quote + offset));
}

bool Loader::ExpectScalar(const YAML::Node& node, const Subject& what) {
  if (node.IsScalar()) return true;
  Error(Where(node), what.str() + (node.IsNull() ? " has no value" : " must be a single value"));
  return false;
}

void Loader::ForEachEntry(
    const YAML::Node& map, const std::string& what,
    const std::function<void(const std::string&, const YAML::Node&, const YAML::Node&)>& fn) {
  if (map.IsNull()) return;  // an empty section
  if (!map.IsMap()) {
    Error(Where(map), what + " must be a mapping of 'name: value' entries");
    return;
  }
  // Keys by their text, which the document's nodes keep alive; a place is
  // put into words only for a repeated key.
  std::unordered_map<std::string_view, YAML::Mark> seen;
  seen.reserve(map.size());
  for (const auto& entry : map) {
    const YAML::Node& key = entry.first;
    if (key.IsNull()) {
      Error(Where(key), "a key in " + what + " is empty or 'null'; put it in quotes");
      continue;
    }
    if (!key.IsScalar()) {
      Error(Where(key), "a key in " + what + " must be a plain name");
      continue;
    }
    const std::string& name = key.Scalar();
    if (const auto [it, added] = seen.emplace(name, key.Mark()); !added) {
      Error(Where(key), "'" + name + "' appears twice in " + what + "; the first is at " +
                            Locate(it->second.line, it->second.column).ToString());
      continue;
    }
    fn(name, key, entry.second);
  }
}

std::vector<ListItem> Loader::ReadList(const YAML::Node& node, const Subject& what) {
  std::vector<ListItem> out;
  if (node.IsSequence()) {
    for (const auto& item : node) {
      if (!item.IsScalar() || Trim(item.Scalar()).empty()) {
        Error(Where(item), "each item of " + what.str() + " must be a single non-empty value");
        continue;
      }
      out.push_back(ListItem{std::string(Trim(item.Scalar())), PosOf(item)});
    }
    return out;
  }
  if (!ExpectScalar(node, what)) return out;
  for (auto& [piece, offset] : SplitWithOffsets(node.Scalar(), ',')) {
    const Pos at = PosIn(node, offset);
    if (piece.empty()) {
      Error(At(at),
            "empty item in " + what.str() + " (two commas in a row, or a comma at the end)");
    } else {
      out.push_back(ListItem{std::move(piece), at});
    }
  }
  return out;
}

std::optional<Pos> Loader::IndentingTab(const YAML::Mark& mark) const {
  if (mark.is_null() || mark.line < 0) return std::nullopt;
  // yaml-cpp reports such a tab on its line or, having read on, on the next.
  const std::size_t last = std::min(static_cast<std::size_t>(mark.line) + 1, parsed_lines_.size());
  for (std::size_t line = last; line-- > 0 && line + 2 > last;) {
    const std::string_view text = parsed_lines_[line];
    const std::size_t indent = text.find_first_not_of(" \t");
    const std::size_t tab = text.substr(0, indent).find('\t');
    if (tab != std::string_view::npos) {
      return Pos{static_cast<int>(line), static_cast<int>(tab)};
    }
  }
  return std::nullopt;
}

}  // namespace tunnels::config::internal
