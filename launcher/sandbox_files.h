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

// The environment of a program started as another user (the one who ran
// sudo, or --user): reset as `sudo -u` resets it. Of the caller's ("NAME=value"
// entries) only what reaches the user's display, session bus and terminal
// and the locale is kept (DISPLAY, WAYLAND_DISPLAY, XAUTHORITY,
// XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS, TERM, COLORTERM, LANG,
// LANGUAGE, LC_*, TZ); HOME, USER, LOGNAME, SHELL and PATH are the user's.
// Under sudo the rest is root's or was chosen by whoever ran sudo, and
// some of it (LD_PRELOAD, BASH_ENV, PYTHONPATH) decides what a program
// runs. An empty `user` (a bare uid) sets no USER and LOGNAME; an empty
// `home` gives HOME=/, an empty `shell` SHELL=/bin/sh.
std::vector<std::string> ProgramEnvironment(const std::vector<std::string>& caller,
                                            const std::string& user, const std::string& home,
                                            const std::string& shell);

}  // namespace tunnels::launcher
