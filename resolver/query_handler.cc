#include "resolver/query_handler.h"

#include <arpa/inet.h>

#include <cstring>

#include "resolver/dns_message.h"

namespace tunnels::resolver {
namespace {

// A name from the network, fit for a log line: bytes outside printable
// ASCII as \DDD (as dig writes them), and at most 100 of them.
std::string PrintableName(std::string_view name) {
  std::string out;
  for (const char c : name.substr(0, 100)) {
    const auto b = static_cast<unsigned char>(c);
    if (b > 0x20 && b < 0x7f && b != '\\') {
      out += c;
    } else {
      out += '\\';
      out += static_cast<char>('0' + b / 100);
      out += static_cast<char>('0' + b / 10 % 10);
      out += static_cast<char>('0' + b % 10);
    }
  }
  if (name.size() > 100) out += "...";
  return out;
}

std::string Ipv4Text(std::uint32_t host_order) {
  in_addr a{};
  a.s_addr = htonl(host_order);
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

// Writes big-endian values at `*at`, advancing it.
void Put16(std::uint8_t*& at, std::uint16_t v) {
  *at++ = static_cast<std::uint8_t>(v >> 8);
  *at++ = static_cast<std::uint8_t>(v);
}

void Put32(std::uint8_t*& at, std::uint32_t v) {
  Put16(at, static_cast<std::uint16_t>(v >> 16));
  Put16(at, static_cast<std::uint16_t>(v));
}

// The bytes that BuildAddressReply() encodes, written straight from the
// query's own: the hot path of the server, without a Message, the text
// names and the compression table in between. The question is echoed as
// received (a valid query's first name cannot hold a compression pointer,
// and names read and written back are byte-identical), each answer's name is
// a pointer to it, and an OPT record follows when the query had one.
// nullopt when the reply would not fit in `options.max_size`: the codec then
// decides what to leave out.
std::optional<std::vector<std::uint8_t>> WriteAddressReply(std::span<const std::uint8_t> bytes,
                                                           const Query& q,
                                                           std::span<const std::uint32_t> addresses,
                                                           std::uint32_t ttl,
                                                           const ReplyOptions& options) {
  std::size_t p = kHeaderSize;
  while (p < bytes.size() && bytes[p] != 0) {
    if (bytes[p] > 63) return std::nullopt;  // a pointer: not from ParseQuery
    p += 1 + std::size_t{bytes[p]};
  }
  const std::size_t name_end = p + 1;
  if (name_end > bytes.size()) return std::nullopt;
  constexpr std::size_t kOptSize = 11;     // root name, type, class, TTL, RDLENGTH
  constexpr std::size_t kAnswerSize = 16;  // pointer, type, class, TTL, RDLENGTH, address
  const std::size_t opt_size = q.edns ? kOptSize : 0;
  const std::size_t size = name_end + 4 + addresses.size() * kAnswerSize + opt_size;
  if (size > std::clamp(options.max_size, kHeaderSize + opt_size, kMaxMessageSize) ||
      addresses.size() > 0xFFFF) {
    return std::nullopt;
  }
  const Header& h = q.header;
  std::vector<std::uint8_t> out(size);
  std::uint8_t* at = out.data();
  Put16(at, h.id);
  // QR and RA set; opcode, RD and CD as asked; NOERROR.
  Put16(at, static_cast<std::uint16_t>(0x8080 | ((h.opcode & 0xF) << 11) | (h.rd ? 0x0100 : 0) |
                                       (h.cd ? 0x0010 : 0)));
  Put16(at, 1);
  Put16(at, static_cast<std::uint16_t>(addresses.size()));
  Put16(at, 0);
  Put16(at, q.edns ? 1 : 0);
  std::memcpy(at, bytes.data() + kHeaderSize, name_end - kHeaderSize);
  at += name_end - kHeaderSize;
  Put16(at, q.question.type);
  Put16(at, q.question.klass);
  for (const std::uint32_t address : addresses) {
    Put16(at, static_cast<std::uint16_t>(0xC000 | kHeaderSize));
    Put16(at, dns_type::kA);
    Put16(at, dns_class::kIn);
    Put32(at, ttl);
    Put16(at, 4);
    Put32(at, address);
  }
  if (q.edns) {
    *at++ = 0;
    Put16(at, dns_type::kOpt);
    Put16(at, options.edns_payload_size);
    // Extended rcode 0, version 0, the query's DO bit; no options.
    Put32(at, q.edns->dnssec_ok ? 0x8000u : 0u);
    Put16(at, 0);
  }
  return out;
}

Result<std::vector<std::uint8_t>> AddressReply(std::span<const std::uint8_t> bytes, const Query& q,
                                               std::span<const std::uint32_t> addresses,
                                               std::uint32_t ttl, const ReplyOptions& options) {
  if (auto out = WriteAddressReply(bytes, q, addresses, ttl, options)) return {std::move(*out), {}};
  return BuildAddressReply(q, addresses, ttl, options);
}

}  // namespace

QueryHandler::QueryHandler(const config::RuleSet& rules, FakePool& pool, Options options,
                           const config::Log& log)
    : rules_(&rules, [](const config::RuleSet*) {}), pool_(pool), options_(options), log_(log) {}

void QueryHandler::SetRules(std::shared_ptr<const config::RuleSet> rules) {
  rules_ = std::move(rules);
}

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
  // dnsPacketSize is what we can take in; what we advertise stays at the
  // flag day figure however large the buffer.
  reply_options.edns_payload_size =
      static_cast<std::uint16_t>(std::min<std::size_t>(options_.packet_size, kAdvertisedUdpSize));
  if (!parsed.ok()) {
    Outcome out;
    out.problem = "malformed query: " + parsed.error.ToString() +
                  (parsed.reply_rcode ? std::string("; answering ") + ToString(*parsed.reply_rcode)
                                      : std::string("; dropped"));
    if (!parsed.reply_rcode) return out;
    auto reply = BuildErrorReply(parsed, reply_options);
    if (!reply) return out;
    Outcome answered = Reply(std::move(*reply), "");
    answered.problem = std::move(out.problem);
    return answered;
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
    Outcome out = empty(RCode::kFormErr);
    // The name printed as read, but never more than a line's worth of it.
    out.problem = "malformed name in query (" + PrintableName(q.name) + "); answering FORMERR";
    return out;
  }
  const std::string_view name(normal, normal_len);

  switch (rules_->DecideDns(name)) {
    case config::DnsAction::kForward:
      return Outcome{Kind::kForward, {}, std::string(name)};
    case config::DnsAction::kBlock: {
      if (type != dns_type::kA && type != dns_type::kAny) return empty(RCode::kNoError);
      log_.Debug("DNS", "blocked " + std::string(name));
      const std::uint32_t blackhole = pool_.blackhole();
      auto reply =
          AddressReply(bytes, q, std::span(&blackhole, 1), options_.block_ttl, reply_options);
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
  auto reply = AddressReply(bytes, q, std::span(&address, 1), options_.fake_ttl, reply_options);
  return reply ? Reply(std::move(*reply), std::string(name)) : Outcome{};
}

}  // namespace tunnels::resolver
