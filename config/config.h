// The validated, immutable configuration of tunnels, and how it is loaded.
//
// Loading never stops at the first problem: every error and warning is
// collected as a Diagnostic that names the file, line and column, so that a
// user fixes a broken configuration in one pass. A Config exists only when
// there was no error.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tunnels::config {

// A place in a configuration file; line and column are 1-based, 0 when unknown.
struct SourceLocation {
  std::string file;
  int line = 0;
  int column = 0;

  std::string ToString() const;  // "file:line:column"
};

// `s` made safe to print on a terminal: control characters (C0, DEL, C1),
// the Unicode controls that reorder or break text (bidi overrides, line
// separators) and bytes that are not UTF-8 become escapes such as \x1b,
// \t or \u202e; all other text, UTF-8 included, is kept. Diagnostics quote
// file names and file content, which may hold anything.
std::string Printable(std::string_view s);

enum class Severity { kWarning, kError };

struct Diagnostic {
  Severity severity = Severity::kError;
  SourceLocation where;
  std::string message;

  // "file:line:column: error: message", the form compilers use, so that
  // editors can jump to the place.
  std::string ToString() const;
};

enum class Protocol : std::uint8_t { kTcp, kUdp };
const char* ToString(Protocol p);

// An inclusive range of ports of one protocol.
struct PortRange {
  Protocol protocol = Protocol::kTcp;
  std::uint16_t first = 0;
  std::uint16_t last = 0;

  bool Contains(Protocol p, std::uint16_t port) const {
    return p == protocol && port >= first && port <= last;
  }
  friend bool operator==(const PortRange&, const PortRange&) = default;
};

// A host name or IP literal (IPv6 without brackets) with a port.
struct Endpoint {
  std::string host;
  std::uint16_t port = 0;

  std::string ToString() const;  // brackets an IPv6 literal
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

// A forcedAddress entry: the port is optional and then the connection's own.
struct Target {
  std::string host;
  std::optional<std::uint16_t> port;

  std::string ToString() const;
  friend bool operator==(const Target&, const Target&) = default;
};

// Username and password of a SOCKS5 or HTTP proxy. A field equal to
// kRandomPlaceholder is replaced by a fresh random string per connection.
struct Credentials {
  static constexpr const char* kRandomPlaceholder = "$RANDOM";
  std::string username;
  std::string password;
};

enum class ProxyType { kSocks5, kHttp, kSsh, kDirect, kBlock };
const char* ToString(ProxyType t);

enum class HostKeyType { kRsa, kEcdsa, kEd25519 };
const char* ToString(HostKeyType t);

// A pinned host key fingerprint, in one of the two forms users copy around.
struct Fingerprint {
  enum class Form { kMd5Hex, kSha256Base64 };
  HostKeyType key_type = HostKeyType::kRsa;
  Form form = Form::kMd5Hex;
  std::string value;  // normalised: lowercase colon-hex, or base64 without "SHA256:"
};

struct SshSettings {
  std::string username;
  std::string private_key;  // absolute path, checked readable at load time
  std::string private_key_passphrase;
  std::vector<Fingerprint> fingerprints;
  std::string known_hosts_file;
  std::optional<Endpoint> parent_socks5;
  // How often an idle session is probed; a session silent for twice this
  // long is taken for dead.
  std::chrono::seconds keepalive_interval{15};
};

struct Proxy {
  std::string name;
  ProxyType type = ProxyType::kDirect;
  SourceLocation where;
  Endpoint address;                        // socks5, http, ssh
  std::optional<Credentials> credentials;  // socks5, http
  SshSettings ssh;                         // ssh only
  // Why this proxy cannot be used by the caller (a root-only private key
  // read by a non-root check); set only under LoadOptions::inspect_only.
  std::string unusable;
};

// What a rule tells tunnels to do with a connection.
struct Rule {
  std::string pattern;  // as written, without its "@ports" part
  // The ports the rule covers; empty means every TCP port.
  std::vector<PortRange> ports;
  // Proxy names tried in order; "direct" and "block" are built in.
  std::vector<std::string> proxies;
  std::vector<Target> forced_addresses;
  SourceLocation where;

  // Whether two rules do the same with a connection.
  bool SameAction(const Rule& other) const {
    return proxies == other.proxies && forced_addresses == other.forced_addresses;
  }
};

struct Ipv4Prefix {
  std::uint32_t address = 0;  // host byte order
  int length = 0;

  std::uint32_t Size() const { return length == 0 ? 0 : (1u << (32 - length)); }
  std::string ToString() const;
  friend bool operator==(const Ipv4Prefix&, const Ipv4Prefix&) = default;
};

// The first and last port of temporaryBindPortRange.
struct PortSpan {
  std::uint16_t first = 0;
  std::uint16_t last = 0;
  friend bool operator==(const PortSpan&, const PortSpan&) = default;
};

// The main options, with the defaults of the original tunnels and the three
// deliberate changes documented in the README: one member per entry of
// main_options.def, which says what each is.
struct Options {
// The default is written in parentheses in the table; it is used as a braced
// list, because clang 14 (Debian 12, the fuzz build) has no parenthesised
// aggregate initialisation (P0960) for Ipv4Prefix and PortSpan.
#define TUNNELS_BRACED(...) \
  { __VA_ARGS__ }
#define TUNNELS_OPTION(key, member, type, default_value, ...) \
  type member = type TUNNELS_BRACED default_value;
#include "config/main_options.def"
#undef TUNNELS_OPTION
#undef TUNNELS_BRACED

  // Where each option that a file set came from, by its YAML key. Options
  // missing here have their default (or, for upstreamDns, came from
  // resolv.conf: see upstream_dns_origin).
  std::map<std::string, SourceLocation> origin;
  std::string upstream_dns_origin;  // a file name when taken from resolv.conf
};

struct Config {
  Options options;
  std::map<std::string, Proxy> proxies;                        // user-defined; not "direct"/"block"
  std::map<std::string, std::vector<PortRange>> port_aliases;  // built-in + user
  std::vector<Rule> rules;                                     // in load order
  std::vector<std::string> files;                              // files read, in order
};

struct LoadOptions {
  // Used for the upstream DNS servers when no file sets upstreamDns.
  std::string system_resolv_conf = "/etc/resolv.conf";
  // The caller only inspects the configuration (check, explain) and uses no
  // proxy: a key or known_hosts file it may not read (EACCES, as a
  // root-only key is for a user) is a warning and marks the proxy
  // unusable instead of failing the whole configuration.
  bool inspect_only = false;
};

struct LoadResult {
  std::optional<Config> config;  // set when no diagnostic is an error
  std::vector<Diagnostic> diagnostics;

  bool ok() const { return config.has_value(); }
};

// Reads the files and directories named by `paths` (directories recursively,
// *.yml and *.yaml, dotfiles skipped, in sorted path order) and validates the
// whole.
LoadResult Load(const std::vector<std::string>& paths, const LoadOptions& options = {});

// The same for configuration text in memory; `name` is used in diagnostics.
// Tests and the fuzzer use it; several documents model several files.
struct Document {
  std::string name;
  std::string text;
};
LoadResult LoadDocuments(const std::vector<Document>& documents, const LoadOptions& options = {});

}  // namespace tunnels::config
