#include "config/text.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <sstream>

namespace tunnels::config {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string_view> SplitTrim(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t pos = s.find(sep, start);
    out.push_back(Trim(s.substr(start, pos == std::string_view::npos ? s.npos : pos - start)));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

std::vector<std::pair<std::string, std::size_t>> SplitWithOffsets(std::string_view s, char sep) {
  std::vector<std::pair<std::string, std::size_t>> out;
  std::size_t start = 0;
  while (true) {
    std::size_t end = s.find(sep, start);
    if (end == std::string_view::npos) end = s.size();
    std::size_t b = start;
    while (b < end && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
    std::size_t e = end;
    while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
    out.emplace_back(std::string(s.substr(b, e - b)), b == end ? start : b);
    if (end == s.size()) break;
    start = end + 1;
  }
  return out;
}

namespace {

// The optimal string alignment distance (Damerau-Levenshtein without
// edits inside a swapped pair): insertions, deletions, substitutions and
// swaps of two neighbouring letters count one each, ignoring case. A swap is
// the commonest typo ("dnate" for "dante", "wbe" for "web"); plain
// Levenshtein counts it as two and so misses it in short words.
std::size_t EditDistance(std::string_view a, std::string_view b) {
  auto same = [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  };
  // Three rows: the one before the previous one is where a swap comes from.
  std::vector<std::size_t> before(b.size() + 1);
  std::vector<std::size_t> previous(b.size() + 1);
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::swap(before, previous);
    std::swap(previous, row);
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      row[j] = std::min(
          {previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (same(a[i - 1], b[j - 1]) ? 0 : 1)});
      if (i > 1 && j > 1 && same(a[i - 1], b[j - 2]) && same(a[i - 2], b[j - 1])) {
        row[j] = std::min(row[j], before[j - 2] + 1);
      }
    }
  }
  return row[b.size()];
}

}  // namespace

std::optional<std::string> Closest(std::string_view word,
                                   const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  std::size_t best_distance = 0;
  for (const std::string& c : candidates) {
    // A third of the longer word, at least one edit: "upstreamDNS" finds
    // "upstreamDns", "prxy" finds "proxy", "tor" does not find "http".
    const std::size_t limit = std::max<std::size_t>(1, std::max(word.size(), c.size()) / 3);
    // The distance is at least the difference in length; skipping what
    // cannot be close keeps a huge word (a mangled file) from costing
    // length x length x candidates.
    const std::size_t gap =
        word.size() > c.size() ? word.size() - c.size() : c.size() - word.size();
    if (gap > limit) continue;
    const std::size_t d = EditDistance(word, c);
    // On a tie, a candidate with the same first letter is the likelier typo.
    const bool tie_better = best && d == best_distance && !word.empty() &&
                            std::tolower(static_cast<unsigned char>(c.front())) ==
                                std::tolower(static_cast<unsigned char>(word.front())) &&
                            std::tolower(static_cast<unsigned char>(best->front())) !=
                                std::tolower(static_cast<unsigned char>(word.front()));
    if (d <= limit && (!best || d < best_distance || tie_better)) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

bool IsIpv4Literal(std::string_view s) {
  in_addr a{};
  return inet_pton(AF_INET, std::string(s).c_str(), &a) == 1;
}

bool IsIpv6Literal(std::string_view s) {
  in6_addr a{};
  return inet_pton(AF_INET6, std::string(s).c_str(), &a) == 1;
}

bool IsHostName(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  if (s.back() == '.') s.remove_suffix(1);
  std::size_t label = 0;
  for (char c : s) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
    if (++label > 63) return false;
  }
  return label > 0;
}

std::optional<std::uint16_t> ParsePort(std::string_view s) {
  unsigned value = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr != s.data() + s.size() || value == 0 || value > 65535) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

std::optional<HostPort> ParseHostPort(std::string_view s, std::string* error) {
  s = Trim(s);
  HostPort out;
  std::string_view port_text;
  bool has_port = false;
  if (s.starts_with('[')) {
    const std::size_t close = s.find(']');
    if (close == std::string_view::npos) {
      *error = "missing ']' after IPv6 address";
      return std::nullopt;
    }
    out.host = std::string(s.substr(1, close - 1));
    if (!IsIpv6Literal(out.host)) {
      *error = "'" + out.host + "' is not an IPv6 address";
      return std::nullopt;
    }
    std::string_view rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        *error = "expected ':port' after ']'";
        return std::nullopt;
      }
      port_text = rest.substr(1);
      has_port = true;
    }
  } else if (std::count(s.begin(), s.end(), ':') > 1) {
    // A bare IPv6 literal: it cannot carry a port without brackets.
    out.host = std::string(s);
    if (!IsIpv6Literal(out.host)) {
      *error = "'" + out.host + "' is not a host name, an IP address or host:port";
      return std::nullopt;
    }
  } else {
    const std::size_t colon = s.find(':');
    out.host = std::string(s.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = s.substr(colon + 1);
      has_port = true;
    }
    if (!IsIpv4Literal(out.host) && !IsHostName(out.host)) {
      *error = out.host.empty() ? std::string("missing host name")
                                : "'" + out.host + "' is not a valid host name or IP address";
      return std::nullopt;
    }
  }
  if (has_port) {
    out.port = ParsePort(port_text);
    if (!out.port) {
      *error = "'" + std::string(port_text) + "' is not a port number (1-65535)";
      return std::nullopt;
    }
  }
  return out;
}

std::optional<Ipv4Prefix> ParseIpv4Prefix(std::string_view s, std::string* error) {
  s = Trim(s);
  const std::size_t slash = s.find('/');
  if (slash == std::string_view::npos) {
    *error = "expected an IPv4 network such as 198.18.0.0/15";
    return std::nullopt;
  }
  in_addr a{};
  const std::string addr(s.substr(0, slash));
  if (inet_pton(AF_INET, addr.c_str(), &a) != 1) {
    *error = "'" + addr + "' is not an IPv4 address";
    return std::nullopt;
  }
  unsigned length = 0;
  const std::string_view len_text = s.substr(slash + 1);
  const auto [ptr, ec] =
      std::from_chars(len_text.data(), len_text.data() + len_text.size(), length);
  if (ec != std::errc() || ptr != len_text.data() + len_text.size() || length > 32) {
    *error = "'" + std::string(len_text) + "' is not a prefix length (0-32)";
    return std::nullopt;
  }
  Ipv4Prefix p;
  p.address = ntohl(a.s_addr);
  p.length = static_cast<int>(length);
  return p;
}

std::vector<Endpoint> ReadResolvConfNameservers(const std::string& path) {
  std::vector<Endpoint> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key;
    std::string value;
    if (!(words >> key >> value) || key != "nameserver") continue;
    // glibc allows a scope suffix ("fe80::1%eth0"); keep the address part.
    const std::string host = value.substr(0, value.find('%'));
    if (IsIpv4Literal(host) || IsIpv6Literal(host)) out.push_back(Endpoint{host, 53});
  }
  return out;
}

std::optional<std::uint64_t> ParseUnsigned(std::string_view s) {
  s = Trim(s);
  std::uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace tunnels::config
