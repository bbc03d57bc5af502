// Fuzzes the DNS codec with what a client could send the server: arbitrary
// bytes are parsed as a message and as a query; whatever parses is encoded
// and re-parsed, and every kind of reply is built and re-parsed, checking
// that nothing is lost or changed on the way. A violated invariant aborts
// with the condition printed, which libFuzzer records as a crash.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "resolver/dns_message.h"

namespace tunnels::resolver {
namespace {

#define FUZZ_ASSERT(cond)                                                               \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (false)

using Bytes = std::vector<std::uint8_t>;

template <typename T>
bool IsPrefix(const std::vector<T>& prefix, const std::vector<T>& of) {
  if (prefix.size() > of.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (!(prefix[i] == of[i])) return false;
  }
  return true;
}

// Encode(m) parses back to m, or, when it did not fit, to a truncated m.
void CheckRoundTrip(const Message& m) {
  const Result<Bytes> wire = Encode(m);
  FUZZ_ASSERT(wire.ok());
  FUZZ_ASSERT(wire->size() <= kMaxMessageSize);
  const Result<Message> back = ParseMessage(*wire);
  if (!back.ok()) std::fprintf(stderr, "re-parse: %s\n", back.error.ToString().c_str());
  FUZZ_ASSERT(back.ok());
  FUZZ_ASSERT(back->header.id == m.header.id);
  FUZZ_ASSERT(back->header.qr == m.header.qr);
  FUZZ_ASSERT(back->header.opcode == m.header.opcode);
  FUZZ_ASSERT(back->header.rd == m.header.rd);
  FUZZ_ASSERT(back->header.rcode == m.header.rcode);
  FUZZ_ASSERT(back->edns == m.edns);
  const bool complete = back->questions.size() == m.questions.size() &&
                        back->answers.size() == m.answers.size() &&
                        back->authorities.size() == m.authorities.size() &&
                        back->additionals.size() == m.additionals.size();
  if (complete) {
    FUZZ_ASSERT(back->header.tc == m.header.tc);
    FUZZ_ASSERT(back->questions == m.questions);
    FUZZ_ASSERT(back->answers == m.answers);
    FUZZ_ASSERT(back->authorities == m.authorities);
    FUZZ_ASSERT(back->additionals == m.additionals);
    // Encoding is deterministic: what was parsed encodes to the same bytes.
    const Result<Bytes> again = Encode(*back);
    FUZZ_ASSERT(again.ok() && *again == *wire);
  } else {
    // Our compression can come out longer than the input's (it never points
    // into SRV targets), so a message near 64 KiB may not fit again. Only
    // dropping additional records goes without TC.
    FUZZ_ASSERT(back->header.tc || (back->questions.size() == m.questions.size() &&
                                    back->answers.size() == m.answers.size() &&
                                    back->authorities.size() == m.authorities.size()));
    FUZZ_ASSERT(IsPrefix(back->questions, m.questions));
    FUZZ_ASSERT(IsPrefix(back->answers, m.answers));
    FUZZ_ASSERT(IsPrefix(back->authorities, m.authorities));
    FUZZ_ASSERT(IsPrefix(back->additionals, m.additionals));
  }
}

// A reply built for `query` parses, fits `limit` and echoes the query.
Message CheckReply(const Query& query, const Result<Bytes>& wire, std::size_t limit, RCode rcode) {
  FUZZ_ASSERT(wire.ok());
  // Our OPT record has no options: 11 bytes, always written.
  FUZZ_ASSERT(wire->size() <= std::max(limit, kHeaderSize + (query.edns ? 11 : 0)));
  const Result<Message> reply = ParseMessage(*wire);
  if (!reply.ok()) std::fprintf(stderr, "reply: %s\n", reply.error.ToString().c_str());
  FUZZ_ASSERT(reply.ok());
  FUZZ_ASSERT(reply->header.id == query.header.id);
  FUZZ_ASSERT(reply->header.qr);
  FUZZ_ASSERT(reply->header.rd == query.header.rd);
  FUZZ_ASSERT(reply->header.opcode == query.header.opcode);
  if (reply->edns || static_cast<std::uint16_t>(rcode) <= 0xF) {
    FUZZ_ASSERT(reply->rcode() == rcode);
  } else {
    FUZZ_ASSERT(reply->rcode() == RCode::kFormErr);
  }
  FUZZ_ASSERT(reply->edns.has_value() == query.edns.has_value());
  if (reply->edns) FUZZ_ASSERT(reply->edns->dnssec_ok == query.edns->dnssec_ok);
  if (!reply->header.tc) {
    FUZZ_ASSERT(reply->questions.size() == 1);
    FUZZ_ASSERT(reply->questions[0] == query.question);
  } else {
    FUZZ_ASSERT(reply->questions.size() <= 1);
  }
  if (!reply->questions.empty()) FUZZ_ASSERT(reply->questions[0] == query.question);
  return *reply;
}

void CheckQuery(const Query& q, std::span<const std::uint8_t> input) {
  FUZZ_ASSERT(q.name == LowercaseName(q.question.name));
  const Result<Question> peeked = PeekQuestion(input);
  FUZZ_ASSERT(peeked.ok() && *peeked == q.question);

  // The name survives text and back.
  const Result<Bytes> name_wire = EncodeName(q.question.name);
  FUZZ_ASSERT(name_wire.ok());
  const Result<std::string> name_text = DecodeName(*name_wire);
  FUZZ_ASSERT(name_text.ok() && *name_text == q.question.name);

  if (const auto address = ParseReverseName(q.name)) {
    FUZZ_ASSERT(ParseReverseName(ReverseName(*address)) == *address);
  }

  const std::size_t udp = MaxUdpReplySize(q, 1232);
  FUZZ_ASSERT(udp >= kMinUdpSize && udp <= kMaxMessageSize);
  // A few addresses, as many as the input's length says, to exercise
  // truncation at the small limits.
  std::vector<std::uint32_t> addresses;
  for (std::size_t i = 0; i < input.size() % 40; ++i) {
    addresses.push_back(0xC6120000u + static_cast<std::uint32_t>(i));
  }
  for (const std::size_t limit :
       {std::size_t{0}, std::size_t{40}, kMinUdpSize, udp, kMaxMessageSize}) {
    ReplyOptions options;
    options.max_size = limit;
    options.edns_payload_size = static_cast<std::uint16_t>(1232 + limit % 7);

    const Message a =
        CheckReply(q, BuildAddressReply(q, addresses, 60, options), limit, RCode::kNoError);
    FUZZ_ASSERT(a.answers.size() <= addresses.size());
    if (!a.header.tc) FUZZ_ASSERT(a.answers.size() == addresses.size());
    for (std::size_t i = 0; i < a.answers.size(); ++i) {
      FUZZ_ASSERT(a.answers[i].name == q.question.name);
      FUZZ_ASSERT(a.answers[i].ttl == 60);
      FUZZ_ASSERT(a.answers[i].Ipv4() == addresses[i]);
    }

    const Message p =
        CheckReply(q, BuildPtrReply(q, q.question.name, 5, options), limit, RCode::kNoError);
    if (!p.header.tc) {
      FUZZ_ASSERT(p.answers.size() == 1);
      FUZZ_ASSERT(p.answers[0].TargetName() == q.question.name);
    }

    for (RCode rcode : {RCode::kNoError, RCode::kNxDomain, RCode::kServFail, RCode::kRefused,
                        RCode::kNotImp, RCode::kFormErr, RCode::kBadVers}) {
      const Message e = CheckReply(q, BuildEmptyReply(q, rcode, options), limit, rcode);
      FUZZ_ASSERT(e.answers.empty() && e.authorities.empty() && e.additionals.empty());
    }
  }
}

void CheckRejected(const QueryParseResult& r) {
  const Result<Bytes> wire = BuildErrorReply(r, ReplyOptions{});
  if (!r.reply_rcode) {
    FUZZ_ASSERT(!wire.ok() && wire.error.code == ErrorCode::kNoReply);
    return;
  }
  FUZZ_ASSERT(wire.ok());
  FUZZ_ASSERT(wire->size() <= kMinUdpSize);
  const Result<Message> reply = ParseMessage(*wire);
  FUZZ_ASSERT(reply.ok());
  FUZZ_ASSERT(reply->header.id == r.header.id);
  FUZZ_ASSERT(reply->header.qr);
  FUZZ_ASSERT(reply->rcode() == *r.reply_rcode || (!r.edns && reply->rcode() == RCode::kFormErr));
  FUZZ_ASSERT(reply->questions.size() == (r.question ? 1u : 0u));
  if (r.question) FUZZ_ASSERT(reply->questions[0] == *r.question);
  FUZZ_ASSERT(reply->edns.has_value() == r.edns.has_value());
}

void CheckIdHelpers(std::span<const std::uint8_t> input) {
  Bytes copy(input.begin(), input.end());
  const std::optional<std::uint16_t> id = ReadId(copy);
  FUZZ_ASSERT(id.has_value() == (input.size() >= kHeaderSize));
  FUZZ_ASSERT(PeekHeader(copy).has_value() == id.has_value());
  const bool rewritten = RewriteId(copy, static_cast<std::uint16_t>(~id.value_or(0)));
  FUZZ_ASSERT(rewritten == id.has_value());
  if (!rewritten) {
    FUZZ_ASSERT(std::equal(copy.begin(), copy.end(), input.begin(), input.end()));
    return;
  }
  FUZZ_ASSERT(ReadId(copy) == static_cast<std::uint16_t>(~*id));
  FUZZ_ASSERT(std::equal(copy.begin() + 2, copy.end(), input.begin() + 2, input.end()));
}

}  // namespace
}  // namespace tunnels::resolver

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tunnels::resolver;  // NOLINT: a fuzz entry point, not a header
  const std::span<const std::uint8_t> input(data, size);

  const Result<Message> message = ParseMessage(input);
  if (message.ok()) CheckRoundTrip(*message);

  const QueryParseResult query = ParseQuery(input);
  if (query.ok()) {
    FUZZ_ASSERT(message.ok());
    CheckQuery(*query.query, input);
  } else {
    CheckRejected(query);
  }

  CheckIdHelpers(input);
  return 0;
}
