// The files a sandbox sees instead of the machine's, as text. Pure
// functions, so that what the sandbox gets is unit-tested.
#pragma once

#include <string>
#include <vector>

namespace tunnels::launcher {

// /etc/resolv.conf inside the sandbox: tunnels' DNS server only.
std::string SandboxResolvConf();

// /etc/nsswitch.conf inside the sandbox: the machine's, with the `hosts:`
// sources that bypass /etc/resolv.conf taken out (systemd-resolved's
// `resolve`, multicast DNS's `mdns*`, each with the [action] that follows
// it), and `dns` added when it is missing, so that every lookup of every
// program reaches tunnels.
std::string SandboxNsswitch(const std::string& machine_nsswitch);

// The program's environment ("NAME=value" entries): the caller's, except
// that a program started as another user (the one who ran sudo, or
// --user) gets that user's HOME, USER, LOGNAME and SHELL, as `runuser` and
// `sudo -u` give them. sudo sets them for root; a program running as alice
// with HOME=/root cannot write its own settings. An empty `shell` leaves
// SHELL alone.
std::vector<std::string> ProgramEnvironment(const std::vector<std::string>& caller,
                                            const std::string& user, const std::string& home,
                                            const std::string& shell);

}  // namespace tunnels::launcher
