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

TEST_CASE("a program run as another user gets that user's HOME, USER, LOGNAME and SHELL",
          "[sandbox]") {
  // What sudo leaves: root's values, and the caller's DISPLAY.
  const std::vector<std::string> sudo = {"HOME=/root",   "DISPLAY=:0",      "USER=root",
                                         "LOGNAME=root", "SHELL=/bin/bash", "PATH=/usr/bin",
                                         "SUDO_UID=1000"};
  const auto env = ProgramEnvironment(sudo, "alice", "/home/alice", "/bin/zsh");
  CHECK(env == std::vector<std::string>{"DISPLAY=:0", "PATH=/usr/bin", "SUDO_UID=1000",
                                        "HOME=/home/alice", "USER=alice", "LOGNAME=alice",
                                        "SHELL=/bin/zsh"});
  // No shell in the passwd entry: SHELL stays; missing variables are added.
  CHECK(ProgramEnvironment({"SHELL=/bin/sh", "TERM=xterm"}, "bob", "/home/bob", "") ==
        std::vector<std::string>{"SHELL=/bin/sh", "TERM=xterm", "HOME=/home/bob", "USER=bob",
                                 "LOGNAME=bob"});
  // A name that only starts like one of them is kept.
  CHECK(ProgramEnvironment({"HOMEPAGE=x"}, "c", "/c", "/bin/sh").front() == "HOMEPAGE=x");
}
