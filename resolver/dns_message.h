// A DNS message codec (RFC 1035, EDNS0 from RFC 6891) written for the
// fake-address DNS server: parse the queries it receives, build its own
// replies, and peek at or re-stamp the ID of upstream replies that are
// otherwise forwarded byte for byte.
//
// Everything here reads untrusted bytes. Parsing never throws, never reads
// out of bounds, never loops and allocates at most in proportion to the input:
// every count is checked against what the remaining bytes could hold before
// anything is reserved, and a failure is a value (Error) that says what was
// wrong and where.
//
// Names are text in presentation form without the trailing dot:
// "www.example.com", "" for the root. A label byte that is '.', '\' or not
// printable ASCII is written as "\." "\\" or "\DDD" so that every wire name
// has exactly one text form and the text encodes back to the same bytes.
// Case is preserved (DNS 0x20: the question is echoed exactly as asked);
// Query::name is the lowercased copy to match rules with.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tunnels::resolver {

// Record types and classes that the server handles by name; any other value
// passes through as a number.
namespace dns_type {
inline constexpr std::uint16_t kA = 1;
inline constexpr std::uint16_t kNs = 2;
inline constexpr std::uint16_t kCname = 5;
inline constexpr std::uint16_t kSoa = 6;
inline constexpr std::uint16_t kPtr = 12;
inline constexpr std::uint16_t kMx = 15;
inline constexpr std::uint16_t kTxt = 16;
inline constexpr std::uint16_t kAaaa = 28;
inline constexpr std::uint16_t kSrv = 33;
inline constexpr std::uint16_t kOpt = 41;
inline constexpr std::uint16_t kHttps = 65;
inline constexpr std::uint16_t kAny = 255;
}  // namespace dns_type
namespace dns_class {
inline constexpr std::uint16_t kIn = 1;
inline constexpr std::uint16_t kAny = 255;
}  // namespace dns_class

inline constexpr std::uint8_t kOpcodeQuery = 0;
// The largest DNS message: TCP frames it with a 16-bit length.
inline constexpr std::size_t kMaxMessageSize = 65535;
// What a UDP reply may always be, whether or not the client uses EDNS.
inline constexpr std::size_t kMinUdpSize = 512;
// The UDP payload size our OPT records advertise (the DNS flag day 2020
// figure): larger replies fragment, and fragments get lost or spoofed.
inline constexpr std::uint16_t kAdvertisedUdpSize = 1232;
inline constexpr std::size_t kHeaderSize = 12;

// Response codes. Values above 15 need an OPT record for their upper bits.
enum class RCode : std::uint16_t {
  kNoError = 0,
  kFormErr = 1,
  kServFail = 2,
  kNxDomain = 3,
  kNotImp = 4,
  kRefused = 5,
  kBadVers = 16,
};
const char* ToString(RCode rcode);

enum class ErrorCode {
  kTruncatedHeader,    // fewer than 12 bytes
  kMessageTooLarge,    // more than 65535 bytes
  kCountTooLarge,      // a section count the remaining bytes cannot hold
  kTruncatedQuestion,  // the message ends inside a question
  kTruncatedRecord,    // the message ends inside a record or its RDATA
  kLabelTooLong,       // a label over 63 bytes, or a reserved label type
  kNameTooLong,        // a name over 255 wire bytes
  kBadPointer,         // a compression pointer that is not strictly backwards
                       // to an earlier label start
  kTooManyPointers,    // a name that follows too many pointers
  kBadRdata,           // RDATA that does not match its type (A, AAAA, names)
  kBadOpt,             // a malformed, misplaced or duplicate OPT record
  kTrailingData,       // bytes after the last record
  kNotAQuery,          // QR set where a query was expected
  kNotImplemented,     // an opcode other than QUERY
  kBadQuestionCount,   // a query without exactly one question
  kBadEdnsVersion,     // an EDNS version other than 0
  kBadName,            // (encoding) a text name that is not valid
  kNoReply,            // (building) asked to reply to something that gets none
};
const char* ToString(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kTruncatedHeader;
  std::string message;
  std::size_t offset = 0;  // where in the input it was noticed

  std::string ToString() const;  // "message (at byte N)"
};

// Either a value or the Error that prevented it.
template <typename T>
struct Result {
  std::optional<T> value;
  Error error;  // meaningful only when !ok()

  bool ok() const { return value.has_value(); }
  explicit operator bool() const { return ok(); }
  T& operator*() { return *value; }
  const T& operator*() const { return *value; }
  T* operator->() { return &*value; }
  const T* operator->() const { return &*value; }
};

struct Header {
  std::uint16_t id = 0;
  bool qr = false;  // a response
  std::uint8_t opcode = kOpcodeQuery;
  bool aa = false;         // authoritative answer
  bool tc = false;         // truncated
  bool rd = false;         // recursion desired
  bool ra = false;         // recursion available
  bool z = false;          // reserved, kept as read
  bool ad = false;         // authentic data
  bool cd = false;         // checking disabled
  std::uint8_t rcode = 0;  // the low 4 bits; Edns::extended_rcode has the rest
  // The section counts as read. Encode() ignores them and writes the sizes of
  // Message's vectors instead.
  std::uint16_t qdcount = 0;
  std::uint16_t ancount = 0;
  std::uint16_t nscount = 0;
  std::uint16_t arcount = 0;
};

struct Question {
  std::string name;  // as received: case preserved
  std::uint16_t type = dns_type::kA;
  std::uint16_t klass = dns_class::kIn;

  friend bool operator==(const Question&, const Question&) = default;
};

struct ResourceRecord {
  std::string name;
  std::uint16_t type = dns_type::kA;
  std::uint16_t klass = dns_class::kIn;
  std::uint32_t ttl = 0;
  // The RDATA with any compressed names expanded, so that it means the same
  // outside the message it came from. Names in NS, CNAME, SOA, PTR, MX (and
  // the obsolete MD, MF, MB, MG, MR) are compressed again by Encode(); SRV
  // targets are expanded on reading but, as RFC 2782 asks, never compressed.
  std::vector<std::uint8_t> rdata;

  // The address of an IN A record; nullopt for anything else.
  std::optional<std::uint32_t> Ipv4() const;
  // The target of a PTR, CNAME or NS record; nullopt for anything else.
  std::optional<std::string> TargetName() const;

  friend bool operator==(const ResourceRecord&, const ResourceRecord&) = default;
};

// An IN A record; `ipv4` in host byte order.
ResourceRecord MakeARecord(std::string name, std::uint32_t ttl, std::uint32_t ipv4);
// An IN PTR record; fails when `target` is not a valid name.
Result<ResourceRecord> MakePtrRecord(std::string name, std::uint32_t ttl, std::string_view target);

// The EDNS0 OPT pseudo-record, kept apart from the other additional records.
struct Edns {
  std::uint16_t udp_payload_size = 1232;  // as sent; below 512 means 512
  std::uint8_t extended_rcode = 0;        // the upper 8 bits of the 12-bit rcode
  std::uint8_t version = 0;
  bool dnssec_ok = false;  // the DO bit
  std::uint16_t z = 0;     // the other 15 flag bits, kept as read
  // The options as on the wire (code, length, data)*; checked to be well
  // formed on reading but not interpreted.
  std::vector<std::uint8_t> options;

  friend bool operator==(const Edns&, const Edns&) = default;
};

struct Message {
  Header header;
  std::vector<Question> questions;
  std::vector<ResourceRecord> answers;
  std::vector<ResourceRecord> authorities;
  std::vector<ResourceRecord> additionals;  // without the OPT record
  std::optional<Edns> edns;

  // The full rcode, with the upper bits from the OPT record.
  RCode rcode() const;
};

// Parses a whole message. Strict: counts must match the records present and
// no byte may follow the last record.
Result<Message> ParseMessage(std::span<const std::uint8_t> bytes);

// Encodes `message`, compressing names against earlier ones in the message,
// into at most `max_size` bytes. When the questions, answers or authority
// records do not all fit, the ones that do are kept, TC is set and nothing
// else follows; additional records that do not fit are left out without TC
// (RFC 2181 section 9). The header and the OPT record are always written, so
// that a truncated reply still speaks EDNS and keeps its full rcode:
// `max_size` is raised to their size if smaller (23 bytes for an OPT record
// without options; real limits are 512 or more) and capped at 65535. Fails
// only for names, RDATA or options that cannot be encoded.
Result<std::vector<std::uint8_t>> Encode(const Message& message,
                                         std::size_t max_size = kMaxMessageSize);

// Text name <-> uncompressed wire form.
Result<std::vector<std::uint8_t>> EncodeName(std::string_view name);
Result<std::string> DecodeName(std::span<const std::uint8_t> wire);
// ASCII-lowercases a text name (escapes are digits or punctuation, so they
// are unaffected).
std::string LowercaseName(std::string_view name);

// --- The server side -------------------------------------------------------

// A query that the server can answer.
struct Query {
  Header header;
  Question question;  // exactly as received, to echo
  std::string name;   // question.name lowercased, for rules and the pool
  std::optional<Edns> edns;
};

struct QueryParseResult {
  std::optional<Query> query;  // set when the query is usable
  Error error;                 // why not, otherwise

  // For an unusable query: the rcode to reply with (FORMERR, NOTIMP or
  // BADVERS), or nullopt when it gets no reply at all (shorter than a header,
  // or a response: answering those invites loops). The rest is what the reply
  // echoes: the header always, the question and the OPT record when they
  // were read intact.
  std::optional<RCode> reply_rcode;
  Header header;
  std::optional<Question> question;
  std::optional<Edns> edns;

  bool ok() const { return query.has_value(); }
};

// Parses a query: QR clear, opcode QUERY, exactly one question, EDNS version
// 0 when there is an OPT record. Answer and authority records (which a query
// should not carry) are checked like the rest and then ignored.
QueryParseResult ParseQuery(std::span<const std::uint8_t> bytes);

struct ReplyOptions {
  // The size limit: MaxUdpReplySize() for UDP, kMaxMessageSize for TCP.
  std::size_t max_size = kMinUdpSize;
  // The UDP payload size that our OPT record advertises.
  std::uint16_t edns_payload_size = 1232;
};

// The largest UDP reply that the client accepts, and that we are willing to
// send (`our_limit`): 512 without EDNS.
std::size_t MaxUdpReplySize(const Query& query, std::size_t our_limit);

// The skeleton of a reply: the ID, opcode, RD and CD of the query, QR and RA
// set, the question echoed, and an OPT record (with the query's DO bit and no
// options) when the query had one. An rcode over 15 (BADVERS) needs that OPT
// record; without one the reply says FORMERR instead.
Message MakeReply(const Query& query, RCode rcode, const ReplyOptions& options);

// NOERROR with one A record per address, owned by the question name.
Result<std::vector<std::uint8_t>> BuildAddressReply(const Query& query,
                                                    std::span<const std::uint32_t> addresses,
                                                    std::uint32_t ttl, const ReplyOptions& options);
// NOERROR with one PTR record pointing to `target`.
Result<std::vector<std::uint8_t>> BuildPtrReply(const Query& query, std::string_view target,
                                                std::uint32_t ttl, const ReplyOptions& options);
// A reply without records: NOERROR (NODATA), NXDOMAIN, SERVFAIL, REFUSED,
// NOTIMP, FORMERR.
Result<std::vector<std::uint8_t>> BuildEmptyReply(const Query& query, RCode rcode,
                                                  const ReplyOptions& options);
// An empty NOERROR reply with TC set: the answer does not fit, ask again
// over TCP.
Result<std::vector<std::uint8_t>> BuildTruncatedReply(const Query& query,
                                                      const ReplyOptions& options);
// The reply to a query that ParseQuery() rejected with a reply_rcode: echoes
// the ID, and the question and OPT record when they were readable. Fails with
// kNoReply when the rejected message gets no reply.
Result<std::vector<std::uint8_t>> BuildErrorReply(const QueryParseResult& rejected,
                                                  const ReplyOptions& options);

// --- Opaque upstream replies -------------------------------------------------
// A forwarded reply goes back to the client unmodified apart from its ID.

// The header, or nullopt for fewer than 12 bytes.
std::optional<Header> PeekHeader(std::span<const std::uint8_t> bytes);
// The ID, or nullopt for fewer than 12 bytes (which is no DNS message).
std::optional<std::uint16_t> ReadId(std::span<const std::uint8_t> bytes);
// Overwrites the ID in place; false (and nothing written) for fewer than 12 bytes.
bool RewriteId(std::span<std::uint8_t> bytes, std::uint16_t id);
// The first question, to check that a reply answers the query it claims to;
// nothing after it is read.
Result<Question> PeekQuestion(std::span<const std::uint8_t> bytes);

// --- Reverse names ---------------------------------------------------------

// "4.3.2.1.in-addr.arpa" for 1.2.3.4 (host byte order).
std::string ReverseName(std::uint32_t ipv4);
// The address that an in-addr.arpa name stands for, ignoring case and one
// trailing dot; nullopt unless it has exactly four decimal labels 0-255
// without leading zeros (a shorter one names a network, not an address).
std::optional<std::uint32_t> ParseReverseName(std::string_view name);

}  // namespace tunnels::resolver
