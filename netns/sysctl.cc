#include "netns/sysctl.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "netns/unique_fd.h"

namespace tunnels::netns {
namespace {

// The path below the root for a key, or "" when the key is malformed.
std::string KeyPath(std::string_view key) {
  const auto first = key.find_first_of("./");
  const bool dotted = first != std::string_view::npos && key[first] == '.';
  std::string path;
  for (const char c : key) {
    if (dotted && (c == '.' || c == '/')) {
      path += c == '.' ? '/' : '.';
    } else {
      path += c;
    }
  }
  // Every component must be a plain name: no escaping the root.
  std::string_view rest = path;
  if (rest.empty()) return "";
  while (true) {
    const std::string_view part = rest.substr(0, rest.find('/'));
    if (part.empty() || part == "." || part == ".." ||
        part.find_first_of(" \t\n\r") != std::string_view::npos) {
      return "";
    }
    if (part.size() == rest.size()) break;
    rest.remove_prefix(part.size() + 1);
  }
  return path;
}

// Whitespace-insensitive form for comparing values: the kernel prints
// multi-number parameters with tabs and a newline.
std::string Normalized(std::string_view value) {
  std::string out;
  bool space = false;
  for (const char c : value) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

std::string Hint(int error) {
  switch (error) {
    case ENOENT:
      return " (this kernel has no such parameter, or not in this network namespace)";
    case EACCES:
    case EPERM:
      return " (changing kernel parameters needs root)";
    case EROFS:
      return " (/proc/sys is mounted read-only here, as in many containers)";
    case EINVAL:
      return " (the kernel refused the value)";
    default:
      return "";
  }
}

bool Read(const std::string& path, std::string* value, int* error) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    *error = errno;
    return false;
  }
  value->clear();
  char buffer[4096];
  while (true) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = errno;
      return false;
    }
    if (n == 0) break;
    value->append(buffer, static_cast<std::size_t>(n));
  }
  while (!value->empty() && value->back() == '\n') value->pop_back();
  return true;
}

// One write() call, as sysctl(8) does it: the kernel parses a /proc/sys
// value per write.
bool Write(const std::string& path, const std::string& value, int* error) {
  const std::string line = value + "\n";
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (!fd) {
    *error = errno;
    return false;
  }
  ssize_t n;
  do {
    n = ::write(fd.get(), line.data(), line.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    *error = errno;
    return false;
  }
  if (static_cast<std::size_t>(n) != line.size()) {
    *error = EIO;
    return false;
  }
  return true;
}

}  // namespace

Sysctl::Sysctl(std::string key, std::string path, std::string value, std::string previous,
               bool changed)
    : key_(std::move(key)),
      path_(std::move(path)),
      value_(std::move(value)),
      previous_(std::move(previous)),
      changed_(changed) {}

Sysctl::~Sysctl() { Restore(); }

std::unique_ptr<Sysctl> Sysctl::Set(std::string_view key, std::string_view value,
                                    std::string* error, std::string root) {
  const std::string relative = KeyPath(key);
  if (relative.empty()) {
    *error =
        "'" + std::string(key) + "' is not a kernel parameter name such as net.ipv4.ip_forward";
    return nullptr;
  }
  const std::string path = root + "/" + relative;
  const std::string name(key);
  std::string previous;
  int e = 0;
  if (!Read(path, &previous, &e)) {
    *error = "cannot read the kernel parameter " + name + " (" + path + "): " + std::strerror(e) +
             Hint(e);
    return nullptr;
  }
  const bool change = Normalized(previous) != Normalized(value);
  if (change && !Write(path, std::string(value), &e)) {
    *error = "cannot set the kernel parameter " + name + " (" + path + ") to " +
             std::string(value) + ": " + std::strerror(e) + Hint(e);
    return nullptr;
  }
  // Not make_unique: the constructor is private.
  return std::unique_ptr<Sysctl>(
      new Sysctl(name, path, std::string(value), std::move(previous), change));
}

bool Sysctl::Get(std::string_view key, std::string* value, std::string* error,
                 const std::string& root) {
  const std::string relative = KeyPath(key);
  if (relative.empty()) {
    *error =
        "'" + std::string(key) + "' is not a kernel parameter name such as net.ipv4.ip_forward";
    return false;
  }
  const std::string path = root + "/" + relative;
  int e = 0;
  if (!Read(path, value, &e)) {
    *error = "cannot read the kernel parameter " + std::string(key) + " (" + path +
             "): " + std::strerror(e) + Hint(e);
    return false;
  }
  return true;
}

std::unique_ptr<Sysctl> Sysctl::Adopt(std::string_view key, std::string_view value,
                                      std::string_view previous, std::string* error,
                                      std::string root) {
  const std::string relative = KeyPath(key);
  if (relative.empty()) {
    *error =
        "'" + std::string(key) + "' is not a kernel parameter name such as net.ipv4.ip_forward";
    return nullptr;
  }
  return std::unique_ptr<Sysctl>(new Sysctl(std::string(key), root + "/" + relative,
                                            std::string(value), std::string(previous), true));
}

std::string Sysctl::Restore() {
  if (!changed_) return "";
  changed_ = false;
  std::string current;
  int e = 0;
  if (!Read(path_, &current, &e)) {
    return "cannot read the kernel parameter " + key_ + " (" + path_ +
           ") to restore it: " + std::strerror(e) + Hint(e);
  }
  if (Normalized(current) != Normalized(value_)) return "";  // someone else's value now
  if (!Write(path_, previous_, &e)) {
    return "cannot restore the kernel parameter " + key_ + " (" + path_ + ") to " + previous_ +
           ": " + std::strerror(e) + Hint(e);
  }
  return "";
}

}  // namespace tunnels::netns
