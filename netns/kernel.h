// The kernel-facing operations of netns, behind an interface.
//
// Interception and SandboxLink decide what to change and in which order; a
// Kernel carries out one change at a time, in one network namespace. The
// real one (LinuxKernel, kernel_linux.cc) talks netlink through
// libnl-route-3 and libnftables; unit tests use a recording fake to check
// ordering and rollback without privileges.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

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

// What FindLink found.
struct LinkInfo {
  bool exists = false;
  std::string kind;         // "veth", "dummy", ...; empty for a plain device
  std::uint32_t group = 0;  // IFLA_GROUP, 0 ("default") unless someone set it
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
  //
  // RunNft uses a socket of its own: one RunNft may run on one thread while
  // one of the link, address and route calls runs on another (SandboxLink
  // overlaps the two slow deletions at teardown). Nothing else is
  // thread-safe.
  virtual Status RunNft(const std::string& script) = 0;

  // Looks up nftables table `ip NAME`. A missing table is not an error.
  virtual Status FindNftTable(const std::string& name, NftTable* table) = 0;

  // What `nft list chains` prints: every chain of every table, with the
  // type, hook and policy of the base chains.
  virtual Status ListNftChains(std::string* listing) = 0;

  // `ip link add NAME group GROUP type veth peer name PEER netns FD`: a veth
  // pair whose end PEER is created directly in the network namespace that
  // `peer_netns_fd` refers to, so it never exists here. EEXIST when either
  // name is taken (in its namespace).
  virtual Status AddVethPair(const std::string& name, const std::string& peer, int peer_netns_fd,
                             std::uint32_t group) = 0;

  // `ip link del NAME`; a veth's peer goes with it, wherever it is. ENODEV
  // when there is no such interface.
  virtual Status DeleteLink(const std::string& name) = 0;

  // Looks up interface NAME. A missing interface is not an error.
  virtual Status FindLink(const std::string& name, LinkInfo* link) = 0;

  // `ip link set NAME up`. ENODEV when there is no such interface.
  virtual Status SetLinkUp(const std::string& name) = 0;

  // `ip addr add ADDRESS/LEN dev NAME` (`address` has its host bits: the
  // interface's own address); the kernel adds the connected route for the
  // network once the interface is up. EEXIST when NAME has it already.
  virtual Status AddAddress(const std::string& name, const Ipv4Network& address) = 0;

  // `ip route add default via GATEWAY dev NAME proto static` (table main).
  virtual Status AddDefaultRoute(std::uint32_t gateway, const std::string& name) = 0;

  // The destination of every IPv4 route in every routing table (main,
  // local, and those of policy routing), the default route as 0.0.0.0/0.
  virtual Status ListRoutes(std::vector<Ipv4Network>* routes) = 0;

  // Every IPv4 address on every interface, with its prefix length.
  virtual Status ListAddresses(std::vector<Ipv4Network>* addresses) = 0;

  // Writes a kernel parameter of this Kernel's network namespace, given as
  // a path below /proc/sys ("net/ipv6/conf/tnl1s/disable_ipv6"). Not an RAII
  // Sysctl: used for parameters of interfaces this code creates, which go
  // away with them.
  virtual Status WriteSysctl(const std::string& path, const std::string& value) = 0;

  // Identifies this Kernel's network namespace ("DEV:INODE" of its nsfs
  // file): state recorded in one namespace must not be acted on in another.
  virtual std::string NetnsId() = 0;

  // Runs `f` in this Kernel's network namespace and returns what it
  // returns, or why the namespace could not be entered (then `f` did not
  // run). Sockets that `f` opens stay in that namespace: this is how a
  // server listens inside a sandbox while its process stays outside. `f`
  // runs on a thread joined before this returns, so it may use the
  // caller's variables, but it must not rely on thread-local state.
  virtual Status RunInNetns(const std::function<Status()>& f) = 0;
};

// One capability (CAP_NET_ADMIN, ...) and its name for messages.
struct Capability {
  int number = 0;
  const char* name = "";
};

// This process's effective capability set, bit N for capability N; nullopt
// when the kernel does not say (capget failed).
std::optional<std::uint64_t> EffectiveCapabilities();

// Those of `needed` that `effective` lacks, by name, joined with " and ";
// all of them when `effective` is unknown. "" when none is missing.
std::string MissingCapabilities(std::optional<std::uint64_t> effective,
                                std::initializer_list<Capability> needed);

// The real kernel: opens a NETLINK_ROUTE socket (libnl) and a libnftables
// context, both close-on-exec, kept for the object's lifetime (the nftables
// socket owns the tables created with `flags owner`). Null, with a sentence
// in `*error`, when they cannot be opened.
std::unique_ptr<Kernel> LinuxKernel(std::string* error);

// The same for the network namespace that `netns_fd` refers to, while the
// calling thread stays where it is: a short-lived thread setns()es there and
// opens the sockets, which keep the namespace they were opened in.
// WriteSysctl runs in such a thread too, since /proc/sys/net shows the
// namespace of the thread that opens a file there. The Kernel holds a
// duplicate of the fd and its sockets, both of which keep the namespace
// alive: destroy it as soon as it is no longer needed.
std::unique_ptr<Kernel> LinuxKernelIn(int netns_fd, std::string* error);

// "100.64.0.1"
std::string Ipv4AddressString(std::uint32_t address);

}  // namespace tunnels::netns
