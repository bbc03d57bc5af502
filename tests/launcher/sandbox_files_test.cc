#include "launcher/sandbox_files.h"

#include <catch2/catch.hpp>

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
