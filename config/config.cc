#include "config/config.h"

#include <arpa/inet.h>

#include <cstdio>

namespace tunnels::config {

std::string Printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  auto hex = [&](unsigned char c) {
    static constexpr char kDigits[] = "0123456789abcdef";
    out += "\\x";
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  };
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    if (c == '\t' || c == '\n' || c == '\r') {
      out += c == '\t' ? "\\t" : c == '\n' ? "\\n" : "\\r";
      ++i;
      continue;
    }
    // The length of a UTF-8 sequence from its first byte, and the smallest
    // code point it may encode (anything less is an overlong form).
    const std::size_t length = c >= 0xc2 && c <= 0xdf   ? 2
                               : c >= 0xe0 && c <= 0xef ? 3
                               : c >= 0xf0 && c <= 0xf4 ? 4
                                                        : 0;
    char32_t code = length == 2 ? c & 0x1f : length == 3 ? c & 0x0f : c & 0x07;
    bool valid = length != 0 && i + length <= s.size();
    for (std::size_t k = 1; valid && k < length; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      valid = (next & 0xc0) == 0x80;
      code = (code << 6) | (next & 0x3f);
    }
    const char32_t minimum = length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000;
    valid = valid && code >= minimum && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff);
    if (!valid) {
      hex(c);  // one byte at a time: what follows may be valid again
      ++i;
      continue;
    }
    const bool control = code <= 0x9f || code == 0x2028 || code == 0x2029 ||
                         (code >= 0x202a && code <= 0x202e) || (code >= 0x2066 && code <= 0x2069);
    if (control) {
      char buf[12];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(code));
      out += buf;
    } else {
      out.append(s.substr(i, length));
    }
    i += length;
  }
  return out;
}

std::string SourceLocation::ToString() const {
  if (line == 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string Diagnostic::ToString() const {
  // Escaped as a whole: both the file name and the message may quote bytes
  // of a file, such as an escape sequence that would drive the terminal.
  return Printable(where.ToString() + (severity == Severity::kError ? ": error: " : ": warning: ") +
                   message);
}

const char* ToString(Protocol p) { return p == Protocol::kTcp ? "tcp" : "udp"; }

std::string Endpoint::ToString() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string Target::ToString() const {
  if (!port) return host;
  return Endpoint{host, *port}.ToString();
}

const char* ToString(ProxyType t) {
  switch (t) {
    case ProxyType::kSocks5:
      return "socks5";
    case ProxyType::kHttp:
      return "http";
    case ProxyType::kSsh:
      return "ssh";
    case ProxyType::kDirect:
      return "direct";
    case ProxyType::kBlock:
      return "block";
  }
  return "?";
}

const char* ToString(HostKeyType t) {
  switch (t) {
    case HostKeyType::kRsa:
      return "rsa";
    case HostKeyType::kEcdsa:
      return "ecdsa";
    case HostKeyType::kEd25519:
      return "ed25519";
  }
  return "?";
}

std::string Ipv4Prefix::ToString() const {
  in_addr a{};
  a.s_addr = htonl(address);
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(length);
}

}  // namespace tunnels::config
