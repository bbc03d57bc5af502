// The command line of tunnels. main() only calls Main(); everything the
// commands do lives in the libraries, so the commands stay testable.
#pragma once

#include <iosfwd>

namespace tunnels::launcher {

int Main(int argc, char** argv);

}  // namespace tunnels::launcher
