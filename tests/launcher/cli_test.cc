#include "launcher/cli.h"

#include <catch2/catch.hpp>
#include <sstream>

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
  // An option's value is not the command, even when it is a command's name.
  CHECK(CanonicalArguments({"-c", "x", "run", "--", "true"}, {"-c"}) ==
        Args{"run", "-c", "x", "--", "true"});
  CHECK(CanonicalArguments({"-c", "check", "run", "--", "true"}, {"-c"}) ==
        Args{"run", "-c", "check", "--", "true"});
}

struct Parsed {
  int status = 0;
  CommandLine line;
  std::string out;
  std::string err;
};

Parsed Parse(const Args& args) {
  Parsed p;
  std::ostringstream out;
  std::ostringstream err;
  p.status = ParseCommandLine(args, &p.line, out, err);
  p.out = out.str();
  p.err = err.str();
  return p;
}

TEST_CASE("Every command takes its options before and after its name") {
  // Each command's options, written after the command, then before it;
  // then the positional arguments.
  struct Case {
    std::string command;
    Args options;
    Args rest;
  };
  const std::vector<Case> cases = {
      {"check", {"-v"}, {"a.yml"}},
      {"explain", {"-v", "--to", "x.com:80", "--json"}, {"a.yml"}},
      {"system", {"-v"}, {"a.yml"}},
      {"run", {"-v", "-c", "a.yml", "--strict", "--user", "nobody"}, {"--", "curl", "-v"}},
      {"cleanup", {"-v", "--state-dir", "/tmp/s"}, {"a.yml"}},
  };
  for (const auto& [command, options, rest] : cases) {
    Args after = {command};
    after.insert(after.end(), options.begin(), options.end());
    after.insert(after.end(), rest.begin(), rest.end());
    Args before = options;
    before.push_back(command);
    before.insert(before.end(), rest.begin(), rest.end());
    for (const Args& args : {after, before}) {
      INFO(Catch::Detail::stringify(args));
      const Parsed p = Parse(args);
      CHECK(p.err == "");
      REQUIRE(p.status == -1);
      CHECK(p.line.command == command);
      CHECK(p.line.verbose == 1);
      CHECK(p.line.Level() == config::LogLevel::kDebug);
      if (command == "run") {
        CHECK(p.line.run.config_paths == Args{"a.yml"});
        CHECK(p.line.run.strict);
        CHECK(p.line.run.user == "nobody");
        CHECK(p.line.run.command == Args{"curl", "-v"});
      } else {
        CHECK(p.line.paths == Args{"a.yml"});
      }
      if (command == "explain") {
        CHECK(p.line.explain_to == "x.com:80");
        CHECK(p.line.explain_json);
      }
      if (command == "cleanup") {
        CHECK(p.line.cleanup_state == "/tmp/s");
        CHECK(p.line.cleanup_state_given);
      }
    }
  }
}

TEST_CASE("run and system log [NET] lines by default; -q only errors") {
  CHECK(Parse({"run", "--", "true"}).line.Level() == config::LogLevel::kInfo);
  CHECK(Parse({"system", "a.yml"}).line.Level() == config::LogLevel::kInfo);
  CHECK(Parse({"-q", "run", "--", "true"}).line.Level() == config::LogLevel::kError);
}

TEST_CASE("A run without -- before the program gets the usage line and a hint") {
  for (const Args& args : {Args{"run", "-c", "x.yml", "curl", "https://a.example"},
                           Args{"run", "curl", "-s", "https://a.example"}}) {
    INFO(Catch::Detail::stringify(args));
    const Parsed p = Parse(args);
    CHECK(p.status == 2);
    CHECK(p.line.run.command.empty());
    CHECK_THAT(p.err, Catch::Contains("usage: tunnels run [OPTIONS] -- CMD [ARGS...]"));
    CHECK_THAT(p.err, Catch::Contains("put -- before the program"));
  }
  // With --, the program's options stay its own.
  const Parsed p = Parse({"run", "-c", "x.yml", "--", "curl", "-c", "jar"});
  CHECK(p.status == -1);
  CHECK(p.line.run.config_paths == Args{"x.yml"});
  CHECK(p.line.run.command == Args{"curl", "-c", "jar"});
}

}  // namespace
}  // namespace tunnels::launcher
