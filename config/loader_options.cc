// The main options.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "config/loader.h"
#include "config/text.h"

namespace tunnels::config::internal {

namespace {

std::optional<bool> ParseBool(const std::string& s) {
  const std::string v = ToLower(Trim(s));
  if (v == "true" || v == "yes" || v == "on" || v == "y") return true;
  if (v == "false" || v == "no" || v == "off" || v == "n") return false;
  return std::nullopt;
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

}  // namespace tunnels::config::internal
