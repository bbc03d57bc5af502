// The commands of the command line, each a function of its parsed options.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace tunnels::launcher {

// `tunnels check CONF...`: prints the diagnostics to `err` and a summary to
// `out`; returns the exit status (1 when there is an error).
int Check(const std::vector<std::string>& paths, std::ostream& out, std::ostream& err);

struct ExplainTarget {
  std::string name;
  std::uint16_t port = 443;
  config::Protocol protocol = config::Protocol::kTcp;
  bool port_given = false;
};
// Parses NAME[:PORT][/tcp|/udp].
std::optional<ExplainTarget> ParseExplainTarget(const std::string& text, std::string* error);

// `tunnels explain --to TARGET [--json] CONF...`.
int Explain(const ExplainTarget& target, bool json, const std::vector<std::string>& paths,
            std::ostream& out, std::ostream& err);

}  // namespace tunnels::launcher
