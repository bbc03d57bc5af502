// The files a sandbox sees instead of the machine's, as text. Pure
// functions, so that what the sandbox gets is unit-tested.
#pragma once

#include <string>

namespace tunnels::launcher {

// /etc/resolv.conf inside the sandbox: tunnels' DNS server only.
std::string SandboxResolvConf();

// /etc/nsswitch.conf inside the sandbox: the machine's, with the `hosts:`
// sources that bypass /etc/resolv.conf taken out (systemd-resolved's
// `resolve`, multicast DNS's `mdns*`, each with the [action] that follows
// it), and `dns` added when it is missing, so that every lookup of every
// program reaches tunnels.
std::string SandboxNsswitch(const std::string& machine_nsswitch);

}  // namespace tunnels::launcher
