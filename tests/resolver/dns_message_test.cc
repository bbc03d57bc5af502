#include "resolver/dns_message.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace tunnels::resolver {
namespace {

using Bytes = std::vector<std::uint8_t>;

void Put16(Bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}

void Put32(Bytes& b, std::uint32_t v) {
  Put16(b, static_cast<std::uint16_t>(v >> 16));
  Put16(b, static_cast<std::uint16_t>(v));
}

void Append(Bytes& b, const Bytes& more) { b.insert(b.end(), more.begin(), more.end()); }

// A plain dotted name in wire form (no escapes), for building test input by hand.
Bytes Wire(std::string_view dotted) {
  Bytes b;
  while (!dotted.empty()) {
    const std::size_t dot = dotted.find('.');
    const std::string_view label = dotted.substr(0, dot);
    b.push_back(static_cast<std::uint8_t>(label.size()));
    b.insert(b.end(), label.begin(), label.end());
    if (dot == std::string_view::npos) break;
    dotted.remove_prefix(dot + 1);
  }
  b.push_back(0);
  return b;
}

Bytes Pointer(std::uint16_t offset) {
  return {static_cast<std::uint8_t>(0xC0 | (offset >> 8)), static_cast<std::uint8_t>(offset)};
}

Bytes HeaderBytes(std::uint16_t id, std::uint16_t flags, std::uint16_t qd, std::uint16_t an = 0,
                  std::uint16_t ns = 0, std::uint16_t ar = 0) {
  Bytes b;
  for (std::uint16_t v : {id, flags, qd, an, ns, ar}) Put16(b, v);
  return b;
}

// Type and class.
Bytes TypeClass(std::uint16_t type, std::uint16_t klass = dns_class::kIn) {
  Bytes b;
  Put16(b, type);
  Put16(b, klass);
  return b;
}

// Type, class, TTL, RDLENGTH and the RDATA of a record, after its name.
Bytes RecordTail(std::uint16_t type, std::uint32_t ttl, const Bytes& rdata,
                 std::uint16_t klass = dns_class::kIn) {
  Bytes b = TypeClass(type, klass);
  Put32(b, ttl);
  Put16(b, static_cast<std::uint16_t>(rdata.size()));
  Append(b, rdata);
  return b;
}

// An OPT record: root name, payload size, DO bit, version and raw options.
Bytes Opt(std::uint16_t payload, bool dnssec_ok, const Bytes& options = {},
          std::uint8_t version = 0) {
  Bytes b{0};
  Append(b, RecordTail(dns_type::kOpt, (std::uint32_t{version} << 16) | (dnssec_ok ? 0x8000u : 0u),
                       options, payload));
  return b;
}

constexpr std::uint16_t kRd = 0x0100;

// A query for `name`/`type` with RD set, and an OPT record when `payload`.
Bytes QueryBytes(std::string_view name, std::uint16_t type = dns_type::kA,
                 std::uint16_t payload = 0, std::uint16_t id = 0x1234) {
  Bytes b = HeaderBytes(id, kRd, 1, 0, 0, payload != 0 ? 1 : 0);
  Append(b, Wire(name));
  Append(b, TypeClass(type));
  if (payload != 0) Append(b, Opt(payload, true));
  return b;
}

ErrorCode ParseError(const Bytes& b) {
  Result<Message> m = ParseMessage(b);
  REQUIRE_FALSE(m.ok());
  INFO(m.error.ToString());
  return m.error.code;
}

Message MustParse(const Bytes& b) {
  Result<Message> m = ParseMessage(b);
  INFO((m.ok() ? std::string() : m.error.ToString()));
  REQUIRE(m.ok());
  return *m;
}

Query MustParseQuery(const Bytes& b) {
  QueryParseResult r = ParseQuery(b);
  INFO(r.error.ToString());
  REQUIRE(r.ok());
  return *r.query;
}

Bytes Must(Result<Bytes> b) {
  INFO((b.ok() ? std::string() : b.error.ToString()));
  REQUIRE(b.ok());
  return *b;
}

Bytes MustEncode(const Message& m, std::size_t max = kMaxMessageSize) {
  return Must(Encode(m, max));
}

// The header's flags that are set, in wire order: one CHECK against it
// names every flag that differs.
std::string Flags(const Header& h) {
  const std::pair<bool, const char*> flags[] = {{h.qr, "qr"}, {h.aa, "aa"}, {h.tc, "tc"},
                                                {h.rd, "rd"}, {h.ra, "ra"}, {h.ad, "ad"},
                                                {h.cd, "cd"}};
  std::string out;
  for (const auto& [set, name] : flags) {
    if (set) out += out.empty() ? name : std::string(" ") + name;
  }
  return out;
}

ResourceRecord Raw(std::string name, std::uint16_t type, std::uint32_t ttl, Bytes rdata) {
  ResourceRecord rr;
  rr.name = std::move(name);
  rr.type = type;
  rr.ttl = ttl;
  rr.rdata = std::move(rdata);
  return rr;
}

TEST_CASE("a plain query parses with its flags, question and original case", "[dns]") {
  const Bytes b = QueryBytes("WwW.ExAmple.COM", dns_type::kAaaa);
  const Query q = MustParseQuery(b);
  CHECK(q.header.id == 0x1234);
  CHECK_FALSE(q.header.qr);
  CHECK(q.header.opcode == kOpcodeQuery);
  CHECK(q.header.rd);
  CHECK(q.question.name == "WwW.ExAmple.COM");
  CHECK(q.name == "www.example.com");
  CHECK(q.question.type == dns_type::kAaaa);
  CHECK(q.question.klass == dns_class::kIn);
  CHECK_FALSE(q.edns.has_value());
}

TEST_CASE("the EDNS OPT record is parsed with payload size, DO bit and opaque options", "[dns]") {
  Bytes options;
  Put16(options, 10);  // COOKIE
  Put16(options, 8);
  Append(options, {1, 2, 3, 4, 5, 6, 7, 8});
  Put16(options, 12);  // PADDING, empty
  Put16(options, 0);
  Bytes b = HeaderBytes(7, kRd, 1, 0, 0, 1);
  Append(b, Wire("example.com"));
  Append(b, TypeClass(dns_type::kA));
  Append(b, Opt(4096, true, options));

  const Query q = MustParseQuery(b);
  REQUIRE(q.edns.has_value());
  CHECK(q.edns->udp_payload_size == 4096);
  CHECK(q.edns->dnssec_ok);
  CHECK(q.edns->version == 0);
  CHECK(q.edns->extended_rcode == 0);
  CHECK(q.edns->options == options);
  // The OPT record is not among the additional records.
  CHECK(MustParse(b).additionals.empty());
}

TEST_CASE("messages with every section round-trip through Encode and ParseMessage", "[dns]") {
  Message m;
  m.header.id = 0xBEEF;
  m.header.qr = true;
  m.header.aa = true;
  m.header.rd = true;
  m.header.ra = true;
  m.header.ad = true;
  m.header.cd = true;
  m.header.rcode = 3;
  m.questions.push_back({"Www.Example.com", dns_type::kA, dns_class::kIn});
  Bytes cname_target = Wire("cdn.example.com");
  m.answers.push_back(Raw("Www.Example.com", dns_type::kCname, 300, cname_target));
  m.answers.push_back(MakeARecord("cdn.example.com", 60, 0x01020304));
  m.answers.push_back(MakeARecord("cdn.example.com", 60, 0x05060708));
  Bytes mx{0, 10};
  Append(mx, Wire("mail.example.com"));
  m.answers.push_back(Raw("example.com", dns_type::kMx, 3600, mx));
  m.answers.push_back(Raw("example.com", dns_type::kTxt, 3600, {5, 'h', 'e', 'l', 'l', 'o'}));
  Bytes srv{0, 1, 0, 2, 0x01, 0xBB};
  Append(srv, Wire("sip.example.com"));
  m.answers.push_back(Raw("_sip._tcp.example.com", dns_type::kSrv, 10, srv));
  Bytes soa = Wire("ns1.example.com");
  Append(soa, Wire("hostmaster.example.com"));
  for (std::uint32_t v : {2024010101u, 7200u, 900u, 1209600u, 86400u}) Put32(soa, v);
  m.authorities.push_back(Raw("example.com", dns_type::kSoa, 86400, soa));
  m.authorities.push_back(Raw("example.com", dns_type::kNs, 86400, Wire("ns1.example.com")));
  m.additionals.push_back(Raw("ns1.example.com", dns_type::kAaaa, 5, Bytes(16, 0x20)));
  m.additionals.push_back(Raw("x.example.com", 65280, 5, {1, 2, 3}));  // unknown type
  m.edns = Edns{1232, 0, 0, true, 0, {0, 10, 0, 2, 0xAA, 0xBB}};

  const Bytes wire = MustEncode(m);
  const Message back = MustParse(wire);
  CHECK(back.header.id == 0xBEEF);
  CHECK(Flags(back.header) == "qr aa rd ra ad cd");
  CHECK(back.rcode() == RCode::kNxDomain);
  CHECK(back.questions == m.questions);
  CHECK(back.answers == m.answers);
  CHECK(back.authorities == m.authorities);
  CHECK(back.additionals == m.additionals);
  CHECK(back.edns == m.edns);
  // Encoding what was parsed gives the same bytes again.
  CHECK(MustEncode(back) == wire);

  CHECK(back.answers[0].TargetName() == "cdn.example.com");
  CHECK(back.answers[1].Ipv4() == 0x01020304u);
  CHECK_FALSE(back.answers[0].Ipv4().has_value());
  CHECK_FALSE(back.answers[1].TargetName().has_value());
}

TEST_CASE("names are compressed on write against earlier names, case-exactly", "[dns]") {
  Message m;
  m.questions.push_back({"www.example.com", dns_type::kA, dns_class::kIn});
  m.answers.push_back(Raw("www.example.com", dns_type::kCname, 1, Wire("cdn.example.com")));
  m.answers.push_back(MakeARecord("cdn.example.com", 1, 0x01020304));
  const Bytes b = MustEncode(m);
  // 12 header + 17 name + 4; CNAME: 2 + 10 + (4 + 2); A: 2 + 10 + 4.
  REQUIRE(b.size() == 67);
  CHECK(Bytes(b.begin() + 33, b.begin() + 35) == Pointer(12));
  CHECK(Bytes(b.begin() + 45, b.begin() + 51) == Bytes{3, 'c', 'd', 'n', 0xC0, 16});
  CHECK(b[43] == 0);  // CNAME RDLENGTH 6
  CHECK(b[44] == 6);
  CHECK(Bytes(b.begin() + 51, b.begin() + 53) == Pointer(45));
  CHECK(MustParse(b).answers == m.answers);

  SECTION("a name differing only in case is not pointed at, its common suffix is") {
    Message c;
    c.questions.push_back({"WWW.example.com", dns_type::kA, dns_class::kIn});
    c.answers.push_back(MakeARecord("www.example.com", 1, 1));
    const Bytes cb = MustEncode(c);
    // The owner is "www" + a pointer to "example.com".
    CHECK(Bytes(cb.begin() + 33, cb.begin() + 39) == Bytes{3, 'w', 'w', 'w', 0xC0, 16});
    const Message back = MustParse(cb);
    CHECK(back.questions[0].name == "WWW.example.com");
    CHECK(back.answers[0].name == "www.example.com");
  }
}

TEST_CASE("compressed names are expanded on read, in owners and in RDATA", "[dns]") {
  // www.example.com CNAME cdn.example.com; cdn.example.com A 1.2.3.4;
  // authority: example.com SOA with both names compressed; MX compressed.
  Bytes b = HeaderBytes(1, 0x8180, 1, 3, 1, 0);
  Append(b, Wire("www.example.com"));  // 12; "example.com" at 16, "com" at 24
  Append(b, TypeClass(dns_type::kA));
  Append(b, Pointer(12));  // 33
  Bytes cname{3, 'c', 'd', 'n'};
  Append(cname, Pointer(16));
  Append(b, RecordTail(dns_type::kCname, 30, cname));  // RDATA at 45
  Append(b, Pointer(45));
  Append(b, RecordTail(dns_type::kA, 30, {1, 2, 3, 4}));
  Append(b, Pointer(16));
  Bytes mx{0, 5, 4, 'm', 'a', 'i', 'l'};
  Append(mx, Pointer(16));
  Append(b, RecordTail(dns_type::kMx, 30, mx));
  Append(b, Pointer(16));
  Bytes soa{2, 'n', 's'};
  Append(soa, Pointer(16));
  Append(soa, {4, 'r', 'o', 'o', 't'});
  Append(soa, Pointer(16));
  for (int i = 0; i < 20; ++i) soa.push_back(static_cast<std::uint8_t>(i));
  Append(b, RecordTail(dns_type::kSoa, 30, soa));

  const Message m = MustParse(b);
  REQUIRE(m.answers.size() == 3);
  CHECK(m.answers[0].name == "www.example.com");
  CHECK(m.answers[0].TargetName() == "cdn.example.com");
  CHECK(m.answers[0].rdata == Wire("cdn.example.com"));
  CHECK(m.answers[1].name == "cdn.example.com");
  CHECK(m.answers[1].Ipv4() == 0x01020304u);
  Bytes mx_expanded{0, 5};
  Append(mx_expanded, Wire("mail.example.com"));
  CHECK(m.answers[2].rdata == mx_expanded);
  REQUIRE(m.authorities.size() == 1);
  Bytes soa_expanded = Wire("ns.example.com");
  Append(soa_expanded, Wire("root.example.com"));
  for (int i = 0; i < 20; ++i) soa_expanded.push_back(static_cast<std::uint8_t>(i));
  CHECK(m.authorities[0].rdata == soa_expanded);
  // Our encoder compresses the same way.
  CHECK(MustEncode(m) == b);
}

TEST_CASE("text names escape dots, backslashes and unprintable bytes", "[dns]") {
  const Bytes wire{3, 'a', '.', 'b', 2, '\\', ' ', 2, 0xFF, 'X', 0};
  Result<std::string> text = DecodeName(wire);
  REQUIRE(text.ok());
  CHECK(*text == "a\\.b.\\\\\\032.\\255X");
  Result<Bytes> back = EncodeName(*text);
  REQUIRE(back.ok());
  CHECK(*back == wire);

  CHECK(*EncodeName("") == Bytes{0});
  CHECK(*EncodeName(".") == Bytes{0});
  CHECK(*EncodeName("example.com.") == Wire("example.com"));
  CHECK(*EncodeName("a\\.") == Bytes{2, 'a', '.', 0});
  CHECK(*EncodeName("\\a\\bc") == Wire("abc"));
  CHECK(*DecodeName(Bytes{0}) == "");
  CHECK(LowercaseName("WWW.Ex\\.AMPLE\\032") == "www.ex\\.ample\\032");

  CHECK(EncodeName("a..b").error.code == ErrorCode::kBadName);
  CHECK(EncodeName(".a").error.code == ErrorCode::kBadName);
  CHECK(EncodeName("a.b..").error.code == ErrorCode::kBadName);
  CHECK(EncodeName("a\\").error.code == ErrorCode::kBadName);
  CHECK(EncodeName("a\\25").error.code == ErrorCode::kBadName);
  CHECK(EncodeName("a\\2x5").error.code == ErrorCode::kBadName);
  CHECK(EncodeName("a\\256").error.code == ErrorCode::kBadName);
  CHECK(EncodeName(std::string(63, 'a')).ok());
  CHECK(EncodeName(std::string(64, 'a')).error.code == ErrorCode::kLabelTooLong);
  const std::string l63(63, 'x');
  // 4 * 64 - 1 + a root byte = 255 wire bytes: the longest name.
  const std::string longest = l63 + "." + l63 + "." + l63 + "." + std::string(61, 'x');
  REQUIRE(EncodeName(longest).ok());
  CHECK(EncodeName(longest)->size() == 255);
  CHECK(EncodeName(longest + "x").error.code == ErrorCode::kNameTooLong);
  CHECK(EncodeName(longest + ".x").error.code == ErrorCode::kNameTooLong);

  CHECK(DecodeName(Bytes{1, 'a'}).error.code == ErrorCode::kBadName);
  CHECK(DecodeName(Bytes{1, 'a', 0, 0}).error.code == ErrorCode::kBadName);
  CHECK(DecodeName(Bytes{0xC0, 0}).error.code == ErrorCode::kBadName);
  CHECK(DecodeName(Bytes{64}).error.code == ErrorCode::kLabelTooLong);
}

TEST_CASE("malformed headers, questions and counts are rejected", "[dns][malformed]") {
  SECTION("truncated header") {
    const Bytes full = QueryBytes("example.com");
    for (std::size_t n = 0; n < kHeaderSize; ++n) {
      CHECK(ParseError(Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n))) ==
            ErrorCode::kTruncatedHeader);
    }
  }
  SECTION("every truncation of a valid query is an error, never a crash") {
    const Bytes full = QueryBytes("www.example.com", dns_type::kA, 1232);
    for (std::size_t n = 0; n < full.size(); ++n) {
      CHECK_FALSE(
          ParseMessage(Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n))).ok());
    }
    CHECK(ParseMessage(full).ok());
  }
  SECTION("truncated question") {
    Bytes b = HeaderBytes(1, 0, 1);
    Append(b, {3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm'});
    CHECK(ParseError(b) == ErrorCode::kTruncatedQuestion);
    Bytes c = HeaderBytes(1, 0, 1);
    Append(c, {3, 'w', 'w', 'w', 0, 0, 1});
    CHECK(ParseError(c) == ErrorCode::kTruncatedQuestion);
    Bytes d = HeaderBytes(1, 0, 1);
    Append(d, {3, 'w', 'w', 'w', 0xC0});
    CHECK(ParseError(d) == ErrorCode::kTruncatedQuestion);
  }
  SECTION("counts larger than the message") {
    CHECK(ParseError(HeaderBytes(1, 0, 1)) == ErrorCode::kCountTooLarge);
    Bytes b = QueryBytes("example.com");
    // 17 bytes could hold a question and one minimal record, not two.
    b[7] = 1;
    CHECK(ParseError(b) == ErrorCode::kTruncatedRecord);
    b[7] = 2;
    CHECK(ParseError(b) == ErrorCode::kCountTooLarge);
    b[6] = 0xFF;
    b[7] = 0xFF;
    CHECK(ParseError(b) == ErrorCode::kCountTooLarge);
    Bytes q = QueryBytes("example.com");
    q[4] = 0xFF;  // QDCOUNT 65281
    CHECK(ParseError(q) == ErrorCode::kCountTooLarge);
  }
  SECTION("a count that fits the bytes but not the records") {
    Bytes b = QueryBytes("example.com");
    b[5] = 2;  // 2 questions, 17 bytes: enough by count, not by content
    CHECK(ParseError(b) == ErrorCode::kTruncatedQuestion);
  }
  SECTION("trailing bytes") {
    Bytes b = QueryBytes("example.com");
    b.push_back(0);
    CHECK(ParseError(b) == ErrorCode::kTrailingData);
  }
  SECTION("more than 65535 bytes") {
    Bytes b = QueryBytes("example.com");
    b.resize(kMaxMessageSize + 1);
    CHECK(ParseError(b) == ErrorCode::kMessageTooLarge);
  }
}

TEST_CASE("malformed names and compression pointers are rejected", "[dns][malformed]") {
  SECTION("pointer into itself") {
    Bytes b = HeaderBytes(1, 0, 1);
    Append(b, Pointer(12));
    Append(b, TypeClass(1));
    CHECK(ParseError(b) == ErrorCode::kBadPointer);
  }
  SECTION("pointer to a label of its own name") {
    Bytes b = HeaderBytes(1, 0, 1);
    Append(b, {1, 'a'});
    Append(b, Pointer(12));
    Append(b, TypeClass(1));
    CHECK(ParseError(b) == ErrorCode::kBadPointer);
  }
  SECTION("forward pointer") {
    Bytes b = HeaderBytes(1, 0, 2);
    Append(b, Pointer(18));
    Append(b, TypeClass(1));
    Append(b, Wire("a"));  // at 18
    Append(b, TypeClass(1));
    CHECK(ParseError(b) == ErrorCode::kBadPointer);
  }
  SECTION("pointer loop") {
    // Two names pointing at each other: whichever comes first points forward.
    Bytes b = HeaderBytes(1, 0, 2);
    Append(b, Pointer(18));  // 12
    Append(b, TypeClass(1));
    Append(b, Pointer(12));  // 18
    Append(b, TypeClass(1));
    CHECK(ParseError(b) == ErrorCode::kBadPointer);
  }
  SECTION("pointer into the header") {
    Bytes b = HeaderBytes(1, 0, 1);
    Append(b, Pointer(4));
    Append(b, TypeClass(1));
    CHECK(ParseError(b) == ErrorCode::kBadPointer);
  }
  SECTION("pointer into the middle of a label") {
    Bytes b = HeaderBytes(1, 0, 2);
    Append(b, Wire("www"));  // 12..16
    Append(b, TypeClass(1));
    Append(b, Pointer(13));
    Append(b, TypeClass(1));
    CHECK(ParseError(b) == ErrorCode::kBadPointer);
  }
  SECTION("pointer into opaque RDATA that happens to look like a name") {
    Bytes b = HeaderBytes(1, 0, 1, 1);
    Append(b, Wire("a"));
    Append(b, TypeClass(1));
    Append(b, Wire("b"));                                 // 19
    Append(b, RecordTail(dns_type::kTxt, 1, Wire("c")));  // RDATA at 32
    b[8] = 0;
    b[9] = 1;  // and a second record in the authority section pointing at it
    Append(b, Pointer(32));
    Append(b, RecordTail(dns_type::kTxt, 1, {0}));
    CHECK(ParseError(b) == ErrorCode::kBadPointer);
  }
  SECTION("a pointer to a pointer, strictly backwards, is fine") {
    Bytes b = HeaderBytes(1, 0, 3);
    Append(b, Wire("a"));  // 12
    Append(b, TypeClass(1));
    Append(b, Pointer(12));  // 19
    Append(b, TypeClass(1));
    Append(b, Pointer(19));  // 25
    Append(b, TypeClass(1));
    const Message m = MustParse(b);
    CHECK(m.questions[2].name == "a");
  }
  SECTION("too many pointers") {
    // Each question is a pointer to the one before: the n-th follows n jumps.
    const int kQuestions = 200;
    Bytes b = HeaderBytes(1, 0, kQuestions);
    std::uint16_t previous = 12;
    Append(b, Wire("a"));
    Append(b, TypeClass(1));
    for (int i = 1; i < kQuestions; ++i) {
      const auto here = static_cast<std::uint16_t>(b.size());
      Append(b, Pointer(previous));
      Append(b, TypeClass(1));
      previous = here;
    }
    CHECK(ParseError(b) == ErrorCode::kTooManyPointers);
    // 127 jumps are still allowed.
    Bytes ok = b;
    ok[5] = 128;
    ok.resize(12 + 7 + 127 * 6);
    CHECK(MustParse(ok).questions.back().name == "a");
  }
  SECTION("label over 63 bytes or a reserved label type") {
    for (std::uint8_t len :
         {std::uint8_t{64}, std::uint8_t{0x7F}, std::uint8_t{0x80}, std::uint8_t{0xBF}}) {
      Bytes b = HeaderBytes(1, 0, 1);
      b.push_back(len);
      b.resize(b.size() + 70, 'a');
      b.push_back(0);
      Append(b, TypeClass(1));
      CHECK(ParseError(b) == ErrorCode::kLabelTooLong);
    }
  }
  SECTION("name over 255 bytes, in place") {
    const std::string l63(63, 'x');
    Bytes b = HeaderBytes(1, 0, 1);
    Append(b, Wire(l63 + "." + l63 + "." + l63 + "." + l63));  // 257 bytes
    Append(b, TypeClass(1));
    CHECK(ParseError(b) == ErrorCode::kNameTooLong);
  }
  SECTION("name over 255 bytes through a pointer, and exactly 255") {
    const std::string l63(63, 'x');
    Bytes b = HeaderBytes(1, 0, 2);
    Append(b, Wire(l63 + "." + l63 + "." + l63));  // 193 bytes at 12
    Append(b, TypeClass(1));
    Bytes ok = b;
    b.push_back(63);  // 64 + 193 = 257
    b.resize(b.size() + 63, 'y');
    Append(b, Pointer(12));
    Append(b, TypeClass(1));
    CHECK(ParseError(b) == ErrorCode::kNameTooLong);
    ok.push_back(61);  // 62 + 193 = 255
    ok.resize(ok.size() + 61, 'y');
    Append(ok, Pointer(12));
    Append(ok, TypeClass(1));
    const Message m = MustParse(ok);
    CHECK(EncodeName(m.questions[1].name)->size() == 255);
  }
}

TEST_CASE("malformed records and RDATA are rejected", "[dns][malformed]") {
  Bytes base = HeaderBytes(1, 0x8000, 1, 1);
  Append(base, Wire("a"));
  Append(base, TypeClass(1));
  Append(base, Pointer(12));

  SECTION("RDLENGTH past the end") {
    Bytes b = base;
    Append(b, RecordTail(dns_type::kA, 1, {1, 2, 3, 4}));
    b.pop_back();
    CHECK(ParseError(b) == ErrorCode::kTruncatedRecord);
  }
  SECTION("record cut off after its name") {
    Bytes b = base;
    Append(b, {0, 1, 0, 1, 0, 0, 0, 0, 0});  // 9 of the 10 fixed bytes
    CHECK(ParseError(b) == ErrorCode::kTruncatedRecord);
  }
  SECTION("A and AAAA with the wrong length") {
    Bytes b = base;
    Append(b, RecordTail(dns_type::kA, 1, {1, 2, 3, 4, 5}));
    CHECK(ParseError(b) == ErrorCode::kBadRdata);
    Bytes c = base;
    Append(c, RecordTail(dns_type::kAaaa, 1, Bytes(4, 0)));
    CHECK(ParseError(c) == ErrorCode::kBadRdata);
    Bytes d = base;  // CH class A records are something else: left alone
    Append(d, RecordTail(dns_type::kA, 1, {1, 2, 3, 4, 5}, 3));
    CHECK(MustParse(d).answers[0].rdata.size() == 5);
  }
  SECTION("a name in RDATA running past RDLENGTH") {
    Bytes c = base;
    Append(c, RecordTail(dns_type::kCname, 1, {3, 'c', 'd', 'n'}));
    CHECK(ParseError(c) == ErrorCode::kBadRdata);
  }
  SECTION("bytes after the names in RDATA") {
    Bytes b = base;
    Append(b, RecordTail(dns_type::kPtr, 1, {1, 'x', 0, 9}));
    CHECK(ParseError(b) == ErrorCode::kBadRdata);
    Bytes soa = Wire("ns");
    Append(soa, Wire("root"));
    soa.resize(soa.size() + 19);
    Bytes c = base;
    Append(c, RecordTail(dns_type::kSoa, 1, soa));
    CHECK(ParseError(c) == ErrorCode::kBadRdata);
    Bytes d = base;
    Append(d, RecordTail(dns_type::kMx, 1, {0}));
    CHECK(ParseError(d) == ErrorCode::kBadRdata);
  }
}

TEST_CASE("bad OPT records are rejected", "[dns][malformed]") {
  Bytes base = HeaderBytes(1, 0, 1, 0, 0, 1);
  Append(base, Wire("a"));
  Append(base, TypeClass(1));

  SECTION("well formed, for reference") {
    Bytes b = base;
    Append(b, Opt(1232, false));
    CHECK(MustParse(b).edns->udp_payload_size == 1232);
  }
  SECTION("two OPT records") {
    Bytes b = base;
    b[11] = 2;
    Append(b, Opt(1232, false));
    Append(b, Opt(1232, false));
    CHECK(ParseError(b) == ErrorCode::kBadOpt);
  }
  SECTION("OPT in the answer or authority section") {
    Bytes b = base;
    b[7] = 1;
    b[11] = 0;
    Append(b, Opt(1232, false));
    CHECK(ParseError(b) == ErrorCode::kBadOpt);
    Bytes c = base;
    c[9] = 1;
    c[11] = 0;
    Append(c, Opt(1232, false));
    CHECK(ParseError(c) == ErrorCode::kBadOpt);
  }
  SECTION("OPT not owned by the root") {
    Bytes b = base;
    Append(b, Pointer(12));
    Append(b, RecordTail(dns_type::kOpt, 0, {}, 1232));
    CHECK(ParseError(b) == ErrorCode::kBadOpt);
  }
  SECTION("option header cut off") {
    Bytes b = base;
    Append(b, Opt(1232, false, {0, 10, 0}));
    CHECK(ParseError(b) == ErrorCode::kBadOpt);
  }
  SECTION("option longer than the record") {
    Bytes b = base;
    Append(b, Opt(1232, false, {0, 10, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8}));
    CHECK(ParseError(b) == ErrorCode::kBadOpt);
  }
}

TEST_CASE("ParseQuery says whom to answer and with what", "[dns][query]") {
  SECTION("short messages and responses get no reply") {
    QueryParseResult r = ParseQuery(Bytes{1, 2, 3});
    CHECK_FALSE(r.ok());
    CHECK_FALSE(r.reply_rcode.has_value());
    Bytes response = QueryBytes("example.com");
    response[2] |= 0x80;
    r = ParseQuery(response);
    CHECK(r.error.code == ErrorCode::kNotAQuery);
    CHECK_FALSE(r.reply_rcode.has_value());
    CHECK(BuildErrorReply(r, {}).error.code == ErrorCode::kNoReply);
  }
  SECTION("other opcodes get NOTIMP with the question echoed") {
    Bytes b = QueryBytes("Example.com");
    b[2] = static_cast<std::uint8_t>(b[2] | (2 << 3));  // STATUS
    const QueryParseResult r = ParseQuery(b);
    CHECK(r.error.code == ErrorCode::kNotImplemented);
    REQUIRE(r.reply_rcode == RCode::kNotImp);
    const Message reply = MustParse(Must(BuildErrorReply(r, {})));
    CHECK(reply.header.id == 0x1234);
    CHECK(reply.header.qr);
    CHECK(reply.header.opcode == 2);
    CHECK(reply.rcode() == RCode::kNotImp);
    REQUIRE(reply.questions.size() == 1);
    CHECK(reply.questions[0].name == "Example.com");
  }
  SECTION("no question, or two, get FORMERR without a question") {
    const QueryParseResult none = ParseQuery(HeaderBytes(9, kRd, 0));
    CHECK(none.error.code == ErrorCode::kBadQuestionCount);
    REQUIRE(none.reply_rcode == RCode::kFormErr);
    Bytes two = HeaderBytes(9, kRd, 2);
    Append(two, Wire("a"));
    Append(two, TypeClass(1));
    Append(two, Wire("b"));
    Append(two, TypeClass(1));
    const QueryParseResult r = ParseQuery(two);
    CHECK(r.error.code == ErrorCode::kBadQuestionCount);
    CHECK_FALSE(r.question.has_value());
    const Message reply = MustParse(Must(BuildErrorReply(r, {})));
    CHECK(reply.header.id == 9);
    CHECK(reply.rcode() == RCode::kFormErr);
    CHECK(reply.questions.empty());
  }
  SECTION("FORMERR echoes the ID and the question when it was readable") {
    Bytes b = QueryBytes("Example.com", dns_type::kA, 1232);
    b.push_back(0);  // trailing garbage after a good question and OPT
    const QueryParseResult r = ParseQuery(b);
    CHECK(r.error.code == ErrorCode::kTrailingData);
    REQUIRE(r.reply_rcode == RCode::kFormErr);
    const Message reply = MustParse(Must(BuildErrorReply(r, {})));
    CHECK(reply.header.id == 0x1234);
    CHECK(reply.header.rd);
    CHECK(reply.rcode() == RCode::kFormErr);
    REQUIRE(reply.questions.size() == 1);
    CHECK(reply.questions[0].name == "Example.com");
    CHECK(reply.edns.has_value());
  }
  SECTION("FORMERR for a bad OPT carries no OPT") {
    Bytes b = HeaderBytes(5, kRd, 1, 0, 0, 1);
    Append(b, Wire("a"));
    Append(b, TypeClass(1));
    Append(b, Opt(1232, false, {0, 1, 0, 5}));
    const QueryParseResult r = ParseQuery(b);
    CHECK(r.error.code == ErrorCode::kBadOpt);
    REQUIRE(r.reply_rcode == RCode::kFormErr);
    const Message reply = MustParse(Must(BuildErrorReply(r, {})));
    CHECK_FALSE(reply.edns.has_value());
    CHECK(reply.questions.size() == 1);
  }
  SECTION("EDNS version 1 gets BADVERS, which needs the OPT record") {
    Bytes b = HeaderBytes(5, kRd, 1, 0, 0, 1);
    Append(b, Wire("a"));
    Append(b, TypeClass(1));
    Append(b, Opt(4096, true, {}, 1));
    const QueryParseResult r = ParseQuery(b);
    CHECK(r.error.code == ErrorCode::kBadEdnsVersion);
    REQUIRE(r.reply_rcode == RCode::kBadVers);
    const Bytes wire = Must(BuildErrorReply(r, {}));
    const Message reply = MustParse(wire);
    CHECK(reply.rcode() == RCode::kBadVers);
    CHECK(reply.header.rcode == 0);
    REQUIRE(reply.edns.has_value());
    CHECK(reply.edns->extended_rcode == 1);
    CHECK(reply.edns->version == 0);
    CHECK(reply.edns->dnssec_ok);
  }
  SECTION("answer records in a query are checked and ignored") {
    Bytes b = HeaderBytes(5, kRd, 1, 1);
    Append(b, Wire("a"));
    Append(b, TypeClass(1));
    Append(b, Pointer(12));
    Append(b, RecordTail(dns_type::kA, 1, {1, 2, 3, 4}));
    CHECK(MustParseQuery(b).question.name == "a");
  }
}

TEST_CASE("replies echo the query and carry the answers", "[dns][reply]") {
  const Query q = MustParseQuery(QueryBytes("WwW.ExAmple.com", dns_type::kA, 4096));
  ReplyOptions options;
  options.max_size = MaxUdpReplySize(q, 1232);

  SECTION("A records") {
    const std::vector<std::uint32_t> addresses = {0xC6120001u, 0xC6120002u};
    const Bytes wire = Must(BuildAddressReply(q, addresses, 60, options));
    const Message r = MustParse(wire);
    CHECK(r.header.id == 0x1234);
    CHECK(Flags(r.header) == "qr rd ra");
    CHECK(r.rcode() == RCode::kNoError);
    REQUIRE(r.questions.size() == 1);
    CHECK(r.questions[0] == q.question);  // 0x20: the case is echoed exactly
    REQUIRE(r.answers.size() == 2);
    CHECK(r.answers[0].name == "WwW.ExAmple.com");
    CHECK(r.answers[0].ttl == 60);
    CHECK(r.answers[0].Ipv4() == 0xC6120001u);
    CHECK(r.answers[1].Ipv4() == 0xC6120002u);
    // The owner names are pointers to the question.
    CHECK(wire.size() == 12 + 21 + 2 * 16 + 11);
    REQUIRE(r.edns.has_value());
    CHECK(r.edns->udp_payload_size == 1232);
    CHECK(r.edns->dnssec_ok);
    CHECK(r.edns->options.empty());
  }
  SECTION("PTR record") {
    const Query ptr = MustParseQuery(QueryBytes("4.0.18.198.in-addr.arpa", dns_type::kPtr));
    const Message r = MustParse(Must(BuildPtrReply(ptr, "www.example.com", 5, {})));
    REQUIRE(r.answers.size() == 1);
    CHECK(r.answers[0].type == dns_type::kPtr);
    CHECK(r.answers[0].name == "4.0.18.198.in-addr.arpa");
    CHECK(r.answers[0].TargetName() == "www.example.com");
    CHECK_FALSE(r.edns.has_value());
    CHECK(BuildPtrReply(ptr, "bad..name", 5, {}).error.code == ErrorCode::kBadName);
  }
  SECTION("empty replies of every kind") {
    for (RCode rcode : {RCode::kNoError, RCode::kNxDomain, RCode::kServFail, RCode::kRefused,
                        RCode::kNotImp, RCode::kFormErr}) {
      INFO(ToString(rcode));
      const Message r = MustParse(Must(BuildEmptyReply(q, rcode, options)));
      CHECK(r.header.id == 0x1234);
      CHECK(r.header.qr);
      CHECK(r.rcode() == rcode);
      CHECK(r.questions.size() == 1);
      CHECK(r.answers.empty());
      CHECK(r.authorities.empty());
    }
  }
  SECTION("MakeReply leaves room for more, e.g. an SOA for negative caching") {
    Message m = MakeReply(q, RCode::kNxDomain, options);
    Bytes soa = Wire("fake");
    Append(soa, Wire("fake"));
    soa.resize(soa.size() + 20);
    m.authorities.push_back(Raw("fake", dns_type::kSoa, 1, soa));
    const Message r = MustParse(MustEncode(m, options.max_size));
    CHECK(r.authorities.size() == 1);
    CHECK(r.rcode() == RCode::kNxDomain);
  }
}

TEST_CASE("the UDP size limit follows the client's EDNS payload size", "[dns][reply]") {
  const Query plain = MustParseQuery(QueryBytes("a"));
  CHECK(MaxUdpReplySize(plain, 1232) == 512);
  CHECK(MaxUdpReplySize(plain, 100) == 512);
  CHECK(MaxUdpReplySize(MustParseQuery(QueryBytes("a", 1, 4096)), 1232) == 1232);
  CHECK(MaxUdpReplySize(MustParseQuery(QueryBytes("a", 1, 4096)), 65535) == 4096);
  CHECK(MaxUdpReplySize(MustParseQuery(QueryBytes("a", 1, 100)), 65535) == 512);
  CHECK(MaxUdpReplySize(MustParseQuery(QueryBytes("a", 1, 1400)), 1232) == 1232);
}

TEST_CASE("replies over the size limit are truncated with TC", "[dns][truncation]") {
  std::vector<std::uint32_t> many(100);
  for (std::uint32_t i = 0; i < many.size(); ++i) many[i] = 0x0A000000u + i;

  SECTION("without EDNS: whole records up to 512 bytes") {
    const Query q = MustParseQuery(QueryBytes("example.com"));
    ReplyOptions options;
    options.max_size = MaxUdpReplySize(q, 1232);
    const Bytes wire = Must(BuildAddressReply(q, many, 60, options));
    CHECK(wire.size() == 12 + 17 + 30 * 16);
    const Message r = MustParse(wire);
    CHECK(r.header.tc);
    CHECK(r.answers.size() == 30);
    CHECK(r.questions.size() == 1);
    CHECK(r.answers[29].Ipv4() == 0x0A00001Du);
  }
  SECTION("with EDNS the OPT record stays") {
    const Query q = MustParseQuery(QueryBytes("example.com", 1, 512));
    ReplyOptions options;
    options.max_size = MaxUdpReplySize(q, 1232);
    const Bytes wire = Must(BuildAddressReply(q, many, 60, options));
    CHECK(wire.size() == 12 + 17 + 29 * 16 + 11);
    const Message r = MustParse(wire);
    CHECK(r.header.tc);
    CHECK(r.answers.size() == 29);
    CHECK(r.edns.has_value());
  }
  SECTION("exactly at the limit is not truncated") {
    const Query q = MustParseQuery(QueryBytes("example.com"));
    ReplyOptions options;
    options.max_size = 12 + 17 + 30 * 16;
    const Message r = MustParse(
        Must(BuildAddressReply(q, std::span<const std::uint32_t>(many).first(30), 60, options)));
    CHECK_FALSE(r.header.tc);
    CHECK(r.answers.size() == 30);
  }
  SECTION("over TCP everything fits") {
    const Query q = MustParseQuery(QueryBytes("example.com"));
    ReplyOptions options;
    options.max_size = kMaxMessageSize;
    const Message r = MustParse(Must(BuildAddressReply(q, many, 60, options)));
    CHECK_FALSE(r.header.tc);
    CHECK(r.answers.size() == 100);
  }
  SECTION("additional records that do not fit are dropped without TC") {
    Message m;
    m.header.qr = true;
    m.questions.push_back({"example.com", 1, 1});
    m.answers.push_back(MakeARecord("example.com", 1, 1));
    for (std::uint32_t i = 0; i < 50; ++i) {
      m.additionals.push_back(MakeARecord("x" + std::to_string(i) + ".example.com", 1, i));
    }
    const Message r = MustParse(MustEncode(m, 512));
    CHECK_FALSE(r.header.tc);
    CHECK(r.answers.size() == 1);
    CHECK(r.additionals.size() < 50);
    CHECK_FALSE(r.additionals.empty());
  }
  SECTION("a limit below the question leaves the header (and OPT record) with TC") {
    const Query plain = MustParseQuery(QueryBytes("example.com"));
    ReplyOptions options;
    options.max_size = 20;
    const Bytes wire = Must(BuildAddressReply(plain, many, 60, options));
    CHECK(wire.size() == 12);
    const Message r = MustParse(wire);
    CHECK(r.header.tc);
    CHECK(r.questions.empty());

    // The OPT record stays even when it alone is over the limit: BADVERS
    // would otherwise read as NOERROR.
    const Query q = MustParseQuery(QueryBytes("example.com", 1, 4096));
    options.max_size = 0;
    const Bytes opt_wire = Must(BuildEmptyReply(q, RCode::kBadVers, options));
    CHECK(opt_wire.size() == 12 + 11);
    const Message e = MustParse(opt_wire);
    CHECK(e.header.tc);
    CHECK(e.rcode() == RCode::kBadVers);
    REQUIRE(e.edns.has_value());
  }
  SECTION("BADVERS cannot be said without EDNS: it becomes FORMERR") {
    const Query plain = MustParseQuery(QueryBytes("example.com"));
    const Message r = MustParse(Must(BuildEmptyReply(plain, RCode::kBadVers, {})));
    CHECK(r.rcode() == RCode::kFormErr);
  }
}

TEST_CASE("large messages compress only against offsets a pointer can reach", "[dns]") {
  Message m;
  m.header.qr = true;
  m.questions.push_back({"example.com", 1, 1});
  for (std::uint32_t i = 0; i < 2000; ++i) {
    m.answers.push_back(MakeARecord("host" + std::to_string(i) + ".example.com", 1, i));
  }
  const Bytes wire = MustEncode(m);
  CHECK(wire.size() > 0x4000);
  const Message back = MustParse(wire);
  CHECK(back.answers == m.answers);
}

TEST_CASE("the ID of an opaque reply is read and rewritten in place", "[dns][opaque]") {
  Bytes reply = QueryBytes("example.com", dns_type::kA, 0, 0xABCD);
  reply[2] |= 0x80;
  const Bytes before = reply;
  CHECK(ReadId(reply) == 0xABCD);
  REQUIRE(RewriteId(reply, 0x0102));
  CHECK(ReadId(reply) == 0x0102);
  CHECK(reply[0] == 0x01);
  CHECK(reply[1] == 0x02);
  CHECK(Bytes(reply.begin() + 2, reply.end()) == Bytes(before.begin() + 2, before.end()));
  CHECK(PeekHeader(reply)->qr);
  CHECK(PeekQuestion(reply)->name == "example.com");

  Bytes tiny{1, 2, 3};
  CHECK_FALSE(ReadId(tiny).has_value());
  CHECK_FALSE(RewriteId(tiny, 5));
  CHECK(tiny == Bytes{1, 2, 3});
  CHECK_FALSE(PeekHeader(tiny).has_value());
  CHECK(PeekQuestion(tiny).error.code == ErrorCode::kTruncatedHeader);
  CHECK(PeekQuestion(HeaderBytes(1, 0, 0)).error.code == ErrorCode::kBadQuestionCount);
}

TEST_CASE("in-addr.arpa names convert to and from addresses", "[dns][reverse]") {
  CHECK(ReverseName(0x01020304u) == "4.3.2.1.in-addr.arpa");
  CHECK(ReverseName(0xC6120000u) == "0.0.18.198.in-addr.arpa");
  CHECK(ParseReverseName("4.3.2.1.in-addr.arpa") == 0x01020304u);
  CHECK(ParseReverseName("4.3.2.1.IN-ADDR.Arpa.") == 0x01020304u);
  CHECK(ParseReverseName("255.255.255.255.in-addr.arpa") == 0xFFFFFFFFu);
  CHECK(ParseReverseName("0.0.0.0.in-addr.arpa") == 0u);
  for (std::uint32_t a : {0u, 1u, 0x7F000001u, 0xC6130FFEu, 0xFFFFFFFFu}) {
    CHECK(ParseReverseName(ReverseName(a)) == a);
  }
  for (const char* bad :
       {"", "in-addr.arpa", ".in-addr.arpa", "3.2.1.in-addr.arpa", "5.4.3.2.1.in-addr.arpa",
        "256.3.2.1.in-addr.arpa", "04.3.2.1.in-addr.arpa", "a.3.2.1.in-addr.arpa",
        "4.3..1.in-addr.arpa", "4.3.2.1.in-addr.arpa.com", "4.3.2.1.ip6.arpa",
        "-4.3.2.1.in-addr.arpa", "4.3.2.1in-addr.arpa", "1000.3.2.1.in-addr.arpa"}) {
    INFO(bad);
    CHECK_FALSE(ParseReverseName(bad).has_value());
  }
}

TEST_CASE("random corruptions of valid messages never crash", "[dns][robustness]") {
  Message m;
  m.questions.push_back({"www.example.com", 1, 1});
  m.answers.push_back(Raw("www.example.com", dns_type::kCname, 300, Wire("cdn.example.com")));
  m.answers.push_back(MakeARecord("cdn.example.com", 60, 0x01020304));
  Bytes mx{0, 10};
  Append(mx, Wire("mail.example.com"));
  m.authorities.push_back(Raw("example.com", dns_type::kMx, 1, mx));
  m.edns = Edns{};
  const Bytes seed = MustEncode(m);

  std::mt19937 rng(12345);
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    Bytes b = seed;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = rng() % b.size();
      switch (rng() % 3) {
        case 0:
          b[at] = static_cast<std::uint8_t>(rng());
          break;
        case 1:
          b.resize(at);
          break;
        default:
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<std::uint8_t>(rng()));
      }
      if (b.empty()) break;
    }
    Result<Message> r = ParseMessage(b);
    if (!r) continue;
    ++parsed;
    // Whatever parses encodes and parses back to the same thing.
    Result<Bytes> again = Encode(*r);
    REQUIRE(again.ok());
    Result<Message> back = ParseMessage(*again);
    REQUIRE(back.ok());
    CHECK(back->questions == r->questions);
    CHECK(back->answers == r->answers);
  }
  CHECK(parsed > 0);
}

}  // namespace
}  // namespace tunnels::resolver
