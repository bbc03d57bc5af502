#include "netns/resolv_conf.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "netns/file_io.h"
#include "netns/unique_fd.h"

namespace tunnels::netns {
namespace {

constexpr char kHeader[] = "# Written by tunnels while it runs; the original is in ";

std::string ErrnoText(int error) { return std::strerror(error); }

std::string Directory(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string TempName(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return Directory(path) + "/." + base + ".tunnels-" + std::to_string(::getpid());
}

// Truncates the existing file `path` (never following a link) and writes
// `content` into it. Not atomic, so only for files that cannot be renamed
// over. "" or why not.
std::string WriteInPlace(const std::string& path, const std::string& content) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC));
  if (!fd || !WriteAll(fd.get(), content) || ::fsync(fd.get()) != 0) {
    return "cannot write in place " + path + " (a mount point): " + ErrnoText(errno);
  }
  return "";
}

// Writes `content` with `mode` to a temporary file next to `path`, flushes
// it and renames it over `path`. "" or why not.
std::string ReplaceFile(const std::string& path, const std::string& content, mode_t mode) {
  const std::string temp = TempName(path);
  ::unlink(temp.c_str());
  UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) return "cannot create " + temp + ": " + ErrnoText(errno);
  if (::fchmod(fd.get(), mode) != 0 || !WriteAll(fd.get(), content) || ::fsync(fd.get()) != 0) {
    const int e = errno;
    ::unlink(temp.c_str());
    return "cannot write " + temp + ": " + ErrnoText(e);
  }
  fd.Reset();
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(temp.c_str());
    // EBUSY: `path` is a mount point (a bind-mounted file, as `ip netns
    // exec`, Docker and podman make resolv.conf), which cannot be replaced,
    // only rewritten in place.
    if (e == EBUSY) return WriteInPlace(path, content);
    return "cannot rename " + temp + " to " + path + ": " + ErrnoText(e);
  }
  return "";
}

std::string ReplaceWithLink(const std::string& path, const std::string& target) {
  const std::string temp = TempName(path);
  ::unlink(temp.c_str());
  if (::symlink(target.c_str(), temp.c_str()) != 0) {
    return "cannot create the link " + temp + ": " + ErrnoText(errno);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(temp.c_str());
    return "cannot rename " + temp + " to " + path + ": " + ErrnoText(e);
  }
  return "";
}

bool ReadLink(const std::string& path, std::string* target) {
  std::string buffer(4096, '\0');
  const ssize_t n = ::readlink(path.c_str(), buffer.data(), buffer.size());
  if (n < 0 || static_cast<std::size_t>(n) >= buffer.size()) return false;
  buffer.resize(static_cast<std::size_t>(n));
  *target = buffer;
  return true;
}

// Sets or clears FS_IMMUTABLE_FL on the regular file `path` (never
// following a link). 0 or the errno.
int SetImmutable(const std::string& path, bool on) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return errno;
  int flags = 0;
  if (::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags) != 0) return errno;
  const int wanted = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
  if (wanted == flags) return 0;
  if (::ioctl(fd.get(), FS_IOC_SETFLAGS, &wanted) != 0) return errno;
  return 0;
}

// Clears the attribute if it is set; "" or why it could not be cleared.
std::string ClearImmutable(const std::string& path) {
  if (!IsImmutable(path)) return "";
  const int e = SetImmutable(path, false);
  if (e == 0) return "";
  return "cannot clear the immutable attribute of " + path + ": " + ErrnoText(e) +
         (e == EPERM ? " (it needs CAP_LINUX_IMMUTABLE: run tunnels as root)" : "");
}

}  // namespace

bool IsTunnelsResolvConf(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  std::string text;
  return fd && ReadAll(fd.get(), &text) && text.starts_with(kHeader);
}

bool IsImmutable(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return false;
  int flags = 0;
  if (::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags) != 0) return false;
  return (flags & FS_IMMUTABLE_FL) != 0;
}

std::string ResolvConfContent(const std::string& dns_address, const std::string& backup) {
  std::string address = dns_address;
  if (address == "0.0.0.0") address = "127.0.0.1";
  if (address == "::") address = "::1";
  return std::string(kHeader) + backup +
         "\n# and comes back when tunnels stops (or with `tunnels cleanup`).\nnameserver " +
         address + "\n";
}

bool TakeOverResolvConf(const std::string& path, const std::string& backup,
                        const std::string& content, bool immutable, std::string* error,
                        std::vector<std::string>* warnings, bool* reused_backup) {
  struct stat backup_stat {};
  bool have_backup = ::lstat(backup.c_str(), &backup_stat) == 0;
  struct stat st {};
  const bool exists = ::lstat(path.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) {
    *error = "cannot read " + path + ": " + ErrnoText(errno);
    return false;
  }
  // A backup is the original only while `path` is still tunnels' own file
  // (a killed run's). Otherwise someone restored or replaced resolv.conf
  // since, and the backup is stale: what is in place now is the original.
  if (have_backup && exists && !IsTunnelsResolvConf(path)) have_backup = false;
  if (reused_backup != nullptr) *reused_backup = have_backup;
  if (!have_backup && !exists) {
    // Nothing to keep, but the restore must know to remove tunnels' file.
    if (std::string why = ReplaceWithLink(backup, kNoResolvConf); !why.empty()) {
      *error = "cannot record at " + backup + " that " + path + " did not exist: " + why +
               " (set resolvconfBackupPath to a writable place, or overwriteResolvconf: false)";
      return false;
    }
  }
  if (!have_backup && exists) {
    std::string why;
    if (S_ISLNK(st.st_mode)) {
      std::string target;
      if (!ReadLink(path, &target)) {
        why = "cannot read the link " + path + ": " + ErrnoText(errno);
      } else {
        why = ReplaceWithLink(backup, target);
      }
    } else {
      UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      std::string old;
      if (!in || !ReadAll(in.get(), &old)) {
        why = "cannot read " + path + ": " + ErrnoText(errno);
      } else {
        why = ReplaceFile(backup, old, st.st_mode & 07777);
      }
    }
    if (!why.empty()) {
      *error = "cannot back " + path + " up to " + backup + ": " + why +
               " (set resolvconfBackupPath to a writable place, or overwriteResolvconf: false)";
      return false;
    }
  }
  if (exists && !S_ISLNK(st.st_mode)) {
    if (std::string why = ClearImmutable(path); !why.empty()) {
      *error = why;
      return false;
    }
  }
  if (std::string why = ReplaceFile(path, content, 0644); !why.empty()) {
    *error = "cannot write " + path + ": " + why;
    return false;
  }
  if (immutable) {
    const int e = SetImmutable(path, true);
    if (e == ENOTTY || e == EOPNOTSUPP || e == EINVAL || e == ENOSYS) {
      warnings->push_back("the file system of " + path +
                          " does not support the immutable attribute (" + ErrnoText(e) +
                          "); other programs may replace it while tunnels runs "
                          "(makeResolvconfImmutable: false silences this)");
    } else if (e != 0) {
      warnings->push_back("cannot make " + path + " immutable: " + ErrnoText(e) +
                          (e == EPERM ? " (it needs CAP_LINUX_IMMUTABLE in the initial user "
                                        "namespace)"
                                      : "") +
                          "; other programs may replace it while tunnels runs");
    }
  }
  return true;
}

std::string RestoreResolvConf(const std::string& path, const std::string& backup) {
  struct stat backup_stat {};
  if (::lstat(backup.c_str(), &backup_stat) != 0) {
    if (errno == ENOENT) return "";
    return "cannot read the backup " + backup + ": " + ErrnoText(errno);
  }
  if (std::string why = ClearImmutable(path); !why.empty()) return why;
  if (std::string target;
      S_ISLNK(backup_stat.st_mode) && ReadLink(backup, &target) && target == kNoResolvConf) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return "cannot remove " + path + " (there was none before tunnels): " + ErrnoText(errno);
    }
    ::unlink(backup.c_str());
    return "";
  }
  if (::rename(backup.c_str(), path.c_str()) == 0) return "";
  if (errno != EXDEV && errno != EBUSY) {
    return "cannot rename " + backup + " to " + path + ": " + ErrnoText(errno);
  }
  // Another file system, or `path` is a mount point: copy (in place for a
  // mount point, see ReplaceFile), then remove the backup.
  std::string why;
  if (S_ISLNK(backup_stat.st_mode)) {
    std::string target;
    why = ReadLink(backup, &target) ? ReplaceWithLink(path, target)
                                    : "cannot read the link " + backup + ": " + ErrnoText(errno);
  } else {
    UniqueFd in(::open(backup.c_str(), O_RDONLY | O_CLOEXEC));
    std::string old;
    why = in && ReadAll(in.get(), &old) ? ReplaceFile(path, old, backup_stat.st_mode & 07777)
                                        : "cannot read " + backup + ": " + ErrnoText(errno);
  }
  if (!why.empty()) return "cannot restore " + path + " from " + backup + ": " + why;
  ::unlink(backup.c_str());
  return "";
}

}  // namespace tunnels::netns
