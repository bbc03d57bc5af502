// libFuzzer target: arbitrary bytes as a query to the DNS query handler, over
// UDP and TCP, with rules of every kind and a tiny pool so that recycling and
// exhaustion are reached too. Any reply must parse and echo the query's ID.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <memory>

#include "config/config.h"
#include "resolver/dns_message.h"
#include "resolver/query_handler.h"

namespace {

using namespace tunnels;

struct Harness {
  config::Config config;
  std::unique_ptr<config::RuleSet> rules;
  std::unique_ptr<resolver::FakePool> pool;
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  std::unique_ptr<config::Log> log;
  std::unique_ptr<resolver::QueryHandler> handler;

  Harness() {
    const auto loaded = config::LoadDocuments(
        {{"fuzz.yml",
          "upstreamDns: 192.0.2.1\nprivateAddresses: 10.9.0.0/29\n"
          "proxies:\n  tor: {type: socks5, address: h}\n"
          "rules:\n  \"*.onion\": tor\n  .example.com@web: tor, direct\n  ads.test: block\n"
          "  a.*.b: tor\n  \"*@t22\": tor\n"}});
    if (!loaded.ok()) __builtin_trap();
    config = *loaded.config;
    rules = std::make_unique<config::RuleSet>(config);
    resolver::FakePool::Options o;
    o.network = config.options.private_addresses.address;
    o.prefix_length = config.options.private_addresses.length;
    pool = resolver::FakePool::Create(o);
    log = std::make_unique<config::Log>(config::LogLevel::kDebug, std::vector<std::string>{},
                                        devnull);
    handler = std::make_unique<resolver::QueryHandler>(
        *rules, *pool, resolver::QueryHandler::Options{900, 60, 1232}, *log);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Harness h;  // built once: the rules and the pool are not under test here
  const std::span<const std::uint8_t> input(data, size);
  for (auto transport : {resolver::Transport::kUdp, resolver::Transport::kTcp}) {
    const auto outcome = h.handler->Handle(input, transport);
    if (outcome.kind != resolver::QueryHandler::Kind::kReply) continue;
    const auto reply = resolver::PeekHeader(outcome.reply);
    const auto id = resolver::ReadId(input);
    if (!reply || !id || reply->id != *id || !reply->qr) __builtin_trap();
    if (transport == resolver::Transport::kUdp && outcome.reply.size() > 1232) __builtin_trap();
    if (!resolver::ParseMessage(outcome.reply).ok()) __builtin_trap();
  }
  return 0;
}
