#include "resolver/query_handler.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "config/config.h"
#include "resolver/dns_message.h"

namespace tunnels::resolver {
namespace {

using Bytes = std::vector<std::uint8_t>;

// A handler over a small /29 pool (six usable addresses) with a clock the
// test moves, and log lines thrown away.
struct Fixture {
  config::Config config;
  std::unique_ptr<config::RuleSet> rules;
  FakePool::TimePoint now{std::chrono::hours(1)};
  std::unique_ptr<FakePool> pool;
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  config::Log log{config::LogLevel::kDebug, {}, devnull};
  std::unique_ptr<QueryHandler> handler;

  explicit Fixture(const std::string& extra = "") {
    const auto loaded = config::LoadDocuments(
        {{"t.yml", "upstreamDns: 192.0.2.1\nprivateAddresses: 10.9.0.0/29\n" + extra +
                       "proxies:\n  tor: {type: socks5, address: h}\n"
                       "rules:\n  \"*.onion\": tor\n  ads.test: block\n"
                       "  half.test@web: block\n  half.test@ssh: tor\n"}});
    REQUIRE(loaded.ok());
    config = *loaded.config;
    rules = std::make_unique<config::RuleSet>(config);
    FakePool::Options o;
    o.network = config.options.private_addresses.address;
    o.prefix_length = config.options.private_addresses.length;
    o.cleanup_time = std::chrono::seconds(100);
    o.clock = [this] { return now; };
    pool = FakePool::Create(o);
    REQUIRE(pool);
    handler =
        std::make_unique<QueryHandler>(*rules, *pool, QueryHandler::Options{25, 60, 4096}, log);
  }
  ~Fixture() { ::close(devnull); }

  static Bytes Query(const std::string& name, std::uint16_t type = dns_type::kA,
                     std::optional<Edns> edns = std::nullopt, std::uint16_t id = 0x1234) {
    Message m;
    m.header.id = id;
    m.header.rd = true;
    m.questions.push_back(Question{name, type, dns_class::kIn});
    m.edns = edns;
    auto wire = Encode(m);
    REQUIRE(wire.ok());
    return *wire;
  }

  QueryHandler::Outcome Handle(const Bytes& q, Transport t = Transport::kUdp) const {
    return handler->Handle(q, t);
  }

  Message Reply(const Bytes& q, Transport t = Transport::kUdp) const {
    const auto outcome = Handle(q, t);
    REQUIRE(outcome.kind == QueryHandler::Kind::kReply);
    auto m = ParseMessage(outcome.reply);
    REQUIRE(m.ok());
    return *m;
  }
};

constexpr std::uint32_t kNet = 0x0A090000;  // 10.9.0.0

}  // namespace

TEST_CASE("A for a ruled name: a fake address with the configured TTL", "[handler]") {
  Fixture f;
  const Message m = f.Reply(Fixture::Query("Abc.Onion"));
  CHECK(m.header.id == 0x1234);
  CHECK(m.header.qr);
  CHECK(m.header.rd);
  CHECK(m.rcode() == RCode::kNoError);
  REQUIRE(m.answers.size() == 1);
  CHECK(m.answers[0].name == "Abc.Onion");  // the question's case
  CHECK(m.answers[0].ttl == 25);
  const auto address = m.answers[0].Ipv4();
  REQUIRE(address);
  CHECK((*address & ~7u) == kNet);
  CHECK(*address != kNet);      // the network address is never handed out
  CHECK(*address != kNet + 7);  // nor the blackhole
  CHECK(f.Reply(Fixture::Query("abc.onion.")).answers[0].Ipv4() == address);
  CHECK(f.pool->Lookup(*address)->name == "abc.onion");
}

TEST_CASE("other types for a ruled name are answered empty, never forwarded", "[handler]") {
  Fixture f;
  for (std::uint16_t type : {dns_type::kAaaa, dns_type::kMx, dns_type::kTxt, dns_type::kHttps,
                             dns_type::kSrv, dns_type::kNs, std::uint16_t{64}}) {
    const Message m = f.Reply(Fixture::Query("abc.onion", type));
    CHECK(m.rcode() == RCode::kNoError);
    CHECK(m.answers.empty());
  }
  CHECK(f.Reply(Fixture::Query("abc.onion", dns_type::kAny)).answers.size() == 1);
}

TEST_CASE("names without a rule are forwarded, or blocked", "[handler]") {
  Fixture f;
  const auto outcome = f.Handle(Fixture::Query("www.debian.org", dns_type::kAaaa));
  CHECK(outcome.kind == QueryHandler::Kind::kForward);
  CHECK(outcome.name == "www.debian.org");
  CHECK(f.Handle(Fixture::Query("", dns_type::kNs)).kind == QueryHandler::Kind::kForward);
  // In-addr.arpa names outside the fake range are somebody else's.
  CHECK(f.Handle(Fixture::Query("1.2.0.192.in-addr.arpa", dns_type::kPtr)).kind ==
        QueryHandler::Kind::kForward);

  Fixture blocking("blockUndefinedDomains: true\n");
  const Message m = blocking.Reply(Fixture::Query("www.debian.org"));
  REQUIRE(m.answers.size() == 1);
  CHECK(m.answers[0].Ipv4() == kNet + 7);
  CHECK(blocking.Reply(Fixture::Query("www.debian.org", dns_type::kAaaa)).answers.empty());
}

TEST_CASE("block rules answer the blackhole; a name blocked on some ports only is faked",
          "[handler]") {
  Fixture f;
  CHECK(f.Reply(Fixture::Query("ads.test")).answers[0].Ipv4() == kNet + 7);
  CHECK(f.Reply(Fixture::Query("ads.test")).answers[0].ttl == 60);
  const auto half = f.Reply(Fixture::Query("half.test")).answers[0].Ipv4();
  CHECK(half != kNet + 7);
}

TEST_CASE("PTR for a fake address names it; an unmapped one is NXDOMAIN", "[handler]") {
  Fixture f;
  const auto address = *f.Reply(Fixture::Query("x.onion")).answers[0].Ipv4();
  const Message m = f.Reply(Fixture::Query(ReverseName(address), dns_type::kPtr));
  REQUIRE(m.answers.size() == 1);
  CHECK(m.answers[0].TargetName() == "x.onion");
  CHECK(f.Reply(Fixture::Query(ReverseName(kNet + 5), dns_type::kPtr)).rcode() == RCode::kNxDomain);
}

TEST_CASE("an exhausted pool recycles idle mappings, and answers SERVFAIL when all are held",
          "[handler]") {
  Fixture f;
  std::vector<std::uint32_t> addresses;
  for (int i = 0; i < 6; ++i) {
    const Message m = f.Reply(Fixture::Query("n" + std::to_string(i) + ".onion"));
    REQUIRE(m.answers.size() == 1);
    addresses.push_back(*m.answers[0].Ipv4());
  }
  // A seventh name recycles the least recently used idle mapping.
  CHECK(f.Reply(Fixture::Query("n6.onion")).answers.size() == 1);
  // With every address held by a live connection, there is nothing to give.
  for (std::uint32_t a : addresses) REQUIRE(f.pool->Hold(a));
  const Message m = f.Reply(Fixture::Query("n99.onion"));
  CHECK(m.rcode() == RCode::kServFail);
  CHECK(m.answers.empty());
}

TEST_CASE("malformed queries get FORMERR or nothing", "[handler]") {
  Fixture f;
  CHECK(f.Handle(Bytes{}).kind == QueryHandler::Kind::kDrop);
  CHECK(f.Handle(Bytes{1, 2, 3}).kind == QueryHandler::Kind::kDrop);
  Bytes response = Fixture::Query("a.onion");
  response[2] |= 0x80;  // QR: a response; answering it could start a loop
  CHECK(f.Handle(response).kind == QueryHandler::Kind::kDrop);
  Bytes loop = {0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1};
  const auto outcome = f.Handle(loop);
  REQUIRE(outcome.kind == QueryHandler::Kind::kReply);
  CHECK((outcome.reply[3] & 0x0f) == 1);  // FORMERR
  CHECK(outcome.reply[0] == 0xab);
}

TEST_CASE("UDP replies respect the client's EDNS size; TCP ones dnsPacketSize", "[handler]") {
  Fixture f;
  Edns edns;
  edns.udp_payload_size = 1400;
  const Message m = f.Reply(Fixture::Query("e.onion", dns_type::kA, edns));
  REQUIRE(m.edns.has_value());
  CHECK(m.answers.size() == 1);
  CHECK(f.handler->packet_size() == 4096);
  CHECK(f.Reply(Fixture::Query("e.onion"), Transport::kTcp).answers.size() == 1);
}

TEST_CASE("replies advertise an EDNS UDP size of 1232, or dnsPacketSize when smaller",
          "[handler]") {
  Fixture f;
  const Bytes q = Fixture::Query("e.onion", dns_type::kA, Edns{});
  const Bytes nx = Fixture::Query("5.0.9.10.in-addr.arpa", dns_type::kPtr, Edns{});
  for (const std::size_t packet_size : {std::size_t{65535}, std::size_t{4096}}) {
    const QueryHandler h(*f.rules, *f.pool, QueryHandler::Options{25, 60, packet_size}, f.log);
    for (const Bytes* query : {&q, &nx}) {
      for (const Transport t : {Transport::kUdp, Transport::kTcp}) {
        const auto outcome = h.Handle(*query, t);
        REQUIRE(outcome.kind == QueryHandler::Kind::kReply);
        const auto m = ParseMessage(outcome.reply);
        REQUIRE(m.ok());
        REQUIRE(m->edns.has_value());
        CHECK(m->edns->udp_payload_size == 1232);
      }
    }
  }
  const QueryHandler small(*f.rules, *f.pool, QueryHandler::Options{25, 60, 600}, f.log);
  const auto m = ParseMessage(small.Handle(q, Transport::kUdp).reply);
  REQUIRE(m.ok());
  REQUIRE(m->edns.has_value());
  CHECK(m->edns->udp_payload_size == 600);
}

// The server writes address replies straight from the query's bytes; they
// must be exactly what the codec encodes.
TEST_CASE("address replies are byte for byte what BuildAddressReply encodes", "[handler]") {
  Fixture f;
  const auto check = [&f](const std::string& name, std::uint16_t type, std::uint16_t klass, bool cd,
                          const std::optional<Edns>& edns, std::uint32_t ttl) {
    for (const Transport t : {Transport::kUdp, Transport::kTcp}) {
      Message m;
      m.header.id = 0xbeef;
      m.header.rd = !cd;
      m.header.cd = cd;
      m.questions.push_back(Question{name, type, klass});
      m.edns = edns;
      const auto wire = Encode(m);
      REQUIRE(wire.ok());
      const auto outcome = f.Handle(*wire, t);
      INFO(name);
      REQUIRE(outcome.kind == QueryHandler::Kind::kReply);
      const auto reply = ParseMessage(outcome.reply);
      REQUIRE(reply.ok());
      REQUIRE(reply->answers.size() == 1);
      const std::uint32_t address = *reply->answers[0].Ipv4();
      const auto parsed = ParseQuery(*wire);
      REQUIRE(parsed.ok());
      ReplyOptions options;
      options.max_size = t == Transport::kUdp ? MaxUdpReplySize(*parsed.query, 4096) : 4096;
      options.edns_payload_size = kAdvertisedUdpSize;
      const auto expected = BuildAddressReply(*parsed.query, std::span(&address, 1), ttl, options);
      REQUIRE(expected.ok());
      CHECK(outcome.reply == *expected);
    }
  };
  Edns dnssec;
  dnssec.dnssec_ok = true;
  dnssec.udp_payload_size = 4000;
  dnssec.options = {0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8};  // a client cookie
  const std::uint16_t a = dns_type::kA;
  const std::uint16_t in = dns_class::kIn;
  check("a.onion", a, in, false, std::nullopt, 25);
  check("MiXeD.CaSe.Onion", a, in, true, std::nullopt, 25);
  check("any.onion", dns_type::kAny, in, false, std::nullopt, 25);
  check("chaos.onion", a, dns_class::kAny, false, std::nullopt, 25);
  check("edns.onion", a, in, false, Edns{}, 25);
  check("do.onion", a, in, true, dnssec, 25);
  check(R"(esc\.aped\\.n\200me.onion)", a, in, false, std::nullopt, 25);
  check(std::string(60, 'x') + "." + std::string(63, 'y') + "." + std::string(63, 'z') + ".onion",
        a, in, false, dnssec, 25);
  check("ads.test", a, in, false, dnssec, 60);  // the blackhole
}
}  // namespace tunnels::resolver
