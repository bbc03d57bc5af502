// `tunnels system CONF...` (also the bare `tunnels CONF...` of the original):
// the engine for the machine's own network namespace, in the foreground.
#pragma once

#include <string>
#include <vector>

#include "config/log.h"

namespace tunnels::launcher {

struct SystemOptions {
  std::vector<std::string> paths;
  config::LogLevel level = config::LogLevel::kInfo;
};

// Runs until SIGINT or SIGTERM; returns the exit status.
int RunSystem(const SystemOptions& options);

}  // namespace tunnels::launcher
