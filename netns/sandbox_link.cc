#include "netns/sandbox_link.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "netns/file_io.h"

namespace tunnels::netns {
namespace {

constexpr char kForwardKey[] = "net.ipv4.ip_forward";
constexpr char kStateSuffix[] = ".state";
constexpr char kLockName[] = ".lock";

std::uint32_t HostMask(int prefix_length) {
  if (prefix_length <= 0) return 0xFFFFFFFFu;
  if (prefix_length >= 32) return 0;
  return 0xFFFFFFFFu >> prefix_length;
}

std::string Quoted(const std::string& name) { return "\"" + name + "\""; }

// Which kind of change failed, for the hint.
enum class What { kLink, kAddress, kRoute, kNft, kState, kOther };

std::string Hint(const Status& s, What what, const SandboxLinkSpec& spec) {
  if (s.error == EPERM || s.error == EACCES) {
    if (what == What::kState) {
      return " (the state directory " + spec.state_dir + " must be writable: run tunnels as root)";
    }
    return " (changing interfaces, routes and nftables needs CAP_NET_ADMIN in the caller's "
           "network namespace and in the sandbox's: run tunnels as root)";
  }
  if (what == What::kNft && s.message.find("syntax error") != std::string::npos) {
    return " (nft cannot use '" + spec.table_name +
           "' as a table name, probably because it is a word of nft's language: choose another "
           "name)";
  }
  if (what == What::kNft && (s.error == ENOENT || s.error == EOPNOTSUPP)) {
    // The kernel answers ENOENT for an expression whose module is missing,
    // and a process in a user namespace cannot have modules loaded.
    return " (the kernel lacks an nftables feature tunnels needs: nf_tables with NAT "
           "(masquerade), conntrack and owned tables, Linux 5.12 or later; as root on the host, "
           "`modprobe nft_chain_nat nft_masq nft_ct` may help)";
  }
  if (what == What::kLink && (s.error == EOPNOTSUPP || s.error == ENOENT)) {
    return " (the kernel lacks veth interfaces: as root on the host, `modprobe veth` may help)";
  }
  if (what == What::kLink && s.error == EEXIST) {
    return " (an interface of one of these names exists here or in the sandbox; see `ip link`)";
  }
  if (what == What::kState && s.error == EROFS) {
    return " (" + spec.state_dir + " is read-only)";
  }
  return "";
}

std::string Failure(const std::string& what, const Status& s, What kind,
                    const SandboxLinkSpec& spec) {
  return "cannot " + what + ": " + s.message + Hint(s, kind, spec);
}

bool ValidName(const std::string& name, std::size_t max, bool dash_first_ok) {
  bool ok = !name.empty() && name.size() <= max;
  for (std::size_t i = 0; ok && i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    ok = letter || ((i > 0 || dash_first_ok) && (digit || c == '-'));
  }
  return ok;
}

// ---------------------------------------------------------------------------
// State files
// ---------------------------------------------------------------------------

// What one instance recorded before its first change.
struct Record {
  std::string pid;
  std::string netns;           // Kernel::NetnsId() of the caller's namespace
  std::string table;           // nftables table ip NAME
  std::string link;            // the caller's end of the veth pair
  std::string network;         // the /30, for people reading the file
  std::string forward_before;  // ip_forward's value before ("0": someone must turn it off)
  std::string forward_side;    // ForwardingSideSettings, when forward_before is "0"
};

std::string Serialize(const Record& r) {
  return "# tunnels run: what this instance changed in its network namespace\n"
         "# (see netns/sandbox_link.h); removed when it exits.\n"
         "pid=" +
         r.pid + "\nnetns=" + r.netns + "\ntable=" + r.table + "\nlink=" + r.link +
         "\nnetwork=" + r.network + "\nip_forward_before=" + r.forward_before +
         "\nip_forward_side=" + r.forward_side + "\n";
}

bool Parse(const std::string& text, Record* r) {
  std::map<std::string, std::string> values;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.empty() || line[0] == '#') continue;
    const std::size_t eq = line.find('=');
    if (eq == std::string::npos) return false;
    values[line.substr(0, eq)] = line.substr(eq + 1);
  }
  r->pid = values["pid"];
  r->netns = values["netns"];
  r->table = values["table"];
  r->link = values["link"];
  r->network = values["network"];
  r->forward_before = values["ip_forward_before"];
  r->forward_side = values["ip_forward_side"];  // absent in files of older versions
  return !r->netns.empty() && ValidName(r->table, 64, false) && ValidName(r->link, 15, false) &&
         (r->forward_before == "0" || r->forward_before == "1");
}

// The state directory's lock, held while state files are created, examined
// or removed, so that two instances starting together do not pick the same
// /30 or miss each other's records.
class DirLock {
 public:
  static Status Take(const std::string& dir, DirLock* lock) {
    // One level is enough for /run/tunnels; tests pass directories that exist.
    if (std::string why = PrepareStateDirectory(dir); !why.empty()) return Status{0, why};
    const std::string path = dir + "/" + kLockName;
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd) return Status::Errno(errno);
    int rc;
    do {
      rc = ::flock(fd.get(), LOCK_EX);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return Status::Errno(errno);
    lock->fd_ = std::move(fd);
    return Status::Ok();
  }

 private:
  UniqueFd fd_;  // closing it releases the lock
};

// One state file found in the directory.
struct Entry {
  std::string path;
  bool live = false;    // its instance holds its flock
  bool parsed = false;  // Record is valid
  Record record;
  UniqueFd fd;  // for a stale one: open, with its flock held by us
};

// The state files of `dir` but `except` (this instance's own). Call with
// the DirLock held.
std::vector<Entry> Scan(const std::string& dir, const std::string& except) {
  std::vector<Entry> entries;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return entries;
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const std::size_t n = std::strlen(kStateSuffix);
    if (name.size() > n && name.compare(name.size() - n, n, kStateSuffix) == 0) {
      names.push_back(name);
    }
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    Entry entry;
    entry.path = dir + "/" + name;
    if (entry.path == except) continue;
    UniqueFd fd(::open(entry.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) continue;
    // An flock conflicts with any other open file description, also one of
    // this process: a live instance in this very process counts as live.
    entry.live = ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    std::string text;
    entry.parsed = ReadAll(fd.get(), &text) && Parse(text, &entry.record);
    if (!entry.live) entry.fd = std::move(fd);
    entries.push_back(std::move(entry));
  }
  return entries;
}

bool HasStateFiles(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return errno != ENOENT;  // let the real attempt report it
  bool found = false;
  const std::size_t n = std::strlen(kStateSuffix);
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() > n && name.compare(name.size() - n, n, kStateSuffix) == 0) found = true;
  }
  ::closedir(d);
  return found;
}

bool AnyLive(const std::vector<Entry>& entries, const std::string& netns) {
  return std::any_of(entries.begin(), entries.end(),
                     [&](const Entry& e) { return e.live && e.parsed && e.record.netns == netns; });
}

std::string Join(std::string a, const std::string& b) {
  if (b.empty()) return a;
  if (!a.empty()) a += "; ";
  return a + b;
}

// After ip_forward went back to 0: the parameters that this rewrote, as
// they were before it was turned on. "" or the failures.
std::string RestoreSideAfterForwardingOff(const std::string& side, const std::string& sysctl_root) {
  std::string value, e;
  if (!Sysctl::Get(kForwardKey, &value, &e, sysctl_root)) return e;
  if (value != "0") return "";  // turned on again by someone else: theirs now
  return RestoreForwardingSideSettings(side, sysctl_root);
}

// Undoes what a stale record says. `keep_forwarding`: a live instance (or
// the one being created) needs ip_forward. Returns "" or the failures.
std::string CleanupOne(const Entry& entry, bool keep_forwarding, Kernel& k,
                       const std::string& sysctl_root, std::vector<std::string>* notes) {
  const Record& r = entry.record;
  const std::string who =
      "the killed instance " + entry.path + (r.pid.empty() ? "" : " (pid " + r.pid + ")");
  std::string errors;
  SandboxLinkSpec spec;  // for hints only
  spec.table_name = r.table;

  if (r.forward_before == "0" && !keep_forwarding) {
    std::string value, e;
    if (!Sysctl::Get(kForwardKey, &value, &e, sysctl_root)) {
      errors = Join(errors, e);
    } else if (value == "1") {
      std::unique_ptr<Sysctl> forward = Sysctl::Adopt(kForwardKey, "1", "0", &e, sysctl_root);
      if (!forward) {
        errors = Join(errors, e);
      } else if (std::string w = forward->Restore(); !w.empty()) {
        errors = Join(errors, w);
      } else if (std::string w2 = RestoreSideAfterForwardingOff(r.forward_side, sysctl_root);
                 !w2.empty()) {
        errors = Join(errors, w2);
      } else {
        notes->push_back(
            "set net.ipv4.ip_forward back to 0, which " + who + " had turned on" +
            (r.forward_side.empty() ? std::string() : ", and wrote back " + r.forward_side));
      }
    }
  }

  NftTable table;
  if (Status s = k.FindNftTable(r.table, &table); !s.ok()) {
    errors = Join(errors, Failure("read the nftables table ip " + r.table, s, What::kNft, spec));
  } else if (table.owned) {
    // Only its owner may change it, and it goes when that process exits.
    notes->push_back(
        "left the nftables table ip " + r.table + " of " + who + " alone: the running process " +
        (table.owner.empty() ? std::string("(name unknown)") : "'" + table.owner + "'") +
        " owns it");
  } else if (table.exists) {
    if (Status s2 = k.RunNft("delete table ip " + r.table); !s2.ok() && s2.error != ENOENT) {
      errors =
          Join(errors, Failure("delete the nftables table ip " + r.table, s2, What::kNft, spec));
    } else {
      notes->push_back("removed the nftables table ip " + r.table + " of " + who);
    }
  }

  LinkInfo link;
  if (Status s = k.FindLink(r.link, &link); !s.ok()) {
    errors = Join(errors, Failure("look up the interface " + r.link, s, What::kLink, spec));
  } else if (link.exists && (link.group != kSandboxLinkGroup || link.kind != "veth")) {
    notes->push_back("left the interface " + r.link + " alone: it is not a tunnels veth (group " +
                     std::to_string(link.group) + ", kind '" + link.kind + "')");
  } else if (link.exists) {
    if (Status s2 = k.DeleteLink(r.link); !s2.ok() && s2.error != ENODEV) {
      errors = Join(errors, Failure("delete the interface " + r.link, s2, What::kLink, spec));
    } else {
      notes->push_back("removed the veth pair " + r.link + " of " + who);
    }
  }
  return errors;
}

// CleanupStale with the DirLock held; `self_needs_forwarding` for Create.
// `inherit_zero` (may be null): set when a record of this namespace, live or
// stale, says ip_forward was 0 before tunnels turned it on.
std::string CleanupLocked(const std::string& dir, Kernel& k, const std::string& sysctl_root,
                          bool self_needs_forwarding, std::vector<std::string>* notes,
                          bool* inherit_zero, std::string* inherit_side = nullptr) {
  std::vector<Entry> entries = Scan(dir, "");
  const std::string netns = k.NetnsId();
  const bool keep_forwarding = self_needs_forwarding || AnyLive(entries, netns);
  std::string errors;
  for (Entry& e : entries) {
    if (e.parsed && e.record.netns == netns && e.record.forward_before == "0" && inherit_zero) {
      *inherit_zero = true;
      if (inherit_side && inherit_side->empty()) *inherit_side = e.record.forward_side;
    }
    if (e.live) continue;
    if (!e.parsed) {
      // Written in one write() before the first change: a file without a
      // complete record is not tunnels' or changed nothing.
      notes->push_back("removed " + e.path + ", which is not a complete state file");
      ::unlink(e.path.c_str());
      continue;
    }
    if (e.record.netns != netns) {
      notes->push_back("left " + e.path + " alone: it belongs to another network namespace (" +
                       e.record.netns + ")");
      continue;
    }
    const std::string failed = CleanupOne(e, keep_forwarding, k, sysctl_root, notes);
    if (failed.empty()) {
      ::unlink(e.path.c_str());
    } else {
      errors = Join(errors, failed + " (" + e.path + " stays for another try)");
    }
  }
  return errors;
}

}  // namespace

// ---------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------

std::string ForwardingSideSettings(const std::string& sysctl_root) {
  std::string out;
  auto keep = [&](const std::string& path, const char* after_off) {
    std::string value, e;
    if (Sysctl::Get(path, &value, &e, sysctl_root) && value != after_off) {
      out += (out.empty() ? "" : " ") + path + ":" + value;
    }
  };
  keep("net/ipv4/conf/all/accept_redirects", "1");
  keep("net/ipv4/conf/default/forwarding", "0");
  std::vector<std::string> names;
  if (DIR* d = ::opendir((sysctl_root + "/net/ipv4/conf").c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != ".." && name != "all" && name != "default") {
        names.push_back(name);
      }
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) keep("net/ipv4/conf/" + name + "/forwarding", "0");
  return out;
}

std::string RestoreForwardingSideSettings(const std::string& settings,
                                          const std::string& sysctl_root) {
  // Checked whole first: the state file is root's, but what it names is
  // written as root, so only these parameters, with numbers.
  std::vector<std::pair<std::string, std::string>> writes;
  std::size_t at = 0;
  while (at < settings.size()) {
    std::size_t end = settings.find(' ', at);
    if (end == std::string::npos) end = settings.size();
    const std::string word = settings.substr(at, end - at);
    at = end + 1;
    if (word.empty()) continue;
    const std::size_t colon = word.rfind(':');
    const std::string path = word.substr(0, colon == std::string::npos ? 0 : colon);
    const std::string value = colon == std::string::npos ? "" : word.substr(colon + 1);
    const std::string prefix = "net/ipv4/conf/";
    const std::string name = path.substr(0, path.rfind('/'));
    const bool known =
        path == "net/ipv4/conf/all/accept_redirects" ||
        (path.starts_with(prefix) && path.ends_with("/forwarding") && name.size() > prefix.size() &&
         name != prefix + "all" && name.find('/', prefix.size()) == std::string::npos);
    const bool number =
        !value.empty() && value.size() <= 3 &&
        std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!known || !number) return "malformed forwarding setting '" + word + "' in a state file";
    writes.emplace_back(path, value);
  }
  std::string errors;
  for (const auto& [path, value] : writes) {
    std::string e;
    // An interface that is gone took its setting with it.
    struct stat st {};
    if (::stat((sysctl_root + "/" + path).c_str(), &st) != 0 && errno == ENOENT) continue;
    if (std::unique_ptr<Sysctl> set = Sysctl::Set(path, value, &e, sysctl_root)) {
      set->Release();  // written for good: this is the undo
    } else {
      errors = Join(errors, e);
    }
  }
  return errors;
}

std::vector<std::string> ForwardDropChains(const std::string& listing) {
  std::vector<std::string> found;
  std::string table, chain;
  std::string_view text = listing;
  while (!text.empty()) {
    std::string_view line = text.substr(0, text.find('\n'));
    text.remove_prefix(std::min(text.size(), line.size() + 1));
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.starts_with("table ")) {
      // "table ip filter {" (or "table inet ufw {"): "ip filter".
      std::string_view rest = line.substr(6);
      rest = rest.substr(0, rest.find(" {"));
      table = rest.starts_with("ip ") || rest.starts_with("inet ") ? std::string(rest) : "";
    } else if (line.starts_with("chain ")) {
      std::string_view rest = line.substr(6);
      chain = std::string(rest.substr(0, rest.find(" {")));
    } else if (!table.empty() && line.find("hook forward") != std::string_view::npos &&
               line.find("policy drop") != std::string_view::npos) {
      found.push_back(table + " " + chain);
    }
  }
  return found;
}

std::string CheckSandboxLinkSpec(const SandboxLinkSpec& spec) {
  if (spec.sandbox_netns_fd < 0) {
    return "no file descriptor of the sandbox's network namespace (got " +
           std::to_string(spec.sandbox_netns_fd) + ")";
  }
  if (!spec.outbound) return "";
  if (!ValidName(spec.name_prefix, 14, false)) {
    return "'" + spec.name_prefix +
           "' cannot be an interface name prefix: it takes 1 to 14 letters, digits, '_' or '-', "
           "starting with a letter or '_' (the interfaces are <prefix>h and <prefix>s)";
  }
  if (!ValidName(spec.table_name, 64, false)) {
    return "'" + spec.table_name +
           "' cannot be an nftables table name: it takes up to 64 letters, digits, '_' or '-', "
           "starting with a letter or '_'";
  }
  const Ipv4Network range{spec.link_range, spec.link_range_length};
  if (range.prefix_length < 1 || range.prefix_length > 30) {
    return "the link range must be 1 to 30 bits long, not /" + std::to_string(range.prefix_length);
  }
  if ((range.address & HostMask(range.prefix_length)) != 0) {
    return "the link range " + range.ToString() + " has host bits set; its network address is " +
           Ipv4Network{range.address & ~HostMask(range.prefix_length), range.prefix_length}
               .ToString();
  }
  // Addresses that cannot be an ordinary link's: "this network", loopback,
  // link-local, multicast and reserved.
  for (const Ipv4Network bad : {Ipv4Network{0x00000000u, 8}, Ipv4Network{0x7F000000u, 8},
                                Ipv4Network{0xA9FE0000u, 16}, Ipv4Network{0xE0000000u, 3}}) {
    const int shorter = std::min(bad.prefix_length, range.prefix_length);
    if (((bad.address ^ range.address) & ~HostMask(shorter)) == 0) {
      return "the link range " + range.ToString() + " overlaps " + bad.ToString() +
             ", which ordinary interfaces cannot use; choose another, such as 100.64.0.0/10";
    }
  }
  if (spec.state_dir.empty() || spec.state_dir.front() != '/') {
    return "the state directory must be an absolute path, not '" + spec.state_dir + "'";
  }
  return "";
}

bool ChooseLinkNetwork(const Ipv4Network& range, const std::vector<Ipv4Network>& routes,
                       const std::vector<Ipv4Network>& addresses, Ipv4Network* chosen) {
  // Taken intervals [first, last + 1) as 64-bit numbers, so that the end of
  // 255.255.255.252/30 does not wrap.
  using Interval = std::pair<std::uint64_t, std::uint64_t>;
  std::vector<Interval> taken;
  const auto take = [&](const Ipv4Network& n) {
    if (n.prefix_length < range.prefix_length) return;  // broader than the range
    const std::uint32_t mask = HostMask(n.prefix_length);
    const std::uint64_t first = n.address & ~mask;
    taken.emplace_back(first, first + std::uint64_t{mask} + 1);
  };
  for (const Ipv4Network& r : routes) take(r);
  for (const Ipv4Network& a : addresses) {
    take({a.address, 32});
    take(a);
  }
  std::sort(taken.begin(), taken.end());
  const std::uint64_t start = range.address & ~HostMask(range.prefix_length);
  const std::uint64_t end = start + std::uint64_t{HostMask(range.prefix_length)} + 1;
  std::uint64_t candidate = start;
  for (const Interval& t : taken) {
    if (t.second <= candidate) continue;
    if (t.first >= candidate + 4) break;  // sorted: nothing later overlaps either
    candidate = (t.second + 3) & ~std::uint64_t{3};
  }
  if (candidate + 4 > end) return false;
  *chosen = {static_cast<std::uint32_t>(candidate), 30};
  return true;
}

std::string SandboxLinkNftScript(const SandboxLinkSpec& spec, const Ipv4Network& network,
                                 bool drop_other_forwarding, bool replace_leftover) {
  const std::string table = "ip " + spec.table_name;
  const std::string veth = Quoted(spec.name_prefix + "h");
  const std::string group = std::to_string(kSandboxLinkGroup);
  std::string script =
      (replace_leftover ? "add table " + table + "\ndelete table " + table + "\n" : "") + "table " +
      table + " {\n" +  //
      "  flags owner\n"
      "  chain postrouting {\n"
      "    type nat hook postrouting priority srcnat; policy accept;\n" +
      "    ip saddr " + network.ToString() + " oifname != " + veth + " masquerade\n" +
      "  }\n"
      "  chain forward {\n"
      "    type filter hook forward priority filter; policy accept;\n" +
      "    iifgroup " + group + " oifgroup " + group + " drop\n" + "    iifname " + veth +
      " accept\n" + "    oifname " + veth + " ct state established,related accept\n";
  if (drop_other_forwarding) {
    script += "    iifgroup " + group + " accept\n" +                               //
              "    oifgroup " + group + " ct state established,related accept\n" +  //
              "    drop\n";
  }
  return script + "  }\n}\n";
}

// ---------------------------------------------------------------------------
// SandboxLink
// ---------------------------------------------------------------------------

struct SandboxLink::Undo {
  std::string what;  // "delete the interface ...", for messages
  What kind = What::kOther;
  std::function<Status()> run;
  int gone_error = 0;          // the errno that means "already gone"
  bool only_if_clean = false;  // skipped when an earlier undo failed (the state file)
  // May run on another thread at the same time as the undo after it (in
  // the order of undoing): an RunNft beside a link call; see Kernel::RunNft.
  bool overlaps_next = false;
};

SandboxLink::SandboxLink(SandboxLinkSpec spec, std::unique_ptr<Kernel> caller)
    : spec_(std::move(spec)), caller_(std::move(caller)) {}

SandboxLink::~SandboxLink() { Remove(); }

Status SandboxLink::RestoreForwarding() {
  // Another live instance of this namespace needs forwarding on; it
  // recorded ip_forward as 0 too (it started while this one was live), so
  // it will turn it off.
  if (AnyLive(Scan(spec_.state_dir, state_path_), caller_->NetnsId())) {
    forwarding_->Release();
    return Status::Ok();
  }
  if (std::string e = forwarding_->Restore(); !e.empty()) return Status{0, e};
  if (std::string e = RestoreSideAfterForwardingOff(forwarding_side_, spec_.sysctl_root);
      !e.empty()) {
    return Status{0, e};
  }
  return Status::Ok();
}

std::string SandboxLink::Remove() {
  if (undo_.empty()) return "";
  // Held across the forwarding decision and the state file's removal.
  // Without it (the directory is gone), undo what can be undone anyway.
  DirLock lock;
  if (!state_path_.empty()) DirLock::Take(spec_.state_dir, &lock);
  std::string errors;
  auto note = [&](const Undo& undo, const Status& s) {
    if (s.ok() || s.error == undo.gone_error) return;
    errors = Join(errors, Failure(undo.what, s, undo.kind, spec_));
  };
  while (!undo_.empty()) {
    const Undo undo = std::move(undo_.back());
    undo_.pop_back();
    if (undo.only_if_clean && !errors.empty()) continue;
    if (undo.overlaps_next && spec_.overlap_teardown && !undo_.empty()) {
      const Undo next = std::move(undo_.back());
      undo_.pop_back();
      Status first;
      std::thread beside([&] { first = undo.run(); });
      const Status second = next.run();
      beside.join();
      note(undo, first);
      note(next, second);
      continue;
    }
    note(undo, undo.run());
  }
  forwarding_.reset();
  if (!errors.empty() && !state_path_.empty()) {
    errors += " (" + state_path_ + " stays, for `CleanupStale` once this process is gone)";
  }
  state_fd_.Reset();  // releases the flock: from now on the file, if any, is stale
  return errors;
}

std::unique_ptr<SandboxLink> SandboxLink::Create(const SandboxLinkSpec& spec, std::string* error) {
  // The spec first: a wrong name is worth reporting even without privileges.
  if (std::string why = CheckSandboxLinkSpec(spec); !why.empty()) {
    *error = std::move(why);
    return nullptr;
  }
  std::unique_ptr<Kernel> caller;
  if (spec.outbound) {
    caller = LinuxKernel(error);
    if (!caller) return nullptr;
  }
  std::unique_ptr<Kernel> sandbox = LinuxKernelIn(spec.sandbox_netns_fd, error);
  if (!sandbox) {
    *error = "in the sandbox's network namespace: " + *error;
    return nullptr;
  }
  return Create(spec, std::move(caller), std::move(sandbox), error);
}

std::unique_ptr<SandboxLink> SandboxLink::Create(const SandboxLinkSpec& spec,
                                                 std::unique_ptr<Kernel> caller,
                                                 std::unique_ptr<Kernel> sandbox,
                                                 std::string* error) {
  if (std::string why = CheckSandboxLinkSpec(spec); !why.empty()) {
    *error = std::move(why);
    return nullptr;
  }
  // Not make_unique: the constructor is private.
  std::unique_ptr<SandboxLink> self(new SandboxLink(spec, std::move(caller)));
  // The state directory's lock, held from the first look at the state files
  // to the last change; Remove takes it itself.
  DirLock lock;
  auto fail = [&](std::string message) -> std::unique_ptr<SandboxLink> {
    lock = DirLock();
    if (std::string undo_errors = self->Remove(); !undo_errors.empty()) {
      message += "; undoing the earlier steps failed too: " + undo_errors;
    }
    *error = std::move(message);
    return nullptr;
  };
  Kernel& s = *sandbox;

  if (!spec.outbound) {
    // Strict: nothing here. The sandbox's own programs and tunnels'
    // listeners in it need lo; without another interface there is no route
    // out, so connecting anywhere else fails at once with ENETUNREACH.
    if (Status st = s.SetLinkUp("lo"); !st.ok()) {
      return fail(Failure("bring up lo in the sandbox", st, What::kLink, spec));
    }
    return self;
  }

  Kernel& k = *self->caller_;
  self->caller_if_ = spec.name_prefix + "h";
  self->sandbox_if_ = spec.name_prefix + "s";
  const std::string& host_if = self->caller_if_;
  const std::string& sandbox_if = self->sandbox_if_;
  const std::string table = "ip " + spec.table_name;
  const std::string state_path = spec.state_dir + "/" + spec.name_prefix + kStateSuffix;

  if (Status st = DirLock::Take(spec.state_dir, &lock); !st.ok()) {
    return fail(Failure("lock the state directory " + spec.state_dir, st, What::kState, spec));
  }

  // Stale instances first: their /30s, tables and interfaces are free then.
  // One with our own state file's name (our pid, reused) is one of them.
  bool inherit_zero = false;
  std::string inherit_side;
  if (std::string e = CleanupLocked(spec.state_dir, k, spec.sysctl_root,
                                    /*self_needs_forwarding=*/true, &self->notes_, &inherit_zero,
                                    &inherit_side);
      !e.empty()) {
    return fail("cannot clean up after a killed instance: " + e);
  }

  // A live instance with our names (the same prefix, in this process or
  // under a reused pid elsewhere): nothing of it is a leftover.
  if (UniqueFd fd(::open(state_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
      fd && ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
    return fail("another instance with the name prefix " + spec.name_prefix +
                " is running (its state file " + state_path +
                " is locked); choose another name prefix");
  }

  // Leftovers with our names that no state file recorded.
  NftTable found;
  if (Status st = k.FindNftTable(spec.table_name, &found); !st.ok()) {
    return fail(Failure("read the nftables table " + table, st, What::kNft, spec));
  }
  if (found.owned) {
    return fail("the nftables table " + table + " belongs to the running process " +
                (found.owner.empty() ? std::string("(name unknown)") : "'" + found.owner + "'") +
                ", most likely another tunnels; stop it first, or choose another table name");
  }
  LinkInfo link;
  if (Status st = k.FindLink(host_if, &link); !st.ok()) {
    return fail(Failure("look up the interface " + host_if, st, What::kLink, spec));
  }
  if (link.exists && (link.group != kSandboxLinkGroup || link.kind != "veth")) {
    return fail("cannot create the veth pair " + host_if + "/" + sandbox_if +
                ": an interface named " + host_if +
                " exists and is not a tunnels veth (see `ip "
                "link show " +
                host_if + "`); remove it, or choose another name prefix");
  }
  if (link.exists) {
    if (Status st = k.DeleteLink(host_if); !st.ok() && st.error != ENODEV) {
      return fail(Failure("remove the leftover veth pair " + host_if, st, What::kLink, spec));
    }
    self->notes_.push_back("removed the leftover veth pair " + host_if + " of an earlier instance");
  }

  // 1. The /30.
  std::vector<Ipv4Network> routes, addresses;
  if (Status st = k.ListRoutes(&routes); !st.ok()) {
    return fail(Failure("list the routes", st, What::kRoute, spec));
  }
  if (Status st = k.ListAddresses(&addresses); !st.ok()) {
    return fail(Failure("list the addresses", st, What::kAddress, spec));
  }
  const Ipv4Network range{spec.link_range, spec.link_range_length};
  if (!ChooseLinkNetwork(range, routes, addresses, &self->network_)) {
    return fail("cannot choose an address for the sandbox's link: every /30 of " +
                range.ToString() +
                " overlaps a route or an address here (see `ip route show table all` and `ip "
                "address`); choose another link range");
  }
  const Ipv4Network net = self->network_;
  const Ipv4Network host_address{net.address + 1, 30};
  const Ipv4Network sandbox_address{net.address + 2, 30};

  // Forwarding: what it is, and what it was before tunnels (see the header).
  std::string forward_now;
  if (std::string e; !Sysctl::Get(kForwardKey, &forward_now, &e, spec.sysctl_root)) {
    return fail(std::move(e));
  }
  const bool was_off = forward_now == "0" || inherit_zero;
  self->drop_others_ = was_off;
  // What turning it off again will have to write back: as it is now, or
  // as the instance that turned it on recorded it.
  if (forward_now == "0") {
    self->forwarding_side_ = ForwardingSideSettings(spec.sysctl_root);
  } else if (was_off) {
    self->forwarding_side_ = inherit_side;
  }

  // The state file, before the first change: from here on a SIGKILL leaves
  // a record for CleanupStale.
  {
    // Truncated only once locked: a live file of that name is not ours to spoil.
    UniqueFd fd(::open(state_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd) {
      return fail(
          Failure("create the state file " + state_path, Status::Errno(errno), What::kState, spec));
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      return fail(
          Failure("lock the state file " + state_path, Status::Errno(errno), What::kState, spec) +
          " (another instance with the name prefix " + spec.name_prefix + " started meanwhile)");
    }
    Record r;
    r.pid = std::to_string(::getpid());
    r.netns = k.NetnsId();
    r.table = spec.table_name;
    r.link = host_if;
    r.network = net.ToString();
    r.forward_before = was_off ? "0" : "1";
    r.forward_side = self->forwarding_side_;
    if (::ftruncate(fd.get(), 0) != 0 || !WriteAll(fd.get(), Serialize(r))) {
      const Status st = Status::Errno(errno);
      ::unlink(state_path.c_str());
      return fail(Failure("write the state file " + state_path, st, What::kState, spec));
    }
    self->state_path_ = state_path;
    self->state_fd_ = std::move(fd);
  }
  self->undo_.push_back({"remove the state file " + state_path, What::kState,
                         [path = state_path] {
                           return ::unlink(path.c_str()) == 0 ? Status::Ok() : Status::Errno(errno);
                         },
                         ENOENT, /*only_if_clean=*/true});

  // 2. The veth pair, the sandbox's end created in its namespace.
  if (Status st = k.AddVethPair(host_if, sandbox_if, spec.sandbox_netns_fd, kSandboxLinkGroup);
      !st.ok()) {
    return fail(
        Failure("create the veth pair " + host_if + "/" + sandbox_if, st, What::kLink, spec));
  }
  // It also goes when the sandbox's namespace is destroyed.
  self->undo_.push_back({"delete the veth pair " + host_if, What::kLink,
                         [&k, host_if] { return k.DeleteLink(host_if); }, ENODEV});

  // 3. Both ends: no IPv6 (before they come up, so that not even a
  // link-local address appears; ENOENT: no IPv6 in this kernel), address,
  // up; then the sandbox's lo and default route.
  const auto no_ipv6 = [](Kernel& kk, const std::string& ifname) {
    Status st = kk.WriteSysctl("net/ipv6/conf/" + ifname + "/disable_ipv6", "1");
    return st.error == ENOENT ? Status::Ok() : st;
  };
  if (Status st = no_ipv6(k, host_if); !st.ok()) {
    return fail(Failure("disable IPv6 on " + host_if, st, What::kLink, spec));
  }
  if (Status st = k.AddAddress(host_if, host_address); !st.ok()) {
    return fail(Failure("add the address " + host_address.ToString() + " to " + host_if, st,
                        What::kAddress, spec));
  }
  if (Status st = k.SetLinkUp(host_if); !st.ok()) {
    return fail(Failure("bring up " + host_if, st, What::kLink, spec));
  }
  if (Status st = s.SetLinkUp("lo"); !st.ok()) {
    return fail(Failure("bring up lo in the sandbox", st, What::kLink, spec));
  }
  if (Status st = no_ipv6(s, sandbox_if); !st.ok()) {
    return fail(
        Failure("disable IPv6 on " + sandbox_if + " in the sandbox", st, What::kLink, spec));
  }
  if (Status st = s.AddAddress(sandbox_if, sandbox_address); !st.ok()) {
    return fail(Failure(
        "add the address " + sandbox_address.ToString() + " to " + sandbox_if + " in the sandbox",
        st, What::kAddress, spec));
  }
  if (Status st = s.SetLinkUp(sandbox_if); !st.ok()) {
    return fail(Failure("bring up " + sandbox_if + " in the sandbox", st, What::kLink, spec));
  }
  if (Status st = s.AddDefaultRoute(host_address.address, sandbox_if); !st.ok()) {
    return fail(Failure("add the route default via " + Ipv4AddressString(host_address.address) +
                            " dev " + sandbox_if + " in the sandbox",
                        st, What::kRoute, spec));
  }

  // 4. NAT and forwarding rules; a leftover table of the same name goes in
  // the same transaction.
  if (Status st = k.RunNft(SandboxLinkNftScript(spec, net, was_off, found.exists)); !st.ok()) {
    return fail(Failure("create the nftables table " + table, st, What::kNft, spec));
  }
  // It also goes with its owner, this Kernel's socket.
  self->undo_.push_back({"delete the nftables table " + table, What::kNft,
                         [&k, name = table] { return k.RunNft("delete table " + name); }, ENOENT,
                         /*only_if_clean=*/false, /*overlaps_next=*/true});
  if (found.exists) {
    self->notes_.push_back("replaced the leftover nftables table " + table +
                           " of an earlier instance");
  }

  // Another firewall that drops what is forwarded (Docker's and ufw's
  // FORWARD policy) would drop the sandbox's traffic whatever our table
  // accepts: say so now, not as a silent timeout later. Best effort.
  if (std::string listing; k.ListNftChains(&listing).ok()) {
    for (const std::string& chain : ForwardDropChains(listing)) {
      self->warnings_.push_back(
          "the nftables chain " + chain +
          " drops forwarded packets by policy (as Docker and ufw set it), so the sandbox's "
          "connections that no rule sends through a proxy will time out; allow the sandboxes' "
          "interfaces, which are all in group " +
          std::to_string(kSandboxLinkGroup) + ", there: nft insert rule " + chain + " iifgroup " +
          std::to_string(kSandboxLinkGroup) + " accept; nft insert rule " + chain + " oifgroup " +
          std::to_string(kSandboxLinkGroup) + " accept");
    }
  }

  // 5. IPv4 forwarding, last: the rules are in place by now.
  if (forward_now == "0") {
    std::string e;
    self->forwarding_ = Sysctl::Set(kForwardKey, "1", &e, spec.sysctl_root);
    if (!self->forwarding_) return fail(std::move(e));
  } else if (was_off) {
    // Turned on by an instance that recorded 0 before: the last one turns it off.
    std::string e;
    self->forwarding_ = Sysctl::Adopt(kForwardKey, "1", "0", &e, spec.sysctl_root);
  }
  if (self->forwarding_) {
    self->undo_.push_back({"set net.ipv4.ip_forward back to 0", What::kOther,
                           [raw = self.get()] { return raw->RestoreForwarding(); }, 0});
  }
  return self;
}

std::string SandboxLink::CleanupStale(const std::string& state_dir,
                                      std::vector<std::string>* notes) {
  // Without a state file there is nothing to do, and no need for privileges
  // (`tunnels cleanup` run by an ordinary user on a clean machine).
  if (!HasStateFiles(state_dir)) return "";
  std::string error;
  std::unique_ptr<Kernel> caller = LinuxKernel(&error);
  if (!caller) return error;
  return CleanupStale(state_dir, *caller, "/proc/sys", notes);
}

std::string SandboxLink::CleanupStale(const std::string& state_dir, Kernel& caller,
                                      const std::string& sysctl_root,
                                      std::vector<std::string>* notes) {
  std::vector<std::string> ignored;
  if (notes == nullptr) notes = &ignored;
  struct stat st {};
  if (::stat(state_dir.c_str(), &st) != 0 && errno == ENOENT) return "";  // nothing ever ran
  DirLock lock;
  SandboxLinkSpec spec;
  spec.state_dir = state_dir;
  if (Status s = DirLock::Take(state_dir, &lock); !s.ok()) {
    return Failure("lock the state directory " + state_dir, s, What::kState, spec);
  }
  return CleanupLocked(state_dir, caller, sysctl_root, /*self_needs_forwarding=*/false, notes,
                       nullptr);
}

}  // namespace tunnels::netns
