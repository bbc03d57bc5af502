// Configuration files and directories on disk.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "config/loader.h"

namespace tunnels::config {
namespace {

namespace fs = std::filesystem;
using internal::kMaxFileSize;
using internal::Loader;

// The one place that opens a configuration file. O_NONBLOCK so that a FIFO
// or a device cannot block the open; fstat on the opened descriptor (not a
// stat of the name before) so that what is checked is what is read. Only
// regular files are read, and no more than kMaxFileSize bytes of them:
// /dev/zero or a growing file would otherwise be read until memory ends.
bool ReadWholeFile(const std::string& path, std::string* out, std::string* error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    *error = std::string("cannot open: ") + std::strerror(errno);
    return false;
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    *error = std::string("cannot stat: ") + std::strerror(errno);
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    *error = "not a regular file (a FIFO, device or socket); refusing to read it";
    return false;
  }
  if (static_cast<std::uint64_t>(st.st_size) > kMaxFileSize) {
    *error = "file is larger than 64 MiB; refusing to read it";
    return false;
  }
  out->assign(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t used = 0;
  for (;;) {
    if (used == out->size()) {
      // Grown since fstat (or a size-less /proc file): read on, but never
      // much past the cap.
      if (out->size() > kMaxFileSize) {
        *error = "file is larger than 64 MiB; refusing to read it";
        return false;
      }
      out->resize(
          std::min<std::size_t>(std::max<std::size_t>(out->size() * 2, 4096), kMaxFileSize + 1));
    }
    const ssize_t n = ::read(fd, out->data() + used, out->size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = std::string("cannot read: ") + std::strerror(errno);
      return false;
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  if (used > kMaxFileSize) {
    *error = "file is larger than 64 MiB; refusing to read it";
    return false;
  }
  out->resize(used);
  return true;
}

// Walks one configuration directory without std::filesystem's recursive
// iterator, which throws on a symbolic link loop and, following directory
// links, visits `ln -s . a; ln -s . b` exponentially often. Each directory
// (by device and inode) is read at most once; every entry that cannot be
// examined becomes a diagnostic naming it.
void WalkDirectory(Loader& loader, const fs::path& dir, std::set<std::pair<dev_t, ino_t>>& visited,
                   std::vector<fs::path>& found) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    loader.FileError(dir.string(), "cannot list directory: " + ec.message());
    return;
  }
  std::vector<fs::path> entries;
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) entries.push_back(it->path());
  if (ec) loader.FileError(dir.string(), "cannot list directory: " + ec.message());
  std::sort(entries.begin(), entries.end());
  for (const fs::path& entry : entries) {
    const std::string name = entry.filename().string();
    if (name.starts_with(".")) continue;
    const std::string ext = entry.extension().string();
    const bool yaml = ext == ".yml" || ext == ".yaml";
    struct stat st {};
    if (::stat(entry.c_str(), &st) != 0) {
      const int err = errno;
      struct stat lst {};
      const bool link = ::lstat(entry.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode);
      loader.FileError(entry.string(),
                       std::string(link ? "cannot follow symbolic link: " : "cannot stat: ") +
                           std::strerror(err));
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      if (!visited.insert({st.st_dev, st.st_ino}).second) {
        loader.FileWarning(entry.string(),
                           "directory already read (through a symbolic link); skipped");
        continue;
      }
      WalkDirectory(loader, entry, visited, found);
      continue;
    }
    if (!yaml) continue;
    if (!S_ISREG(st.st_mode)) {
      loader.FileWarning(entry.string(), "not a regular file (a FIFO, device or socket); skipped");
      continue;
    }
    found.push_back(entry);
  }
}

}  // namespace

LoadResult Load(const std::vector<std::string>& paths, const LoadOptions& options) {
  Loader loader(options);
  std::set<fs::path> seen;
  std::size_t loaded = 0;
  bool failed = false;  // an error already says why nothing was read
  auto add_file = [&](const fs::path& path, const std::string& shown) {
    std::error_code ec;
    const fs::path canonical = fs::weakly_canonical(path, ec);
    if (!seen.insert(ec ? path : canonical).second) return;  // named twice: read once
    std::string text;
    std::string error;
    if (!ReadWholeFile(path.string(), &text, &error)) {
      loader.FileError(shown, error);
      failed = true;
      return;
    }
    ++loaded;
    loader.AddDocument(Document{shown, std::move(text)});
  };
  std::set<std::pair<dev_t, ino_t>> visited;
  for (const std::string& p : paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) {
      loader.FileError(p, std::string("cannot read: ") + std::strerror(errno));
      failed = true;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      add_file(p, p);
      continue;
    }
    if (!visited.insert({st.st_dev, st.st_ino}).second) continue;  // named twice: read once
    std::vector<fs::path> found;
    WalkDirectory(loader, p, visited, found);
    // Else the directory would give no rules without a word.
    if (found.empty()) {
      loader.FileWarning(p, "the directory holds no configuration file (*.yml or *.yaml)");
    }
    std::sort(found.begin(), found.end());
    for (const fs::path& f : found) add_file(f, f.string());
  }
  // Zero rules would forward every ruled name (.onion too) to the upstream:
  // a configuration that names paths but yields no file fails closed.
  if (!paths.empty() && loaded == 0 && !failed) {
    std::string named;
    for (const std::string& p : paths) named += (named.empty() ? "" : ", ") + p;
    loader.FileError(named,
                     "no configuration file (*.yml or *.yaml) could be read; refusing to run "
                     "with no rules (add a file, or name one with -c)");
  }
  return loader.Finish();
}

}  // namespace tunnels::config
