// The real Kernel: routes through libnl-route-3, nftables through libnftables.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/errno.h>
#include <netlink/handlers.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>

#include "netns/kernel.h"
#include "netns/unique_fd.h"

namespace tunnels::netns {
namespace {

struct NlSockFree {
  void operator()(nl_sock* s) const { nl_socket_free(s); }  // closes it too
};
struct RouteFree {
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }  // with its next hops
};
struct AddrFree {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct NftFree {
  void operator()(nft_ctx* c) const { nft_ctx_free(c); }
};
struct LinkFree {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }  // a veth's peer with it
};
struct IfAddrFree {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct CacheFree {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using NlSock = std::unique_ptr<nl_sock, NlSockFree>;
using Route = std::unique_ptr<rtnl_route, RouteFree>;
using Addr = std::unique_ptr<nl_addr, AddrFree>;
using NftCtx = std::unique_ptr<nft_ctx, NftFree>;
using Link = std::unique_ptr<rtnl_link, LinkFree>;
using IfAddr = std::unique_ptr<rtnl_addr, IfAddrFree>;
using Cache = std::unique_ptr<nl_cache, CacheFree>;

// An IPv4 address as libnl wants it, with a prefix length.
Addr Ipv4Addr(std::uint32_t address, int prefix_length) {
  const std::uint32_t be = htonl(address);
  Addr a(nl_addr_build(AF_INET, &be, sizeof be));
  if (a) nl_addr_set_prefixlen(a.get(), prefix_length);
  return a;
}

// An IPv4 nl_addr (null or empty: 0.0.0.0/0, as libnl gives the default
// route's destination) as an Ipv4Network.
Ipv4Network ToNetwork(nl_addr* a) {
  Ipv4Network n;
  if (a == nullptr) return n;
  if (nl_addr_get_len(a) == sizeof(std::uint32_t)) {
    std::uint32_t be = 0;
    std::memcpy(&be, nl_addr_get_binary_addr(a), sizeof be);
    n.address = ntohl(be);
  }
  n.prefix_length = static_cast<int>(nl_addr_get_prefixlen(a));
  return n;
}

// "DEV:INODE" of an nsfs file, or "" when it cannot be read.
std::string NsId(const struct stat& st) {
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

// libnftables opens its netlink socket without SOCK_CLOEXEC and does not
// hand it out. A child that inherited it would keep tunnels' `flags owner`
// table alive after tunnels died, so every netfilter netlink socket of this
// process that lacks the flag gets it (they all should have it).
void MarkNetfilterSocketsCloseOnExec() {
  DIR* dir = opendir("/proc/self/fd");  // glibc opens it O_CLOEXEC
  if (dir == nullptr) return;
  const int dir_fd = dirfd(dir);
  while (const dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long value = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || value == dir_fd) continue;
    const int fd = static_cast<int>(value);
    int domain = 0, protocol = 0;
    socklen_t length = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0 || domain != AF_NETLINK) {
      continue;
    }
    length = sizeof protocol;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &length) != 0 ||
        protocol != NETLINK_NETFILTER) {
      continue;
    }
    const int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC) == 0) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
  closedir(dir);
}

// libnftables reports errors as text only ("Error: Could not process rule:
// Operation not permitted", then the script line); the errno is recovered
// from the strerror text in it so that callers can give hints.
Status NftStatus(std::string_view text) {
  std::string_view first = text.substr(0, text.find('\n'));
  if (first.starts_with("Error: ")) first.remove_prefix(7);
  Status s;
  s.message = first.empty() ? std::string("nft failed without saying why") : std::string(first);
  for (const int e : {EPERM, EACCES, ENOENT, EEXIST, EBUSY, EOPNOTSUPP, EINVAL, ENOMEM, ENOBUFS,
                      EAFNOSUPPORT, EPROTONOSUPPORT, EMSGSIZE}) {
    if (first.find(std::strerror(e)) != std::string_view::npos) {
      s.error = e;
      break;
    }
  }
  return s;
}

// Runs `f` in the network namespace `netns_fd` refers to (-1: here), in a
// short-lived thread, since setns() would move the calling thread for good.
// The thread is joined before this returns, so `f` may use the caller's
// variables.
template <typename F>
Status InNetns(int netns_fd, F f) {
  if (netns_fd < 0) return f();
  Status result;
  std::thread thread([&] {
    if (setns(netns_fd, CLONE_NEWNET) != 0) {
      const int e = errno;
      result = {e, std::string("cannot enter the network namespace: ") + std::strerror(e)};
      return;
    }
    result = f();
  });
  thread.join();
  return result;
}

class LinuxKernelImpl final : public Kernel {
 public:
  LinuxKernelImpl(NlSock route_socket, NftCtx nft, UniqueFd netns, std::string netns_id)
      : route_socket_(std::move(route_socket)),
        nft_(std::move(nft)),
        netns_(std::move(netns)),
        netns_id_(std::move(netns_id)) {
    // libnl turns the kernel's errno into its own, coarser codes (ESRCH and
    // ENOENT both become "object not found"); this keeps the kernel's errno
    // and its extended-ack text ("Invalid prefsrc address") instead.
    nl_socket_modify_err_cb(route_socket_.get(), NL_CB_CUSTOM, &LinuxKernelImpl::OnError, this);
  }

  Status AddLocalRoute(const Ipv4Network& network) override {
    return In([&] {
      Route route;
      if (Status s = MakeRoute(network, /*exact=*/true, &route); !s.ok()) return s;
      return RouteStatus(rtnl_route_add(route_socket_.get(), route.get(), NLM_F_EXCL));
    });
  }

  Status DeleteLocalRoute(const Ipv4Network& network, bool exact) override {
    return In([&] {
      Route route;
      if (Status s = MakeRoute(network, exact, &route); !s.ok()) return s;
      return RouteStatus(rtnl_route_delete(route_socket_.get(), route.get(), 0));
    });
  }

  // In the Kernel's namespace, in case a libnftables opens its socket only
  // when it first needs it.
  Status RunNft(const std::string& script) override {
    return In([&] {
      const int rc = nft_run_cmd_from_buffer(nft_.get(), script.c_str());
      MarkNetfilterSocketsCloseOnExec();      // in case a libnftables opens sockets lazily
      nft_ctx_get_output_buffer(nft_.get());  // reading resets the buffers
      const std::string errors = nft_ctx_get_error_buffer(nft_.get());
      if (rc == 0) return Status::Ok();
      return NftStatus(errors);
    });
  }

  Status ListNftChains(std::string* listing) override {
    return In([&] {
      const int rc = nft_run_cmd_from_buffer(nft_.get(), "list chains");
      MarkNetfilterSocketsCloseOnExec();
      if (rc != 0) return NftStatus(nft_ctx_get_error_buffer(nft_.get()));
      *listing = nft_ctx_get_output_buffer(nft_.get());
      return Status::Ok();
    });
  }

  Status FindNftTable(const std::string& name, NftTable* table) override {
    return In([&] { return FindNftTableHere(name, table); });
  }

  Status AddVethPair(const std::string& name, const std::string& peer_name, int peer_netns_fd,
                     std::uint32_t group) override {
    return In([&] {
      Link link(rtnl_link_veth_alloc());
      if (!link) return Status::Errno(ENOMEM);
      rtnl_link_set_name(link.get(), name.c_str());
      rtnl_link_set_group(link.get(), group);
      // The peer belongs to `link` (freed with it); get_peer adds a reference.
      rtnl_link* peer = rtnl_link_veth_get_peer(link.get());
      rtnl_link_set_name(peer, peer_name.c_str());
      rtnl_link_set_ns_fd(peer, peer_netns_fd);
      rtnl_link_put(peer);
      return RouteStatus(rtnl_link_add(route_socket_.get(), link.get(), NLM_F_CREATE | NLM_F_EXCL));
    });
  }

  Status DeleteLink(const std::string& name) override {
    return In([&] {
      Link link(rtnl_link_alloc());
      if (!link) return Status::Errno(ENOMEM);
      rtnl_link_set_name(link.get(), name.c_str());
      return RouteStatus(rtnl_link_delete(route_socket_.get(), link.get()));
    });
  }

  Status FindLink(const std::string& name, LinkInfo* info) override {
    *info = {};
    return In([&] {
      Link link;
      Status s = GetLink(name, &link);
      if (s.error == ENODEV) return Status::Ok();
      if (!s.ok()) return s;
      info->exists = true;
      if (const char* kind = rtnl_link_get_type(link.get())) info->kind = kind;
      info->group = rtnl_link_get_group(link.get());
      return Status::Ok();
    });
  }

  Status SetLinkUp(const std::string& name) override {
    return In([&] {
      Link link;
      if (Status s = GetLink(name, &link); !s.ok()) return s;
      Link change(rtnl_link_alloc());
      if (!change) return Status::Errno(ENOMEM);
      rtnl_link_set_flags(change.get(), IFF_UP);
      return RouteStatus(rtnl_link_change(route_socket_.get(), link.get(), change.get(), 0));
    });
  }

  Status AddAddress(const std::string& name, const Ipv4Network& address) override {
    return In([&] {
      Link link;
      if (Status s = GetLink(name, &link); !s.ok()) return s;
      IfAddr addr(rtnl_addr_alloc());
      Addr local = Ipv4Addr(address.address, address.prefix_length);
      if (!addr || !local) return Status::Errno(ENOMEM);
      rtnl_addr_set_ifindex(addr.get(), rtnl_link_get_ifindex(link.get()));
      if (int rc = rtnl_addr_set_local(addr.get(), local.get()); rc < 0) {
        return Status{0, nl_geterror(rc)};
      }
      rtnl_addr_set_prefixlen(addr.get(), address.prefix_length);
      return RouteStatus(rtnl_addr_add(route_socket_.get(), addr.get(), NLM_F_EXCL));
    });
  }

  Status AddDefaultRoute(std::uint32_t gateway, const std::string& name) override {
    return In([&] {
      Link link;
      if (Status s = GetLink(name, &link); !s.ok()) return s;
      Route route(rtnl_route_alloc());
      Addr dst = Ipv4Addr(0, 0);
      Addr via = Ipv4Addr(gateway, 32);
      if (!route || !dst || !via) return Status::Errno(ENOMEM);
      rtnl_route_set_family(route.get(), AF_INET);
      rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
      rtnl_route_set_type(route.get(), RTN_UNICAST);
      rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
      rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
      if (int rc = rtnl_route_set_dst(route.get(), dst.get()); rc < 0) {
        return Status{0, nl_geterror(rc)};
      }
      rtnl_nexthop* hop = rtnl_route_nh_alloc();
      if (hop == nullptr) return Status::Errno(ENOMEM);
      rtnl_route_nh_set_ifindex(hop, rtnl_link_get_ifindex(link.get()));
      rtnl_route_nh_set_gateway(hop, via.get());  // takes its own reference
      rtnl_route_add_nexthop(route.get(), hop);   // the route owns it now
      return RouteStatus(rtnl_route_add(route_socket_.get(), route.get(), NLM_F_EXCL));
    });
  }

  Status ListRoutes(std::vector<Ipv4Network>* routes) override {
    routes->clear();
    return In([&] {
      nl_cache* raw = nullptr;
      if (int rc = rtnl_route_alloc_cache(route_socket_.get(), AF_INET, 0, &raw); rc < 0) {
        return RouteStatus(rc);
      }
      Cache cache(raw);
      for (nl_object* o = nl_cache_get_first(cache.get()); o != nullptr; o = nl_cache_get_next(o)) {
        auto* route = reinterpret_cast<rtnl_route*>(o);
        if (rtnl_route_get_family(route) != AF_INET) continue;
        routes->push_back(ToNetwork(rtnl_route_get_dst(route)));
      }
      return Status::Ok();
    });
  }

  Status ListAddresses(std::vector<Ipv4Network>* addresses) override {
    addresses->clear();
    return In([&] {
      nl_cache* raw = nullptr;
      if (int rc = rtnl_addr_alloc_cache(route_socket_.get(), &raw); rc < 0) {
        return RouteStatus(rc);
      }
      Cache cache(raw);
      for (nl_object* o = nl_cache_get_first(cache.get()); o != nullptr; o = nl_cache_get_next(o)) {
        auto* addr = reinterpret_cast<rtnl_addr*>(o);
        if (rtnl_addr_get_family(addr) != AF_INET) continue;
        Ipv4Network n = ToNetwork(rtnl_addr_get_local(addr));
        n.prefix_length = rtnl_addr_get_prefixlen(addr);
        addresses->push_back(n);
      }
      return Status::Ok();
    });
  }

  Status WriteSysctl(const std::string& path, const std::string& value) override {
    if (path.empty() || path.front() == '/' || path.find("..") != std::string::npos) {
      return Status{EINVAL, "not a path below /proc/sys: " + path};
    }
    return In([&] {
      const std::string full = "/proc/sys/" + path;
      const std::string line = value + "\n";
      UniqueFd fd(::open(full.c_str(), O_WRONLY | O_CLOEXEC));
      if (!fd) return Status::Errno(errno);
      ssize_t n;
      do {
        n = ::write(fd.get(), line.data(), line.size());
      } while (n < 0 && errno == EINTR);
      if (n < 0) return Status::Errno(errno);
      if (static_cast<std::size_t>(n) != line.size()) return Status::Errno(EIO);
      return Status::Ok();
    });
  }

  std::string NetnsId() override { return netns_id_; }

  // In()'s failure says "cannot enter the network namespace: <errno
  // text>"; the caller names which one.
  Status RunInNetns(const std::function<Status()>& f) override { return In(f); }

 private:
  template <typename F>
  Status In(F f) {
    return InNetns(netns_.get(), f);
  }

  // ENODEV (with the kernel's text) when there is no such interface.
  Status GetLink(const std::string& name, Link* out) {
    rtnl_link* raw = nullptr;
    if (int rc = rtnl_link_get_kernel(route_socket_.get(), 0, name.c_str(), &raw); rc < 0) {
      return RouteStatus(rc);
    }
    out->reset(raw);
    return Status::Ok();
  }

  Status FindNftTableHere(const std::string& name, NftTable* table) {
    *table = {};
    const int rc = nft_run_cmd_from_buffer(nft_.get(), ("list table ip " + name).c_str());
    MarkNetfilterSocketsCloseOnExec();
    const std::string output = nft_ctx_get_output_buffer(nft_.get());
    const std::string errors = nft_ctx_get_error_buffer(nft_.get());
    if (rc != 0) {
      Status s = NftStatus(errors);
      return s.error == ENOENT ? Status::Ok() : s;
    }
    table->exists = true;
    // "table ip NAME { # progname tunnels" and, inside, "flags owner" (nft
    // 1.0.6 prints owned tables so; its JSON output garbles the flags).
    std::string_view text = output;
    while (!text.empty()) {
      std::string_view line = text.substr(0, text.find('\n'));
      text.remove_prefix(std::min(text.size(), line.size() + 1));
      while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
      if (line.starts_with("flags ") && line.find("owner") != std::string_view::npos) {
        table->owned = true;
      }
      if (const auto at = line.find("# progname ");
          line.starts_with("table ") && at != std::string_view::npos) {
        table->owner = std::string(line.substr(at + 11));
      }
    }
    return Status::Ok();
  }

 private:
  static int OnError(sockaddr_nl*, nlmsgerr* e, void* arg) {
    auto* self = static_cast<LinuxKernelImpl*>(arg);
    self->last_errno_ = -e->error;
    self->last_extack_.clear();
    // The extended-ack attributes follow the error; the outer header sits
    // right before it. With NETLINK_CAP_ACK only the request's header is
    // echoed, otherwise the whole request.
    const auto* outer =
        reinterpret_cast<const nlmsghdr*>(reinterpret_cast<const char*>(e) - NLMSG_HDRLEN);
    if ((outer->nlmsg_flags & NLM_F_ACK_TLVS) != 0) {
      std::size_t offset = sizeof(nlmsgerr);
      if ((outer->nlmsg_flags & NLM_F_CAPPED) == 0) offset += e->msg.nlmsg_len - NLMSG_HDRLEN;
      const std::size_t total = outer->nlmsg_len - NLMSG_HDRLEN;
      const char* base = reinterpret_cast<const char*>(e);
      // NLA_HDRLEN and NLA_ALIGN, without their int arithmetic.
      constexpr std::size_t kHeader = (sizeof(nlattr) + 3) & ~std::size_t{3};
      while (offset + kHeader <= total) {
        nlattr header;
        std::memcpy(&header, base + offset, sizeof header);
        const std::size_t length = header.nla_len;
        if (length < kHeader || offset + length > total) break;
        if ((header.nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
          std::string_view text(base + offset + kHeader, length - kHeader);
          self->last_extack_ = std::string(text.substr(0, text.find('\0')));
        }
        offset += (length + 3) & ~std::size_t{3};
      }
    }
    return NL_STOP;
  }

  // A libnl result as a Status with the kernel's errno when there was one.
  Status RouteStatus(int rc) {
    if (rc >= 0) return Status::Ok();
    Status s;
    if (last_errno_ != 0) {
      s = Status::Errno(last_errno_);
      if (!last_extack_.empty()) s.message += " (" + last_extack_ + ")";
    } else {
      // Some libnl calls (rtnl_link_get_kernel) put their own error
      // callback in place of OnError; their code is mapped back to the
      // errno where that is unambiguous, with libnl's text.
      s.message = nl_geterror(rc);
      static constexpr std::pair<int, int> kErrnos[] = {
          {NLE_NODEV, ENODEV},         {NLE_EXIST, EEXIST}, {NLE_PERM, EPERM},
          {NLE_NOACCESS, EACCES},      {NLE_BUSY, EBUSY},   {NLE_INVAL, EINVAL},
          {NLE_OPNOTSUPP, EOPNOTSUPP}, {NLE_NOMEM, ENOMEM}};
      for (const auto& [code, e] : kErrnos) {
        if (-rc == code) s.error = e;
      }
    }
    last_errno_ = 0;
    last_extack_.clear();
    return s;
  }

  static Status MakeRoute(const Ipv4Network& network, bool exact, Route* out) {
    Route route(rtnl_route_alloc());
    const std::uint32_t be = htonl(network.address);
    Addr dst(nl_addr_build(AF_INET, &be, sizeof be));
    if (!route || !dst) return Status::Errno(ENOMEM);
    nl_addr_set_prefixlen(dst.get(), network.prefix_length);
    rtnl_route_set_family(route.get(), AF_INET);
    rtnl_route_set_table(route.get(), RT_TABLE_LOCAL);
    rtnl_route_set_type(route.get(), RTN_LOCAL);
    if (int rc = rtnl_route_set_dst(route.get(), dst.get()); rc < 0) {
      return Status{0, nl_geterror(rc)};
    }
    if (!exact) {
      // Unset fields match anything when the kernel looks for the route
      // to delete: protocol 0, scope "nowhere", no next hop, no src.
      rtnl_route_set_protocol(route.get(), RTPROT_UNSPEC);
      rtnl_route_set_scope(route.get(), RT_SCOPE_NOWHERE);
      *out = std::move(route);
      return Status::Ok();
    }
    rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
    rtnl_route_set_scope(route.get(), RT_SCOPE_HOST);
    // 127.0.0.1 as the source of connections from this host to the range,
    // so that the listener's replies do not go to a fake address.
    const std::uint32_t loopback = htonl(INADDR_LOOPBACK);
    Addr src(nl_addr_build(AF_INET, &loopback, sizeof loopback));
    if (!src) return Status::Errno(ENOMEM);
    if (int rc = rtnl_route_set_pref_src(route.get(), src.get()); rc < 0) {
      return Status{0, nl_geterror(rc)};
    }
    const unsigned lo = if_nametoindex("lo");
    if (lo == 0) return Status{errno, std::string("no interface lo: ") + std::strerror(errno)};
    rtnl_nexthop* hop = rtnl_route_nh_alloc();
    if (hop == nullptr) return Status::Errno(ENOMEM);
    rtnl_route_nh_set_ifindex(hop, static_cast<int>(lo));
    rtnl_route_add_nexthop(route.get(), hop);  // the route owns it now
    *out = std::move(route);
    return Status::Ok();
  }

  NlSock route_socket_;
  NftCtx nft_;
  UniqueFd netns_;  // the namespace's fd, or none: the caller's
  std::string netns_id_;
  int last_errno_ = 0;
  std::string last_extack_;
};

bool HasNetAdmin() {
  const std::optional<std::uint64_t> effective = EffectiveCapabilities();
  // Unknown: let the kernel decide.
  return !effective || MissingCapabilities(effective, {{CAP_NET_ADMIN, "CAP_NET_ADMIN"}}).empty();
}

// Opens the netlink socket for routes and the libnftables context in the
// calling thread's network namespace.
bool OpenSockets(NlSock* route_socket_out, NftCtx* nft_out, std::string* error) {
  NlSock route_socket(nl_socket_alloc());
  if (!route_socket) {
    *error = "cannot allocate a netlink socket: out of memory";
    return false;
  }
  if (int rc = nl_connect(route_socket.get(), NETLINK_ROUTE); rc < 0) {
    *error = std::string("cannot open a netlink socket for routes: ") + nl_geterror(rc);
    return false;
  }
  const int fd = nl_socket_get_fd(route_socket.get());
  if (const int flags = fcntl(fd, F_GETFD); flags >= 0 && (flags & FD_CLOEXEC) == 0) {
    fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
  // Errors with the kernel's text; the echoed request is not needed.
  const int on = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &on, sizeof on);
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &on, sizeof on);

  NftCtx nft(nft_ctx_new(NFT_CTX_DEFAULT));
  MarkNetfilterSocketsCloseOnExec();
  if (!nft) {
    *error = "cannot create an nftables context (libnftables): out of memory";
    return false;
  }
  if (nft_ctx_buffer_output(nft.get()) != 0 || nft_ctx_buffer_error(nft.get()) != 0) {
    *error = "cannot set up the output buffers of libnftables";
    return false;
  }
  *route_socket_out = std::move(route_socket);
  *nft_out = std::move(nft);
  return true;
}

const char kNoNetAdmin[] =
    "cannot change routes and nftables in this network namespace: the process lacks "
    "CAP_NET_ADMIN (run tunnels as root, or give it that capability)";

}  // namespace

std::unique_ptr<Kernel> LinuxKernel(std::string* error) {
  // Checked first because libnftables, refused by the kernel, also prints
  // "Operation not permitted (you must be root)" to stderr by itself.
  if (!HasNetAdmin()) {
    *error = kNoNetAdmin;
    return nullptr;
  }
  // The namespace of this thread, which is where the sockets live.
  struct stat st {};
  std::string id;
  if (stat("/proc/thread-self/ns/net", &st) == 0) id = NsId(st);
  NlSock route_socket;
  NftCtx nft;
  if (!OpenSockets(&route_socket, &nft, error)) return nullptr;
  return std::make_unique<LinuxKernelImpl>(std::move(route_socket), std::move(nft), UniqueFd(),
                                           std::move(id));
}

std::optional<std::uint64_t> EffectiveCapabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, data) != 0) return std::nullopt;
  return (static_cast<std::uint64_t>(data[1].effective) << 32) | data[0].effective;
}

std::unique_ptr<Kernel> LinuxKernelIn(int netns_fd, std::string* error) {
  if (!HasNetAdmin()) {
    *error = kNoNetAdmin;
    return nullptr;
  }
  struct stat st {};
  if (netns_fd < 0 || fstat(netns_fd, &st) != 0) {
    *error = "cannot use the network namespace file descriptor " + std::to_string(netns_fd) + ": " +
             std::strerror(netns_fd < 0 ? EBADF : errno);
    return nullptr;
  }
  // Our own duplicate: the caller may close theirs.
  UniqueFd netns(fcntl(netns_fd, F_DUPFD_CLOEXEC, 0));
  if (!netns) {
    *error = std::string("cannot duplicate the network namespace file descriptor: ") +
             std::strerror(errno);
    return nullptr;
  }
  NlSock route_socket;
  NftCtx nft;
  const Status entered = InNetns(netns.get(), [&] {
    return OpenSockets(&route_socket, &nft, error) ? Status::Ok() : Status{EIO, *error};
  });
  if (!entered.ok()) {
    // setns() refuses a file that is not a network namespace with EINVAL.
    *error = entered.message + (entered.error == EINVAL
                                    ? " (the file descriptor does not refer to a network namespace)"
                                    : "");
    return nullptr;
  }
  return std::make_unique<LinuxKernelImpl>(std::move(route_socket), std::move(nft),
                                           std::move(netns), NsId(st));
}

}  // namespace tunnels::netns
