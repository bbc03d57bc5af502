// The loader's own header, shared by its files and by nothing else: the
// Loader and the raw sections it reads documents into.
//
// The loader collects every problem it finds instead of stopping at the
// first, and names each one by file, line and column. It works in two
// passes: the first reads every document into raw sections (so that files
// may refer to each other's port aliases and proxies in any order), the
// second resolves references and checks the whole. Its files follow that
// order: loader.cc (documents and the whole), loader_positions.cc (places
// and the reading helpers), loader_options.cc, loader_ports.cc,
// loader_proxies.cc, loader_rules.cc, and loader_files.cc (files and
// directories on disk).
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.h"

namespace tunnels::config::internal {

inline constexpr std::size_t kMaxFileSize = 64u << 20;

// YAML reads a plain scalar that starts with '*' as an alias, so the
// original tunnels' "*.onion@web+ssh: tor" is not valid YAML. Users write
// it that way (the original README does), so such keys are quoted before
// parsing, unless the document really defines an anchor by that name. The
// column shifts are remembered to keep diagnostics exact.
struct QuotedKey {
  int start;   // column of the inserted opening quote
  int length;  // length of the key text
};
using LineFixes = std::unordered_map<int, QuotedKey>;

struct RawAlias {
  std::vector<std::string> items;  // "t80", "u53", "t1-2", or alias names
  std::vector<SourceLocation> item_where;
  SourceLocation where;
  bool builtin = false;
};

// A 1-based line and column in the document being read: a SourceLocation
// without the file name, whose copy is an allocation too many to make for
// every item of 100,000 rules.
struct Pos {
  int line = 0;
  int column = 0;
};

// What a diagnostic is about, such as "the proxy list of rule 'x'", put into
// words only when there is something to report.
struct Subject {
  Subject(const char* t) : text(t) {}         // NOLINT: implicit on purpose
  Subject(const std::string& t) : text(t) {}  // NOLINT
  Subject(std::string_view t, std::string_view n) : text(t), name(n) {}
  std::string str() const {
    std::string s(text);
    if (!name.empty()) s.append(" '").append(name).append("'");
    return s;
  }
  std::string_view text;
  std::string_view name;
};

struct ListItem {
  std::string text;
  Pos at;
};

struct RawRule {
  Rule rule;
  std::string key;                      // PatternKey of the pattern
  std::vector<std::string> port_items;  // empty: every TCP port
  std::vector<SourceLocation> port_where;
  std::vector<Pos> proxy_at;  // of each of rule.proxies, in rule.where.file
};

struct OptionValue;

// The fields of a proxy's entry by key, each a single value.
using ProxyFields = std::map<std::string, YAML::Node>;

class Loader {
 public:
  explicit Loader(const LoadOptions& options)
      : load_options_(options), builtins_(&BuiltinAliases()) {}

  void AddDocument(const Document& doc, bool builtin = false);
  void FileError(const std::string& file, const std::string& message) {
    diagnostics_.push_back({Severity::kError, SourceLocation{file, 0, 0}, message});
  }
  void FileWarning(const std::string& file, const std::string& message) {
    diagnostics_.push_back({Severity::kWarning, SourceLocation{file, 0, 0}, message});
  }
  LoadResult Finish();

 private:
  friend struct OptionValue;  // the checks of the main options
  struct NoBuiltins {};
  Loader(const LoadOptions& options, NoBuiltins) : load_options_(options) {}
  // The aliases of the built-in port files, read and resolved once: they
  // never change, and reading them was most of the time of loading a small
  // configuration. The raw items are kept too, for the rare file that
  // redefines a built-in alias that other built-in aliases refer to.
  struct Builtins {
    std::map<std::string, RawAlias> raw;
    std::map<std::string, std::vector<PortRange>> resolved;
  };
  static const Builtins& BuiltinAliases();
  // An alias of the files, or else a built-in one; null if neither.
  const RawAlias* FindAlias(const std::string& name) const;

  void Error(const SourceLocation& where, std::string message) {
    diagnostics_.push_back({Severity::kError, where, std::move(message)});
  }
  void Warning(const SourceLocation& where, std::string message) {
    diagnostics_.push_back({Severity::kWarning, where, std::move(message)});
  }
  SourceLocation At(Pos p) const { return SourceLocation{file_, p.line, p.column}; }
  Pos PosOf(const YAML::Node& node, int offset = 0) const {
    const YAML::Mark mark = node.Mark();
    if (mark.is_null()) return Pos{};
    return PosOf(mark.line, mark.column + offset);
  }
  Pos PosIn(const YAML::Node& node, std::size_t offset) const;
  // The 1-based place in the document as written of a 0-based line and
  // column of the text yaml-cpp parsed.
  Pos PosOf(int line, int column) const;
  SourceLocation Where(const YAML::Node& node, int offset = 0) const {
    return At(PosOf(node, offset));
  }
  // Where the text at `offset` inside a scalar node is, when the scalar is
  // written as it reads on one line; otherwise (escapes, block and multi-line
  // scalars) where the node starts.
  SourceLocation WhereIn(const YAML::Node& node, std::size_t offset) const {
    return At(PosIn(node, offset));
  }
  SourceLocation Locate(int line, int column) const { return At(PosOf(line, column)); }
  // The same for a mark of yaml-cpp's own (an error), which may point past
  // the text; kept inside the document.
  SourceLocation LocateClamped(const YAML::Mark& mark) const;
  // The 0-based line and column of a tab in the indentation of the line a
  // YAML error names or the one before it: yaml-cpp calls that only an
  // "illegal map value" or so, which does not tell a user what is wrong.
  std::optional<Pos> IndentingTab(const YAML::Mark& mark) const;

  void ReadRoot(const YAML::Node& root, bool builtin);

  bool ExpectScalar(const YAML::Node& node, const Subject& what);
  // Iterates a mapping, reporting duplicate keys and non-scalar keys.
  void ForEachEntry(
      const YAML::Node& map, const std::string& what,
      const std::function<void(const std::string&, const YAML::Node&, const YAML::Node&)>& fn);
  // A scalar "a, b, c" or a YAML list; items with their locations.
  std::vector<ListItem> ReadList(const YAML::Node& node, const Subject& what);

  // False if `key` is no main option.
  bool ReadMainOption(const std::string& key, const YAML::Node& key_node, const YAML::Node& value);
  void ReadPortAlias(const std::string& name, const YAML::Node& key_node, const YAML::Node& value,
                     bool builtin);
  void ReadProxy(const std::string& name, const YAML::Node& key_node, const YAML::Node& value);
  // The fields of each proxy type, past its type, address and port.
  void ReadSsh(Proxy& proxy, const ProxyFields& fields, const SourceLocation& here);
  void ReadCredentials(Proxy& proxy, const ProxyFields& fields,
                       std::optional<Credentials> credentials, const YAML::Node& address_node);
  void ReadRule(const std::string& key, const YAML::Node& key_node, const YAML::Node& value);

  std::optional<std::vector<PortRange>> ResolveAlias(const std::string& name);
  std::optional<std::vector<PortRange>> ResolvePortItems(const std::vector<std::string>& items,
                                                         const std::vector<SourceLocation>& where);
  std::optional<PortRange> ParseRawPort(const std::string& item) const;

  void CheckRules(Config* config);

  const LoadOptions& load_options_;
  std::vector<Diagnostic> diagnostics_;
  // The document being read: its name, the text yaml-cpp parses (with star
  // keys quoted) split into lines, and how its columns map to the original.
  std::string file_;
  std::string parsed_;
  std::vector<std::string_view> parsed_lines_;
  std::vector<std::size_t> line_lengths_;  // of the original text
  LineFixes fixes_;
  int bom_ = 0;  // bytes of a UTF-8 byte order mark before the first line

  Options options_;
  const Builtins* builtins_ = nullptr;  // null while reading the built-in files
  // Whether a file redefines a built-in alias: then every alias is
  // resolved afresh, since built-in ones may refer to it.
  bool shadowed_ = false;
  std::map<std::string, RawAlias> aliases_;  // of the files
  std::map<std::string, std::vector<PortRange>> resolved_aliases_;
  std::set<std::string> resolving_;
  std::set<std::string> failed_aliases_;
  std::map<std::string, Proxy> proxies_;
  std::vector<RawRule> rules_;
  std::vector<std::string> files_;
};

inline Pos Loader::PosOf(int line, int column) const {
  if (const auto it = fixes_.empty() ? fixes_.end() : fixes_.find(line); it != fixes_.end()) {
    const QuotedKey& q = it->second;
    if (column > q.start + q.length + 1) {
      column -= 2;
    } else if (column > q.start) {
      column -= 1;
    }
  }
  if (line == 0) column += bom_;
  return Pos{line + 1, column + 1};
}

}  // namespace tunnels::config::internal
