// The cleanup guardian of `tunnels run` and a hand-started `tunnels
// system`: a process that outlives tunnels only to undo what it left.
#pragma once

#include <string>
#include <vector>

namespace tunnels::launcher {

// Forks a guardian that, once this process has ended however it ended,
// execs this binary with `args` (a `tunnels cleanup` for this instance's
// state only). False with `error` set when it cannot be started.
[[nodiscard]] bool StartGuardian(const std::vector<std::string>& args, std::string* error);

}  // namespace tunnels::launcher
