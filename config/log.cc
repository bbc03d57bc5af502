#include "config/log.h"

#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace tunnels::config {

Log::Log(LogLevel level, std::vector<std::string> silent_modules, int fd, bool timestamps)
    : level_(level), silent_(std::move(silent_modules)), fd_(fd), timestamps_(timestamps) {}

bool StderrIsJournal() {
  const char* value = std::getenv("JOURNAL_STREAM");
  if (value == nullptr) return false;
  unsigned long long device = 0;
  unsigned long long inode = 0;
  if (std::sscanf(value, "%llu:%llu", &device, &inode) != 2) return false;
  struct stat st {};
  if (::fstat(2, &st) != 0) return false;
  return st.st_dev == device && st.st_ino == inode;
}

bool Log::Enabled(std::string_view module, LogLevel level) const {
  if (level > level_) return false;
  // Errors are never hidden: silentLog is for chatter, not for failures.
  if (level == LogLevel::kError) return true;
  return std::none_of(silent_.begin(), silent_.end(), [&](const std::string& s) {
    return s.size() == module.size() && strncasecmp(s.data(), module.data(), s.size()) == 0;
  });
}

void Log::Write(std::string_view module, LogLevel level, std::string_view message) const {
  if (!Enabled(module, level)) return;
  std::string line;
  line.reserve(module.size() + message.size() + 28);
  if (timestamps_) {
    const auto now = std::chrono::system_clock::now();
    const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
    const auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
        1000;
    std::tm local{};
    localtime_r(&seconds, &local);
    char stamp[40];
    const std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &local);
    std::snprintf(stamp + n, sizeof stamp - n, ".%03d ", static_cast<int>(millis));
    line.append(stamp);
  }
  line.push_back('[');
  line.append(module);
  line.append("] ");
  line.append(message);
  line.push_back('\n');
  std::string_view rest = line;
  while (!rest.empty()) {
    const ssize_t n = ::write(fd_, rest.data(), rest.size());
    if (n <= 0) break;  // nowhere to report a failure to log
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

bool Log::Limited(std::string_view module, LogLevel level, std::string_view message,
                  int per_second) const {
  if (!Enabled(module, level)) return false;
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
  std::int64_t window = window_.load();
  if (window != now && window_.compare_exchange_strong(window, now)) {
    const int dropped = suppressed_.exchange(0);
    in_window_ = 0;
    if (dropped > 0) {
      Write(module, level, std::to_string(dropped) + " similar messages suppressed");
    }
  }
  if (in_window_.fetch_add(1) >= per_second) {
    suppressed_.fetch_add(1);
    return false;
  }
  Write(module, level, message);
  return true;
}

}  // namespace tunnels::config
