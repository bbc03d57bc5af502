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
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "netns/kernel.h"

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
using NlSock = std::unique_ptr<nl_sock, NlSockFree>;
using Route = std::unique_ptr<rtnl_route, RouteFree>;
using Addr = std::unique_ptr<nl_addr, AddrFree>;
using NftCtx = std::unique_ptr<nft_ctx, NftFree>;

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

class LinuxKernelImpl final : public Kernel {
 public:
  LinuxKernelImpl(NlSock route_socket, NftCtx nft)
      : route_socket_(std::move(route_socket)), nft_(std::move(nft)) {
    // libnl turns the kernel's errno into its own, coarser codes (ESRCH and
    // ENOENT both become "object not found"); this keeps the kernel's errno
    // and its extended-ack text ("Invalid prefsrc address") instead.
    nl_socket_modify_err_cb(route_socket_.get(), NL_CB_CUSTOM, &LinuxKernelImpl::OnError, this);
  }

  Status AddLocalRoute(const Ipv4Network& network) override {
    Route route;
    if (Status s = MakeRoute(network, /*exact=*/true, &route); !s.ok()) return s;
    return RouteStatus(rtnl_route_add(route_socket_.get(), route.get(), NLM_F_EXCL));
  }

  Status DeleteLocalRoute(const Ipv4Network& network, bool exact) override {
    Route route;
    if (Status s = MakeRoute(network, exact, &route); !s.ok()) return s;
    return RouteStatus(rtnl_route_delete(route_socket_.get(), route.get(), 0));
  }

  Status RunNft(const std::string& script) override {
    const int rc = nft_run_cmd_from_buffer(nft_.get(), script.c_str());
    MarkNetfilterSocketsCloseOnExec();      // in case a libnftables opens sockets lazily
    nft_ctx_get_output_buffer(nft_.get());  // reading resets the buffers
    const std::string errors = nft_ctx_get_error_buffer(nft_.get());
    if (rc == 0) return Status::Ok();
    return NftStatus(errors);
  }

  Status FindNftTable(const std::string& name, NftTable* table) override {
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
      s.message = nl_geterror(rc);
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
  int last_errno_ = 0;
  std::string last_extack_;
};

bool HasNetAdmin() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, data) != 0) return true;  // let the kernel decide
  return (data[CAP_NET_ADMIN / 32].effective & (1u << (CAP_NET_ADMIN % 32))) != 0;
}

}  // namespace

std::unique_ptr<Kernel> LinuxKernel(std::string* error) {
  // Checked first because libnftables, refused by the kernel, also prints
  // "Operation not permitted (you must be root)" to stderr by itself.
  if (!HasNetAdmin()) {
    *error =
        "cannot change routes and nftables in this network namespace: the process lacks "
        "CAP_NET_ADMIN (run tunnels as root, or give it that capability)";
    return nullptr;
  }
  NlSock route_socket(nl_socket_alloc());
  if (!route_socket) {
    *error = "cannot allocate a netlink socket: out of memory";
    return nullptr;
  }
  if (int rc = nl_connect(route_socket.get(), NETLINK_ROUTE); rc < 0) {
    *error = std::string("cannot open a netlink socket for routes: ") + nl_geterror(rc);
    return nullptr;
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
    return nullptr;
  }
  if (nft_ctx_buffer_output(nft.get()) != 0 || nft_ctx_buffer_error(nft.get()) != 0) {
    *error = "cannot set up the output buffers of libnftables";
    return nullptr;
  }
  return std::make_unique<LinuxKernelImpl>(std::move(route_socket), std::move(nft));
}

}  // namespace tunnels::netns
