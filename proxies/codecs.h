// The bytes of the SOCKS5 (RFC 1928, RFC 1929) and HTTP CONNECT handshakes,
// and parsers for what proxies answer. No I/O: the parsers see untrusted
// bytes and are fuzzed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tunnels::proxies {

// What a parser made of the bytes received so far.
struct ParseResult {
  enum class State { kNeedMore, kError, kDone };
  State state = State::kNeedMore;
  std::size_t consumed = 0;  // kDone: bytes of the reply; the rest belongs to the stream
  std::string error;         // kError: what was wrong, for the log

  static ParseResult NeedMore() { return {}; }
  static ParseResult Error(std::string message) { return {State::kError, 0, std::move(message)}; }
  static ParseResult Done(std::size_t n) { return {State::kDone, n, {}}; }
};

// --- SOCKS5 -----------------------------------------------------------------

inline constexpr std::uint8_t kSocks5MethodNone = 0x00;
inline constexpr std::uint8_t kSocks5MethodPassword = 0x02;

std::vector<std::uint8_t> Socks5Greeting(bool offer_password);
// The server's method choice (2 bytes); `method` is set when done.
ParseResult ParseSocks5MethodChoice(std::span<const std::uint8_t> bytes, std::uint8_t* method);
// RFC 1929; both fields at most 255 bytes (the config checks).
std::vector<std::uint8_t> Socks5PasswordRequest(std::string_view user, std::string_view password);
// The server's verdict (2 bytes); `ok` is set when done.
ParseResult ParseSocks5PasswordReply(std::span<const std::uint8_t> bytes, bool* ok);
// CONNECT to a host name (ATYP 3: the proxy resolves it) or an IP literal.
// Returns nullopt for a name over 255 bytes.
std::optional<std::vector<std::uint8_t>> Socks5ConnectRequest(std::string_view host,
                                                              std::uint16_t port);
// The reply to CONNECT, of variable length by its address type; `code` is REP.
ParseResult ParseSocks5ConnectReply(std::span<const std::uint8_t> bytes, std::uint8_t* code);
// A sentence for a REP code.
std::string Socks5ReplyText(std::uint8_t code);

// --- HTTP CONNECT -------------------------------------------------------------

// `credentials` is "user:password" for Proxy-Authorization: Basic, or empty.
std::string HttpConnectRequest(std::string_view host, std::uint16_t port,
                               std::string_view credentials);
// The proxy's response header, up to and including the blank line; at most
// 16 KiB. `status` is the status code, `status_line` the first line.
ParseResult ParseHttpConnectReply(std::span<const std::uint8_t> bytes, int* status,
                                  std::string* status_line);

std::string Base64(std::string_view bytes);

}  // namespace tunnels::proxies
