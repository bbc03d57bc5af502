#include "launcher/cli.h"

#include <catch2/catch.hpp>

namespace tunnels::launcher {
namespace {

using Args = std::vector<std::string>;

TEST_CASE("Options before the command move after it; no command means system") {
  CHECK(CanonicalArguments({}) == Args{});
  CHECK(CanonicalArguments({"system", "-v", "a.yml"}) == Args{"system", "-v", "a.yml"});
  CHECK(CanonicalArguments({"-v", "system", "a.yml"}) == Args{"system", "-v", "a.yml"});
  CHECK(CanonicalArguments({"-v", "-v", "run", "--", "curl", "x"}) ==
        Args{"run", "-v", "-v", "--", "curl", "x"});
  // The original's form: configuration paths only, options anywhere.
  CHECK(CanonicalArguments({"a.yml", "-q"}) == Args{"system", "a.yml", "-q"});
  CHECK(CanonicalArguments({"-q", "conf.d"}) == Args{"system", "-q", "conf.d"});
  // A command word after `--` is the program's, not tunnels'.
  CHECK(CanonicalArguments({"-v", "--", "run"}) == Args{"system", "-v", "--", "run"});
  CHECK(CanonicalArguments({"--help"}) == Args{"--help"});
  CHECK(CanonicalArguments({"--version"}) == Args{"--version"});
  CHECK(CanonicalArguments({"-h", "system"}) == Args{"-h", "system"});
}

}  // namespace
}  // namespace tunnels::launcher
