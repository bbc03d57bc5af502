// What a reload does with each main option: applies it, or keeps the
// running value and names the option as needing a restart.
#include "launcher/stack.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "config/options.h"
#include "tests/config/load_checks.h"

using namespace tunnels;
using tunnels::testing::AllDiagnostics;
using tunnels::testing::LoadFixture;

TEST_CASE("a reload applies or defers each main option as the table says", "[stack]") {
  const LoadFixture f;
  const config::LoadResult running = f.One("rules:\n  a.example: direct\n");
  REQUIRE(running.ok());
  for (const config::MainOption& o : config::MainOptions()) {
    const std::string text = std::string(o.key) + ": " + std::string(o.example) +
                             "\nrules:\n  a.example: direct\n  b.example: block\n";
    INFO(text);
    const config::LoadResult next = f.One(text);
    INFO(AllDiagnostics(next));
    REQUIRE(next.ok());
    const launcher::Stack::Prepared p =
        launcher::Stack::Prepare(running.config->options, *next.config);
    // The rules are always the new ones.
    CHECK(p.config->rules.size() == 2);
    if (o.reload == config::Reload::kRestart) {
      CHECK(p.restart == std::vector<std::string>{std::string(o.key)});
      CHECK(o.same(p.config->options, running.config->options));
    } else {
      CHECK(p.restart.empty());
      CHECK(o.same(p.config->options, next.config->options));
    }
  }
  // Nothing changed, nothing to restart.
  CHECK(launcher::Stack::Prepare(running.config->options, *running.config).restart.empty());
}
