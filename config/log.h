// Log lines of the form "[MODULE] message" on standard error. Modules named
// in silentLog are hidden. One write(2) per line, so lines from several
// threads never interleave.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tunnels::config {

enum class LogLevel { kError = 0, kWarning = 1, kInfo = 2, kDebug = 3 };

class Log {
 public:
  // `timestamps`: each line starts with the local time (to the
  // millisecond), for a log that is a plain file or a terminal; the
  // systemd journal adds its own.
  Log(LogLevel level, std::vector<std::string> silent_modules, int fd = 2, bool timestamps = false);

  bool Enabled(std::string_view module, LogLevel level) const;
  void Write(std::string_view module, LogLevel level, std::string_view message) const;

  void Error(std::string_view module, std::string_view message) const {
    Write(module, LogLevel::kError, message);
  }
  void Warning(std::string_view module, std::string_view message) const {
    Write(module, LogLevel::kWarning, message);
  }
  void Info(std::string_view module, std::string_view message) const {
    Write(module, LogLevel::kInfo, message);
  }
  void Debug(std::string_view module, std::string_view message) const {
    Write(module, LogLevel::kDebug, message);
  }

  // For messages caused by untrusted input (malformed packets, misbehaving
  // peers): at most `per_second` such lines a second, so that a flood cannot
  // fill the disk or drown the other lines. Returns whether it was written.
  bool Limited(std::string_view module, LogLevel level, std::string_view message,
               int per_second = 10) const;

 private:
  LogLevel level_;
  std::vector<std::string> silent_;
  int fd_;
  bool timestamps_ = false;
  // The limiter's window; mutable because logging is logically const.
  mutable std::atomic<std::int64_t> window_{0};
  mutable std::atomic<int> in_window_{0};
  mutable std::atomic<int> suppressed_{0};
};

// Whether standard error is connected to the systemd journal: the
// JOURNAL_STREAM variable systemd sets names its device and inode.
bool StderrIsJournal();

}  // namespace tunnels::config
