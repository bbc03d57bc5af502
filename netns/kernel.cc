#include "netns/kernel.h"

#include <arpa/inet.h>

#include <cstring>

namespace tunnels::netns {

Status Status::Errno(int error) { return {error, std::strerror(error)}; }

std::string Ipv4Network::ToString() const {
  char text[INET_ADDRSTRLEN] = {};
  const in_addr a{htonl(address)};
  inet_ntop(AF_INET, &a, text, sizeof text);
  return std::string(text) + "/" + std::to_string(prefix_length);
}

}  // namespace tunnels::netns
