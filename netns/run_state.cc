#include "netns/run_state.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "netns/sandbox_link.h"

namespace tunnels::netns {

namespace fs = std::filesystem;

RunDirectory::RunDirectory(const std::string& state_dir) {
  std::error_code ec;
  const fs::path path = fs::path(state_dir) / ("run-" + std::to_string(::getpid()));
  fs::remove_all(path, ec);  // a dead instance's, with the same pid
  if (::mkdir(path.c_str(), 0700) == 0) path_ = path.string();
}

RunDirectory::~RunDirectory() {
  std::error_code ec;
  if (!path_.empty()) fs::remove_all(path_, ec);
}

std::string CleanupStaleRuns(const std::string& state_dir, std::vector<std::string>* notes) {
  std::string errors = SandboxLink::CleanupStale(state_dir, notes);
  RemoveStaleRunDirectories(state_dir);
  return errors;
}

void RemoveStaleRunDirectories(const std::string& state_dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(state_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("run-") || !entry.is_directory(ec)) continue;
    const std::string pid = name.substr(4);
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    if (ProcessRunning(std::stoi(pid))) continue;
    fs::remove_all(entry.path(), ec);
  }
}

bool ProcessRunning(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno != EPERM) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const std::size_t end = text.rfind(')');  // the name may hold spaces and ')'
  if (end == std::string::npos || end + 2 >= text.size()) return true;
  const char state = text[end + 2];
  return state != 'Z' && state != 'X';
}

}  // namespace tunnels::netns
