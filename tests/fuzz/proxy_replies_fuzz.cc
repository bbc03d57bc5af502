// libFuzzer target: arbitrary bytes as what a SOCKS5 or HTTP proxy answers.
// The parsers must never read past the input, and what they claim to have
// consumed must fit in it.
#include <cstdint>
#include <span>
#include <string>

#include "proxies/codecs.h"

using namespace tunnels::proxies;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> in(data, size);
  auto check = [&](const ParseResult& r) {
    if (r.state == ParseResult::State::kDone && (r.consumed == 0 || r.consumed > size)) {
      __builtin_trap();
    }
  };
  std::uint8_t byte = 0;
  bool ok = false;
  int status = 0;
  std::string line;
  check(ParseSocks5MethodChoice(in, &byte));
  check(ParseSocks5PasswordReply(in, &ok));
  check(ParseSocks5ConnectReply(in, &byte));
  const ParseResult http = ParseHttpConnectReply(in, &status, &line);
  check(http);
  if (http.state == ParseResult::State::kDone && (status < 0 || status > 999)) __builtin_trap();
  // Every prefix of the input is a state a connection can be in.
  for (std::size_t n = 0; n < size && n < 300; ++n) {
    check(ParseSocks5ConnectReply(in.first(n), &byte));
  }
  return 0;
}
