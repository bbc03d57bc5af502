// Reads configuration documents into a validated Config: each document
// into raw sections, then the whole checked (see loader.h).
#include "config/loader.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "config/options.h"
#include "config/text.h"

namespace tunnels::config::internal {
namespace {

std::vector<std::string> TopLevelKeys() {
  std::vector<std::string> keys = {"proxies", "ports", "rules"};
  for (const MainOption& o : MainOptions()) keys.emplace_back(o.key);
  return keys;
}

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
                 } else if (!ReadMainOption(key, key_node, value)) {
                   std::string message = "unknown option '" + key + "'";
                   if (auto hint = Closest(key, TopLevelKeys()))
                     message += "; did you mean '" + *hint + "'?";
                   Error(Where(key_node), message);
                 }
               });
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

}  // namespace tunnels::config::internal

namespace tunnels::config {

LoadResult LoadDocuments(const std::vector<Document>& documents, const LoadOptions& options) {
  internal::Loader loader(options);
  for (const Document& d : documents) loader.AddDocument(d);
  return loader.Finish();
}

}  // namespace tunnels::config
