#include "launcher/commands.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "launcher/run.h"
#include "tests/config/temp_dir.h"

using namespace tunnels::launcher;
using tunnels::testing::TempDir;

namespace {

const std::string kSample = std::string(TUNNELS_SOURCE_DIR) + "/conf.d.sample";

ExplainTarget Target(const std::string& text) {
  std::string error;
  auto t = ParseExplainTarget(text, &error);
  INFO(error);
  REQUIRE(t.has_value());
  return *t;
}

}  // namespace

TEST_CASE("check passes on the shipped sample and prints where options came from", "[launcher]") {
  std::ostringstream out, err;
  CHECK(Check({kSample}, out, err) == 0);
  CHECK(err.str().empty());
  CHECK_THAT(out.str(), Catch::StartsWith("configuration OK: 3 files, 4 rules, 2 proxies"));
  CHECK_THAT(out.str(), Catch::Contains("blockUndefinedDomains    false"));
  CHECK_THAT(out.str(), Catch::Contains("tunnels.yml:40:1]"));
  CHECK_THAT(out.str(), Catch::Contains("privateAddresses         198.18.0.0/15"));
}

TEST_CASE("check reports every error with its place and exits 1", "[launcher]") {
  TempDir dir;
  const std::string conf = dir.Write("bad.yml",
                                     "upstreamDns: 192.0.2.1\nrules:\n  a.com: tr\n"
                                     "dnsPort: x\n");
  std::ostringstream out, err;
  CHECK(Check({conf}, out, err) == 1);
  CHECK(out.str().empty());
  CHECK_THAT(err.str(), Catch::Contains(conf + ":3:10: error: rule 'a.com' uses unknown proxy"));
  CHECK_THAT(err.str(), Catch::Contains(conf + ":4:10: error: dnsPort"));
  CHECK_THAT(err.str(), Catch::EndsWith("2 errors\n"));
}

TEST_CASE("check warns about ties decided by load order", "[launcher]") {
  TempDir dir;
  const std::string conf =
      dir.Write("t.yml", "upstreamDns: 192.0.2.1\nrules:\n  x.com: direct\n  .x.com: block\n");
  std::ostringstream out, err;
  CHECK(Check({conf}, out, err) == 0);
  CHECK_THAT(err.str(),
             Catch::Contains(conf + ":4:3: warning: rule '.x.com' and the rule 'x.com'"));
}

TEST_CASE("explain --json prints the decision as one object", "[launcher]") {
  std::ostringstream out, err;
  CHECK(Explain(Target("abc.ONION:22"), true, {kSample}, out, err) == 0);
  CHECK(out.str() ==
        "{\"name\": \"abc.ONION\", \"port\": 22, \"protocol\": \"tcp\", \"dns\": \"fake\", "
        "\"action\": \"proxy\", \"proxies\": [\"tor\"], \"forcedAddress\": [], \"rule\": "
        "{\"pattern\": \"*.onion\", \"file\": \"" +
            kSample + "/tunnels.yml\", \"line\": 28}}\n");
}

TEST_CASE("explain: refuse, forward, block", "[launcher]") {
  std::ostringstream out, err;
  CHECK(Explain(Target("abc.onion:25"), true, {kSample}, out, err) == 0);
  CHECK_THAT(out.str(), Catch::Contains("\"dns\": \"fake\", \"action\": \"refuse\", \"proxies\": "
                                        "[], \"forcedAddress\": [], \"rule\": null"));
  out.str("");
  CHECK(Explain(Target("debian.org"), true, {kSample}, out, err) == 0);
  CHECK_THAT(out.str(), Catch::Contains("\"port\": 443, \"protocol\": \"tcp\", \"dns\": "
                                        "\"forward\", \"action\": \"direct\""));
  out.str("");
  CHECK(Explain(Target("x.doubleclick.net/udp"), false, {kSample}, out, err) == 0);
  CHECK_THAT(out.str(), Catch::Contains("x.doubleclick.net:443/udp (no port given: 443 assumed)"));
  CHECK_THAT(out.str(), Catch::Contains("dns:    blocked"));
}

TEST_CASE("explain targets are validated", "[launcher]") {
  std::string error;
  CHECK_FALSE(ParseExplainTarget("a.com:0", &error));
  CHECK_FALSE(ParseExplainTarget("a.com/sctp", &error));
  CHECK_FALSE(ParseExplainTarget("a..com", &error));
  CHECK(Target("a.com:8080/udp").port == 8080);
}

TEST_CASE("check prints no raw control bytes from files in its summary", "[launcher]") {
  TempDir dir;
  const std::string conf = dir.Write(
      "c.yml", "upstreamDns: 192.0.2.1\nsilentLog: \"a\\e[2Jb\"\nrules:\n  x.com: direct\n");
  std::ostringstream out, err;
  CHECK(Check({conf}, out, err) == 0);
  CHECK(out.str().find('\x1b') == std::string::npos);
  CHECK_THAT(out.str(), Catch::Contains("a\\x1b[2Jb"));
}

TEST_CASE("the sample with its commented examples uncommented passes check", "[launcher]") {
  TempDir dir;
  const std::string key = dir.Write("id_ed25519", "k");
  for (const auto& entry : std::filesystem::directory_iterator(kSample)) {
    std::ifstream in(entry.path());
    std::ostringstream text;
    // A comment that reads as a YAML entry ("# name: value") is an example.
    const std::regex example(R"(^( *)# ( *[A-Za-z0-9_."*@+-]+:( .*)?)$)");
    int uncommented = 0;
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (std::regex_match(line, m, example)) {
        line = m[1].str() + m[2].str();
        ++uncommented;
      }
      // The example's key exists only on the example's machine.
      if (const auto at = line.find("/root/.ssh/id_ed25519"); at != std::string::npos) {
        line.replace(at, std::strlen("/root/.ssh/id_ed25519"), key);
      }
      text << line << "\n";
    }
    if (entry.path().filename() == "tunnels.yml") CHECK(uncommented >= 6);
    dir.Write("sample/" + entry.path().filename().string(), text.str());
  }
  std::ostringstream out, err;
  CHECK(Check({(dir.path() / "sample").string()}, out, err) == 0);
  INFO(err.str());
  CHECK(err.str().find("error") == std::string::npos);
  CHECK_THAT(out.str(), Catch::Contains("myvps"));
}

TEST_CASE("UDP rules: check warns, explain says UDP is refused", "[launcher]") {
  TempDir dir;
  const std::string conf =
      dir.Write("u.yml",
                "upstreamDns: 192.0.2.1\nrules:\n  a.com@u53: direct\n  b.com@quic: direct\n"
                "  c.com@web: direct\n");
  std::ostringstream out, err;
  CHECK(Check({conf}, out, err) == 0);
  CHECK_THAT(err.str(), Catch::Contains(conf + ":3:3: warning: rule 'a.com' covers UDP ports "
                                               "(u53), but tunnels does not carry UDP yet"));
  CHECK_THAT(err.str(), Catch::Contains(conf + ":4:3: warning: rule 'b.com' covers UDP ports "
                                               "(u443)"));
  CHECK(err.str().find("'c.com'") == std::string::npos);  // web's u443 mirrors its t443
  std::ostringstream eout, eerr;
  CHECK(Explain(Target("a.com:53/udp"), false, {conf}, eout, eerr) == 0);
  CHECK_THAT(eout.str(), Catch::Contains("action: refused: UDP is not carried yet"));
  std::ostringstream jout, jerr;
  CHECK(Explain(Target("c.com:443/udp"), true, {conf}, jout, jerr) == 0);
  CHECK_THAT(jout.str(), Catch::Contains("\"action\": \"refuse\", \"proxies\": []"));
  std::ostringstream tout, terr;
  CHECK(Explain(Target("c.com:443"), false, {conf}, tout, terr) == 0);
  CHECK_THAT(tout.str(), Catch::Contains("action: direct connection"));
}

TEST_CASE("check without CONF reads what run reads without -c", "[launcher]") {
  const std::vector<std::string> defaults = DefaultConfigPaths();
  std::ostringstream out, err;
  const int status = Check({}, out, err);
  if (defaults.empty()) {
    CHECK(status == 0);
    CHECK_THAT(err.str(), Catch::Contains("neither /etc/tunnels nor ~/.config/tunnels exists"));
    CHECK_THAT(out.str(), Catch::StartsWith("configuration OK: 0 files, 0 rules"));
  } else {
    std::ostringstream dout, derr;
    CHECK(Check(defaults, dout, derr) == status);
    CHECK(out.str() == dout.str());
  }
}
