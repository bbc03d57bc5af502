#include "launcher/sandbox_files.h"

#include <catch2/catch.hpp>

using tunnels::launcher::ProgramEnvironment;
using tunnels::launcher::SandboxNsswitch;
using tunnels::launcher::SandboxResolvConf;

TEST_CASE("the sandbox's resolv.conf names tunnels only", "[sandbox]") {
  const std::string r = SandboxResolvConf();
  CHECK_THAT(r, Catch::Contains("nameserver 127.0.0.1\n"));
  CHECK(r.find("nameserver", r.find("nameserver") + 1) == std::string::npos);
}

TEST_CASE("nsswitch: sources that bypass resolv.conf are taken out", "[sandbox]") {
  const std::string in =
      "passwd: files systemd\n"
      "hosts:          files mymachines resolve [!UNAVAIL=return] mdns4_minimal [NOTFOUND=return] "
      "dns myhostname\n"
      "networks: files\n";
  CHECK(SandboxNsswitch(in) ==
        "passwd: files systemd\n"
        "hosts: files mymachines dns myhostname\n"
        "networks: files\n");
}

TEST_CASE("nsswitch: dns is added when missing, and a hosts line when absent", "[sandbox]") {
  CHECK(SandboxNsswitch("hosts: resolve [!UNAVAIL=return] files\n") == "hosts: files dns\n");
  CHECK(SandboxNsswitch("passwd: files\n") == "passwd: files\nhosts: files dns\n");
  CHECK(SandboxNsswitch("hosts: files dns\n") == "hosts: files dns\n");
  CHECK(SandboxNsswitch("  hosts:\tfiles mdns dns\n") == "hosts: files dns\n");
}

TEST_CASE("a program run as another user gets an environment reset as sudo -u does", "[sandbox]") {
  // What sudo leaves: root's values, the caller's DISPLAY, and whatever the
  // sudoers rule let through.
  const std::vector<std::string> sudo = {"HOME=/root",
                                         "DISPLAY=:0",
                                         "USER=root",
                                         "LOGNAME=root",
                                         "SHELL=/bin/bash",
                                         "PATH=/root/bin:/usr/bin",
                                         "SUDO_UID=1000",
                                         "LD_PRELOAD=/tmp/x.so",
                                         "LC_ALL=C.UTF-8",
                                         "TERM=xterm",
                                         "BASH_ENV=/tmp/rc",
                                         "WAYLAND_DISPLAY=wayland-0",
                                         "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus",
                                         "NOEQUALS"};
  const std::string path = "PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games";
  CHECK(ProgramEnvironment(sudo, "alice", "/home/alice", "/bin/zsh") ==
        std::vector<std::string>{
            "DISPLAY=:0", "LC_ALL=C.UTF-8", "TERM=xterm", "WAYLAND_DISPLAY=wayland-0",
            "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus", "HOME=/home/alice",
            "USER=alice", "LOGNAME=alice", "SHELL=/bin/zsh", path});
  // A bare uid: no name, no home, no shell.
  CHECK(ProgramEnvironment({"LANG=de_DE.UTF-8", "HOMEPAGE=x"}, "", "", "") ==
        std::vector<std::string>{"LANG=de_DE.UTF-8", "HOME=/", "SHELL=/bin/sh", path});
}
