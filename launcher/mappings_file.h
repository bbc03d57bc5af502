// The name-to-fake-address mappings of `tunnels system`, saved in the state
// directory so that programs that cached a fake address keep reaching
// their name across a restart or an upgrade.
//
// Two files, each starting with the fake address range, then one mapping
// per line, "ADDRESS NAME":
//   - `mappings`, every mapping of the pool, rewritten (temporary file,
//     fdatasync, rename) every 10 seconds when they changed, and at exit;
//   - `mappings.added`, one line appended (one write(2)) for each mapping
//     as it is made, before its address is answered, and emptied whenever
//     `mappings` has been written. So a tunnels killed with SIGKILL (or
//     crashing) loses no mapping a program may have cached: the kernel
//     keeps what was written, whatever happens to the process.
// Files for another range (privateAddresses changed) are ignored: their
// addresses mean nothing in the new one.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/log.h"
#include "netns/unique_fd.h"
#include "resolver/fake_pool.h"

namespace tunnels::launcher {

inline constexpr char kMappingsFileName[] = "mappings";
inline constexpr char kAddedMappingsFileName[] = "mappings.added";

std::string SerializeMappings(const std::string& range,
                              const std::vector<resolver::FakePool::Mapping>& mappings);

// False with a sentence in `*why` when `text` is not a mappings file or is
// one for another range.
bool ParseMappings(const std::string& text, const std::string& range,
                   std::vector<resolver::FakePool::Mapping>* mappings, std::string* why);

// `earlier` with every mapping of `later` in order, each replacing what was
// there for its address or its name (an address recycled for another name,
// a name that got another address after its mapping expired).
std::vector<resolver::FakePool::Mapping> MergeMappings(
    const std::vector<resolver::FakePool::Mapping>& earlier,
    const std::vector<resolver::FakePool::Mapping>& later);

// Keeps the pool's mappings in `directory` as described above.
// Single-threaded: its calls, and the pool's Allocate() calls that it
// observes, come from one thread (the io_context's).
class MappingsStore {
 public:
  MappingsStore(std::string directory, std::string range, resolver::FakePool& pool,
                const config::Log& log);
  ~MappingsStore();
  MappingsStore(const MappingsStore&) = delete;
  MappingsStore& operator=(const MappingsStore&) = delete;

  // Restores both files into the pool, writes them as one `mappings`, and
  // from then on appends each new mapping to `mappings.added`. Problems are
  // logged, never fatal: tunnels then runs without saved mappings.
  void Load();
  // Writes `mappings` when the pool changed since, then empties
  // `mappings.added`.
  void Save();

 private:
  // Writes `mappings` unless it holds the pool already (and not `force`);
  // false when it could not be written.
  bool Write(bool force);
  // Opens `mappings.added` for appending unless open; empties it (down to
  // its header) when `empty` or when it has no header yet.
  bool OpenAdded(bool empty, std::string* error);

  std::string path_;        // directory/mappings
  std::string added_path_;  // directory/mappings.added
  std::string range_;
  resolver::FakePool& pool_;
  const config::Log& log_;
  std::string saved_;                  // what `mappings` holds
  std::uint64_t written_changes_ = 0;  // pool_.changes() when it was written
  netns::UniqueFd added_;              // O_APPEND; closed when it failed
  bool added_empty_ = false;           // nothing appended since it was emptied
};

// Writes `text` to a temporary file next to `path`, flushes it and renames
// it over `path`, so that a crash leaves the old file or the new one.
bool WriteFileAtomically(const std::string& path, const std::string& text, std::string* error);

// The file's content; false (with `*error` set unless it does not exist)
// when it cannot be read. `*missing` tells which.
bool ReadFile(const std::string& path, std::string* text, bool* missing, std::string* error);

}  // namespace tunnels::launcher
