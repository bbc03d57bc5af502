#include "launcher/commands.h"

#include <algorithm>
#include <charconv>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "config/rules.h"
#include "launcher/privilege.h"
#include "launcher/run.h"

namespace tunnels::launcher {
namespace {

using config::Diagnostic;
using config::LoadResult;
using config::Severity;

// Prints diagnostics; returns whether there was an error.
bool Report(const LoadResult& result, std::ostream& err) {
  int errors = 0;
  int warnings = 0;
  for (const Diagnostic& d : result.diagnostics) {
    err << d.ToString() << "\n";
    (d.severity == Severity::kError ? errors : warnings)++;
  }
  if (errors > 0) {
    err << errors << (errors == 1 ? " error" : " errors");
    if (warnings > 0) err << ", " << warnings << (warnings == 1 ? " warning" : " warnings");
    err << "\n";
  }
  return errors > 0;
}

// Writes `text` line by line, each made printable: the lines quote file
// names and values from files, which may hold escape sequences.
void Emit(std::ostream& to, const std::string& text) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) to << config::Printable(line) << "\n";
}

// A JSON string of `s` made printable first, so that it holds no control
// characters and is valid UTF-8 whatever bytes `s` has.
std::string Json(std::string_view s) {
  std::string out = "\"";
  for (char c : config::Printable(s)) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  return out + "\"";
}

template <typename T, typename Fn>
std::string JsonList(const T& items, Fn&& fn) {
  std::string out = "[";
  bool first = true;
  for (const auto& item : items) {
    if (!first) out += ", ";
    first = false;
    out += Json(fn(item));
  }
  return out + "]";
}

std::string Join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const std::string& s : items) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

std::string Origin(const config::Options& o, const std::string& key) {
  if (const auto it = o.origin.find(key); it != o.origin.end()) return it->second.ToString();
  if (key == "upstreamDns" && !o.upstream_dns_origin.empty()) {
    return "nameservers of " + o.upstream_dns_origin;
  }
  return "default";
}

// Output collected and written by Emit() when the command returns.
class Printed {
 public:
  explicit Printed(std::ostream& to) : to_(to) {}
  ~Printed() { Emit(to_, buffer_.str()); }
  Printed(const Printed&) = delete;
  Printed& operator=(const Printed&) = delete;
  std::ostream& stream() { return buffer_; }

 private:
  std::ostream& to_;
  std::ostringstream buffer_;
};

}  // namespace

int Check(const std::vector<std::string>& paths, std::ostream& out_stream,
          std::ostream& err_stream) {
  Printed printed_out(out_stream);
  Printed printed_err(err_stream);
  std::ostream& out = printed_out.stream();
  std::ostream& err = printed_err.stream();
  // Without CONF, what `tunnels run` would read without -c.
  const std::vector<std::string> read = paths.empty() ? DefaultConfigPaths() : paths;
  if (read.empty()) {
    err << "note: neither /etc/tunnels nor ~/.config/tunnels exists; tunnels run without -c "
           "applies no rules\n";
  }
  config::LoadOptions inspect;
  inspect.inspect_only = true;
  // With the rights of the user who ran sudo: check prints what it read.
  const LoadResult result = LoadAsInvoker(FindInvoker(), read, inspect);
  if (Report(result, err)) return 1;
  const config::Config& c = *result.config;
  const config::RuleSet rules(c);
  for (const auto& tie : rules.FindTies()) {
    err << tie.later->where.ToString() << ": warning: rule '" << tie.later->pattern
        << "' and the rule '" << tie.earlier->pattern << "' at " << tie.earlier->where.ToString()
        << " match the same names and ports equally well; the earlier one wins\n";
  }
  for (const config::Rule& rule : c.rules) {
    // UDP ranges that the rule's TCP ranges do not mirror: 'https' is
    // t443 + u443 and meant for its TCP part, but 'u53' or 'quic' asks for
    // UDP alone, which tunnels cannot deliver yet.
    std::vector<std::string> udp;
    for (const config::PortRange& r : rule.ports) {
      if (r.protocol != config::Protocol::kUdp) continue;
      const bool mirrored = std::any_of(rule.ports.begin(), rule.ports.end(), [&](const auto& t) {
        return t.protocol == config::Protocol::kTcp && t.first <= r.first && r.last <= t.last;
      });
      if (!mirrored) {
        udp.push_back("u" + std::to_string(r.first) +
                      (r.first == r.last ? "" : "-" + std::to_string(r.last)));
      }
    }
    if (!udp.empty()) {
      err << rule.where.ToString() << ": warning: rule '" << rule.pattern << "' covers UDP ports ("
          << Join(udp, ", ") << "), but tunnels does not carry UDP yet: such flows are refused\n";
    }
  }
  const config::Options& o = c.options;
  out << "configuration OK: " << c.files.size() << (c.files.size() == 1 ? " file, " : " files, ")
      << c.rules.size() << (c.rules.size() == 1 ? " rule, " : " rules, ") << c.proxies.size()
      << (c.proxies.size() == 1 ? " proxy, " : " proxies, ") << c.port_aliases.size()
      << " port aliases\n";
  out << "files:\n";
  for (const std::string& f : c.files) out << "  " << f << "\n";
  out << "proxies:\n";
  for (const auto& [name, p] : c.proxies) {
    out << "  " << std::left << std::setw(16) << name << " " << std::setw(7)
        << config::ToString(p.type) << " " << p.address.ToString();
    if (p.type == config::ProxyType::kSsh) out << " as " << p.ssh.username;
    if (p.credentials && p.credentials->username == config::Credentials::kRandomPlaceholder) {
      out << " (fresh random credentials per connection)";
    } else if (p.credentials && !p.credentials->username.empty()) {
      out << " (user " << p.credentials->username << ")";
    }
    out << "  [" << p.where.ToString() << "]\n";
  }
  std::vector<std::string> upstream;
  for (const auto& e : o.upstream_dns) upstream.push_back(e.ToString());
  const std::vector<std::pair<std::string, std::string>> options = {
      {"upstreamDns", Join(upstream, ", ")},
      {"privateAddresses", o.private_addresses.ToString()},
      {"blockUndefinedDomains", o.block_undefined_domains ? "true" : "false"},
      {"silentLog", Join(o.silent_log, ", ")},
      {"addressCleanupTime", std::to_string(o.address_cleanup_time.count()) + " s"},
      {"dnsBindAddress", o.dns_bind_address},
      {"dnsPort", std::to_string(o.dns_port)},
      {"overwriteResolvconf", o.overwrite_resolvconf ? "true" : "false"},
      {"restoreResolvConf", o.restore_resolvconf ? "true" : "false"},
      {"makeResolvconfImmutable", o.make_resolvconf_immutable ? "true" : "false"},
      {"resolvconfPath", o.resolvconf_path},
      {"resolvconfBackupPath", o.resolvconf_backup_path},
      {"dnsPacketSize", std::to_string(o.dns_packet_size)},
      {"upstreamDnsTimeout", std::to_string(o.upstream_dns_timeout.count()) + " ms"},
      {"connectionIdleTimeout", o.connection_idle_timeout.count() == 0
                                    ? std::string("never")
                                    : std::to_string(o.connection_idle_timeout.count()) + " s"},
      {"temporaryBindPortRange", std::to_string(o.temporary_bind_ports.first) + "-" +
                                     std::to_string(o.temporary_bind_ports.last)},
      {"iptablesChain", o.nft_table},
      {"randomCredentialsLength", std::to_string(o.random_credentials_length)},
      {"allowPrivateAnswers", o.allow_private_answers ? "true" : "false"},
      {"maxConnectionsPerSource", o.max_connections_per_source == 0
                                      ? std::string("no own cap")
                                      : std::to_string(o.max_connections_per_source)},
  };
  out << "options:\n";
  for (const auto& [key, value] : options) {
    out << "  " << std::left << std::setw(24) << key << " " << std::setw(30) << value << " ["
        << Origin(o, key) << "]\n";
  }
  return 0;
}

std::optional<ExplainTarget> ParseExplainTarget(const std::string& text, std::string* error) {
  ExplainTarget t;
  std::string rest = text;
  if (const std::size_t slash = rest.rfind('/'); slash != std::string::npos) {
    const std::string proto = rest.substr(slash + 1);
    if (proto == "tcp") {
      t.protocol = config::Protocol::kTcp;
    } else if (proto == "udp") {
      t.protocol = config::Protocol::kUdp;
    } else {
      *error = "the protocol after '/' must be tcp or udp";
      return std::nullopt;
    }
    rest.resize(slash);
  }
  if (const std::size_t colon = rest.rfind(':'); colon != std::string::npos) {
    unsigned port = 0;
    const char* b = rest.data() + colon + 1;
    const char* e = rest.data() + rest.size();
    const auto [ptr, ec] = std::from_chars(b, e, port);
    if (b == e || ec != std::errc() || ptr != e || port == 0 || port > 65535) {
      *error = "'" + rest.substr(colon + 1) + "' is not a port number (1-65535)";
      return std::nullopt;
    }
    t.port = static_cast<std::uint16_t>(port);
    t.port_given = true;
    rest.resize(colon);
  }
  char buf[256];
  std::size_t len = 0;
  if (!config::NormalizeName(rest, buf, &len)) {
    *error = "'" + rest + "' is not a valid domain name";
    return std::nullopt;
  }
  t.name = rest;
  return t;
}

int Explain(const ExplainTarget& target, bool json, const std::vector<std::string>& paths,
            std::ostream& out_stream, std::ostream& err_stream) {
  Printed printed_out(out_stream);
  Printed printed_err(err_stream);
  std::ostream& out = printed_out.stream();
  std::ostream& err = printed_err.stream();
  config::LoadOptions inspect;
  inspect.inspect_only = true;
  const LoadResult result = LoadAsInvoker(FindInvoker(), paths, inspect);
  if (Report(result, err)) return 1;
  const config::Config& c = *result.config;
  const config::RuleSet rules(c);
  config::Decision d = rules.Decide(target.name, target.port, target.protocol);
  // Only an answer that needs an unusable proxy fails.
  for (const std::string& name : d.proxies) {
    if (const auto it = c.proxies.find(name);
        it != c.proxies.end() && !it->second.unusable.empty()) {
      err << "tunnels explain: the answer needs proxy '" << name << "': " << it->second.unusable
          << "\n";
      return 1;
    }
  }
  // A rule that covers a UDP port gives the name a fake address, and UDP
  // to a fake address is not carried yet: the flow is refused.
  const bool udp_refused =
      target.protocol == config::Protocol::kUdp && d.dns == config::DnsAction::kFake &&
      (d.action == config::Action::kProxy || d.action == config::Action::kDirect);
  if (udp_refused) {
    d.action = config::Action::kRefuse;
    d.proxies = {};
    d.forced_addresses = {};
  }
  std::vector<std::string> proxies(d.proxies.begin(), d.proxies.end());
  std::vector<std::string> forced;
  for (const auto& f : d.forced_addresses) forced.push_back(f.ToString());

  if (json) {
    out << "{\"name\": " << Json(target.name) << ", \"port\": " << target.port
        << ", \"protocol\": " << Json(config::ToString(target.protocol))
        << ", \"dns\": " << Json(config::ToString(d.dns))
        << ", \"action\": " << Json(config::ToString(d.action))
        << ", \"proxies\": " << JsonList(proxies, [](const std::string& s) { return s; })
        << ", \"forcedAddress\": " << JsonList(forced, [](const std::string& s) { return s; })
        << ", \"rule\": ";
    if (d.rule) {
      out << "{\"pattern\": " << Json(d.rule->pattern) << ", \"file\": " << Json(d.rule->where.file)
          << ", \"line\": " << d.rule->where.line << "}";
    } else {
      out << "null";
    }
    out << "}\n";
    return 0;
  }

  out << target.name << ":" << target.port << "/" << config::ToString(target.protocol);
  if (!target.port_given) out << " (no port given: 443 assumed)";
  out << "\n  dns:    ";
  switch (d.dns) {
    case config::DnsAction::kFake:
      out << "fake address from " << c.options.private_addresses.ToString()
          << "; the name is never sent to the upstream DNS";
      break;
    case config::DnsAction::kForward:
      out << "forwarded to the upstream DNS, answer returned unmodified";
      break;
    case config::DnsAction::kBlock:
      out << "blocked (an address that refuses every connection)";
      break;
  }
  out << "\n  action: ";
  switch (d.action) {
    case config::Action::kProxy:
      out << "proxy through " << Join(proxies, ", then ")
          << " (the name is resolved on the proxy's side)";
      break;
    case config::Action::kDirect:
      out << (d.rule ? "direct connection to the real address (resolved through upstreamDns)"
                     : "not intercepted: the program connects to the real address itself");
      break;
    case config::Action::kBlock:
      out << "refused";
      break;
    case config::Action::kRefuse:
      if (udp_refused) {
        out << "refused: UDP is not carried yet (the rule below covers this port, but only TCP "
               "connections are intercepted)";
        break;
      }
      out << "refused: rules match this name, but none covers port " << target.port << "/"
          << config::ToString(target.protocol);
      break;
  }
  if (!forced.empty()) out << "\n  target: one of " << Join(forced, ", ") << ", at random";
  out << "\n  rule:   ";
  if (d.rule) {
    out << d.rule->pattern << " at " << d.rule->where.ToString();
  } else {
    out << (c.options.block_undefined_domains ? "none (blockUndefinedDomains is true)" : "none");
  }
  out << "\n";
  return 0;
}

}  // namespace tunnels::launcher
