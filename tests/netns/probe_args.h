#pragma once

// What the netns probes (netns_probe, sandbox_link_probe) share: their
// error exit and the parsing of their --range argument.

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace tunnels::netns::testing {

// Prints "error: <message>" on stderr; returns the probe's exit status, 1.
inline int Fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

// "A.B.C.D/LEN" into `*network` (host byte order) and `*length`; false, and
// both untouched, when `text` is not of that form.
inline bool ParseRange(const std::string& text, std::uint32_t* network, int* length) {
  const auto slash = text.find('/');
  if (slash == std::string::npos) return false;
  in_addr a{};
  if (inet_pton(AF_INET, text.substr(0, slash).c_str(), &a) != 1) return false;
  try {
    *length = std::stoi(text.substr(slash + 1));
  } catch (...) {
    return false;
  }
  *network = ntohl(a.s_addr);
  return true;
}

}  // namespace tunnels::netns::testing
