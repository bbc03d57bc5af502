#include "netns/interception.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstdio>
#include <functional>
#include <utility>

namespace tunnels::netns {
namespace {

std::string Dotted(std::uint32_t address) {
  char text[INET_ADDRSTRLEN] = {};
  const in_addr a{htonl(address)};
  inet_ntop(AF_INET, &a, text, sizeof text);
  return text;
}

std::uint32_t HostMask(int prefix_length) {
  return prefix_length >= 32 ? 0 : (0xFFFFFFFFu >> prefix_length);
}

Ipv4Network Range(const InterceptionSpec& spec) { return {spec.network, spec.prefix_length}; }

std::string TableName(const InterceptionSpec& spec) { return "ip " + spec.table_name; }

std::string RouteText(const InterceptionSpec& spec) {
  return "local " + Range(spec).ToString() + " dev lo table local";
}

// The hint that goes with a failed change, by errno.
std::string Hint(const Status& s, const InterceptionSpec& spec) {
  if (s.error == EPERM || s.error == EACCES) {
    return " (changing routes and nftables needs CAP_NET_ADMIN in this network namespace: "
           "run tunnels as root)";
  }
  if (s.message.find("syntax error") != std::string::npos) {
    return " (nft cannot use '" + spec.table_name +
           "' as a table name, probably because it is a word of nft's language: set "
           "iptablesChain to another name, such as tunnels_redirects)";
  }
  if (s.error == ENOENT || s.error == EOPNOTSUPP) {
    // The kernel answers ENOENT for an expression whose module is missing,
    // and a process in a user namespace cannot have modules loaded.
    return " (the kernel lacks an nftables feature tunnels needs: nf_tables with the tproxy "
           "and reject expressions and owned tables, Linux 5.12 or later; as root on the "
           "host, `modprobe nft_tproxy nft_reject_ipv4` may help)";
  }
  return "";
}

std::string Failure(const std::string& what, const Status& s, const InterceptionSpec& spec) {
  return "cannot " + what + ": " + s.message + Hint(s, spec);
}

}  // namespace

struct Interception::Undo {
  std::string what;  // "delete the route ...", for messages
  std::function<Status(Kernel&)> run;
  int gone_error = 0;  // the errno that means "already gone"
};

std::string CheckSpec(const InterceptionSpec& spec) {
  if (spec.prefix_length < 1 || spec.prefix_length > 30) {
    return "the fake address range must be 1 to 30 bits long, not /" +
           std::to_string(spec.prefix_length);
  }
  if ((spec.network & HostMask(spec.prefix_length)) != 0) {
    return "the fake address range " + Range(spec).ToString() +
           " has host bits set; its network address is " +
           Ipv4Network{spec.network & ~HostMask(spec.prefix_length), spec.prefix_length}.ToString();
  }
  if (spec.listener_port == 0) return "the transparent listener's port must not be 0";
  const std::string& name = spec.table_name;
  bool ok = !name.empty() && name.size() <= 64;
  for (std::size_t i = 0; ok && i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    ok = letter || (i > 0 && (digit || c == '-'));
  }
  if (!ok) {
    return "'" + name +
           "' cannot be an nftables table name: it takes up to 64 letters, digits, '_' or "
           "'-', starting with a letter or '_' (set iptablesChain, e.g. to tunnels_redirects)";
  }
  return "";
}

std::uint32_t BlackholeAddress(const InterceptionSpec& spec) {
  return spec.network | HostMask(spec.prefix_length);
}

std::string NftScript(const InterceptionSpec& spec, bool replace_leftover) {
  const std::string table = TableName(spec);
  const std::string range = Range(spec).ToString();
  const std::string syn = "tcp flags & (fin|syn|rst|ack) == syn";
  char mark[16];
  std::snprintf(mark, sizeof mark, "0x%08x", kMark);
  char engine_mark[16];
  std::snprintf(engine_mark, sizeof engine_mark, "0x%08x", kEngineMark);
  return (replace_leftover ? "add table " + table + "\ndelete table " + table + "\n" : "") +
         "table " + table + " {\n" +  //
         (spec.owned ? "  flags owner\n" : "") +
         "  chain prerouting {\n"
         "    type filter hook prerouting priority mangle; policy accept;\n" +
         // Every packet of the machine passes this chain: the ones not for
         // the fake range (nearly all) leave it after one comparison.
         "    ip daddr != " + range + " accept\n" +  //
         // Only this host's own programs (whose packets to the range come
         // in on lo, by the local route) are intercepted: a neighbour that
         // routes the range via this host would have its connections carried
         // by the proxies and `direct`, and the local route would deliver
         // what tproxy left to any socket bound to 0.0.0.0. Dropped, as for
         // an address this host does not have.
         "    iif != \"lo\" drop\n" +
         // The engine's own connections (an upstream answer in the fake
         // range): refused, never handed back to it, which would nest
         // connections until the descriptors run out.
         "    meta mark & " + engine_mark + " == " + engine_mark + " meta l4proto tcp " +
         "reject with tcp reset\n" +                                                  //
         "    meta mark & " + engine_mark + " == " + engine_mark + " drop\n" +        //
         "    ip daddr " + Dotted(BlackholeAddress(spec)) + " " + syn +               //
         " reject with tcp reset\n" +                                                 //
         "    meta l4proto tcp tproxy to 127.0.0.1:" +                                //
         std::to_string(spec.listener_port) + " meta mark set meta mark | " + mark +  //
         " accept\n" +                                                                //
         // Reached when no listener took the connection (tproxy found no
         // socket): refused at once rather than left to time out.
         "    " + syn + " reject with tcp reset\n" +  //
         "    meta l4proto udp reject with icmp type port-unreachable\n" +
         "  }\n"
         "}\n";
}

Interception::Interception(InterceptionSpec spec, std::unique_ptr<Kernel> kernel)
    : spec_(std::move(spec)), kernel_(std::move(kernel)) {}

Interception::~Interception() { Remove(); }

void Interception::Abandon() { undo_.clear(); }

std::string Interception::Remove() {
  std::string errors;
  while (!undo_.empty()) {
    const Undo undo = std::move(undo_.back());
    undo_.pop_back();
    const Status s = undo.run(*kernel_);
    if (s.ok() || s.error == undo.gone_error) continue;
    if (!errors.empty()) errors += "; ";
    errors += Failure(undo.what, s, spec_);
  }
  return errors;
}

std::unique_ptr<Interception> Interception::Create(const InterceptionSpec& spec,
                                                   std::string* error) {
  // The spec first: a wrong name is worth reporting even without privileges.
  if (std::string why = CheckSpec(spec); !why.empty()) {
    *error = std::move(why);
    return nullptr;
  }
  std::unique_ptr<Kernel> kernel = LinuxKernel(error);
  if (!kernel) return nullptr;
  return Create(spec, std::move(kernel), error);
}

std::unique_ptr<Interception> Interception::Create(const InterceptionSpec& spec,
                                                   std::unique_ptr<Kernel> kernel,
                                                   std::string* error) {
  if (std::string why = CheckSpec(spec); !why.empty()) {
    *error = std::move(why);
    return nullptr;
  }
  // Not make_unique: the constructor is private.
  std::unique_ptr<Interception> self(new Interception(spec, std::move(kernel)));
  Kernel& k = *self->kernel_;
  const std::string table = TableName(spec);
  const Ipv4Network range = Range(spec);

  // On failure, undo what was done so far and report both.
  auto fail = [&](std::string message) -> std::unique_ptr<Interception> {
    if (std::string undo_errors = self->Remove(); !undo_errors.empty()) {
      message += "; undoing the earlier steps failed too: " + undo_errors;
    }
    *error = std::move(message);
    return nullptr;
  };

  // Before changing anything: a table that a running process owns is most
  // likely another tunnels, whose setup must not be taken over.
  NftTable found;
  if (Status s = k.FindNftTable(spec.table_name, &found); !s.ok()) {
    return fail(Failure("read the nftables table " + table, s, spec));
  }
  if (found.owned) {
    return fail("the nftables table " + table + " belongs to the running process " +
                (found.owner.empty() ? std::string("(name unknown)") : "'" + found.owner + "'") +
                ", most likely another tunnels; stop it first, or set iptablesChain to "
                "another name");
  }

  // 1. The table; a leftover of the same name goes in the same transaction.
  if (Status s = k.RunNft(NftScript(spec, found.exists)); !s.ok()) {
    return fail(Failure("create the nftables table " + table, s, spec));
  }
  self->undo_.push_back({"delete the nftables table " + table,
                         [name = table](Kernel& kk) { return kk.RunNft("delete table " + name); },
                         ENOENT});
  if (found.exists) {
    self->replaced_.push_back("replaced the leftover nftables table " + table +
                              " of an earlier instance");
  }

  // 2. The route; a leftover of tunnels' own (every attribute as it adds
  // them) goes first, as any route for the range in table local would make
  // the add fail. Anyone else's (an AnyIP route of the administrator's)
  // stays, and the add says so.
  if (Status s = k.DeleteLocalRoute(range, /*exact=*/true); s.ok()) {
    self->replaced_.push_back("replaced the leftover route " + RouteText(spec) +
                              " of an earlier instance");
  } else if (s.error != ESRCH) {
    return fail(Failure("remove the leftover route " + RouteText(spec), s, spec));
  }
  if (Status s = k.AddLocalRoute(range); !s.ok()) {
    std::string message = Failure("add the route " + RouteText(spec), s, spec);
    if (s.error == EEXIST) {
      message += " (table local has another route for " + range.ToString() +
                 ", see `ip route show table local`; remove it, or change privateAddresses)";
    }
    return fail(std::move(message));
  }
  self->undo_.push_back({"delete the route " + RouteText(spec),
                         [range](Kernel& kk) { return kk.DeleteLocalRoute(range, true); }, ESRCH});
  return self;
}

}  // namespace tunnels::netns
