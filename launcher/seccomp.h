// The seccomp filter the sandbox's program runs under.
#pragma once

#include <string>

namespace tunnels::launcher {

// Makes ioctl(TIOCSTI) and ioctl(TIOCLINUX) fail with EPERM for this
// process and everything it starts. The program shares the caller's
// terminal: TIOCSTI would let it type a command into the caller's shell,
// which runs it after the program ends (bubblewrap's CVE-2017-5226), and
// TIOCLINUX can do the same on a virtual console through its selection.
// Everything else on the terminal (job control: TIOCSPGRP, TIOCGPGRP;
// window sizes; termios) stays allowed. Needs no_new_privs (or
// CAP_SYS_ADMIN). "" on success, else what failed.
[[nodiscard]] std::string BlockTerminalInjection();

}  // namespace tunnels::launcher
