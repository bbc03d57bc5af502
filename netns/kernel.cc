#include "netns/kernel.h"

#include <arpa/inet.h>

#include <cstring>

namespace tunnels::netns {

Status Status::Errno(int error) { return {error, std::strerror(error)}; }

std::string Ipv4AddressString(std::uint32_t address) {
  char text[INET_ADDRSTRLEN] = {};
  const in_addr a{htonl(address)};
  inet_ntop(AF_INET, &a, text, sizeof text);
  return text;
}

std::string MissingCapabilities(std::optional<std::uint64_t> effective,
                                std::initializer_list<Capability> needed) {
  std::string missing;
  for (const Capability& c : needed) {
    if (effective && c.number >= 0 && c.number < 64 && ((*effective >> c.number) & 1u) != 0) {
      continue;
    }
    missing += std::string(missing.empty() ? "" : " and ") + c.name;
  }
  return missing;
}

std::string Ipv4Network::ToString() const {
  return Ipv4AddressString(address) + "/" + std::to_string(prefix_length);
}

}  // namespace tunnels::netns
