// What `tunnels run` keeps under its state directory, and the one place
// that removes what killed instances left there: the SandboxLink state
// files (with the veth, table and forwarding they record) and the
// `run-<pid>` directories of the sandbox's files.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "netns/kernel.h"

namespace tunnels::netns {

// The sandbox's files, in `run-<pid>` under the state directory, removed
// with everything in it; the pid in the name lets a later run or cleanup
// remove the directories of instances that were killed.
class RunDirectory {
 public:
  // Replaces a dead instance's directory of the same pid. path() is empty
  // (errno set) when it cannot be created.
  explicit RunDirectory(const std::string& state_dir);
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Undoes what `tunnels run` instances that are no longer running left in
// `state_dir` (SandboxLink::CleanupStale, which needs the real kernel only
// when there is a state file), then removes their `run-<pid>` directories.
// "" or a sentence per failure; `notes`, if given, gets a sentence per
// thing done or left alone.
[[nodiscard]] std::string CleanupStaleRuns(const std::string& state_dir,
                                           std::vector<std::string>* notes = nullptr);

// Removes the `run-<pid>` directories under `state_dir` whose process is
// not running; leaves everything else.
void RemoveStaleRunDirectories(const std::string& state_dir);

// Whether `pid` is a running process: not a zombie, which is what a killed
// tunnels is for a moment after its guardian has seen it end.
bool ProcessRunning(pid_t pid);

}  // namespace tunnels::netns
