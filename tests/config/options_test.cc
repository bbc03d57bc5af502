// The table of main options (config/main_options.def): every entry is read,
// has its default, is classified for a reload, and is found by its key.
#include "config/options.h"

#include <catch2/catch.hpp>
#include <set>
#include <string>

#include "config/config.h"
#include "tests/config/load_checks.h"

using namespace tunnels::config;
using tunnels::testing::AllDiagnostics;
using tunnels::testing::LoadFixture;

TEST_CASE("the table lists each main option once, with a reload class", "[options]") {
  std::set<std::string_view> keys;
  for (const MainOption& o : MainOptions()) {
    INFO(o.key);
    CHECK(keys.insert(o.key).second);
    CHECK((o.reload == Reload::kApplied || o.reload == Reload::kRestart));
    CHECK(FindMainOption(o.key) == &o);
  }
  CHECK(keys.size() == 21);
  // What a reload applies at once; every other option waits for a restart.
  std::set<std::string_view> applied;
  for (const MainOption& o : MainOptions()) {
    if (o.reload == Reload::kApplied) applied.insert(o.key);
  }
  CHECK(applied == std::set<std::string_view>{"blockUndefinedDomains", "connectionIdleTimeout",
                                              "temporaryBindPortRange", "randomCredentialsLength",
                                              "allowPrivateAnswers", "maxConnectionsPerSource"});
  CHECK(FindMainOption("proxies") == nullptr);
  CHECK(FindMainOption("dnsport") == nullptr);  // keys are case-sensitive
}

TEST_CASE("every main option reads its example, and only that option changes", "[options]") {
  const LoadFixture f;
  const LoadResult defaults = f.One("");
  REQUIRE(defaults.ok());
  for (const MainOption& o : MainOptions()) {
    const std::string text = std::string(o.key) + ": " + std::string(o.example) + "\n";
    INFO(text);
    const LoadResult r = f.One(text);
    INFO(AllDiagnostics(r));
    REQUIRE(r.ok());
    CHECK(r.diagnostics.empty());
    const Options& got = r.config->options;
    REQUIRE(got.origin.size() == 1);
    CHECK(got.origin.at(std::string(o.key)).ToString() == "a.yml:1:1");
    CHECK_FALSE(o.same(got, defaults.config->options));
    for (const MainOption& other : MainOptions()) {
      if (&other != &o) CHECK(other.same(got, defaults.config->options));
    }
    // copy() moves exactly this option.
    Options copied = defaults.config->options;
    o.copy(copied, got);
    for (const MainOption& other : MainOptions()) CHECK(other.same(copied, got));
  }
}

TEST_CASE("without a file setting them, the options are Options' defaults", "[options]") {
  const LoadFixture f;
  const LoadResult r = f.One("rules:\n  a.example: direct\n");
  REQUIRE(r.ok());
  const Options defaults;
  for (const MainOption& o : MainOptions()) {
    INFO(o.key);
    // upstreamDns alone has no fixed default: it comes from resolv.conf.
    CHECK(o.same(r.config->options, defaults) == (o.key != "upstreamDns"));
  }
}

TEST_CASE("a main option given twice is an error naming the first place", "[options]") {
  const LoadFixture f;
  for (const MainOption& o : MainOptions()) {
    const std::string line = std::string(o.key) + ": " + std::string(o.example) + "\n";
    const LoadResult r = f.Docs({{"a.yml", line}, {"b.yml", "\n" + line}});
    INFO(AllDiagnostics(r));
    CHECK(AllDiagnostics(r) == "b.yml:2:1: error: option '" + std::string(o.key) +
                                   "' is already set at a.yml:1:1; only one file may set it\n");
  }
}

TEST_CASE("a misspelt main option gets a did-you-mean with the right key", "[options]") {
  const LoadFixture f;
  for (const MainOption& o : MainOptions()) {
    // One letter dropped from the middle.
    std::string typo(o.key);
    typo.erase(typo.size() / 2, 1);
    const LoadResult r = f.One(typo + ": " + std::string(o.example) + "\n");
    CHECK(AllDiagnostics(r) == "a.yml:1:1: error: unknown option '" + typo + "'; did you mean '" +
                                   std::string(o.key) + "'?\n");
  }
}
