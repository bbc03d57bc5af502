#include "config/pattern.h"

#include <catch2/catch.hpp>
#include <vector>

using tunnels::config::ParsePattern;
using tunnels::config::Pattern;

namespace {

Pattern P(const char* text) {
  std::string error;
  auto p = ParsePattern(text, &error);
  INFO(text << ": " << error);
  REQUIRE(p.has_value());
  return *p;
}

std::string Error(const char* text) {
  std::string error;
  CHECK_FALSE(ParsePattern(text, &error).has_value());
  return error;
}

}  // namespace

TEST_CASE("what each form of pattern matches", "[pattern]") {
  struct Case {
    const char* why;
    const char* pattern;
    std::vector<const char*> matches;
    std::vector<const char*> misses;
  };
  const std::vector<Case> cases = {
      {"an exact pattern matches only that name",
       "www.Example.com",
       {"www.example.com"},
       {"example.com", "a.www.example.com", "wwwexample.com"}},
      {"a leading dot means the name and every name under it",
       ".example.com",
       {"example.com", "www.example.com", "a.b.example.com"},
       {"badexample.com", "example.com.evil", "com"}},
      {"a leading star matches one or more labels, not zero",
       "*.onion",
       {"abc.onion", "www.abc.onion"},
       {"onion", "abconion"}},
      {"a trailing star matches one or more labels",
       "google.*",
       {"google.com", "google.co.uk"},
       {"google", "www.google.com"}},
      {"a dot and a trailing star",
       ".google.*",
       {"google.com", "www.google.co.uk"},
       {"notgoogle.com"}},
      {"a star in the middle matches exactly one label",
       "a.*.example.com",
       {"a.b.example.com"},
       {"a.example.com", "a.b.c.example.com"}},
      {"a lone star matches every name", "*", {"com", "a.b.c"}, {}},
      {"stars at both ends", "*.google.*", {"www.google.com", "a.b.google.co.uk"}, {"google.com"}},
      {"a trailing dot is the absolute form of the same pattern",
       "example.com.",
       {"example.com"},
       {}},
  };
  for (const Case& c : cases) {
    INFO(c.why << ": " << c.pattern);
    const Pattern p = P(c.pattern);
    for (const char* name : c.matches) CHECK(p.Matches(name));
    for (const char* name : c.misses) CHECK_FALSE(p.Matches(name));
  }
  CHECK(P("www.Example.com").kind == Pattern::Kind::kExact);
  CHECK(P(".example.com").kind == Pattern::Kind::kSuffix);
  CHECK(P("*.onion").kind == Pattern::Kind::kSuffix);
  CHECK(P("google.*").kind == Pattern::Kind::kGeneral);
  CHECK(P("*").literal_labels == 0);
}

TEST_CASE("specificity counts literal labels and right-anchored labels", "[pattern]") {
  CHECK(P("a.b.c").literal_labels == 3);
  CHECK(P("a.b.c").anchored_right == 3);
  CHECK(P("*.b.c").literal_labels == 2);
  CHECK(P("*.b.c").anchored_right == 2);
  CHECK(P(".google.*").literal_labels == 1);
  CHECK(P(".google.*").anchored_right == 0);
  CHECK(P("www.*.com").anchored_right == 1);
}

TEST_CASE("invalid patterns say why", "[pattern]") {
  CHECK_THAT(Error(""), Catch::Contains("empty"));
  CHECK_THAT(Error("."), Catch::Contains("at least one label"));
  CHECK_THAT(Error("a..b"), Catch::Contains("empty label"));
  CHECK_THAT(Error("a b.com"), Catch::Contains("' '"));
  CHECK_THAT(Error("a*.com"), Catch::Contains("'*'"));
  CHECK_THAT(Error(std::string(64, 'a').c_str()), Catch::Contains("63"));
  std::string longname;
  for (int i = 0; i < 60; ++i) longname += "abcd.";
  longname += "com";
  CHECK_THAT(Error(longname.c_str()), Catch::Contains("253"));
}
