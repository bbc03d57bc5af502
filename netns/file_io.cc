#include "netns/file_io.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
  return "";
}

}  // namespace tunnels::netns
