#include "netns/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "netns/unique_fd.h"

namespace tunnels::netns {

bool ReadAll(int fd, std::string* out) {
  out->clear();
  char buffer[4096];
  while (true) {
    const ssize_t n = ::pread(fd, buffer, sizeof buffer, static_cast<off_t>(out->size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out->append(buffer, static_cast<std::size_t>(n));
  }
}

bool WriteAll(int fd, std::string_view text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = EIO;  // nothing taken, no reason given: do not spin
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

namespace {

// The uid that files of users unmapped in this user namespace show, or -1
// in the initial user namespace, where every uid is mapped. In a nested
// one (a container, the test worlds) the real root's directories, such as
// /run, show it: they are no one's inside, and count as root's.
long UnmappedOwner() {
  UniqueFd map(::open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC));
  std::string text;
  if (!map || !ReadAll(map.get(), &text)) return -1;
  if (text.find(" 0 ") != std::string::npos && text.find("4294967295") != std::string::npos) {
    return -1;
  }
  UniqueFd overflow(::open("/proc/sys/kernel/overflowuid", O_RDONLY | O_CLOEXEC));
  std::string uid;
  if (!overflow || !ReadAll(overflow.get(), &uid)) return 65534;
  return std::strtol(uid.c_str(), nullptr, 10);
}

}  // namespace

std::string PrepareStateDirectory(const std::string& dir) {
  const std::string hint = " (set stateDirectory to a directory only root can write)";
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return "cannot create the state directory " + dir + ": " + std::strerror(errno) + hint;
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    return "cannot examine the state directory " + dir + ": " + std::strerror(errno) + hint;
  }
  if (S_ISLNK(st.st_mode)) return "the state directory " + dir + " is a symbolic link" + hint;
  if (!S_ISDIR(st.st_mode)) return "the state directory " + dir + " is not a directory" + hint;
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return "the state directory " + dir + " belongs to uid " + std::to_string(st.st_uid) +
           ", whose files tunnels would act on as root" + hint;
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return "the state directory " + dir +
           " is writable by others, whose files tunnels would "
           "act on as root" +
           hint;
  }
  // Whoever can rename an ancestor can swap in a directory of their own.
  // Each one (links resolved) must belong to root or to this user and be
  // writable by no one else, unless it is sticky (as /tmp is): there others
  // may add entries but not rename or remove this user's.
  char* real = ::realpath(dir.c_str(), nullptr);
  if (real == nullptr) {
    return "cannot resolve the state directory " + dir + ": " + std::strerror(errno) + hint;
  }
  std::string ancestor(real);
  std::free(real);
  const long unmapped_owner = UnmappedOwner();
  while (ancestor != "/") {
    const std::size_t slash = ancestor.rfind('/');
    ancestor = slash == 0 ? "/" : ancestor.substr(0, slash);
    struct stat a {};
    if (::lstat(ancestor.c_str(), &a) != 0) {
      return "cannot examine " + ancestor + ", a parent of the state directory " + dir + ": " +
             std::strerror(errno) + hint;
    }
    if (a.st_uid != ::geteuid() && a.st_uid != 0 && static_cast<long>(a.st_uid) != unmapped_owner) {
      return "the parent " + ancestor + " of the state directory " + dir + " belongs to uid " +
             std::to_string(a.st_uid) + ", who could replace the state directory" + hint;
    }
    if ((a.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (a.st_mode & S_ISVTX) == 0) {
      return "the parent " + ancestor + " of the state directory " + dir +
             " is writable by others and not sticky, so they could replace the state "
             "directory" +
             hint;
    }
  }
  return "";
}

}  // namespace tunnels::netns
