#include "resolver/port_owner.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

namespace tunnels::resolver {
namespace {

TEST_CASE("The process holding a UDP port is found and named") {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);  // the kernel's port
  socklen_t length = sizeof at;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&at), &length) == 0);
  const std::uint16_t port = ntohs(at.sin_port);

  std::ifstream comm("/proc/self/comm");
  std::string name;
  std::getline(comm, name);
  const std::optional<PortOwner> owner = FindUdpPortOwner(port);
  REQUIRE(owner);
  CHECK(owner->pid == ::getpid());
  CHECK(owner->name == name);
  CHECK_THAT(PortInUseHint(port), Catch::Contains(name + ", pid " + std::to_string(::getpid())));
  ::close(fd);
  CHECK_FALSE(FindUdpPortOwner(port));
  CHECK_THAT(PortInUseHint(port), Catch::Contains("systemd-resolved or dnsmasq"));
}

}  // namespace
}  // namespace tunnels::resolver
