// The main options: the checks that main_options.def names, and reading an
// option by its entry there.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <sstream>

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

// What a check sees of the option being read.
struct OptionValue {
  Loader& loader;
  const std::string& key;
  const YAML::Node& node;
  SourceLocation here;  // of the key

  // The value as trimmed text, if it is a single value; else reported.
  std::optional<std::string> Text() const {
    if (!loader.ExpectScalar(node, "option '" + key + "'")) return std::nullopt;
    return std::string(Trim(node.Scalar()));
  }
  std::vector<ListItem> List() const { return loader.ReadList(node, key); }
  void Error(const SourceLocation& where, std::string message) const {
    loader.Error(where, key + ": " + message);
  }
  // An error at the value.
  void Error(std::string message) const { Error(loader.Where(node), std::move(message)); }
  void ErrorAtKey(std::string message) const { loader.Error(here, std::move(message)); }
  SourceLocation At(Pos p) const { return loader.At(p); }
  void Warning(std::string message) const {
    loader.Warning(loader.Where(node), key + ": " + message);
  }
};

namespace {

struct Flag {
  void operator()(const OptionValue& v, bool* out) const {
    const auto text = v.Text();
    if (!text) return;
    if (auto b = ParseBool(*text)) {
      *out = *b;
    } else {
      v.Error("expected true or false, not '" + *text + "'");
    }
  }
};

// A whole number from lo to hi, stored as a number or as seconds.
struct Whole {
  std::uint64_t lo;
  std::uint64_t hi;
  template <typename T>
  void operator()(const OptionValue& v, T* out) const {
    const auto text = v.Text();
    if (!text) return;
    const auto n = ParseUnsigned(*text);
    if (!n || *n < lo || *n > hi) {
      v.Error("expected a whole number from " + std::to_string(lo) + " to " + std::to_string(hi) +
              ", not '" + *text + "'");
    } else if constexpr (std::is_same_v<T, std::chrono::seconds>) {
      *out = std::chrono::seconds(*n);
    } else {
      *out = static_cast<T>(*n);
    }
  }
};

// A number of seconds from lo to hi, fractions allowed, kept in milliseconds.
struct Seconds {
  double lo;
  double hi;
  void operator()(const OptionValue& v, std::chrono::milliseconds* out) const {
    const auto text = v.Text();
    if (!text) return;
    char* end = nullptr;
    const double seconds = std::strtod(text->c_str(), &end);
    if (text->empty() || end != text->c_str() + text->size() || !(seconds >= lo) || seconds > hi) {
      std::ostringstream range;
      range << lo << " to " << hi;
      v.Error("expected a number of seconds from " + range.str() + ", not '" + *text + "'");
    } else {
      *out = std::chrono::milliseconds(std::llround(seconds * 1000));
    }
  }
};

struct AbsolutePath {
  void operator()(const OptionValue& v, std::string* out) const {
    const auto text = v.Text();
    if (!text) return;
    if (text->empty() || text->front() != '/') {
      v.Error("expected an absolute path, not '" + *text + "'");
    } else {
      *out = *text;
    }
  }
};

struct IpAddress {
  void operator()(const OptionValue& v, std::string* out) const {
    const auto text = v.Text();
    if (!text) return;
    if (IsIpv4Literal(*text) || IsIpv6Literal(*text)) {
      *out = *text;
    } else {
      v.Error("'" + *text + "' is not an IP address");
    }
  }
};

// The range the fake addresses are taken from.
struct FakeRange {
  void operator()(const OptionValue& v, Ipv4Prefix* out) const {
    const auto text = v.Text();
    if (!text) return;
    std::string error;
    auto p = ParseIpv4Prefix(*text, &error);
    if (!p) {
      v.Error(error);
      return;
    }
    const std::uint32_t mask = p->length == 0 ? 0 : ~0u << (32 - p->length);
    if ((p->address & ~mask) != 0) {
      v.Error(*text + " has host bits set; did you mean " +
              Ipv4Prefix{p->address & mask, p->length}.ToString() + "?");
    } else if (p->length < 8 || p->length > 29) {
      v.Error("the prefix length must be from /8 to /29 (a /29 holds 5 names at once)");
    } else if (IsReservedPrefix(*p)) {
      v.Error(*text +
              " overlaps loopback, 0.0.0.0/8 or multicast; use a private range such as "
              "198.18.0.0/15");
    } else {
      if (!IsPrivatePrefix(*p)) {
        v.Warning(*text + " is not a private range; real hosts there become unreachable");
      }
      *out = *p;
    }
  }
};

// "FIRST-LAST".
struct PortPair {
  void operator()(const OptionValue& v, PortSpan* out) const {
    const auto text = v.Text();
    if (!text) return;
    const std::string_view t = *text;
    const std::size_t dash = t.find('-');
    const auto first = ParsePort(Trim(t.substr(0, dash)));
    const auto last =
        dash == std::string::npos ? std::nullopt : ParsePort(Trim(t.substr(dash + 1)));
    if (!first || !last || *first > *last) {
      v.Error("expected FIRST-LAST such as 30000-55000, not '" + *text + "'");
    } else {
      *out = PortSpan{*first, *last};
    }
  }
};

// The name of an nftables table.
struct TableName {
  void operator()(const OptionValue& v, std::string* out) const {
    const auto text = v.Text();
    if (!text) return;
    const bool ok =
        !text->empty() && text->size() <= 64 && std::all_of(text->begin(), text->end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
        });
    if (ok) {
      *out = *text;
    } else {
      v.Error("expected up to 64 letters, digits, '_' or '-', not '" + *text + "'");
    }
  }
};

// A list of names, which may be empty.
struct Names {
  void operator()(const OptionValue& v, std::vector<std::string>* out) const {
    out->clear();
    if (v.node.IsScalar() && Trim(v.node.Scalar()).empty()) return;
    for (ListItem& item : v.List()) out->push_back(std::move(item.text));
  }
};

// The upstream DNS servers: IP addresses, port 53 unless given.
struct DnsServers {
  void operator()(const OptionValue& v, std::vector<Endpoint>* out) const {
    out->clear();
    const auto items = v.List();
    // An empty list too: without a server no name could be resolved.
    if (items.empty() && (v.node.IsScalar() || (v.node.IsSequence() && v.node.size() == 0))) {
      v.ErrorAtKey("upstreamDns names no server");
    }
    for (const ListItem& item : items) {
      std::string error;
      const auto hp = ParseHostPort(item.text, &error);
      if (!hp) {
        v.Error(v.At(item.at), error);
      } else if (!IsIpv4Literal(hp->host) && !IsIpv6Literal(hp->host)) {
        v.Error(v.At(item.at), "'" + hp->host +
                                   "' is a name; an upstream DNS server must be an IP "
                                   "address (nothing could resolve its name)");
      } else {
        out->push_back(Endpoint{hp->host, hp->port.value_or(53)});
      }
    }
  }
};

// How each option is read: its check, applied to its member.
struct OptionReader {
  std::string_view key;
  void (*read)(const OptionValue& v, Options& o);
};
constexpr OptionReader kReaders[] = {
#define TUNNELS_OPTION(key, member, type, default_value, reload, example, ...) \
  {#key, [](const OptionValue& v, Options& o) { (__VA_ARGS__)(v, &o.member); }},
#include "config/main_options.def"
#undef TUNNELS_OPTION
};

}  // namespace

bool Loader::ReadMainOption(const std::string& key, const YAML::Node& key_node,
                            const YAML::Node& value) {
  const auto reader = std::find_if(std::begin(kReaders), std::end(kReaders),
                                   [&](const OptionReader& r) { return r.key == key; });
  if (reader == std::end(kReaders)) return false;
  const SourceLocation here = Where(key_node);
  if (const auto it = options_.origin.find(key); it != options_.origin.end()) {
    Error(here, "option '" + key + "' is already set at " + it->second.ToString() +
                    "; only one file may set it");
    return true;
  }
  options_.origin.emplace(key, here);
  reader->read(OptionValue{*this, key, value, here}, options_);
  return true;
}

}  // namespace tunnels::config::internal
