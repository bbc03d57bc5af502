// The command line of tunnels. main() only calls Main(); everything the
// commands do lives in the libraries, so the commands stay testable.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace tunnels::launcher {

int Main(int argc, char** argv);

// The arguments (without the program's name) in the form the parser
// expects: `tunnels CONF...` (the original's form) becomes `tunnels system
// CONF...`, and options written before the command move after it, so that
// `tunnels -v system CONF` and `tunnels -v run -- CMD` mean what they say
// instead of reading "system" or "run" as a configuration file. Nothing
// after `--` is looked at: it is the program's.
std::vector<std::string> CanonicalArguments(std::vector<std::string> args);

}  // namespace tunnels::launcher
