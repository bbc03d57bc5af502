// The kernel-facing operations of netns, behind an interface.
//
// Interception decides what to change and in which order; a Kernel carries
// out one change at a time. The real one (LinuxKernel, kernel_linux.cc)
// talks netlink through libnl-route-3 and libnftables; unit tests use a
// recording fake to check ordering and rollback without privileges.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace tunnels::netns {

// The outcome of one kernel operation.
struct Status {
  int error = 0;        // the errno when known (EPERM, EEXIST, ESRCH, ...), else 0
  std::string message;  // the kernel's or library's text; empty on success

  bool ok() const { return error == 0 && message.empty(); }
  static Status Ok() { return {}; }
  static Status Errno(int error);  // message = strerror(error)
};

// An IPv4 network in host byte order.
struct Ipv4Network {
  std::uint32_t address = 0;
  int prefix_length = 0;

  std::string ToString() const;  // "198.18.0.0/15"
  friend bool operator==(const Ipv4Network&, const Ipv4Network&) = default;
};

// What FindNftTable found.
struct NftTable {
  bool exists = false;
  // The table has the `owner` flag: it belongs to the netlink socket of a
  // running process, which alone may change it, and it disappears when that
  // process exits.
  bool owned = false;
  std::string owner;  // that process's name as nft reports it ("tunnels"), if known
};

class Kernel {
 public:
  virtual ~Kernel() = default;

  // `ip route add local NETWORK dev lo table local src 127.0.0.1 proto static`
  // (scope host). Fails with EEXIST when table local has a route for exactly
  // that network already, whatever its type.
  virtual Status AddLocalRoute(const Ipv4Network& network) = 0;

  // Deletes the `local` route for `network` from table local. exact: only
  // one with every attribute AddLocalRoute sets (src, protocol, dev lo);
  // otherwise any `local` route for that network, whoever added it. ESRCH
  // when there is no such route.
  virtual Status DeleteLocalRoute(const Ipv4Network& network, bool exact) = 0;

  // Runs an nft script (the text language of nft(8)) as one transaction:
  // either all of it takes effect or none of it does. Tables created with
  // `flags owner` belong to this Kernel object and vanish with it.
  virtual Status RunNft(const std::string& script) = 0;

  // Looks up nftables table `ip NAME`. A missing table is not an error.
  virtual Status FindNftTable(const std::string& name, NftTable* table) = 0;
};

// The real kernel: opens a NETLINK_ROUTE socket (libnl) and a libnftables
// context, both close-on-exec, kept for the object's lifetime (the nftables
// socket owns the tables created with `flags owner`). Null, with a sentence
// in `*error`, when they cannot be opened.
std::unique_ptr<Kernel> LinuxKernel(std::string* error);

}  // namespace tunnels::netns
