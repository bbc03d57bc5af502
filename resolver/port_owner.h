// Which process has a UDP port open, for an error that says who holds the
// DNS port ("tunnels, pid 123") instead of guessing.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace tunnels::resolver {

struct PortOwner {
  pid_t pid = 0;
  std::string name;  // /proc/PID/comm
};

// The first process (in /proc order) with a socket bound to UDP port `port`
// (IPv4 or IPv6), from /proc/net/udp* and /proc/PID/fd; nullopt when none
// is found or /proc cannot be read (other users' fds need root).
std::optional<PortOwner> FindUdpPortOwner(std::uint16_t port);

// The hint for an address already in use: the owner named when it is known,
// tunnels itself said so.
std::string PortInUseHint(std::uint16_t port);

}  // namespace tunnels::resolver
