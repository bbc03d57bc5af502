// Making TCP connections to the fake address range reach tunnels' listener.
//
// Everything tunnels changes in the current network namespace for that:
//
//  1. An nftables table `ip <table_name>` (one atomic transaction) whose
//     prerouting chain, at priority mangle:
//       - drops packets to the range that do not come in on lo: only this
//         host's own programs are intercepted, not a neighbour's that
//         routes the range via this host;
//       - refuses (TCP reset) or drops packets with kEngineMark, the
//         engine's own connections, so that it never connects to itself;
//       - refuses a new connection (a SYN) to the blackhole address (the
//         last address of the range) with a TCP reset;
//       - hands every other TCP packet to the range to the listener with
//         `tproxy to 127.0.0.1:<listener_port>` and ORs kMark into its mark;
//       - refuses with a TCP reset a new connection that tproxy did not take
//         (no listener yet, or gone), so that it fails at once instead of
//         timing out or reaching some other local socket bound to 0.0.0.0;
//       - rejects UDP to the range with ICMP port unreachable (tunnels relays
//         TCP only), so that UDP clients get ECONNREFUSED at once.
//     The table has `flags owner` (Linux 5.12): it belongs to this object's
//     netlink socket, so no other process can change or delete it, and the
//     kernel removes it when the process dies, even by SIGKILL.
//  2. A `local` route for the range in table local, like
//       ip route add local 198.18.0.0/15 dev lo table local src 127.0.0.1
//     A program on this host connecting to a fake address then sends the
//     packets through lo, so they pass PREROUTING, where tproxy assigns them
//     to the listener. (Packets to the range from other hosts would be
//     delivered locally by it too: the chain drops those.)
//
// Verified (tests/integration/test_netns.py): the listener is an ordinary
// TCP socket with IP_TRANSPARENT bound to 127.0.0.1:<listener_port>; the
// socket it accepts has the fake address and port as its local address, and
// 127.0.0.1 as the client's address (the route's `src`). No mark and no
// policy routing rule is needed: the local route alone brings the packets
// to PREROUTING. The mark only labels intercepted packets, so that a host
// firewall whose input chain drops by default can accept them with
// `meta mark & 0x2000 == 0x2000 accept` (an accept in tunnels' own table
// cannot overrule a drop in another table).
//
// Why the resets match SYNs only: a client that picks a fake address as its
// source (it may bind one; without the route's `src` the kernel would pick
// one) gets the listener's replies addressed to a fake address. tproxy does
// not take those (they belong to the client's own, non-transparent socket),
// and a reset for every unmatched TCP packet would refuse the SYN-ACK.
//
// Order: the table first, then the route, so that there is never a moment
// in which connections to the range reach this host without the rules (they
// could reach a local service listening on 0.0.0.0). Undo is in reverse.
//
// IPv4 only; one Interception per range and table name in a network
// namespace.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "netns/kernel.h"

namespace tunnels::netns {

struct InterceptionSpec {
  std::uint32_t network = 0xC6120000u;  // host byte order; 198.18.0.0
  int prefix_length = 15;               // 1..30, like resolver::FakePool
  std::uint16_t listener_port = 0;      // the transparent listener's port on 127.0.0.1
  // iptablesChain from the config, e.g. "tunnels_redirects": letters,
  // digits, '_' and '-', starting with a letter or '_', and not a word of
  // nft's language such as "tcp" (nft reports those as a syntax error).
  std::string table_name = "tunnels_redirects";
  // `flags owner` on the table (see 1. above). Off for a network namespace
  // that dies with this process anyway (the sandbox of `tunnels run`): the
  // kernel removes an owned table when its socket closes, synchronously,
  // which costs a grace period (about 10 ms) on the way out, for nothing.
  bool owned = true;
};

// The mark bit intercepted packets get (ORed in, other bits kept).
inline constexpr std::uint32_t kMark = 0x2000;
// The mark of the engine's own outbound sockets (proxies::kEngineMark):
// packets to the range that carry it are refused, not intercepted.
inline constexpr std::uint32_t kEngineMark = 0x4000;

class Interception {
 public:
  // Checks the spec, then changes the network namespace as described above.
  // Leftovers of an earlier instance that was killed are replaced: a table
  // of the same name (unless a running process owns it: then this fails,
  // since that is most likely another tunnels) and a `local` route for the
  // range in table local. If a step fails, the steps before it are undone
  // before this returns null with a sentence in `*error` that names the
  // operation, the object, the kernel's text and a hint.
  static std::unique_ptr<Interception> Create(const InterceptionSpec& spec, std::string* error);
  // The same with another Kernel; tests pass a recording fake.
  static std::unique_ptr<Interception> Create(const InterceptionSpec& spec,
                                              std::unique_ptr<Kernel> kernel, std::string* error);

  Interception(const Interception&) = delete;
  Interception& operator=(const Interception&) = delete;
  // Remove(); what it could not undo is lost (call Remove() to see it).
  ~Interception();

  // Undoes exactly what Create added, in reverse order: the route, then the
  // table. Something already gone counts as removed. Returns "" or a
  // sentence per failure. Later calls do nothing.
  std::string Remove();

  // Forgets the changes without undoing them, for a network namespace that
  // is about to be destroyed with everything in it (the sandbox of
  // `tunnels run`): undoing there would only make the kernel wait twice.
  void Abandon();

  // The leftovers Create replaced, as sentences for the log ("removed a
  // leftover ..."). Empty after a clean start.
  const std::vector<std::string>& replaced() const { return replaced_; }

  const InterceptionSpec& spec() const { return spec_; }

 private:
  struct Undo;
  Interception(InterceptionSpec spec, std::unique_ptr<Kernel> kernel);

  InterceptionSpec spec_;
  std::unique_ptr<Kernel> kernel_;
  std::vector<Undo> undo_;  // in the order of the changes
  std::vector<std::string> replaced_;
};

// "" when `spec` is usable, otherwise why not. Create checks this first.
std::string CheckSpec(const InterceptionSpec& spec);

// The last address of the range: the one the DNS server answers for blocked
// names, whose connections are refused.
std::uint32_t BlackholeAddress(const InterceptionSpec& spec);

// The nft script Create runs as one transaction: it creates the table
// described above and, with `replace_leftover`, first removes a leftover
// table of the same name (`add table` first, so that `delete table` cannot
// fail). Only then: a transaction that deletes a table waits for a grace
// period (over 10 ms) before it returns.
std::string NftScript(const InterceptionSpec& spec, bool replace_leftover);

}  // namespace tunnels::netns
