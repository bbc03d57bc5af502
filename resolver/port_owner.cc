#include "resolver/port_owner.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

namespace tunnels::resolver {

namespace fs = std::filesystem;

namespace {

// The inodes of the sockets bound to `port` in one /proc/net/udp* table.
void ReadInodes(const char* table, std::uint16_t port, std::set<std::string>* inodes) {
  std::ifstream in(table);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    if (!(fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode)) {
      continue;
    }
    const std::size_t colon = local.rfind(':');
    if (colon == std::string::npos) continue;
    if (std::stoul(local.substr(colon + 1), nullptr, 16) == port && inode != "0") {
      inodes->insert("socket:[" + inode + "]");
    }
  }
}

}  // namespace

std::optional<PortOwner> FindUdpPortOwner(std::uint16_t port) {
  std::set<std::string> inodes;
  ReadInodes("/proc/net/udp", port, &inodes);
  ReadInodes("/proc/net/udp6", port, &inodes);
  if (inodes.empty()) return std::nullopt;
  std::error_code ec;
  for (const auto& process : fs::directory_iterator("/proc", ec)) {
    const std::string pid = process.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code fd_ec;
    for (const auto& fd : fs::directory_iterator(process.path() / "fd", fd_ec)) {
      std::error_code link_ec;
      const fs::path target = fs::read_symlink(fd.path(), link_ec);
      if (link_ec || !inodes.contains(target.string())) continue;
      PortOwner owner;
      owner.pid = static_cast<pid_t>(std::stol(pid));
      std::ifstream comm(process.path() / "comm");
      std::getline(comm, owner.name);
      return owner;
    }
  }
  return std::nullopt;
}

std::string PortInUseHint(std::uint16_t port) {
  const std::optional<PortOwner> owner = FindUdpPortOwner(port);
  if (owner && owner->name == "tunnels") {
    return " (tunnels, pid " + std::to_string(owner->pid) +
           ", is already running there; stop it, or set dnsBindAddress or dnsPort)";
  }
  if (owner) {
    return " (" + owner->name + ", pid " + std::to_string(owner->pid) +
           ", is listening there; stop it, or set dnsBindAddress or dnsPort)";
  }
  return " (another DNS server, such as systemd-resolved or dnsmasq, may be listening there; "
         "stop it, or set dnsBindAddress or dnsPort)";
}

}  // namespace tunnels::resolver
