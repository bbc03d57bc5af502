// The resolver behind `direct` rules and proxies given by name: answers kept
// for their TTL (negative ones too, within limits), one lookup shared by
// concurrent requests, A and AAAA asked at once. Against a small DNS server
// on a real UDP socket of the test's io_context, which counts the questions.
#include "proxies/name_resolver.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "config/log.h"
#include "proxies/address_cache.h"
#include "resolver/dns_message.h"

using namespace tunnels;
using namespace tunnels::proxies;
namespace asio = boost::asio;
using asio::ip::udp;
using std::chrono::seconds;

namespace {

resolver::ResourceRecord Record(std::string name, std::uint16_t type, std::uint32_t ttl,
                                std::vector<std::uint8_t> rdata) {
  return resolver::ResourceRecord{std::move(name), type, resolver::dns_class::kIn, ttl,
                                  std::move(rdata)};
}

// SOA RDATA: ns.test. admin.test. 1 2 3 4 MINIMUM.
std::vector<std::uint8_t> Soa(std::uint32_t minimum) {
  std::vector<std::uint8_t> r = {2,   'n', 's', 4,   't', 'e', 's', 't', 0,   5, 'a',
                                 'd', 'm', 'i', 'n', 4,   't', 'e', 's', 't', 0};
  for (std::uint32_t v : {1u, 2u, 3u, 4u, minimum}) {
    for (int shift = 24; shift >= 0; shift -= 8) r.push_back(std::uint8_t(v >> shift));
  }
  return r;
}

// What the test server answers for a name.
struct Zone {
  std::vector<std::uint8_t> a;     // empty: no A record
  std::vector<std::uint8_t> aaaa;  // empty: no AAAA record
  std::uint32_t ttl = 60;
  bool nxdomain = false;
  bool soa = false;  // an SOA with MINIMUM 5 and TTL 7 in negative answers
  bool drop_aaaa = false;
  bool servfail = false;
};

class TestServer {
 public:
  explicit TestServer(asio::io_context& io)
      : socket_(io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    asio::co_spawn(io, Serve(), asio::detached);  // ends with the socket
  }
  udp::endpoint endpoint() const { return socket_.local_endpoint(); }

  std::map<std::string, Zone> zones;
  std::vector<std::string> asked;  // "A name", "AAAA name"

 private:
  asio::awaitable<void> Serve() {
    std::vector<std::uint8_t> buffer(65535);
    for (;;) {
      udp::endpoint from;
      boost::system::error_code ec;
      const std::size_t n = co_await socket_.async_receive_from(
          asio::buffer(buffer), from, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      auto query = resolver::ParseMessage({buffer.data(), n});
      if (!query || query->questions.size() != 1) continue;
      const resolver::Question& q = query->questions[0];
      const bool aaaa = q.type == resolver::dns_type::kAaaa;
      asked.push_back((aaaa ? "AAAA " : "A ") + q.name);
      const Zone& zone = zones[q.name];
      if (aaaa && zone.drop_aaaa) continue;
      resolver::Message reply;
      reply.header.id = query->header.id;
      reply.header.qr = true;
      reply.header.rd = true;
      reply.header.ra = true;
      reply.questions = query->questions;
      if (zone.servfail) {
        reply.header.rcode = 2;
      } else if (zone.nxdomain) {
        reply.header.rcode = 3;
      } else if (!aaaa && !zone.a.empty()) {
        reply.answers.push_back(Record(q.name, resolver::dns_type::kA, zone.ttl, zone.a));
      } else if (aaaa && !zone.aaaa.empty()) {
        reply.answers.push_back(Record(q.name, resolver::dns_type::kAaaa, zone.ttl, zone.aaaa));
      }
      if (reply.answers.empty() && zone.soa) {
        reply.authorities.push_back(Record("test", resolver::dns_type::kSoa, 7, Soa(5)));
      }
      auto wire = resolver::Encode(reply);
      REQUIRE(wire);
      co_await socket_.async_send_to(asio::buffer(*wire), from,
                                     asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  udp::socket socket_;
};

struct Fixture {
  asio::io_context io;
  config::Log log{config::LogLevel::kError, {}};
  TestServer server{io};
  resolver::Upstream upstream{resolver::Upstream::Options{{server.endpoint()},
                                                          std::chrono::milliseconds(300),
                                                          std::chrono::milliseconds(300),
                                                          65535},
                              log};
  NameResolver names{upstream};

  struct Result {
    std::vector<std::string> addresses;
    std::string error;
  };

  // Resolves each name concurrently; runs the io_context until all are done.
  std::vector<Result> Resolve(const std::vector<std::string>& hosts) {
    std::vector<Result> results(hosts.size());
    std::size_t done = 0;
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      asio::co_spawn(
          io,
          [&, i]() -> asio::awaitable<void> {
            std::string error;
            auto addresses = co_await names.Resolve(hosts[i], &error);
            for (const auto& a : addresses) results[i].addresses.push_back(a.to_string());
            results[i].error = error;
            if (++done == hosts.size()) io.stop();
          },
          asio::detached);
    }
    io.restart();
    io.run();
    REQUIRE(done == hosts.size());
    return results;
  }
};

std::size_t Count(const std::vector<std::string>& asked, const std::string& what) {
  return static_cast<std::size_t>(std::count(asked.begin(), asked.end(), what));
}

}  // namespace

TEST_CASE("CacheTtl: the smallest answer TTL, an SOA's for negative answers, within limits",
          "[resolve]") {
  resolver::Message m;
  CHECK(CacheTtl(m) == kDefaultNegativeTtl);  // no answer, no SOA
  m.authorities.push_back(Record("test", resolver::dns_type::kSoa, 7, Soa(5)));
  CHECK(CacheTtl(m) == seconds(5));  // MINIMUM below the SOA's TTL
  m.authorities[0] = Record("test", resolver::dns_type::kSoa, 4, Soa(86400));
  CHECK(CacheTtl(m) == seconds(4));
  m.authorities[0] = Record("test", resolver::dns_type::kSoa, 86400, Soa(86400));
  CHECK(CacheTtl(m) == kMaxNegativeTtl);
  m.answers.push_back(Record("a.test", resolver::dns_type::kCname, 50, {1, 'b', 0}));
  m.answers.push_back(Record("b", resolver::dns_type::kA, 20, {10, 0, 0, 1}));
  CHECK(CacheTtl(m) == seconds(20));  // the smallest of the chain
  m.answers = {Record("a.test", resolver::dns_type::kA, 7 * 86400, {10, 0, 0, 1})};
  CHECK(CacheTtl(m) == kMaxPositiveTtl);
  m.answers = {Record("a.test", resolver::dns_type::kA, 0, {10, 0, 0, 1})};
  CHECK(CacheTtl(m) == seconds(0));
}

TEST_CASE("AddressCache keeps an answer for its TTL and stays within its capacity", "[resolve]") {
  const auto t0 = AddressCache::Clock::time_point{} + std::chrono::hours(1);
  AddressCache cache(2);
  const AddressCache::Answer one{{asio::ip::make_address("10.0.0.1")}, ""};
  cache.Store("a", one, seconds(10), t0);
  REQUIRE(cache.Find("a", t0 + seconds(9)) != nullptr);
  CHECK(cache.Find("a", t0 + seconds(9))->addresses == one.addresses);
  CHECK(cache.Find("a", t0 + seconds(10)) == nullptr);
  CHECK(cache.size() == 0);  // the expired entry is gone

  cache.Store("zero", one, seconds(0), t0);  // TTL 0: nothing kept
  CHECK(cache.Find("zero", t0) == nullptr);

  cache.Store("a", one, seconds(30), t0);
  cache.Store("b", {{}, "cannot resolve 'b'"}, seconds(20), t0);
  cache.Store("c", one, seconds(40), t0);  // full: "b", closest to expiry, goes
  CHECK(cache.size() == 2);
  CHECK(cache.Find("b", t0) == nullptr);
  CHECK(cache.Find("a", t0) != nullptr);
  cache.Store("d", one, seconds(40), t0 + seconds(35));  // "a" has expired: it goes
  CHECK(cache.Find("a", t0 + seconds(35)) == nullptr);
  CHECK(cache.Find("c", t0 + seconds(35)) != nullptr);
  CHECK(cache.Find("d", t0 + seconds(35)) != nullptr);

  // An address that took a connection goes first; the rest keep their order.
  const auto a = [](const char* text) { return asio::ip::make_address(text); };
  cache.Store("m", {{a("10.0.0.1"), a("10.0.0.2"), a("10.0.0.3")}, ""}, seconds(10), t0);
  cache.Promote("m", a("10.0.0.3"));
  CHECK(cache.Find("m", t0)->addresses ==
        std::vector<asio::ip::address>{a("10.0.0.3"), a("10.0.0.1"), a("10.0.0.2")});
  cache.Promote("m", a("192.0.2.1"));  // not in it: nothing changes
  cache.Promote("none", a("10.0.0.3"));
  CHECK(cache.Find("m", t0)->addresses.front() == a("10.0.0.3"));
}

TEST_CASE("answers that would reach this host itself are refused, private ones by option",
          "[resolve]") {
  const auto refused = [](const char* host, const char* address, bool allow_private = true) {
    AnswerPolicy policy;
    policy.allow_private = allow_private;
    return !RefusedAnswer(host, asio::ip::make_address(address), policy).empty();
  };
  for (const char* a :
       {"127.0.0.1", "127.255.0.9", "0.0.0.0", "0.1.2.3", "169.254.1.1", "224.0.0.1", "239.1.1.1",
        "255.255.255.255", "198.18.0.5", "198.19.255.1", "::1", "::", "fe80::1", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:198.18.0.1"}) {
    INFO(a);
    CHECK(refused("evil.test", a));
    CHECK(refused("evil.test", a, false));
  }
  for (const char* a : {"10.0.0.1", "172.16.0.1", "192.168.1.1", "fd00::1"}) {
    INFO(a);
    CHECK_FALSE(refused("intranet.test", a));
    CHECK(refused("intranet.test", a, false));
  }
  for (const char* a : {"93.184.216.34", "198.20.0.1", "2001:db8::1", "100.64.0.1"}) {
    CHECK_FALSE(refused("example.test", a, false));
  }
  // RFC 6761: localhost is loopback.
  CHECK_FALSE(refused("localhost", "127.0.0.1"));
  CHECK_FALSE(refused("db.localhost.", "::1"));
  CHECK(refused("notlocalhost", "127.0.0.1"));
  CHECK(refused("localhost", "0.0.0.0"));
}

TEST_CASE("Resolve leaves out refused answers unless told not to check", "[resolve]") {
  Fixture f;
  f.server.zones["evil.test"] = Zone{{127, 0, 0, 1}, {}};
  const auto r = f.Resolve({"evil.test"});
  REQUIRE(r.size() == 1);
  CHECK(r[0].addresses.empty());
  CHECK_THAT(r[0].error, Catch::Contains("127.0.0.1 (a loopback address)"));
}

TEST_CASE("concurrent requests for a name share one lookup of A and AAAA; later ones hit the cache",
          "[resolve]") {
  Fixture f;
  f.server.zones["a.test"] =
      Zone{{10, 1, 2, 3}, {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}};
  const std::vector<std::string> many(20, "a.test");
  for (const auto& r : f.Resolve(many)) {
    CHECK(r.addresses == std::vector<std::string>{"10.1.2.3", "2001:db8::1"});
    CHECK(r.error.empty());
  }
  CHECK(f.server.asked == std::vector<std::string>{"A a.test", "AAAA a.test"});
  f.Resolve({"a.test", "a.test"});
  CHECK(f.server.asked.size() == 2);
  CHECK(f.names.cached() == 1);
  // None of the addresses answered (the engine says so): asked again.
  f.names.Forget("a.test");
  f.Resolve({"a.test"});
  CHECK(f.server.asked.size() == 4);
  f.names.ForgetAll();  // a reload
  CHECK(f.names.cached() == 0);
  f.Resolve({"a.test"});
  CHECK(f.server.asked.size() == 6);
  // An IP literal is its own answer, asked of nobody.
  CHECK(f.Resolve({"192.0.2.7"})[0].addresses == std::vector<std::string>{"192.0.2.7"});
  CHECK(f.server.asked.size() == 6);
}

TEST_CASE("answers with TTL 0 or no address at all are not kept; half answers briefly",
          "[resolve]") {
  Fixture f;
  f.server.zones["zero.test"] = Zone{{10, 0, 0, 1}, {}, 0};
  f.server.zones["fail.test"].servfail = true;
  f.server.zones["half.test"] = Zone{{10, 0, 0, 2}, {}};
  f.server.zones["half.test"].drop_aaaa = true;
  f.Resolve({"zero.test"});
  f.Resolve({"zero.test"});
  CHECK(Count(f.server.asked, "A zero.test") == 2);
  auto fail = f.Resolve({"fail.test"});
  CHECK(fail[0].addresses.empty());
  CHECK(fail[0].error == "cannot resolve 'fail.test': the upstream DNS server says SERVFAIL");
  f.Resolve({"fail.test"});
  CHECK(Count(f.server.asked, "A fail.test") == 2);
  CHECK(f.names.cached() == 0);
  // AAAA never answered: the A answer is used and kept, but only for
  // kDefaultNegativeTtl (the unit test of the cache checks expiry).
  auto half = f.Resolve({"half.test"});
  CHECK(half[0].addresses == std::vector<std::string>{"10.0.0.2"});
  f.Resolve({"half.test"});
  CHECK(Count(f.server.asked, "A half.test") == 1);
  CHECK(f.names.cached() == 1);
}

TEST_CASE("a name that does not exist is remembered, with its error, as its SOA says",
          "[resolve]") {
  Fixture f;
  f.server.zones["gone.test"].nxdomain = true;
  f.server.zones["gone.test"].soa = true;
  f.server.zones["v4only.test"] = Zone{{10, 0, 0, 3}, {}};  // AAAA: NODATA without SOA
  auto gone = f.Resolve({"gone.test", "gone.test"});
  CHECK(gone[1].error == "cannot resolve 'gone.test': the upstream DNS server says NXDOMAIN");
  CHECK(f.Resolve({"gone.test"})[0].error == gone[1].error);
  CHECK(Count(f.server.asked, "A gone.test") == 1);
  CHECK(f.Resolve({"v4only.test"})[0].addresses == std::vector<std::string>{"10.0.0.3"});
  CHECK(f.Resolve({"v4only.test"})[0].addresses == std::vector<std::string>{"10.0.0.3"});
  CHECK(Count(f.server.asked, "AAAA v4only.test") == 1);
  CHECK(f.names.cached() == 2);
}
