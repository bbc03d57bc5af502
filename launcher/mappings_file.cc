#include "launcher/mappings_file.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tunnels::launcher {
namespace {

constexpr char kHeader[] = "# tunnels mappings for ";

}  // namespace

std::string SerializeMappings(const std::string& range,
                              const std::vector<resolver::FakePool::Mapping>& mappings) {
  std::string text = std::string(kHeader) + range + "\n";
  text.reserve(text.size() + mappings.size() * 40);
  for (const auto& m : mappings) {
    char address[INET_ADDRSTRLEN] = {};
    const in_addr a{htonl(m.address)};
    inet_ntop(AF_INET, &a, address, sizeof address);
    text += address;
    text += ' ';
    text += m.name;
    text += '\n';
  }
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
