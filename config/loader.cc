// Reads configuration files into a validated Config.
//
// The loader collects every problem it finds instead of stopping at the
// first, and names each one by file, line and column. It works in two
// passes: the first reads every document into raw sections (so that files
// may refer to each other's port aliases and proxies in any order), the
// second resolves references and checks the whole.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <unordered_map>

#include "config/builtin_ports.h"
#include "config/config.h"
#include "config/pattern.h"
#include "config/text.h"

namespace tunnels::config {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxFileSize = 64u << 20;

const std::vector<std::string>& MainOptionNames() {
  static const std::vector<std::string> names = {"upstreamDns",
                                                 "privateAddresses",
                                                 "blockUndefinedDomains",
                                                 "silentLog",
                                                 "addressCleanupTime",
                                                 "dnsBindAddress",
                                                 "dnsPort",
                                                 "overwriteResolvconf",
                                                 "restoreResolvConf",
                                                 "makeResolvconfImmutable",
                                                 "resolvconfPath",
                                                 "resolvconfBackupPath",
                                                 "dnsPacketSize",
                                                 "upstreamDnsTimeout",
                                                 "connectionIdleTimeout",
                                                 "temporaryBindPortRange",
                                                 "iptablesChain",
                                                 "randomCredentialsLength",
                                                 "stateDirectory",
                                                 "allowPrivateAnswers",
                                                 "maxConnectionsPerSource"};
  return names;
}

std::vector<std::string> TopLevelKeys() {
  std::vector<std::string> keys = {"proxies", "ports", "rules"};
  const auto& main = MainOptionNames();
  keys.insert(keys.end(), main.begin(), main.end());
  return keys;
}

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

std::string QuoteStarKeys(const std::string& text, LineFixes* fixes) {
  std::set<std::string> anchors;
  for (std::size_t pos = text.find('&'); pos != std::string::npos; pos = text.find('&', pos + 1)) {
    std::size_t end = pos + 1;
    while (end < text.size() && !std::isspace(static_cast<unsigned char>(text[end]))) ++end;
    anchors.insert(text.substr(pos + 1, end - pos - 1));
  }
  std::string out;
  out.reserve(text.size() + 16);
  std::istringstream in(text);
  std::string line;
  int number = 0;
  bool first = true;
  while (std::getline(in, line)) {
    if (!first) out.push_back('\n');
    first = false;
    std::size_t start = line.find_first_not_of(" \t");
    if (start != std::string::npos && line.compare(start, 2, "- ") == 0) {
      start = line.find_first_not_of(" \t", start + 2);
    }
    if (start != std::string::npos && line[start] == '*') {
      std::size_t end = start;
      while (end < line.size() &&
             !(line[end] == ':' &&
               (end + 1 == line.size() || line[end + 1] == ' ' || line[end + 1] == '\t'))) {
        ++end;
      }
      std::string key = line.substr(start, end - start);
      while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
      const std::string alias = key.substr(1);
      if (end < line.size() && !anchors.contains(alias)) {
        std::string quoted = "'";
        for (char c : key) {
          quoted.push_back(c);
          if (c == '\'') quoted.push_back('\'');
        }
        quoted.push_back('\'');
        line = line.substr(0, start) + quoted + line.substr(start + key.size());
        (*fixes)[number] = QuotedKey{static_cast<int>(start), static_cast<int>(key.size())};
      }
    }
    out += line;
    ++number;
  }
  return out;
}

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

struct RawRule {
  Rule rule;
  std::string key;                      // PatternKey of the pattern
  std::vector<std::string> port_items;  // empty: every TCP port
  std::vector<SourceLocation> port_where;
  std::vector<Pos> proxy_at;  // of each of rule.proxies, in rule.where.file
};

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
  Pos PosOf(const YAML::Node& node, int offset = 0) const;
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

  void ReadMainOption(const std::string& key, const YAML::Node& key_node, const YAML::Node& value);
  void ReadPortAlias(const std::string& name, const YAML::Node& key_node, const YAML::Node& value,
                     bool builtin);
  void ReadProxy(const std::string& name, const YAML::Node& key_node, const YAML::Node& value);
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

Pos Loader::PosOf(int line, int column) const {
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

Pos Loader::PosOf(const YAML::Node& node, int offset) const {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return Pos{};
  return PosOf(mark.line, mark.column + offset);
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

namespace {

// Why `text` cannot be a UTF-8 configuration file, with the 0-based line
// and column of the first offending byte; empty when it can be. YAML itself
// forbids NUL bytes, and yaml-cpp would silently read text that starts like
// UTF-16 or UTF-32 (a NUL among the first bytes, or their byte order mark)
// as that, with lines and columns that do not match the bytes.
std::string EncodingError(std::string_view text, int* line, int* column) {
  *line = 0;
  *column = 0;
  if (text.starts_with("\xff\xfe") || text.starts_with("\xfe\xff")) {
    return "the file is UTF-16 or UTF-32 text; save it as UTF-8";
  }
  const std::size_t nul = text.find('\0');
  if (nul == std::string_view::npos) return "";
  const std::size_t line_start = text.rfind('\n', nul);
  *line = static_cast<int>(
      std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(nul), '\n'));
  *column = static_cast<int>(line_start == std::string_view::npos ? nul : nul - line_start - 1);
  return nul < 4 ? "the file contains NUL bytes: it is UTF-16 or UTF-32 text, or not text at "
                   "all; save it as UTF-8"
                 : "the file contains a NUL byte; a configuration file is UTF-8 text";
}

}  // namespace

void Loader::AddDocument(const Document& doc, bool builtin) {
  file_ = doc.name;
  fixes_.clear();
  parsed_lines_.clear();
  line_lengths_.clear();
  bom_ = 0;
  if (!builtin) files_.push_back(doc.name);
  if (doc.text.size() > kMaxFileSize) {
    FileError(doc.name, "file is larger than 64 MiB; refusing to read it");
    return;
  }
  std::string_view text = doc.text;
  for (std::size_t start = 0;;) {
    const std::size_t nl = text.find('\n', start);
    line_lengths_.push_back((nl == std::string_view::npos ? text.size() : nl) - start);
    if (nl == std::string_view::npos) break;
    start = nl + 1;
  }
  int bad_line = 0;
  int bad_column = 0;
  if (std::string e = EncodingError(text, &bad_line, &bad_column); !e.empty()) {
    Error(SourceLocation{file_, bad_line + 1, bad_column + 1}, e);
    return;
  }
  // yaml-cpp skips a byte order mark without counting its columns.
  if (text.starts_with("\xef\xbb\xbf")) {
    text.remove_prefix(3);
    bom_ = 3;
  }
  parsed_ = QuoteStarKeys(std::string(text), &fixes_);
  for (std::size_t start = 0;;) {
    const std::size_t nl = parsed_.find('\n', start);
    parsed_lines_.push_back(
        std::string_view(parsed_).substr(start, nl == std::string::npos ? nl : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  YAML::Node root;
  try {
    root = YAML::Load(parsed_);
  } catch (const YAML::Exception& e) {
    // Includes YAML::DeepRecursion: yaml-cpp refuses nesting deeper than
    // its recursion limit instead of exhausting the stack.
    if (const auto tab = IndentingTab(e.mark)) {
      Error(Locate(tab->line, tab->column),
            "YAML syntax: a tab indents this line; YAML indents with spaces only (" + e.msg + ")");
    } else {
      Error(LocateClamped(e.mark), "YAML syntax: " + e.msg);
    }
    return;
  }
  // Reading the nodes should not throw. If yaml-cpp or the standard library
  // does after all, that is a bug of tunnels, but one in a single file: it
  // is reported there, with the other files still checked, instead of
  // ending the program.
  try {
    ReadRoot(root, builtin);
  } catch (const YAML::Exception& e) {
    Error(LocateClamped(e.mark), "internal error while reading this part of the file: " + e.msg);
  } catch (const std::exception& e) {
    FileError(file_, std::string("internal error while reading this file: ") + e.what());
  }
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

void Loader::ReadRoot(const YAML::Node& root, bool builtin) {
  if (root.IsNull()) return;  // an empty file (or only comments) is fine
  if (!root.IsMap()) {
    Error(Where(root), "a configuration file must be a mapping of options and sections");
    return;
  }
  ForEachEntry(root, "the file",
               [&](const std::string& key, const YAML::Node& key_node, const YAML::Node& value) {
                 if (key == "ports") {
                   ForEachEntry(value, "ports",
                                [&](const std::string& n, const YAML::Node& k,
                                    const YAML::Node& v) { ReadPortAlias(n, k, v, builtin); });
                 } else if (key == "proxies") {
                   ForEachEntry(value, "proxies",
                                [&](const std::string& n, const YAML::Node& k,
                                    const YAML::Node& v) { ReadProxy(n, k, v); });
                 } else if (key == "rules") {
                   ForEachEntry(value, "rules",
                                [&](const std::string& n, const YAML::Node& k,
                                    const YAML::Node& v) { ReadRule(n, k, v); });
                 } else if (std::find(MainOptionNames().begin(), MainOptionNames().end(), key) !=
                            MainOptionNames().end()) {
                   ReadMainOption(key, key_node, value);
                 } else {
                   std::string message = "unknown option '" + key + "'";
                   if (auto hint = Closest(key, TopLevelKeys()))
                     message += "; did you mean '" + *hint + "'?";
                   Error(Where(key_node), message);
                 }
               });
}

// ---------------------------------------------------------------------------
// Main options

namespace {

std::optional<bool> ParseBool(const std::string& s) {
  const std::string v = ToLower(Trim(s));
  if (v == "true" || v == "yes" || v == "on" || v == "y") return true;
  if (v == "false" || v == "no" || v == "off" || v == "n") return false;
  return std::nullopt;
}

std::optional<std::uint64_t> ParseUnsigned(std::string_view s) {
  s = Trim(s);
  std::uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

bool IsReservedPrefix(const Ipv4Prefix& p) {
  auto overlaps = [&](std::uint32_t net, int len) {
    const int common = std::min(len, p.length);
    const std::uint32_t mask = common == 0 ? 0 : ~0u << (32 - common);
    return (p.address & mask) == (net & mask);
  };
  return overlaps(0x7F000000u, 8) || overlaps(0x00000000u, 8) || overlaps(0xE0000000u, 3);
}

bool IsPrivatePrefix(const Ipv4Prefix& p) {
  auto inside = [&](std::uint32_t net, int len) {
    if (p.length < len) return false;
    const std::uint32_t mask = ~0u << (32 - len);
    return (p.address & mask) == net;
  };
  return inside(0x0A000000u, 8) || inside(0xAC100000u, 12) || inside(0xC0A80000u, 16) ||
         inside(0xC6120000u, 15) || inside(0x64400000u, 10);
}

}  // namespace

void Loader::ReadMainOption(const std::string& key, const YAML::Node& key_node,
                            const YAML::Node& value) {
  const SourceLocation here = Where(key_node);
  if (const auto it = options_.origin.find(key); it != options_.origin.end()) {
    Error(here, "option '" + key + "' is already set at " + it->second.ToString() +
                    "; only one file may set it");
    return;
  }
  options_.origin.emplace(key, here);
  Options& o = options_;

  if (key == "upstreamDns") {
    o.upstream_dns.clear();
    const auto items = ReadList(value, "upstreamDns");
    // An empty list too: without a server no name could be resolved.
    if (items.empty() && (value.IsScalar() || (value.IsSequence() && value.size() == 0))) {
      Error(here, "upstreamDns names no server");
    }
    for (const ListItem& item : items) {
      std::string error;
      const auto hp = ParseHostPort(item.text, &error);
      if (!hp) {
        Error(At(item.at), "upstreamDns: " + error);
      } else if (!IsIpv4Literal(hp->host) && !IsIpv6Literal(hp->host)) {
        Error(At(item.at), "upstreamDns: '" + hp->host +
                               "' is a name; an upstream DNS server must be an IP address (nothing "
                               "could resolve its name)");
      } else {
        o.upstream_dns.push_back(Endpoint{hp->host, hp->port.value_or(53)});
      }
    }
    return;
  }
  if (key == "silentLog") {
    o.silent_log.clear();
    if (value.IsScalar() && Trim(value.Scalar()).empty()) return;
    for (ListItem& item : ReadList(value, "silentLog")) {
      o.silent_log.push_back(std::move(item.text));
    }
    return;
  }
  if (!ExpectScalar(value, "option '" + key + "'")) return;
  const std::string text = std::string(Trim(value.Scalar()));
  const SourceLocation vwhere = Where(value);

  auto as_bool = [&](bool* out) {
    if (auto b = ParseBool(text)) {
      *out = *b;
    } else {
      Error(vwhere, key + ": expected true or false, not '" + text + "'");
    }
  };
  auto as_uint = [&](std::uint64_t lo, std::uint64_t hi) -> std::optional<std::uint64_t> {
    const auto v = ParseUnsigned(text);
    if (!v || *v < lo || *v > hi) {
      Error(vwhere, key + ": expected a whole number from " + std::to_string(lo) + " to " +
                        std::to_string(hi) + ", not '" + text + "'");
      return std::nullopt;
    }
    return v;
  };
  auto as_path = [&](std::string* out) {
    if (text.empty() || text.front() != '/') {
      Error(vwhere, key + ": expected an absolute path, not '" + text + "'");
    } else {
      *out = text;
    }
  };

  if (key == "privateAddresses") {
    std::string error;
    auto p = ParseIpv4Prefix(text, &error);
    if (!p) {
      Error(vwhere, "privateAddresses: " + error);
      return;
    }
    const std::uint32_t mask = p->length == 0 ? 0 : ~0u << (32 - p->length);
    if ((p->address & ~mask) != 0) {
      Error(vwhere, "privateAddresses: " + text + " has host bits set; did you mean " +
                        Ipv4Prefix{p->address & mask, p->length}.ToString() + "?");
    } else if (p->length < 8 || p->length > 29) {
      Error(vwhere,
            "privateAddresses: the prefix length must be from /8 to /29 (a /29 holds "
            "5 names at once)");
    } else if (IsReservedPrefix(*p)) {
      Error(vwhere, "privateAddresses: " + text +
                        " overlaps loopback, 0.0.0.0/8 or multicast; use a private range such "
                        "as 198.18.0.0/15");
    } else {
      if (!IsPrivatePrefix(*p)) {
        Warning(vwhere, "privateAddresses: " + text +
                            " is not a private range; real hosts there become unreachable");
      }
      o.private_addresses = *p;
    }
  } else if (key == "blockUndefinedDomains") {
    as_bool(&o.block_undefined_domains);
  } else if (key == "overwriteResolvconf") {
    as_bool(&o.overwrite_resolvconf);
  } else if (key == "restoreResolvConf") {
    as_bool(&o.restore_resolvconf);
  } else if (key == "makeResolvconfImmutable") {
    as_bool(&o.make_resolvconf_immutable);
  } else if (key == "addressCleanupTime") {
    if (auto v = as_uint(4, 7 * 24 * 3600)) o.address_cleanup_time = std::chrono::seconds(*v);
  } else if (key == "dnsBindAddress") {
    if (IsIpv4Literal(text) || IsIpv6Literal(text)) {
      o.dns_bind_address = text;
    } else {
      Error(vwhere, "dnsBindAddress: '" + text + "' is not an IP address");
    }
  } else if (key == "dnsPort") {
    // 0 lets the kernel choose; tunnels logs the port it got.
    if (auto v = as_uint(0, 65535)) o.dns_port = static_cast<std::uint16_t>(*v);
  } else if (key == "resolvconfPath") {
    as_path(&o.resolvconf_path);
  } else if (key == "resolvconfBackupPath") {
    as_path(&o.resolvconf_backup_path);
  } else if (key == "stateDirectory") {
    as_path(&o.state_directory);
  } else if (key == "dnsPacketSize") {
    if (auto v = as_uint(512, 65535)) o.dns_packet_size = static_cast<std::uint32_t>(*v);
  } else if (key == "upstreamDnsTimeout") {
    char* end = nullptr;
    const double seconds = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !(seconds >= 0.05) || seconds > 3600) {
      Error(vwhere, "upstreamDnsTimeout: expected a number of seconds from 0.05 to 3600, not '" +
                        text + "'");
    } else {
      o.upstream_dns_timeout = std::chrono::milliseconds(std::llround(seconds * 1000));
    }
  } else if (key == "connectionIdleTimeout") {
    if (auto v = as_uint(0, 30 * 24 * 3600)) o.connection_idle_timeout = std::chrono::seconds(*v);
  } else if (key == "temporaryBindPortRange") {
    const std::size_t dash = text.find('-');
    const auto first = ParsePort(Trim(std::string_view(text).substr(0, dash)));
    const auto last = dash == std::string::npos
                          ? std::nullopt
                          : ParsePort(Trim(std::string_view(text).substr(dash + 1)));
    if (!first || !last || *first > *last) {
      Error(vwhere,
            "temporaryBindPortRange: expected FIRST-LAST such as 30000-55000, not '" + text + "'");
    } else {
      o.temporary_bind_port_first = *first;
      o.temporary_bind_port_last = *last;
    }
  } else if (key == "iptablesChain") {
    const bool ok =
        !text.empty() && text.size() <= 64 && std::all_of(text.begin(), text.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
        });
    if (ok) {
      o.nft_table = text;
    } else {
      Error(vwhere,
            "iptablesChain: expected up to 64 letters, digits, '_' or '-', not '" + text + "'");
    }
  } else if (key == "randomCredentialsLength") {
    // RFC 1929 limits a SOCKS5 username and password to 255 bytes each.
    if (auto v = as_uint(1, 255)) o.random_credentials_length = static_cast<std::uint32_t>(*v);
  } else if (key == "allowPrivateAnswers") {
    as_bool(&o.allow_private_answers);
  } else if (key == "maxConnectionsPerSource") {
    if (auto v = as_uint(0, 1u << 24)) {
      o.max_connections_per_source = static_cast<std::uint32_t>(*v);
    }
  }
}

// ---------------------------------------------------------------------------
// Ports

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

// ---------------------------------------------------------------------------
// Proxies

namespace {

const std::vector<std::string>& ProxyKeys(ProxyType type) {
  static const std::vector<std::string> socks = {"type", "address", "port", "username", "password"};
  static const std::vector<std::string> ssh = {
      "type",           "address",           "port",
      "username",       "privateKey",        "privateKeyPassphrase",
      "rsaFingerprint", "ecdsaFingerprint",  "ed25519Fingerprint",
      "knownHostsFile", "parentSocks5Proxy", "keepaliveInterval"};
  return type == ProxyType::kSsh ? ssh : socks;
}

std::optional<ProxyType> ParseProxyType(const std::string& s) {
  if (s == "socks5") return ProxyType::kSocks5;
  if (s == "http") return ProxyType::kHttp;
  if (s == "ssh") return ProxyType::kSsh;
  return std::nullopt;
}

bool IsBase64(std::string_view s) {
  while (!s.empty() && s.back() == '=') s.remove_suffix(1);
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/';
  });
}

// "SHA256:base64" (OpenSSH) or 16 colon-separated hex bytes (MD5, as the
// original tunnels and older OpenSSH print).
std::optional<Fingerprint> ParseFingerprint(std::string text, std::string* error) {
  Fingerprint f;
  if (text.starts_with("SHA256:")) {
    std::string b64 = text.substr(7);
    while (!b64.empty() && b64.back() == '=') b64.pop_back();
    if (b64.size() != 43 || !IsBase64(b64)) {
      *error =
          "a SHA256 fingerprint is 'SHA256:' and 43 base64 characters, as ssh-keygen -lf "
          "prints";
      return std::nullopt;
    }
    f.form = Fingerprint::Form::kSha256Base64;
    f.value = b64;
    return f;
  }
  if (text.starts_with("MD5:")) text = text.substr(4);
  const std::string lower = ToLower(text);
  bool ok = lower.size() == 47;
  for (std::size_t i = 0; ok && i < lower.size(); ++i) {
    ok = (i % 3 == 2) ? lower[i] == ':' : std::isxdigit(static_cast<unsigned char>(lower[i])) != 0;
  }
  if (!ok) {
    *error =
        "expected an MD5 fingerprint (16 hex bytes separated by ':') or 'SHA256:' and "
        "base64";
    return std::nullopt;
  }
  f.form = Fingerprint::Form::kMd5Hex;
  f.value = lower;
  return f;
}

std::string ReadableError(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::strerror(errno);
  ::close(fd);
  return "";
}

}  // namespace

void Loader::ReadProxy(const std::string& name, const YAML::Node& key_node,
                       const YAML::Node& value) {
  const SourceLocation here = Where(key_node);
  if (name == "direct" || name == "block") {
    Error(here, "'" + name + "' is a built-in proxy and cannot be redefined");
    return;
  }
  if (name.empty() || name.find_first_of(", \t") != std::string::npos) {
    Error(here, "proxy name '" + name + "' may not contain commas or spaces");
    return;
  }
  if (const auto it = proxies_.find(name); it != proxies_.end()) {
    Error(here, "proxy '" + name + "' is already defined at " + it->second.where.ToString());
    return;
  }
  Proxy proxy;
  proxy.name = name;
  proxy.where = here;
  // A proxy with errors is still recorded, so that the rules that use it are
  // not reported a second time as naming an unknown proxy.
  auto keep = [&] { proxies_.emplace(name, proxy); };
  if (!value.IsMap()) {
    Error(value.IsNull() ? here : Where(value),
          "proxy '" + name + "' must be a mapping with at least 'type'");
    return keep();
  }
  const YAML::Node type_node = value["type"];
  if (!type_node) {
    Error(here, "proxy '" + name + "' has no 'type' (socks5, http or ssh)");
    return keep();
  }
  if (!ExpectScalar(type_node, "type")) return keep();
  const auto type = ParseProxyType(ToLower(Trim(type_node.Scalar())));
  if (!type) {
    std::string message = "proxy '" + name + "': unknown type '" + type_node.Scalar() + "'";
    if (auto hint = Closest(type_node.Scalar(), {"socks5", "http", "ssh"})) {
      message += "; did you mean '" + *hint + "'?";
    } else {
      message += " (socks5, http or ssh)";
    }
    Error(Where(type_node), message);
    return keep();
  }
  proxy.type = *type;

  std::map<std::string, YAML::Node> fields;
  ForEachEntry(value, "proxy '" + name + "'",
               [&](const std::string& key, const YAML::Node& k, const YAML::Node& v) {
                 const auto& allowed = ProxyKeys(proxy.type);
                 if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
                   std::string message = "proxy '" + name + "' (" + ToString(proxy.type) +
                                         "): unknown option '" + key + "'";
                   if (auto hint = Closest(key, allowed)) {
                     message += "; did you mean '" + *hint + "'?";
                   }
                   Error(Where(k), message);
                   return;
                 }
                 if (key != "type" && ExpectScalar(v, "'" + key + "'")) fields[key] = v;
               });
  auto field = [&](const std::string& key) -> std::optional<std::string> {
    if (const auto it = fields.find(key); it != fields.end()) return it->second.Scalar();
    return std::nullopt;
  };

  if (!fields.contains("address")) {
    Error(here, "proxy '" + name + "' has no 'address'");
    return keep();
  }
  const YAML::Node& address_node = fields["address"];
  std::string address = std::string(Trim(address_node.Scalar()));
  std::optional<Credentials> credentials;
  if (proxy.type != ProxyType::kSsh) {
    // [user:password@]host[:port]; the password may itself contain ':' or '@'.
    if (const std::size_t at = address.rfind('@'); at != std::string::npos) {
      const std::string userinfo = address.substr(0, at);
      const std::size_t colon = userinfo.find(':');
      credentials = Credentials{userinfo.substr(0, colon),
                                colon == std::string::npos ? "" : userinfo.substr(colon + 1)};
      address = address.substr(at + 1);
    }
  }
  std::string error;
  const auto hp = ParseHostPort(address, &error);
  if (!hp) {
    Error(Where(address_node), "proxy '" + name + "': address: " + error);
    return keep();
  }
  proxy.address.host = hp->host;
  const std::uint16_t default_port = proxy.type == ProxyType::kSocks5 ? 1080
                                     : proxy.type == ProxyType::kHttp ? 80
                                                                      : 22;
  proxy.address.port = hp->port.value_or(default_port);
  if (auto port_text = field("port")) {
    const auto port = ParsePort(Trim(*port_text));
    if (!port) {
      Error(Where(fields["port"]),
            "proxy '" + name + "': port: '" + *port_text + "' is not a port number (1-65535)");
    } else if (hp->port && *hp->port != *port) {
      Error(Where(fields["port"]), "proxy '" + name + "': port " + std::to_string(*port) +
                                       " contradicts the port in address (" +
                                       std::to_string(*hp->port) + ")");
    } else {
      proxy.address.port = *port;
    }
  }

  if (proxy.type == ProxyType::kSsh) {
    auto read = [&](const char* key, std::string* out) {
      if (auto v = field(key)) *out = *v;
    };
    read("username", &proxy.ssh.username);
    read("privateKeyPassphrase", &proxy.ssh.private_key_passphrase);
    if (proxy.ssh.username.empty()) Error(here, "ssh proxy '" + name + "' needs a 'username'");
    if (auto key = field("privateKey")) {
      const SourceLocation kw = Where(fields["privateKey"]);
      if (key->starts_with("~")) {
        Error(kw, "ssh proxy '" + name +
                      "': privateKey: '~' is not expanded (tunnels runs as "
                      "root); write the full path");
      } else if (!key->starts_with("/")) {
        Error(kw, "ssh proxy '" + name + "': privateKey: '" + *key + "' must be a full path");
      } else if (const std::string e = ReadableError(*key); !e.empty()) {
        const std::string message =
            "ssh proxy '" + name + "': cannot read private key '" + *key + "': " + e;
        if (load_options_.inspect_only && e == std::strerror(EACCES)) {
          // Other proxies and rules are still worth checking.
          Warning(kw, message + "; proxy '" + name + "' is not checked further");
          proxy.unusable = message;
          proxy.ssh.private_key = *key;
        } else {
          Error(kw, message);
        }
      } else {
        proxy.ssh.private_key = *key;
      }
    } else {
      Error(here, "ssh proxy '" + name + "' needs a 'privateKey' (full path to the key file)");
    }
    if (auto known = field("knownHostsFile")) {
      const SourceLocation kw = Where(fields["knownHostsFile"]);
      if (!known->starts_with("/")) {
        Error(kw, "ssh proxy '" + name + "': knownHostsFile must be a full path");
      } else if (const std::string e = ReadableError(*known); !e.empty()) {
        Error(kw, "ssh proxy '" + name + "': cannot read knownHostsFile '" + *known + "': " + e);
      } else {
        proxy.ssh.known_hosts_file = *known;
      }
    }
    const std::array<std::pair<const char*, HostKeyType>, 3> pins = {
        {{"rsaFingerprint", HostKeyType::kRsa},
         {"ecdsaFingerprint", HostKeyType::kEcdsa},
         {"ed25519Fingerprint", HostKeyType::kEd25519}}};
    for (const auto& [key, key_type] : pins) {
      auto text = field(key);
      if (!text) continue;
      std::string ferror;
      if (auto f = ParseFingerprint(std::string(Trim(*text)), &ferror)) {
        f->key_type = key_type;
        proxy.ssh.fingerprints.push_back(*f);
      } else {
        Error(Where(fields[key]), "ssh proxy '" + name + "': " + key + ": " + ferror);
      }
    }
    const bool pinned = field("knownHostsFile") ||
                        std::any_of(pins.begin(), pins.end(),
                                    [&](const auto& pin) { return fields.contains(pin.first); });
    if (!pinned) {
      Error(here, "ssh proxy '" + name +
                      "' pins no host key: set rsaFingerprint, ecdsaFingerprint, "
                      "ed25519Fingerprint or knownHostsFile (tunnels never trusts an unknown "
                      "host key; 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub' on the "
                      "server prints it)");
    }
    if (auto parent = field("parentSocks5Proxy")) {
      std::string perror;
      const auto php = ParseHostPort(*parent, &perror);
      if (!php) {
        Error(Where(fields["parentSocks5Proxy"]),
              "ssh proxy '" + name + "': parentSocks5Proxy: " + perror);
      } else {
        proxy.ssh.parent_socks5 = Endpoint{php->host, php->port.value_or(1080)};
      }
    }
    if (auto interval = field("keepaliveInterval")) {
      const auto seconds = ParseUnsigned(Trim(*interval));
      if (!seconds || *seconds < 1 || *seconds > 3600) {
        Error(Where(fields["keepaliveInterval"]),
              "ssh proxy '" + name + "': keepaliveInterval: '" + *interval +
                  "' is not a number of seconds from 1 to 3600");
      } else {
        proxy.ssh.keepalive_interval = std::chrono::seconds(*seconds);
      }
    }
  } else {
    // The older separate keys of the original are accepted too.
    if (auto user = field("username")) {
      if (credentials && credentials->username != *user) {
        Error(Where(fields["username"]),
              "proxy '" + name + "': username contradicts the one in address");
      }
      if (!credentials) credentials = Credentials{};
      credentials->username = *user;
    }
    if (auto pass = field("password")) {
      if (!credentials) credentials = Credentials{};
      credentials->password = *pass;
    }
    if (credentials && (credentials->username.size() > 255 || credentials->password.size() > 255)) {
      Error(Where(address_node),
            "proxy '" + name + "': username and password are limited to 255 bytes each");
    }
    proxy.credentials = credentials;
  }
  keep();
}

// ---------------------------------------------------------------------------
// Rules

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

// ---------------------------------------------------------------------------
// The whole

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

LoadResult Loader::Finish() {
  LoadResult result;
  Config config;
  if (builtins_ != nullptr) {
    for (const auto& [name, unused] : aliases_) {
      shadowed_ = shadowed_ || builtins_->raw.contains(name);
    }
  }
  // Report cycles and unknown names in aliases even when no rule uses them.
  for (const auto& [name, alias] : aliases_) {
    if (!alias.builtin) ResolveAlias(name);
  }
  if (builtins_ != nullptr && !shadowed_) {
    config.port_aliases = builtins_->resolved;
  } else if (builtins_ != nullptr) {
    for (const auto& [name, unused] : builtins_->raw) {
      if (auto r = ResolveAlias(name)) config.port_aliases[name] = *r;
    }
  }
  for (const auto& [name, unused] : aliases_) {
    if (auto r = ResolveAlias(name)) config.port_aliases[name] = *r;
  }
  CheckRules(&config);

  if (!options_.origin.contains("upstreamDns")) {
    options_.upstream_dns = ReadResolvConfNameservers(load_options_.system_resolv_conf);
    options_.upstream_dns_origin = load_options_.system_resolv_conf;
    if (options_.upstream_dns.empty()) {
      FileError(load_options_.system_resolv_conf,
                "no file sets upstreamDns and this file names no nameserver; set upstreamDns "
                "to the IP address of a DNS server");
    }
  }

  config.options = options_;
  config.proxies = std::move(proxies_);
  config.files = files_;
  result.diagnostics = std::move(diagnostics_);
  std::stable_sort(result.diagnostics.begin(), result.diagnostics.end(),
                   [](const Diagnostic& a, const Diagnostic& b) {
                     return std::tie(a.where.file, a.where.line, a.where.column) <
                            std::tie(b.where.file, b.where.line, b.where.column);
                   });
  const bool failed =
      std::any_of(result.diagnostics.begin(), result.diagnostics.end(),
                  [](const Diagnostic& d) { return d.severity == Severity::kError; });
  if (!failed) result.config = std::move(config);
  return result;
}

// The one place that opens a configuration file. O_NONBLOCK so that a FIFO
// or a device cannot block the open; fstat on the opened descriptor (not a
// stat of the name before) so that what is checked is what is read. Only
// regular files are read, and no more than kMaxFileSize bytes of them:
// /dev/zero or a growing file would otherwise be read until memory ends.
bool ReadWholeFile(const std::string& path, std::string* out, std::string* error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    *error = std::string("cannot open: ") + std::strerror(errno);
    return false;
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    *error = std::string("cannot stat: ") + std::strerror(errno);
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    *error = "not a regular file (a FIFO, device or socket); refusing to read it";
    return false;
  }
  if (static_cast<std::uint64_t>(st.st_size) > kMaxFileSize) {
    *error = "file is larger than 64 MiB; refusing to read it";
    return false;
  }
  out->assign(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t used = 0;
  for (;;) {
    if (used == out->size()) {
      // Grown since fstat (or a size-less /proc file): read on, but never
      // much past the cap.
      if (out->size() > kMaxFileSize) {
        *error = "file is larger than 64 MiB; refusing to read it";
        return false;
      }
      out->resize(
          std::min<std::size_t>(std::max<std::size_t>(out->size() * 2, 4096), kMaxFileSize + 1));
    }
    const ssize_t n = ::read(fd, out->data() + used, out->size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = std::string("cannot read: ") + std::strerror(errno);
      return false;
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  if (used > kMaxFileSize) {
    *error = "file is larger than 64 MiB; refusing to read it";
    return false;
  }
  out->resize(used);
  return true;
}

// Walks one configuration directory without std::filesystem's recursive
// iterator, which throws on a symbolic link loop and, following directory
// links, visits `ln -s . a; ln -s . b` exponentially often. Each directory
// (by device and inode) is read at most once; every entry that cannot be
// examined becomes a diagnostic naming it.
void WalkDirectory(Loader& loader, const fs::path& dir, std::set<std::pair<dev_t, ino_t>>& visited,
                   std::vector<fs::path>& found) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    loader.FileError(dir.string(), "cannot list directory: " + ec.message());
    return;
  }
  std::vector<fs::path> entries;
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) entries.push_back(it->path());
  if (ec) loader.FileError(dir.string(), "cannot list directory: " + ec.message());
  std::sort(entries.begin(), entries.end());
  for (const fs::path& entry : entries) {
    const std::string name = entry.filename().string();
    if (name.starts_with(".")) continue;
    const std::string ext = entry.extension().string();
    const bool yaml = ext == ".yml" || ext == ".yaml";
    struct stat st {};
    if (::stat(entry.c_str(), &st) != 0) {
      const int err = errno;
      struct stat lst {};
      const bool link = ::lstat(entry.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode);
      loader.FileError(entry.string(),
                       std::string(link ? "cannot follow symbolic link: " : "cannot stat: ") +
                           std::strerror(err));
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      if (!visited.insert({st.st_dev, st.st_ino}).second) {
        loader.FileWarning(entry.string(),
                           "directory already read (through a symbolic link); skipped");
        continue;
      }
      WalkDirectory(loader, entry, visited, found);
      continue;
    }
    if (!yaml) continue;
    if (!S_ISREG(st.st_mode)) {
      loader.FileWarning(entry.string(), "not a regular file (a FIFO, device or socket); skipped");
      continue;
    }
    found.push_back(entry);
  }
}

}  // namespace

LoadResult LoadDocuments(const std::vector<Document>& documents, const LoadOptions& options) {
  Loader loader(options);
  for (const Document& d : documents) loader.AddDocument(d);
  return loader.Finish();
}

LoadResult Load(const std::vector<std::string>& paths, const LoadOptions& options) {
  Loader loader(options);
  std::set<fs::path> seen;
  std::size_t loaded = 0;
  bool failed = false;  // an error already says why nothing was read
  auto add_file = [&](const fs::path& path, const std::string& shown) {
    std::error_code ec;
    const fs::path canonical = fs::weakly_canonical(path, ec);
    if (!seen.insert(ec ? path : canonical).second) return;  // named twice: read once
    std::string text;
    std::string error;
    if (!ReadWholeFile(path.string(), &text, &error)) {
      loader.FileError(shown, error);
      failed = true;
      return;
    }
    ++loaded;
    loader.AddDocument(Document{shown, std::move(text)});
  };
  std::set<std::pair<dev_t, ino_t>> visited;
  for (const std::string& p : paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) {
      loader.FileError(p, std::string("cannot read: ") + std::strerror(errno));
      failed = true;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      add_file(p, p);
      continue;
    }
    if (!visited.insert({st.st_dev, st.st_ino}).second) continue;  // named twice: read once
    std::vector<fs::path> found;
    WalkDirectory(loader, p, visited, found);
    // Else the directory would give no rules without a word.
    if (found.empty()) {
      loader.FileWarning(p, "the directory holds no configuration file (*.yml or *.yaml)");
    }
    std::sort(found.begin(), found.end());
    for (const fs::path& f : found) add_file(f, f.string());
  }
  // Zero rules would forward every ruled name (.onion too) to the upstream:
  // a configuration that names paths but yields no file fails closed.
  if (!paths.empty() && loaded == 0 && !failed) {
    std::string named;
    for (const std::string& p : paths) named += (named.empty() ? "" : ", ") + p;
    loader.FileError(named,
                     "no configuration file (*.yml or *.yaml) could be read; refusing to run "
                     "with no rules (add a file, or name one with -c)");
  }
  return loader.Finish();
}

}  // namespace tunnels::config
