#include "config/pattern.h"

#include <catch2/catch.hpp>

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

TEST_CASE("an exact pattern matches only that name", "[pattern]") {
  const Pattern p = P("www.Example.com");
  CHECK(p.kind == Pattern::Kind::kExact);
  CHECK(p.Matches("www.example.com"));
  CHECK_FALSE(p.Matches("example.com"));
  CHECK_FALSE(p.Matches("a.www.example.com"));
  CHECK_FALSE(p.Matches("wwwexample.com"));
}

TEST_CASE("a leading dot means the name and every name under it", "[pattern]") {
  const Pattern p = P(".example.com");
  CHECK(p.kind == Pattern::Kind::kSuffix);
  CHECK(p.Matches("example.com"));
  CHECK(p.Matches("www.example.com"));
  CHECK(p.Matches("a.b.example.com"));
  CHECK_FALSE(p.Matches("badexample.com"));
  CHECK_FALSE(p.Matches("example.com.evil"));
  CHECK_FALSE(p.Matches("com"));
}

TEST_CASE("a leading star matches one or more labels, not zero", "[pattern]") {
  const Pattern p = P("*.onion");
  CHECK(p.kind == Pattern::Kind::kSuffix);
  CHECK(p.Matches("abc.onion"));
  CHECK(p.Matches("www.abc.onion"));
  CHECK_FALSE(p.Matches("onion"));
  CHECK_FALSE(p.Matches("abconion"));
}

TEST_CASE("a trailing star matches one or more labels", "[pattern]") {
  const Pattern p = P("google.*");
  CHECK(p.kind == Pattern::Kind::kGeneral);
  CHECK(p.Matches("google.com"));
  CHECK(p.Matches("google.co.uk"));
  CHECK_FALSE(p.Matches("google"));
  CHECK_FALSE(p.Matches("www.google.com"));
  const Pattern sub = P(".google.*");
  CHECK(sub.Matches("google.com"));
  CHECK(sub.Matches("www.google.co.uk"));
  CHECK_FALSE(sub.Matches("notgoogle.com"));
}

TEST_CASE("a star in the middle matches exactly one label", "[pattern]") {
  const Pattern p = P("a.*.example.com");
  CHECK(p.Matches("a.b.example.com"));
  CHECK_FALSE(p.Matches("a.example.com"));
  CHECK_FALSE(p.Matches("a.b.c.example.com"));
}

TEST_CASE("a lone star matches every name", "[pattern]") {
  const Pattern p = P("*");
  CHECK(p.Matches("com"));
  CHECK(p.Matches("a.b.c"));
  CHECK(p.literal_labels == 0);
}

TEST_CASE("stars at both ends", "[pattern]") {
  const Pattern p = P("*.google.*");
  CHECK(p.Matches("www.google.com"));
  CHECK(p.Matches("a.b.google.co.uk"));
  CHECK_FALSE(p.Matches("google.com"));
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

TEST_CASE("a trailing dot is the absolute form of the same pattern", "[pattern]") {
  CHECK(P("example.com.").Matches("example.com"));
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
