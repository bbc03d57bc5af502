// The sandbox's link out: how programs in `tunnels run`'s network namespace
// reach the rest of the world for names without a rule.
//
// tunnels stays in the caller's network namespace and holds an fd of the
// sandbox's. With `outbound`, Create changes, in this order:
//
//  1. It picks a free /30 from the link range (ChooseLinkNetwork: the first
//     /30 of the range that overlaps no route of any routing table here and
//     no address of any interface here; routes broader than the range, such
//     as the default route, do not count). Several sandboxes get different
//     /30s: each one's connected route makes its /30 taken for the next.
//  2. A veth pair: <prefix>h here, <prefix>s created directly in the
//     sandbox's namespace. The caller's end gets the interface group
//     kSandboxLinkGroup, by which every tunnels table recognises every
//     sandbox's traffic (see the forward chain below).
//  3. No IPv6 on either end (disable_ipv6, before they come up, so no
//     link-local address either): nothing leaves the sandbox by IPv6, and
//     the sandbox has no IPv6 route out. Address <net>+1/30 here and
//     <net>+2/30 in the sandbox, both ends up, `lo` up in the sandbox, and
//     there `default via <net>+1`. The sandbox's end is configured through
//     netlink sockets opened in the sandbox's namespace (LinuxKernelIn).
//  4. An nftables table `ip <table_name>` here, in one transaction, with
//     `flags owner` (the kernel removes it when tunnels dies, even by
//     SIGKILL):
//       chain postrouting (nat, priority srcnat):
//         ip saddr <net>/30 oifname != "<prefix>h" masquerade
//       chain forward (filter, priority filter, policy accept):
//         iifgroup G oifgroup G drop      sandboxes do not reach each other
//         iifname "<prefix>h" accept
//         oifname "<prefix>h" ct state established,related accept
//       and, only when IPv4 forwarding was off before:
//         iifgroup G accept                any tunnels sandbox's traffic, and
//         oifgroup G ct state established,related accept   the replies to it
//         drop                              nothing else is forwarded
//     A drop in any base chain of the forward hook is final, so every
//     table must let the other sandboxes' traffic through itself: hence the
//     interface group, which all of them share whatever their names.
//  5. net.ipv4.ip_forward = 1 (an RAII Sysctl), if it was 0. Per-interface
//     forwarding (net.ipv4.conf.<prefix>h.forwarding) is not enough: the
//     kernel checks the forwarding flag of the interface a packet comes in
//     on, and a reply to the sandbox comes in on the outer interface (eth0,
//     say), which would then route for everyone on that side anyway.
//     Turning it on after the table is in place leaves no moment in which
//     this host forwards for others. Writing ip_forward also rewrites other
//     parameters (the kernel's inet_forward_change): turning it off sets
//     conf.all.accept_redirects to 1 and conf.default.forwarding and every
//     interface's forwarding to 0, whatever they were before. So the ones
//     that differ from that are recorded before it is turned on, and
//     written back after it is turned off (also by CleanupStale).
//
// Without `outbound` (--strict) nothing changes here; only `lo` comes up in
// the sandbox, whose programs then have no route out (ENETUNREACH at once).
//
// State. Before the first change, Create writes a state file
// <state_dir>/<name_prefix>.state (table, interface, /30, the value
// ip_forward had) and holds an flock on it while the object lives. A
// SandboxLink killed by SIGKILL leaves it behind unlocked; CleanupStale
// (which Create also runs first) finds such files and undoes what they
// record. ip_forward is shared by every instance in the namespace: an
// instance that finds it 1 while another live (or stale) instance recorded
// that it was 0 records 0 as well, so that the last one to go turns it off,
// and the forward chain drops as above. Nobody turns it off while a live
// instance still needs it.
//
// What goes by itself: the veth pair when the sandbox's namespace is
// destroyed (its last process exits and no fd holds it), the table with its
// owner. Undo still removes both explicitly, in reverse order: ip_forward
// first, then the table and the veth pair, then the state file; something
// already gone counts as removed. The table and the veth pair are deleted at
// the same time, on two threads (with `overlap_teardown`): each deletion
// waits for an RCU grace period in the kernel, over 10 ms, and neither
// depends on the other (the table names the interface, it holds no
// reference to it).
//
// Call Create, Remove and the destructor from a thread in the caller's
// network namespace: /proc/sys/net shows the namespace of the thread that
// opens it. IPv4 only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "netns/kernel.h"
#include "netns/sysctl.h"
#include "netns/unique_fd.h"

namespace tunnels::netns {

// The interface group (IFLA_GROUP) of every caller-side end; "tnl" in ASCII.
// Groups are otherwise unused on most machines (all interfaces are in 0).
inline constexpr std::uint32_t kSandboxLinkGroup = 0x746e6c;

inline constexpr char kDefaultStateDir[] = "/run/tunnels";

struct SandboxLinkSpec {
  int sandbox_netns_fd = -1;  // an open fd of the sandbox's network namespace
  // Interface names are <prefix>h (here) and <prefix>s (in the sandbox), so
  // at most 14 letters, digits, '_' or '-', e.g. "tnl" + tunnels' pid. The
  // state file is <state_dir>/<prefix>.state.
  std::string name_prefix;
  // Where the /30s come from: 100.64.0.0/10 (RFC 6598, shared address space
  // for carrier-grade NAT), which home and office networks, Docker, libvirt
  // and VPNs rarely use, and whose addresses are not publicly routed.
  // Host byte order; 1 to 30 bits; not in 0/8, 127/8, 169.254/16 or 224/3.
  std::uint32_t link_range = 0x64400000u;
  int link_range_length = 10;
  bool outbound = true;  // false (--strict): no veth, no route out
  // Delete the table and the veth pair at once (see above). Tests with
  // recording fakes turn it off to see the calls in a fixed order.
  bool overlap_teardown = true;
  // The nftables table for NAT and forwarding here, e.g. "tunnels_run_<pid>":
  // as InterceptionSpec::table_name.
  std::string table_name;
  // Where state files live (tests use their own).
  std::string state_dir = kDefaultStateDir;
  // /proc/sys, or a stand-in for it in tests: where ip_forward is.
  std::string sysctl_root = "/proc/sys";
};

class SandboxLink {
 public:
  // Checks the spec, then makes the changes described above. If a step
  // fails, the steps before it are undone before this returns null with a
  // sentence in `*error` naming the operation, the object, the kernel's
  // text and a hint.
  static std::unique_ptr<SandboxLink> Create(const SandboxLinkSpec& spec, std::string* error);
  // The same with other Kernels, one working here and one in the sandbox's
  // namespace; tests pass recording fakes. `sandbox` is destroyed before
  // this returns (its sockets would keep the sandbox's namespace alive).
  static std::unique_ptr<SandboxLink> Create(const SandboxLinkSpec& spec,
                                             std::unique_ptr<Kernel> caller,
                                             std::unique_ptr<Kernel> sandbox, std::string* error);

  SandboxLink(const SandboxLink&) = delete;
  SandboxLink& operator=(const SandboxLink&) = delete;
  ~SandboxLink();  // Remove(); what it could not undo is lost (call Remove() to see it)

  // Undoes what Create did, in reverse order. Something already gone counts
  // as removed. Returns "" or a sentence per failure; after a failure the
  // state file stays (unlocked), so that CleanupStale can try again. Later
  // calls do nothing.
  std::string Remove();

  // For each state file in `state_dir` whose instance is gone (its flock is
  // free) and that belongs to this network namespace: sets ip_forward back
  // to 0 if the instance had turned it on and no live instance needs it,
  // removes its nftables table and its veth pair if they are still there
  // (only a table no running process owns, only a veth in
  // kSandboxLinkGroup), and deletes the file. Never touches a live
  // instance's. Returns "" or a sentence per failure; `notes`, if given,
  // gets a sentence per thing done or left alone.
  static std::string CleanupStale(const std::string& state_dir = kDefaultStateDir,
                                  std::vector<std::string>* notes = nullptr);
  static std::string CleanupStale(const std::string& state_dir, Kernel& caller,
                                  const std::string& sysctl_root, std::vector<std::string>* notes);

  bool outbound() const { return spec_.outbound; }
  // The /30 and the addresses in it; zero without outbound.
  Ipv4Network network() const { return network_; }
  std::uint32_t caller_address() const { return outbound() ? network_.address + 1 : 0; }
  std::uint32_t sandbox_address() const { return outbound() ? network_.address + 2 : 0; }
  // "<prefix>h" and "<prefix>s"; empty without outbound.
  const std::string& caller_interface() const { return caller_if_; }
  const std::string& sandbox_interface() const { return sandbox_if_; }
  // Whether the forward chain drops what is not a sandbox's (ip_forward was
  // 0 before, or another instance recorded that it was).
  bool drops_other_forwarding() const { return drop_others_; }
  const std::string& state_file() const { return state_path_; }
  // Sentences for the log: leftovers replaced, stale instances cleaned up.
  const std::vector<std::string>& notes() const { return notes_; }
  // Sentences for the log at warning level: what will keep the sandbox's
  // traffic from leaving (another firewall's forward chain that drops).
  const std::vector<std::string>& warnings() const { return warnings_; }
  const SandboxLinkSpec& spec() const { return spec_; }

 private:
  struct Undo;
  SandboxLink(SandboxLinkSpec spec, std::unique_ptr<Kernel> caller);
  Status RestoreForwarding();

  SandboxLinkSpec spec_;
  std::unique_ptr<Kernel> caller_;
  std::vector<Undo> undo_;  // in the order of the changes
  Ipv4Network network_;
  std::string caller_if_, sandbox_if_;
  bool drop_others_ = false;
  std::string state_path_;
  UniqueFd state_fd_;                   // holds the flock on state_path_
  std::unique_ptr<Sysctl> forwarding_;  // net.ipv4.ip_forward, when this instance answers for it
  std::string forwarding_side_;  // what to write back once it is off (see ForwardingSideSettings)
  std::vector<std::string> notes_;
  std::vector<std::string> warnings_;
};

// From `nft list chains` output: the base chains of the forward hook, in
// tables of family ip or inet, whose policy is drop ("ip filter FORWARD").
// Another table's drop is final whatever tunnels' own table accepts, so
// these drop the sandbox's forwarded traffic (Docker and ufw set one).
std::vector<std::string> ForwardDropChains(const std::string& listing);

// The parameters under `sysctl_root` that turning net.ipv4.ip_forward off
// would leave different from now (see step 5 above), as "path:value" words
// separated by spaces: conf/all/accept_redirects when not 1, and
// conf/default and conf/<interface> forwarding when not 0.
std::string ForwardingSideSettings(const std::string& sysctl_root);

// Writes back what ForwardingSideSettings recorded; "" or the failures. An
// interface that is gone since is skipped; a malformed word is an error and
// nothing of it is written.
std::string RestoreForwardingSideSettings(const std::string& settings,
                                          const std::string& sysctl_root);

// "" when `spec` is usable, otherwise why not. Create checks this first.
std::string CheckSandboxLinkSpec(const SandboxLinkSpec& spec);

// The first /30 of `range` that overlaps neither a route (ignoring routes
// broader than the range itself, such as the default route or a VPN's
// 0.0.0.0/1) nor an address (the address itself, and its network unless
// that is broader than the range). False when there is none.
bool ChooseLinkNetwork(const Ipv4Network& range, const std::vector<Ipv4Network>& routes,
                       const std::vector<Ipv4Network>& addresses, Ipv4Network* chosen);

// The nft script Create runs as one transaction: it creates the table
// described above for the caller's end `<prefix>h` and the /30 `network`
// and, with `replace_leftover`, first removes a leftover table of the same
// name (`add table` first, so that `delete table` cannot fail). Only then: a
// transaction that deletes a table waits for a grace period (over 10 ms).
std::string SandboxLinkNftScript(const SandboxLinkSpec& spec, const Ipv4Network& network,
                                 bool drop_other_forwarding, bool replace_leftover);

}  // namespace tunnels::netns
