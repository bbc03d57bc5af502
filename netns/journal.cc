#include "netns/journal.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "netns/file_io.h"
#include "netns/resolv_conf.h"
#include "netns/sysctl.h"

namespace tunnels::netns {
namespace {

std::string ErrnoText(int error) { return std::strerror(error); }

std::string Escape(const std::string& value) {
  std::string out;
  for (const char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '%' || c == ' ' || c == '=' || u < 0x20 || u == 0x7f) {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", u);
      out += hex;
    } else {
      out += c;
    }
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool Unescape(const std::string& text, std::string* out) {
  out->clear();
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      *out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return false;
    const int high = HexDigit(text[i + 1]);
    const int low = HexDigit(text[i + 2]);
    if (high < 0 || low < 0) return false;
    *out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return true;
}

// The complete lines of a journal; a last line without '\n' was cut short.
std::vector<JournalEntry> ParseJournal(const std::string& text) {
  std::vector<JournalEntry> entries;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = text.find('\n', at);
    if (end == std::string::npos) break;
    JournalEntry entry;
    if (ParseJournalLine(text.substr(at, end - at), &entry)) entries.push_back(std::move(entry));
    at = end + 1;
  }
  return entries;
}

bool ParseNetwork(const std::string& text, Ipv4Network* network) {
  const std::size_t slash = text.find('/');
  if (slash == std::string::npos) return false;
  in_addr a{};
  if (::inet_pton(AF_INET, text.substr(0, slash).c_str(), &a) != 1) return false;
  const std::string length = text.substr(slash + 1);
  if (length.empty() || length.size() > 2 ||
      length.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  network->address = ntohl(a.s_addr);
  network->prefix_length = std::stoi(length);
  return network->prefix_length <= 32;
}

// Undoes `entries` in reverse order, leaving in them, in their order, only
// those that could not be undone; "" or the failures joined.
std::string UndoAll(std::vector<JournalEntry>* entries, Undoer& undoer,
                    std::vector<std::string>* notes) {
  std::string errors;
  std::vector<JournalEntry> failed;
  for (auto it = entries->rbegin(); it != entries->rend(); ++it) {
    const std::string why = undoer.Undo(*it);
    if (why.empty()) {
      if (notes != nullptr) notes->push_back("undid " + it->ToString());
    } else {
      errors += (errors.empty() ? "" : "; ") + why;
      failed.insert(failed.begin(), *it);
    }
  }
  *entries = std::move(failed);
  return errors;
}

}  // namespace

bool Overlaps(const JournalEntry& a, const JournalEntry& b) {
  static const std::map<std::string, std::vector<std::string>> kKeys = {
      {"nft-table", {"name"}},
      {"route", {"network"}},
      {"resolvconf", {"path", "backup"}},
      {"sysctl", {"key"}}};
  const auto keys = kKeys.find(a.kind);
  // An unknown kind (from a newer tunnels) may touch anything.
  if (keys == kKeys.end() || kKeys.find(b.kind) == kKeys.end()) return true;
  if (a.kind != b.kind) return false;
  for (const std::string& key : keys->second) {
    if (!a.Field(key).empty() && a.Field(key) == b.Field(key)) return true;
  }
  return false;
}

std::string JournalEntry::Field(const std::string& key) const {
  const auto it = fields.find(key);
  return it == fields.end() ? std::string() : it->second;
}

std::string JournalEntry::ToString() const {
  std::string line = Escape(kind);
  for (const auto& [key, value] : fields) line += " " + Escape(key) + "=" + Escape(value);
  return line;
}

bool ParseJournalLine(const std::string& line, JournalEntry* entry) {
  if (line.empty() || line[0] == '#') return false;
  JournalEntry e;
  std::size_t at = 0;
  bool first = true;
  while (at <= line.size()) {
    std::size_t end = line.find(' ', at);
    if (end == std::string::npos) end = line.size();
    const std::string word = line.substr(at, end - at);
    at = end + 1;
    if (word.empty()) continue;
    if (first) {
      if (!Unescape(word, &e.kind) || e.kind.empty()) return false;
      first = false;
      continue;
    }
    const std::size_t eq = word.find('=');
    if (eq == std::string::npos) return false;
    std::string key, value;
    if (!Unescape(word.substr(0, eq), &key) || !Unescape(word.substr(eq + 1), &value)) {
      return false;
    }
    e.fields[key] = value;
  }
  if (first) return false;
  *entry = std::move(e);
  return true;
}

std::string SystemUndoer::Undo(const JournalEntry& entry) {
  if (entry.kind == "route") {
    Ipv4Network network;
    if (!ParseNetwork(entry.Field("network"), &network)) {
      return "journal entry '" + entry.ToString() + "' names no network";
    }
    const Status s = kernel_.DeleteLocalRoute(network, /*exact=*/true);
    if (s.ok() || s.error == ESRCH) return "";
    return "cannot delete the route local " + network.ToString() +
           " dev lo table local: " + s.message;
  }
  if (entry.kind == "nft-table") {
    const std::string name = entry.Field("name");
    NftTable found;
    if (Status s = kernel_.FindNftTable(name, &found); !s.ok()) {
      return "cannot read the nftables table ip " + name + ": " + s.message;
    }
    // An owned table vanishes with its owner: if it exists, a running
    // process (most likely a newer tunnels) made it.
    if (!found.exists || found.owned) return "";
    const Status s = kernel_.RunNft("delete table ip " + name);
    if (s.ok() || s.error == ENOENT) return "";
    return "cannot delete the nftables table ip " + name + ": " + s.message;
  }
  if (entry.kind == "resolvconf") {
    return RestoreResolvConf(entry.Field("path"), entry.Field("backup"));
  }
  if (entry.kind == "sysctl") {
    std::string error;
    auto sysctl = Sysctl::Adopt(entry.Field("key"), entry.Field("value"), entry.Field("previous"),
                                &error, sysctl_root_);
    if (!sysctl) return error;
    return sysctl->Restore();
  }
  return "journal entry '" + entry.ToString() + "' is of an unknown kind (from a newer tunnels?)";
}

Journal::Journal(std::string path, UniqueFd fd, std::vector<JournalEntry> leftovers)
    : path_(std::move(path)), fd_(std::move(fd)), leftovers_(std::move(leftovers)) {}

std::unique_ptr<Journal> Journal::Open(const std::string& dir, const std::string& name,
                                       std::string* error) {
  if (std::string why = PrepareStateDirectory(dir); !why.empty()) {
    *error = why;
    return nullptr;
  }
  const std::string path = dir + "/" + name;
  // The file may be unlinked by its finishing owner between open and
  // flock: then open it again, or two instances would lock different files.
  for (int attempt = 0; attempt < 10; ++attempt) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd) {
      *error = "cannot open the journal " + path + ": " + ErrnoText(errno) +
               " (set stateDirectory to a writable directory)";
      return nullptr;
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      *error = "the journal " + path +
               " belongs to a running tunnels system; stop it first, or give this one another "
               "stateDirectory";
      return nullptr;
    }
    struct stat by_fd {};
    struct stat by_path {};
    if (::fstat(fd.get(), &by_fd) != 0 || ::stat(path.c_str(), &by_path) != 0 ||
        by_fd.st_ino != by_path.st_ino || by_fd.st_dev != by_path.st_dev) {
      continue;
    }
    std::string text;
    if (!ReadAll(fd.get(), &text)) {
      *error = "cannot read the journal " + path + ": " + ErrnoText(errno);
      return nullptr;
    }
    return std::unique_ptr<Journal>(new Journal(path, std::move(fd), ParseJournal(text)));
  }
  *error = "cannot open the journal " + path + ": it keeps being replaced";
  return nullptr;
}

bool Journal::Rewrite(std::string* error) {
  std::string text = "# tunnels system: changes made to this machine, undone in reverse order\n";
  text += "# by `tunnels cleanup` if this process (pid " + std::to_string(::getpid()) +
          ") dies without undoing them.\n";
  for (const JournalEntry& e : leftovers_) text += e.ToString() + "\n";
  for (const JournalEntry& e : recorded_) text += e.ToString() + "\n";
  if (::ftruncate(fd_.get(), 0) != 0 || ::lseek(fd_.get(), 0, SEEK_SET) != 0 ||
      !WriteAll(fd_.get(), text) || ::fdatasync(fd_.get()) != 0) {
    *error = "cannot write the journal " + path_ + ": " + ErrnoText(errno);
    return false;
  }
  return true;
}

std::string Journal::UndoLeftovers(Undoer& undoer, std::vector<std::string>* notes) {
  // What was undone leaves the file, so that only what still needs a
  // cleanup stays (and can block only a start that would touch it).
  std::string errors = UndoAll(&leftovers_, undoer, notes);
  std::string error;
  if (!Rewrite(&error)) errors += (errors.empty() ? "" : "; ") + error;
  return errors;
}

bool Journal::Record(const JournalEntry& entry, std::string* error) {
  if (recorded_.empty() && leftovers_.empty()) {
    // The header first, with this process's pid, for people reading it.
    if (!Rewrite(error)) return false;
  }
  recorded_.push_back(entry);
  const std::string line = entry.ToString() + "\n";
  if (::lseek(fd_.get(), 0, SEEK_END) < 0 || !WriteAll(fd_.get(), line) ||
      ::fdatasync(fd_.get()) != 0) {
    *error = "cannot write the journal " + path_ + ": " + ErrnoText(errno);
    recorded_.pop_back();
    return false;
  }
  return true;
}

void Journal::Finish() {
  recorded_.clear();
  if (!leftovers_.empty()) {
    // Still to be undone by a cleanup; this instance's own are undone.
    std::string ignored;
    (void)Rewrite(&ignored);
    return;
  }
  // Emptied before unlinked: a cleanup that opened the file just before
  // finds nothing to undo.
  if (::ftruncate(fd_.get(), 0) == 0) ::unlink(path_.c_str());
}

std::string Journal::CleanupStale(const std::string& dir, const std::string& name, Undoer& undoer,
                                  std::vector<std::string>* notes, bool forget) {
  const std::string path = dir + "/" + name;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return "";
    return "cannot read the journal " + path + ": " + ErrnoText(errno);
  }
  std::string error;
  auto journal = Open(dir, name, &error);
  if (!journal) {
    if (error.find("running") != std::string::npos) {
      if (notes != nullptr) {
        notes->push_back("left " + path + " alone: a running tunnels system holds it");
      }
      return "";
    }
    return error;
  }
  if (std::string errors = journal->UndoLeftovers(undoer, notes); !errors.empty()) {
    if (!forget) {
      return errors + " (the journal " + path +
             " stays, for another `tunnels cleanup`; `--forget` drops it)";
    }
    // The user takes these over: say what they were, since nothing will
    // remember them once the file is gone.
    if (notes != nullptr) {
      notes->push_back("could not undo: " + errors);
      for (const JournalEntry& e : journal->leftovers_) {
        notes->push_back("forgot, not undone: " + e.ToString());
      }
    }
    journal->leftovers_.clear();
  }
  journal->Finish();
  return "";
}

}  // namespace tunnels::netns
