#include "launcher/mappings_file.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>

namespace tunnels::launcher {
namespace {

constexpr char kHeader[] = "# tunnels mappings for ";

// "ADDRESS NAME\n" appended to `text`.
void AppendLine(std::string& text, std::uint32_t address, std::string_view name) {
  char dotted[INET_ADDRSTRLEN] = {};
  const in_addr a{htonl(address)};
  inet_ntop(AF_INET, &a, dotted, sizeof dotted);
  text += dotted;
  text += ' ';
  text += name;
  text += '\n';
}

}  // namespace

std::string SerializeMappings(const std::string& range,
                              const std::vector<resolver::FakePool::Mapping>& mappings) {
  std::string text = std::string(kHeader) + range + "\n";
  text.reserve(text.size() + mappings.size() * 40);
  for (const auto& m : mappings) AppendLine(text, m.address, m.name);
  return text;
}

bool ParseMappings(const std::string& text, const std::string& range,
                   std::vector<resolver::FakePool::Mapping>* mappings, std::string* why) {
  const std::size_t first_end = text.find('\n');
  if (first_end == std::string::npos || text.compare(0, std::strlen(kHeader), kHeader) != 0) {
    *why = "it is not a tunnels mappings file";
    return false;
  }
  const std::string saved_range =
      text.substr(std::strlen(kHeader), first_end - std::strlen(kHeader));
  if (saved_range != range) {
    *why = "it is for privateAddresses " + saved_range + ", not " + range;
    return false;
  }
  mappings->clear();
  std::size_t at = first_end + 1;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string::npos) break;  // cut short: not written by WriteFileAtomically
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    const std::size_t space = line.find(' ');
    if (space == std::string::npos || space + 1 >= line.size()) continue;
    in_addr a{};
    if (inet_pton(AF_INET, line.substr(0, space).c_str(), &a) != 1) continue;
    resolver::FakePool::Mapping m;
    m.address = ntohl(a.s_addr);
    m.name = line.substr(space + 1);
    mappings->push_back(std::move(m));
  }
  return true;
}

std::vector<resolver::FakePool::Mapping> MergeMappings(
    const std::vector<resolver::FakePool::Mapping>& earlier,
    const std::vector<resolver::FakePool::Mapping>& later) {
  std::vector<resolver::FakePool::Mapping> out;
  out.reserve(earlier.size() + later.size());
  // Positions in `out` of the live mapping of each address and name; a
  // replaced one is blanked (empty name) and dropped at the end.
  std::unordered_map<std::uint32_t, std::size_t> by_address;
  std::unordered_map<std::string, std::size_t> by_name;
  auto add = [&](const resolver::FakePool::Mapping& m) {
    for (const std::size_t old : {by_address.count(m.address) ? by_address[m.address] : out.size(),
                                  by_name.count(m.name) ? by_name[m.name] : out.size()}) {
      if (old == out.size() || out[old].name.empty()) continue;
      by_address.erase(out[old].address);
      by_name.erase(out[old].name);
      out[old].name.clear();
    }
    by_address[m.address] = out.size();
    by_name[m.name] = out.size();
    out.push_back(m);
  };
  for (const auto& m : earlier) add(m);
  for (const auto& m : later) add(m);
  std::erase_if(out, [](const resolver::FakePool::Mapping& m) { return m.name.empty(); });
  return out;
}

MappingsStore::MappingsStore(std::string directory, std::string range, resolver::FakePool& pool,
                             const config::Log& log)
    : path_(directory + "/" + kMappingsFileName),
      added_path_(directory + "/" + kAddedMappingsFileName),
      range_(std::move(range)),
      pool_(pool),
      log_(log) {}

MappingsStore::~MappingsStore() { pool_.SetObserver(nullptr); }

void MappingsStore::Load() {
  std::vector<resolver::FakePool::Mapping> merged;
  bool discarded = false;
  bool added_usable = true;  // `mappings.added` missing or for this range
  for (const std::string* path : {&path_, &added_path_}) {
    std::string text, error, why;
    bool missing = false;
    if (!ReadFile(*path, &text, &missing, &error)) {
      if (!missing) log_.Warning("DNS", error + "; starting without the mappings saved there");
      continue;
    }
    std::vector<resolver::FakePool::Mapping> mappings;
    if (!ParseMappings(text, range_, &mappings, &why)) {
      log_.Info("DNS", "discarded the saved mappings in " + *path + ": " + why);
      discarded = true;
      added_usable = path != &added_path_;
      continue;
    }
    merged = MergeMappings(merged, mappings);
  }
  if (!merged.empty()) {
    const std::size_t restored = pool_.Restore(merged);
    log_.Info("DNS", "restored " + std::to_string(restored) + " saved name-to-address mappings");
  }
  // Both files as one `mappings` again (a discarded file replaced), and an
  // empty `mappings.added`; if `mappings` cannot be written, what
  // `mappings.added` holds stays there, and new lines go after it.
  const bool written = Write(/*force=*/!merged.empty() || discarded);
  std::string error;
  if (!OpenAdded(/*empty=*/written || !added_usable, &error)) {
    log_.Warning("DNS", error +
                            "; mappings made since the last save (every 10 s) will be lost "
                            "if tunnels is killed");
    return;
  }
  pool_.SetObserver([this](std::uint32_t address, std::string_view name) {
    if (!added_) return;
    // One write(2) per line: whatever kills the process, the file holds
    // whole lines (and a cut last line would be skipped when read).
    std::string line;
    AppendLine(line, address, name);
    ssize_t n;
    do {
      n = ::write(added_.get(), line.data(), line.size());
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(line.size())) {
      added_empty_ = false;
      return;
    }
    const std::string why = n < 0 ? std::strerror(errno) : "short write";
    log_.Warning("DNS", "cannot append to " + added_path_ + ": " + why +
                            "; from now on, new mappings are saved every 10 s only");
    added_.Reset();
  });
}

void MappingsStore::Save() {
  // Once `mappings` holds the pool, what `mappings.added` holds is in it (or
  // expired).
  if (!Write(/*force=*/false) || !added_ || added_empty_) return;
  std::string error;
  if (!OpenAdded(/*empty=*/true, &error)) {
    log_.Warning("DNS", error + "; from now on, new mappings are saved every 10 s only");
  }
}

bool MappingsStore::Write(bool force) {
  // Every 10 s on the DNS thread: serializing every mapping (megabytes in a
  // full range) only when some were made or removed since.
  const std::uint64_t changes = pool_.changes();
  if (!force && changes == written_changes_ && !saved_.empty()) return true;
  const std::string text = SerializeMappings(range_, pool_.Snapshot());
  if (text == saved_ && !force) {
    written_changes_ = changes;
    return true;
  }
  std::string error;
  if (!WriteFileAtomically(path_, text, &error)) {
    log_.Limited("DNS", config::LogLevel::kWarning, "cannot save the mappings: " + error);
    return false;
  }
  saved_ = text;
  written_changes_ = changes;
  return true;
}

bool MappingsStore::OpenAdded(bool empty, std::string* error) {
  if (!added_) {
    added_ = netns::UniqueFd(
        ::open(added_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!added_) {
      *error = "cannot open " + added_path_ + ": " + std::strerror(errno);
      return false;
    }
  }
  struct stat st {};
  if (::fstat(added_.get(), &st) != 0) {
    *error = "cannot read " + added_path_ + ": " + std::strerror(errno);
    added_.Reset();
    return false;
  }
  if (!empty && st.st_size > 0) return true;  // kept, header and all
  const std::string header = SerializeMappings(range_, {});
  if (::ftruncate(added_.get(), 0) != 0 ||
      ::write(added_.get(), header.data(), header.size()) != static_cast<ssize_t>(header.size())) {
    const std::string why = std::strerror(errno);
    *error = "cannot empty " + added_path_ + ": " + why;
    added_.Reset();
    return false;
  }
  added_empty_ = true;
  return true;
}

bool WriteFileAtomically(const std::string& path, const std::string& text, std::string* error) {
  const std::string temp = path + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    *error = "cannot create " + temp + ": " + std::strerror(errno);
    return false;
  }
  std::size_t done = 0;
  bool ok = true;
  while (ok && done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fdatasync(fd) == 0;
  const int e = errno;
  ::close(fd);
  if (!ok || ::rename(temp.c_str(), path.c_str()) != 0) {
    *error = "cannot write " + path + ": " + std::strerror(ok ? errno : e);
    ::unlink(temp.c_str());
    return false;
  }
  return true;
}

bool ReadFile(const std::string& path, std::string* text, bool* missing, std::string* error) {
  text->clear();
  *missing = false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *missing = errno == ENOENT;
    *error = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  char buffer[65536];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = "cannot read " + path + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    text->append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return true;
}

}  // namespace tunnels::launcher
