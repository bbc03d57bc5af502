#include "resolver/query_handler.h"

#include <arpa/inet.h>

#include "resolver/dns_message.h"

namespace tunnels::resolver {
namespace {

std::string Ipv4Text(std::uint32_t host_order) {
  in_addr a{};
  a.s_addr = htonl(host_order);
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

}  // namespace

QueryHandler::QueryHandler(const config::RuleSet& rules, FakePool& pool, Options options,
                           const config::Log& log)
    : rules_(rules), pool_(pool), options_(options), log_(log) {}

QueryHandler::Outcome QueryHandler::Reply(std::vector<std::uint8_t> bytes, std::string name) const {
  Outcome o;
  o.kind = Kind::kReply;
  o.reply = std::move(bytes);
  o.name = std::move(name);
  return o;
}

QueryHandler::Outcome QueryHandler::Handle(std::span<const std::uint8_t> bytes,
                                           Transport transport) const {
  const QueryParseResult parsed = ParseQuery(bytes);
  ReplyOptions reply_options;
  reply_options.max_size =
      transport == Transport::kTcp ? std::min(options_.packet_size, kMaxMessageSize) : kMinUdpSize;
  reply_options.edns_payload_size =
      static_cast<std::uint16_t>(std::min<std::size_t>(options_.packet_size, 65535));
  if (!parsed.ok()) {
    log_.Limited(
        "DNS", config::LogLevel::kInfo,
        "malformed query: " + parsed.error.ToString() +
            (parsed.reply_rcode ? std::string("; answering ") + ToString(*parsed.reply_rcode)
                                : std::string("; dropped")));
    if (!parsed.reply_rcode) return Outcome{};
    auto reply = BuildErrorReply(parsed, reply_options);
    if (!reply) return Outcome{};
    return Reply(std::move(*reply), "");
  }
  const Query& q = *parsed.query;
  if (transport == Transport::kUdp) {
    reply_options.max_size = MaxUdpReplySize(q, options_.packet_size);
  }
  auto empty = [&](RCode rcode) {
    auto reply = BuildEmptyReply(q, rcode, reply_options);
    return reply ? Reply(std::move(*reply), q.name) : Outcome{};
  };
  const std::uint16_t type = q.question.type;

  // PTR for a fake address: the name it stands for. Nothing else knows it.
  if (type == dns_type::kPtr) {
    if (const auto address = ParseReverseName(q.name); address && pool_.Contains(*address)) {
      if (const auto mapping = pool_.Lookup(*address)) {
        auto reply = BuildPtrReply(q, mapping->name, options_.fake_ttl, reply_options);
        return reply ? Reply(std::move(*reply), q.name) : Outcome{};
      }
      return empty(RCode::kNxDomain);
    }
  }

  // The root and other names no rule can match go upstream as they are.
  if (q.name.empty()) return Outcome{Kind::kForward, {}, q.name};
  char normal[256];
  std::size_t normal_len = 0;
  if (!config::NormalizeName(q.name, normal, &normal_len)) {
    log_.Limited("DNS", config::LogLevel::kInfo, "malformed name in query; answering FORMERR");
    return empty(RCode::kFormErr);
  }
  const std::string_view name(normal, normal_len);

  switch (rules_.DecideDns(name)) {
    case config::DnsAction::kForward:
      return Outcome{Kind::kForward, {}, std::string(name)};
    case config::DnsAction::kBlock: {
      if (type != dns_type::kA && type != dns_type::kAny) return empty(RCode::kNoError);
      log_.Debug("DNS", "blocked " + std::string(name));
      const std::uint32_t blackhole = pool_.blackhole();
      auto reply =
          BuildAddressReply(q, std::span(&blackhole, 1), options_.block_ttl, reply_options);
      return reply ? Reply(std::move(*reply), std::string(name)) : Outcome{};
    }
    case config::DnsAction::kFake:
      break;
  }
  // A ruled name is never sent upstream, whatever the type: resolving it is
  // the proxy's job, and a query that leaks to the local DNS defeats it.
  if (type != dns_type::kA && type != dns_type::kAny) return empty(RCode::kNoError);
  const FakePool::AllocateResult a = pool_.Allocate(name);
  if (!a.ok()) {
    log_.Limited("FAKEIP", config::LogLevel::kWarning,
                 "no fake address for " + std::string(name) + ": " + a.error +
                     "; answering SERVFAIL (a larger privateAddresses or a shorter "
                     "addressCleanupTime helps)");
    return empty(RCode::kServFail);
  }
  if (a.created && log_.Enabled("FAKEIP", config::LogLevel::kDebug)) {
    log_.Debug("FAKEIP", std::string(name) + " is " + Ipv4Text(*a.address) +
                             (a.evicted ? " (recycled from " + *a.evicted + ")" : ""));
  }
  const std::uint32_t address = *a.address;
  auto reply = BuildAddressReply(q, std::span(&address, 1), options_.fake_ttl, reply_options);
  return reply ? Reply(std::move(*reply), std::string(name)) : Outcome{};
}

}  // namespace tunnels::resolver
