#include "proxies/codecs.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace tunnels::proxies {
namespace {

constexpr std::size_t kMaxHttpHeader = 16 * 1024;

}  // namespace

std::vector<std::uint8_t> Socks5Greeting(bool offer_password) {
  if (offer_password) return {0x05, 0x01, kSocks5MethodPassword};
  return {0x05, 0x01, kSocks5MethodNone};
}

ParseResult ParseSocks5MethodChoice(std::span<const std::uint8_t> bytes, std::uint8_t* method) {
  if (bytes.size() < 2) return ParseResult::NeedMore();
  if (bytes[0] != 0x05) {
    return ParseResult::Error("not a SOCKS5 server (version byte " + std::to_string(bytes[0]) +
                              ")");
  }
  *method = bytes[1];
  return ParseResult::Done(2);
}

std::vector<std::uint8_t> Socks5PasswordRequest(std::string_view user, std::string_view password) {
  std::vector<std::uint8_t> out;
  out.reserve(3 + user.size() + password.size());
  out.push_back(0x01);
  user = user.substr(0, 255);
  password = password.substr(0, 255);
  out.push_back(static_cast<std::uint8_t>(user.size()));
  out.insert(out.end(), user.begin(), user.end());
  out.push_back(static_cast<std::uint8_t>(password.size()));
  out.insert(out.end(), password.begin(), password.end());
  return out;
}

ParseResult ParseSocks5PasswordReply(std::span<const std::uint8_t> bytes, bool* ok) {
  if (bytes.size() < 2) return ParseResult::NeedMore();
  // RFC 1929 says version 1; some servers answer 5. Both mean the same.
  if (bytes[0] != 0x01 && bytes[0] != 0x05) {
    return ParseResult::Error("malformed username/password reply");
  }
  *ok = bytes[1] == 0x00;
  return ParseResult::Done(2);
}

std::optional<std::vector<std::uint8_t>> Socks5ConnectRequest(std::string_view host,
                                                              std::uint16_t port) {
  // ATYP and address first, then the whole request in one exactly sized
  // buffer (GCC 12 at -O3 warns falsely about growing a vector piecewise).
  std::uint8_t address[2 + 255];
  std::size_t address_len = 0;
  const std::string h(host);
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) {
    address[0] = 0x01;
    std::memcpy(address + 1, &v4, 4);
    address_len = 1 + 4;
  } else if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) {
    address[0] = 0x04;
    std::memcpy(address + 1, &v6, 16);
    address_len = 1 + 16;
  } else {
    if (host.empty() || host.size() > 255) return std::nullopt;
    address[0] = 0x03;
    address[1] = static_cast<std::uint8_t>(host.size());
    std::memcpy(address + 2, host.data(), host.size());
    address_len = 2 + host.size();
  }
  std::vector<std::uint8_t> out(3 + address_len + 2);
  out[0] = 0x05;  // version
  out[1] = 0x01;  // CONNECT
  out[2] = 0x00;  // reserved
  std::memcpy(out.data() + 3, address, address_len);
  out[3 + address_len] = static_cast<std::uint8_t>(port >> 8);
  out[4 + address_len] = static_cast<std::uint8_t>(port & 0xff);
  return out;
}

ParseResult ParseSocks5ConnectReply(std::span<const std::uint8_t> bytes, std::uint8_t* code) {
  if (bytes.size() < 5) return ParseResult::NeedMore();
  if (bytes[0] != 0x05) return ParseResult::Error("malformed CONNECT reply (version byte)");
  std::size_t address = 0;
  switch (bytes[3]) {
    case 0x01:
      address = 4;
      break;
    case 0x04:
      address = 16;
      break;
    case 0x03:
      address = 1 + std::size_t{bytes[4]};
      break;
    default:
      // Servers that refuse often send a short reply with ATYP 0; the code
      // is what matters then.
      if (bytes[1] != 0x00) {
        *code = bytes[1];
        return ParseResult::Done(bytes.size() < 10 ? bytes.size() : 10);
      }
      return ParseResult::Error("malformed CONNECT reply (address type " +
                                std::to_string(bytes[3]) + ")");
  }
  const std::size_t total = 4 + address + 2;
  if (bytes.size() < total) return ParseResult::NeedMore();
  *code = bytes[1];
  return ParseResult::Done(total);
}

std::string Socks5ReplyText(std::uint8_t code) {
  switch (code) {
    case 0x00:
      return "succeeded";
    case 0x01:
      return "general SOCKS server failure";
    case 0x02:
      return "connection not allowed by the server's rules";
    case 0x03:
      return "network unreachable";
    case 0x04:
      return "host unreachable (or its name does not resolve)";
    case 0x05:
      return "connection refused by the destination";
    case 0x06:
      return "TTL expired";
    case 0x07:
      return "command not supported";
    case 0x08:
      return "address type not supported";
    default:
      return "unknown reply code " + std::to_string(code);
  }
}

std::string Base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const unsigned v = (unsigned{static_cast<std::uint8_t>(bytes[i])} << 16) |
                       (unsigned{static_cast<std::uint8_t>(bytes[i + 1])} << 8) |
                       static_cast<std::uint8_t>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < bytes.size()) {
    unsigned v = unsigned{static_cast<std::uint8_t>(bytes[i])} << 16;
    if (i + 1 < bytes.size()) v |= unsigned{static_cast<std::uint8_t>(bytes[i + 1])} << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string HttpConnectRequest(std::string_view host, std::uint16_t port,
                               std::string_view credentials) {
  std::string authority = (host.find(':') != std::string_view::npos ? "[" + std::string(host) + "]"
                                                                    : std::string(host)) +
                          ":" + std::to_string(port);
  std::string out = "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n";
  if (!credentials.empty()) out += "Proxy-Authorization: Basic " + Base64(credentials) + "\r\n";
  out += "\r\n";
  return out;
}

ParseResult ParseHttpConnectReply(std::span<const std::uint8_t> bytes, int* status,
                                  std::string* status_line) {
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const std::size_t end = text.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (bytes.size() > kMaxHttpHeader) {
      return ParseResult::Error("response header longer than 16 KiB");
    }
    // Fail early on something that is not HTTP at all.
    if (bytes.size() >= 5 && text.substr(0, 5) != "HTTP/") {
      return ParseResult::Error("not an HTTP response");
    }
    return ParseResult::NeedMore();
  }
  if (end + 4 > kMaxHttpHeader) return ParseResult::Error("response header longer than 16 KiB");
  const std::string_view line = text.substr(0, text.find("\r\n"));
  // "HTTP/1.x SP 3DIGIT [SP reason]"
  if (line.size() < 12 || line.substr(0, 5) != "HTTP/" || line[8] != ' ' ||
      !std::all_of(line.begin() + 9, line.begin() + 12,
                   [](char c) { return c >= '0' && c <= '9'; }) ||
      (line.size() > 12 && line[12] != ' ')) {
    return ParseResult::Error("malformed status line");
  }
  *status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  status_line->assign(line.begin(), line.end());
  // Keep logs readable whatever the proxy sent.
  for (char& c : *status_line) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
  }
  return ParseResult::Done(end + 4);
}

}  // namespace tunnels::proxies
