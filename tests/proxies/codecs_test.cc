#include "proxies/codecs.h"

#include <catch2/catch.hpp>
#include <string>

using namespace tunnels::proxies;
using Bytes = std::vector<std::uint8_t>;

namespace {

Bytes B(std::string_view s) { return Bytes(s.begin(), s.end()); }

}  // namespace

TEST_CASE("SOCKS5 greeting offers exactly one method", "[socks5]") {
  CHECK(Socks5Greeting(false) == Bytes{5, 1, 0});
  CHECK(Socks5Greeting(true) == Bytes{5, 1, 2});
}

TEST_CASE("SOCKS5 method choice", "[socks5]") {
  std::uint8_t method = 0;
  CHECK(ParseSocks5MethodChoice(Bytes{5}, &method).state == ParseResult::State::kNeedMore);
  const auto r = ParseSocks5MethodChoice(Bytes{5, 2, 9}, &method);
  CHECK(r.state == ParseResult::State::kDone);
  CHECK(r.consumed == 2);
  CHECK(method == 2);
  CHECK(ParseSocks5MethodChoice(Bytes{4, 0}, &method).state == ParseResult::State::kError);
  CHECK_THAT(ParseSocks5MethodChoice(B("HTTP/1.1 400"), &method).error,
             Catch::Contains("not a SOCKS5 server"));
}

TEST_CASE("SOCKS5 username/password request and reply (RFC 1929)", "[socks5]") {
  CHECK(Socks5PasswordRequest("al", "pw!") == Bytes{1, 2, 'a', 'l', 3, 'p', 'w', '!'});
  const std::string long_user(300, 'u');
  CHECK(Socks5PasswordRequest(long_user, "").size() == 3 + 255);
  bool ok = false;
  CHECK(ParseSocks5PasswordReply(Bytes{1, 0}, &ok).state == ParseResult::State::kDone);
  CHECK(ok);
  CHECK(ParseSocks5PasswordReply(Bytes{1, 1}, &ok).state == ParseResult::State::kDone);
  CHECK_FALSE(ok);
  CHECK(ParseSocks5PasswordReply(Bytes{5, 0}, &ok).state == ParseResult::State::kDone);
  CHECK(ParseSocks5PasswordReply(Bytes{9, 0}, &ok).state == ParseResult::State::kError);
}

TEST_CASE("SOCKS5 CONNECT sends names as names, for the proxy to resolve", "[socks5]") {
  CHECK(*Socks5ConnectRequest("ab.onion", 443) ==
        Bytes{5, 1, 0, 3, 8, 'a', 'b', '.', 'o', 'n', 'i', 'o', 'n', 1, 0xbb});
  CHECK(*Socks5ConnectRequest("10.1.2.3", 80) == Bytes{5, 1, 0, 1, 10, 1, 2, 3, 0, 80});
  const auto v6 = *Socks5ConnectRequest("2001:db8::1", 22);
  CHECK(v6.size() == 4 + 16 + 2);
  CHECK(v6[3] == 4);
  CHECK_FALSE(Socks5ConnectRequest(std::string(256, 'a'), 1).has_value());
}

TEST_CASE("SOCKS5 CONNECT reply: every address type, partial input, refusals", "[socks5]") {
  std::uint8_t code = 0xff;
  const Bytes v4 = {5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90, 'x', 'y'};
  for (std::size_t n = 0; n < 10; ++n) {
    CHECK(ParseSocks5ConnectReply(std::span(v4.data(), n), &code).state ==
          ParseResult::State::kNeedMore);
  }
  const auto r = ParseSocks5ConnectReply(v4, &code);
  CHECK(r.state == ParseResult::State::kDone);
  CHECK(r.consumed == 10);  // 'x', 'y' are the server's first bytes
  CHECK(code == 0);
  const Bytes name = {5, 0, 0, 3, 3, 'a', 'b', 'c', 0, 80};
  CHECK(ParseSocks5ConnectReply(name, &code).consumed == 10);
  Bytes v6 = {5, 0, 0, 4};
  v6.resize(4 + 16 + 2);
  CHECK(ParseSocks5ConnectReply(v6, &code).consumed == 22);
  CHECK(ParseSocks5ConnectReply(Bytes{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}, &code).state ==
        ParseResult::State::kDone);
  CHECK(code == 5);
  CHECK(Socks5ReplyText(code) == "connection refused by the destination");
  // A refusal with a malformed address still tells the code.
  CHECK(ParseSocks5ConnectReply(Bytes{5, 4, 0, 0, 0}, &code).state == ParseResult::State::kDone);
  CHECK(code == 4);
  CHECK(ParseSocks5ConnectReply(Bytes{5, 0, 0, 9, 0}, &code).state == ParseResult::State::kError);
  CHECK(ParseSocks5ConnectReply(Bytes{4, 0, 0, 1, 0}, &code).state == ParseResult::State::kError);
}

TEST_CASE("HTTP CONNECT request with and without Basic credentials", "[http]") {
  CHECK(HttpConnectRequest("a.onion", 443, "") ==
        "CONNECT a.onion:443 HTTP/1.1\r\nHost: a.onion:443\r\n\r\n");
  CHECK(HttpConnectRequest("2001:db8::1", 22, "u:p") ==
        "CONNECT [2001:db8::1]:22 HTTP/1.1\r\nHost: [2001:db8::1]:22\r\n"
        "Proxy-Authorization: Basic dTpw\r\n\r\n");
  CHECK(Base64("") == "");
  CHECK(Base64("f") == "Zg==");
  CHECK(Base64("fo") == "Zm8=");
  CHECK(Base64("foo") == "Zm9v");
  CHECK(Base64("carol:pw") == "Y2Fyb2w6cHc=");
}

TEST_CASE("HTTP CONNECT reply: status, partial input, bytes after the header", "[http]") {
  int status = 0;
  std::string line;
  const std::string reply = "HTTP/1.1 200 Connection established\r\nX: y\r\n\r\nSSH-2.0";
  for (std::size_t n = 0; n + 7 < reply.size(); ++n) {
    CHECK(ParseHttpConnectReply(std::span(reinterpret_cast<const std::uint8_t*>(reply.data()), n),
                                &status, &line)
              .state == ParseResult::State::kNeedMore);
  }
  const auto r = ParseHttpConnectReply(B(reply), &status, &line);
  CHECK(r.state == ParseResult::State::kDone);
  CHECK(r.consumed == reply.size() - 7);
  CHECK(status == 200);
  CHECK(line == "HTTP/1.1 200 Connection established");
  CHECK(
      ParseHttpConnectReply(B("HTTP/1.0 407 Proxy Authentication Required\r\n\r\n"), &status, &line)
          .state == ParseResult::State::kDone);
  CHECK(status == 407);
  CHECK(ParseHttpConnectReply(B("HTTP/1.1 200\r\n\r\n"), &status, &line).state ==
        ParseResult::State::kDone);
}

TEST_CASE("HTTP CONNECT reply: garbage and endless headers fail", "[http]") {
  int status = 0;
  std::string line;
  CHECK(ParseHttpConnectReply(B("SSH-2.0-OpenSSH\r\n"), &status, &line).state ==
        ParseResult::State::kError);
  CHECK(ParseHttpConnectReply(B("HTTP/1.1 2x0 OK\r\n\r\n"), &status, &line).state ==
        ParseResult::State::kError);
  CHECK(ParseHttpConnectReply(B("HTTP/1.1 200OK\r\n\r\n"), &status, &line).state ==
        ParseResult::State::kError);
  const std::string endless = "HTTP/1.1 200 OK\r\n" + std::string(17000, 'a');
  CHECK_THAT(ParseHttpConnectReply(B(endless), &status, &line).error, Catch::Contains("16 KiB"));
  CHECK(ParseHttpConnectReply(B("HTTP/1.1 200 \x01\xff\r\n\r\n"), &status, &line).state ==
        ParseResult::State::kDone);
  CHECK(line == "HTTP/1.1 200 ??");
}
