// What diagnostics say: "did you mean" hints, tabs in YAML, and bytes of a
// file that must not reach the terminal raw.
#include <catch2/catch.hpp>

#include "config/config.h"
#include "tests/config/load_checks.h"

using namespace tunnels::config;

namespace {

struct Fixture : tunnels::testing::LoadFixture {
  std::string All(const std::string& name, const std::string& text) const {
    return tunnels::testing::AllDiagnostics(Docs({{name, text}}));
  }
};

}  // namespace

TEST_CASE("did you mean: a swap of two letters is one typo", "[diagnostics]") {
  Fixture f;
  CHECK_THAT(
      f.All("a.yml", "proxies:\n  dante: {type: socks5, address: h}\nrules:\n  a.com: dnate\n"),
      Catch::Contains(
          "a.yml:4:10: error: rule 'a.com' uses unknown proxy 'dnate'; did you mean 'dante'?\n"));
  CHECK(f.All("a.yml", "rules:\n  a.com@wbe: direct\n") ==
        "a.yml:2:9: error: unknown port alias 'wbe'; did you mean 'web'?\n");
}

TEST_CASE("a tab in the indentation is named, with its place", "[diagnostics]") {
  Fixture f;
  CHECK(f.All("a.yml", "rules:\n\ta.com: direct\n") ==
        "a.yml:2:1: error: YAML syntax: a tab indents this line; YAML indents with spaces only "
        "(illegal map value)\n");
  CHECK_THAT(f.All("a.yml", "rules: \n  \ta.com: direct\n"),
             Catch::StartsWith("a.yml:2:3: error: YAML syntax: a tab indents this line"));
}

TEST_CASE("diagnostics escape control bytes and invalid UTF-8", "[diagnostics]") {
  Fixture f;
  CHECK(f.All("a\x1b[1m.yml", "rules:\n  a.com: \xff\x1b]0;x\x07y\n") ==
        "a\\x1b[1m.yml:2:10: error: rule 'a.com' uses unknown proxy '\\xff\\x1b]0;x\\x07y'\n");
  CHECK(Printable("gr\xc3\xbc\xc3\x9f \xe2\x80\xae \xc2\x9b \xc0\xaf\ttab") ==
        "gr\xc3\xbc\xc3\x9f \\u202e \\u009b \\xc0\\xaf\\ttab");
}

TEST_CASE("a directory without configuration files gets a warning naming it", "[diagnostics]") {
  Fixture f;
  const std::string empty = (f.dir.path() / "empty").string();
  f.dir.Write("empty/notes.txt", "not yaml");
  // Beside a directory that does hold one: alone, loading nothing at all is
  // an error (fails closed), tested in loader_test.cc.
  f.dir.Write("rules/a.yml", "");
  const LoadResult r = Load({empty, (f.dir.path() / "rules").string()}, f.options);
  for (const auto& d : r.diagnostics) UNSCOPED_INFO(d.ToString());
  CHECK(r.ok());
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].ToString() ==
        empty + ": warning: the directory holds no configuration file (*.yml or *.yaml)");
}
