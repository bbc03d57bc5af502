#include "resolver/dns_message.h"

#include <algorithm>
#include <array>
#include <deque>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace tunnels::resolver {

namespace {

constexpr std::size_t kMaxNameWireLength = 255;
constexpr std::size_t kMaxLabelLength = 63;
// A legitimate name has at most 127 labels, each of which could come from a
// different earlier name; anything beyond that is an attack on our time.
constexpr int kMaxPointerJumps = 127;
// The smallest question is the root name and type and class; the smallest
// record the root name, type, class, TTL and an empty RDATA.
constexpr std::size_t kMinQuestionSize = 1 + 4;
constexpr std::size_t kMinRecordSize = 1 + 10;
constexpr std::size_t kOptFixedSize = 1 + 10;
// Compression pointers have 14 bits of offset.
constexpr std::size_t kMaxPointerTarget = 0x3FFF;

std::uint16_t Get16(std::span<const std::uint8_t> b, std::size_t at) {
  return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}

std::uint32_t Get32(std::span<const std::uint8_t> b, std::size_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) |
         (std::uint32_t{b[at + 2]} << 8) | std::uint32_t{b[at + 3]};
}

Error MakeError(ErrorCode code, std::size_t offset, std::string message) {
  return Error{code, std::move(message), offset};
}

std::string Hex8(std::uint8_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  return std::string{'0', 'x', kDigits[v >> 4], kDigits[v & 0xF]};
}

const char* SectionName(int section) {
  switch (section) {
    case 0:
      return "answer";
    case 1:
      return "authority";
    default:
      return "additional";
  }
}

// Where the names are in the RDATA of the types that carry them: `prefix`
// fixed bytes, `names` names, then exactly `suffix` fixed bytes. RFC 3597
// section 4 lists which types may have compressed names; of those we expand
// all on reading and compress again only the RFC 1035 ones.
struct RdataLayout {
  std::size_t prefix = 0;
  int names = 0;
  std::size_t suffix = 0;
  bool compress = false;
};

std::optional<RdataLayout> LayoutOf(std::uint16_t type) {
  switch (type) {
    case dns_type::kNs:
    case 3:  // MD
    case 4:  // MF
    case dns_type::kCname:
    case 7:  // MB
    case 8:  // MG
    case 9:  // MR
    case dns_type::kPtr:
      return RdataLayout{0, 1, 0, true};
    case dns_type::kSoa:
      return RdataLayout{0, 2, 20, true};
    case 14:  // MINFO
      return RdataLayout{0, 2, 0, true};
    case dns_type::kMx:
      return RdataLayout{2, 1, 0, true};
    case dns_type::kSrv:
      return RdataLayout{6, 1, 0, false};
    default:
      return std::nullopt;
  }
}

// The length of the uncompressed wire name at `at` in `b`, or an Error.
// Pointers are not allowed: this reads names that we expanded ourselves or
// that a caller built.
std::optional<Error> ScanUncompressedName(std::span<const std::uint8_t> b, std::size_t at,
                                          std::size_t* length) {
  std::size_t p = at;
  for (;;) {
    if (p >= b.size()) return MakeError(ErrorCode::kBadName, p, "name runs past its end");
    const std::uint8_t len = b[p];
    if ((len & 0xC0) == 0xC0) {
      return MakeError(ErrorCode::kBadName, p, "compression pointer in an uncompressed name");
    }
    if (len > kMaxLabelLength) {
      return MakeError(ErrorCode::kLabelTooLong, p,
                       "label length byte " + Hex8(len) + " is over 63");
    }
    if (p + 1 + len - at > kMaxNameWireLength) {
      return MakeError(ErrorCode::kNameTooLong, at, "name is over 255 bytes");
    }
    if (len == 0) {
      *length = p + 1 - at;
      return std::nullopt;
    }
    p += 1 + std::size_t{len};
  }
}

// Presentation form of a valid uncompressed wire name.
std::string WireToText(std::span<const std::uint8_t> wire) {
  std::string out;
  out.reserve(wire.size());  // enough unless there are escapes: one allocation, not several
  std::size_t p = 0;
  while (p < wire.size() && wire[p] != 0) {
    const std::size_t len = wire[p];
    if (p != 0) out.push_back('.');
    for (std::size_t i = p + 1; i <= p + len && i < wire.size(); ++i) {
      const std::uint8_t c = wire[i];
      if (c == '.' || c == '\\') {
        out.push_back('\\');
        out.push_back(static_cast<char>(c));
      } else if (c < 0x21 || c > 0x7E) {
        out.push_back('\\');
        out.push_back(static_cast<char>('0' + c / 100));
        out.push_back(static_cast<char>('0' + c / 10 % 10));
        out.push_back(static_cast<char>('0' + c % 10));
      } else {
        out.push_back(static_cast<char>(c));
      }
    }
    p += 1 + len;
  }
  return out;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// ---------------------------------------------------------------------------
// Reading

class Parser {
 public:
  explicit Parser(std::span<const std::uint8_t> bytes)
      // Longer input is rejected before any name is read: no need for more.
      : bytes_(bytes), label_starts_(std::min(bytes.size(), kMaxMessageSize), false) {}

  const Error& error() const { return error_; }

  // Reads the whole message into `*m`, question by question and record by
  // record, so that on failure `*m` holds what was read intact before it.
  bool ParseMessage(Message* m) {
    if (bytes_.size() < kHeaderSize) {
      return Fail(ErrorCode::kTruncatedHeader, bytes_.size(),
                  "message of " + std::to_string(bytes_.size()) +
                      " bytes is shorter than the 12-byte header");
    }
    m->header = *PeekHeader(bytes_);
    if (bytes_.size() > kMaxMessageSize) {
      return Fail(ErrorCode::kMessageTooLarge, kMaxMessageSize,
                  "message of " + std::to_string(bytes_.size()) + " bytes is over 65535");
    }
    const Header& h = m->header;
    const std::size_t records = std::size_t{h.ancount} + h.nscount + h.arcount;
    const std::size_t needed = h.qdcount * kMinQuestionSize + records * kMinRecordSize;
    if (needed > bytes_.size() - kHeaderSize) {
      return Fail(ErrorCode::kCountTooLarge, 4,
                  "section counts (" + std::to_string(h.qdcount) + " questions, " +
                      std::to_string(records) + " records) need at least " +
                      std::to_string(needed) + " bytes but only " +
                      std::to_string(bytes_.size() - kHeaderSize) + " follow the header");
    }
    // Bounded by the check above: at most one element per 5 input bytes.
    m->questions.reserve(h.qdcount);
    m->answers.reserve(h.ancount);
    m->authorities.reserve(h.nscount);
    m->additionals.reserve(h.arcount);

    pos_ = kHeaderSize;
    for (int i = 0; i < h.qdcount; ++i) {
      Question q;
      if (!ParseQuestion(&q)) return false;
      m->questions.push_back(std::move(q));
    }
    const std::array<std::uint16_t, 3> counts = {h.ancount, h.nscount, h.arcount};
    const std::array<std::vector<ResourceRecord>*, 3> sections = {&m->answers, &m->authorities,
                                                                  &m->additionals};
    for (int s = 0; s < 3; ++s) {
      for (int i = 0; i < counts[static_cast<std::size_t>(s)]; ++i) {
        ResourceRecord rr;
        bool is_opt = false;
        if (!ParseRecord(s, &rr, &m->edns, &is_opt)) return false;
        if (!is_opt) sections[static_cast<std::size_t>(s)]->push_back(std::move(rr));
      }
    }
    if (pos_ != bytes_.size()) {
      return Fail(ErrorCode::kTrailingData, pos_,
                  std::to_string(bytes_.size() - pos_) + " bytes follow the last record");
    }
    return true;
  }

  bool ParseFirstQuestion(Question* q) {
    pos_ = kHeaderSize;
    return ParseQuestion(q);
  }

 private:
  bool Fail(ErrorCode code, std::size_t offset, std::string message) {
    error_ = MakeError(code, offset, std::move(message));
    return false;
  }

  // Reads the name at `*pos`, whose own bytes must end by `limit`, appending
  // its expanded wire form to `*wire` and advancing `*pos` past it. Running
  // out of bytes is reported as `truncated`.
  bool ParseName(std::size_t* pos, std::size_t limit, ErrorCode truncated,
                 std::vector<std::uint8_t>* wire) {
    std::size_t p = *pos;
    std::size_t segment_start = p;  // where the labels read since the last jump began
    bool in_place = true;
    std::size_t end = p;
    std::size_t length = 0;
    int jumps = 0;
    for (;;) {
      // Labels reached through a pointer were read in place before, so they
      // lie within the message; only our own bytes are bounded by `limit`.
      const std::size_t bound = in_place ? limit : bytes_.size();
      if (p >= bound) return Fail(truncated, p, "name runs past the end of its data");
      const std::uint8_t len = bytes_[p];
      if ((len & 0xC0) == 0xC0) {
        if (p + 1 >= bound) return Fail(truncated, p, "compression pointer is cut off");
        const std::size_t target = Get16(bytes_, p) & kMaxPointerTarget;
        if (in_place) {
          label_starts_[p] = true;
          end = p + 2;
        }
        // Strictly before the labels being read: this alone makes every
        // jump go further back, so no chain of pointers can loop.
        if (target >= segment_start) {
          return Fail(ErrorCode::kBadPointer, p,
                      "compression pointer to byte " + std::to_string(target) +
                          " does not point before the name (a forward, self or looping pointer)");
        }
        if (!label_starts_[target]) {
          return Fail(ErrorCode::kBadPointer, p,
                      "compression pointer to byte " + std::to_string(target) +
                          " does not point to the start of an earlier label");
        }
        if (++jumps > kMaxPointerJumps) {
          return Fail(ErrorCode::kTooManyPointers, p,
                      "name follows more than " + std::to_string(kMaxPointerJumps) +
                          " compression pointers");
        }
        in_place = false;
        p = target;
        segment_start = target;
        continue;
      }
      if (len > kMaxLabelLength) {
        return Fail(ErrorCode::kLabelTooLong, p,
                    "label length byte " + Hex8(len) + " is over 63 (or a reserved label type)");
      }
      if (in_place) label_starts_[p] = true;
      length += 1 + std::size_t{len};
      if (length > kMaxNameWireLength) {
        return Fail(ErrorCode::kNameTooLong, *pos, "name is over 255 bytes");
      }
      if (len == 0) {
        if (in_place) end = p + 1;
        wire->push_back(0);
        break;
      }
      if (p + 1 + len > bound) return Fail(truncated, p, "label runs past the end of its data");
      wire->insert(wire->end(), bytes_.begin() + static_cast<std::ptrdiff_t>(p),
                   bytes_.begin() + static_cast<std::ptrdiff_t>(p + 1 + len));
      p += 1 + std::size_t{len};
    }
    *pos = end;
    return true;
  }

  bool ParseQuestion(Question* q) {
    std::vector<std::uint8_t> wire;
    wire.reserve(kMaxNameWireLength);  // one allocation per name, not one per label
    const std::size_t start = pos_;
    if (!ParseName(&pos_, bytes_.size(), ErrorCode::kTruncatedQuestion, &wire)) return false;
    if (bytes_.size() - pos_ < 4) {
      return Fail(ErrorCode::kTruncatedQuestion, start, "question is cut off after its name");
    }
    q->name = WireToText(wire);
    q->type = Get16(bytes_, pos_);
    q->klass = Get16(bytes_, pos_ + 2);
    pos_ += 4;
    return true;
  }

  bool ParseRecord(int section, ResourceRecord* rr, std::optional<Edns>* edns, bool* is_opt) {
    const std::size_t start = pos_;
    std::vector<std::uint8_t> wire;
    if (!ParseName(&pos_, bytes_.size(), ErrorCode::kTruncatedRecord, &wire)) return false;
    if (bytes_.size() - pos_ < 10) {
      return Fail(ErrorCode::kTruncatedRecord, start, "record is cut off after its name");
    }
    rr->type = Get16(bytes_, pos_);
    rr->klass = Get16(bytes_, pos_ + 2);
    rr->ttl = Get32(bytes_, pos_ + 4);
    const std::size_t rdlength = Get16(bytes_, pos_ + 8);
    pos_ += 10;
    if (bytes_.size() - pos_ < rdlength) {
      return Fail(ErrorCode::kTruncatedRecord, pos_ - 2,
                  "RDATA length " + std::to_string(rdlength) + " runs past the end");
    }
    const std::size_t rdata_end = pos_ + rdlength;

    if (rr->type == dns_type::kOpt) {
      *is_opt = true;
      if (section != 2) {
        return Fail(ErrorCode::kBadOpt, start,
                    std::string("OPT record in the ") + SectionName(section) + " section");
      }
      if (edns->has_value()) return Fail(ErrorCode::kBadOpt, start, "second OPT record");
      if (wire.size() != 1) return Fail(ErrorCode::kBadOpt, start, "OPT record not owned by root");
      for (std::size_t p = pos_; p < rdata_end;) {
        if (rdata_end - p < 4) return Fail(ErrorCode::kBadOpt, p, "EDNS option header cut off");
        const std::size_t option_length = Get16(bytes_, p + 2);
        if (rdata_end - p - 4 < option_length) {
          return Fail(
              ErrorCode::kBadOpt, p,
              "EDNS option length " + std::to_string(option_length) + " runs past the OPT record");
        }
        p += 4 + option_length;
      }
      Edns e;
      e.udp_payload_size = rr->klass;
      e.extended_rcode = static_cast<std::uint8_t>(rr->ttl >> 24);
      e.version = static_cast<std::uint8_t>(rr->ttl >> 16);
      e.dnssec_ok = (rr->ttl & 0x8000) != 0;
      e.z = static_cast<std::uint16_t>(rr->ttl & 0x7FFF);
      e.options.assign(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                       bytes_.begin() + static_cast<std::ptrdiff_t>(rdata_end));
      *edns = std::move(e);
      pos_ = rdata_end;
      return true;
    }

    rr->name = WireToText(wire);
    if (rr->klass == dns_class::kIn && ((rr->type == dns_type::kA && rdlength != 4) ||
                                        (rr->type == dns_type::kAaaa && rdlength != 16))) {
      return Fail(ErrorCode::kBadRdata, start,
                  std::string(rr->type == dns_type::kA ? "A" : "AAAA") + " record with " +
                      std::to_string(rdlength) + " bytes of RDATA");
    }
    const std::optional<RdataLayout> layout = LayoutOf(rr->type);
    if (!layout) {
      rr->rdata.assign(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                       bytes_.begin() + static_cast<std::ptrdiff_t>(rdata_end));
      pos_ = rdata_end;
      return true;
    }
    std::size_t p = pos_;
    if (rdlength < layout->prefix) {
      return Fail(ErrorCode::kBadRdata, pos_, "RDATA too short for its type");
    }
    rr->rdata.assign(bytes_.begin() + static_cast<std::ptrdiff_t>(p),
                     bytes_.begin() + static_cast<std::ptrdiff_t>(p + layout->prefix));
    p += layout->prefix;
    for (int i = 0; i < layout->names; ++i) {
      if (!ParseName(&p, rdata_end, ErrorCode::kBadRdata, &rr->rdata)) return false;
    }
    if (rdata_end - p != layout->suffix) {
      return Fail(ErrorCode::kBadRdata, p,
                  "RDATA of type " + std::to_string(rr->type) + " has " +
                      std::to_string(rdata_end - p) + " bytes after its names instead of " +
                      std::to_string(layout->suffix));
    }
    rr->rdata.insert(rr->rdata.end(), bytes_.begin() + static_cast<std::ptrdiff_t>(p),
                     bytes_.begin() + static_cast<std::ptrdiff_t>(rdata_end));
    pos_ = rdata_end;
    return true;
  }

  std::span<const std::uint8_t> bytes_;
  // Offsets where a name element (label or pointer) was read in place: the
  // only places a compression pointer may point to.
  std::vector<bool> label_starts_;
  std::size_t pos_ = 0;
  Error error_;
};

// ---------------------------------------------------------------------------
// Writing

class Writer {
 public:
  struct Mark {
    std::size_t size;
    std::size_t names;
    std::size_t entries;
  };

  std::size_t size() const { return out_.size(); }
  std::vector<std::uint8_t> Take() { return std::move(out_); }

  void U8(std::uint8_t v) { out_.push_back(v); }
  void U16(std::uint16_t v) {
    out_.push_back(static_cast<std::uint8_t>(v >> 8));
    out_.push_back(static_cast<std::uint8_t>(v));
  }
  void U32(std::uint32_t v) {
    U16(static_cast<std::uint16_t>(v >> 16));
    U16(static_cast<std::uint16_t>(v));
  }
  void Bytes(std::span<const std::uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void Patch16(std::size_t at, std::uint16_t v) {
    out_[at] = static_cast<std::uint8_t>(v >> 8);
    out_[at + 1] = static_cast<std::uint8_t>(v);
  }

  Mark GetMark() const { return Mark{out_.size(), names_.size(), log_.size()}; }
  // Forgets everything written since `mark`, including the compression
  // targets, which would otherwise point past the end of a truncated message.
  void Rollback(const Mark& mark) {
    out_.resize(mark.size);
    while (log_.size() > mark.entries) {
      table_.erase(log_.back());
      log_.pop_back();
    }
    names_.resize(mark.names);
  }

  // Writes a valid uncompressed wire name. With `compress`, the longest
  // suffix already in the message becomes a pointer, and the suffixes written
  // here become targets for later names. Matching is exact, case included,
  // so that every name reads back as it was given.
  void Name(std::span<const std::uint8_t> wire, bool compress) {
    if (!compress) {
      Bytes(wire);
      return;
    }
    names_.emplace_back(wire.begin(), wire.end());
    const std::string_view name = names_.back();
    std::size_t p = 0;
    while (name[p] != '\0') {
      const std::string_view suffix = name.substr(p);
      if (auto it = table_.find(suffix); it != table_.end()) {
        U16(static_cast<std::uint16_t>(0xC000 | it->second));
        return;
      }
      if (out_.size() <= kMaxPointerTarget) {
        table_.emplace(suffix, static_cast<std::uint16_t>(out_.size()));
        log_.push_back(suffix);
      }
      const std::size_t len = static_cast<std::uint8_t>(name[p]);
      Bytes(wire.subspan(p, 1 + len));
      p += 1 + len;
    }
    U8(0);
  }

 private:
  std::vector<std::uint8_t> out_;
  // The expanded names written so far; the table's keys point into them
  // (a deque keeps them in place as it grows).
  std::deque<std::string> names_;
  std::unordered_map<std::string_view, std::uint16_t> table_;
  std::vector<std::string_view> log_;  // table keys in insertion order
};

std::uint16_t FlagsWord(const Header& h, bool tc) {
  return static_cast<std::uint16_t>((h.qr ? 0x8000 : 0) | ((h.opcode & 0xF) << 11) |
                                    (h.aa ? 0x0400 : 0) | (tc ? 0x0200 : 0) | (h.rd ? 0x0100 : 0) |
                                    (h.ra ? 0x0080 : 0) | (h.z ? 0x0040 : 0) | (h.ad ? 0x0020 : 0) |
                                    (h.cd ? 0x0010 : 0) | (h.rcode & 0xF));
}

std::optional<Error> WriteName(Writer* w, std::string_view name, bool compress) {
  Result<std::vector<std::uint8_t>> wire = EncodeName(name);
  if (!wire) return wire.error;
  w->Name(*wire, compress);
  return std::nullopt;
}

std::optional<Error> WriteRecord(Writer* w, const ResourceRecord& rr) {
  if (rr.type == dns_type::kOpt) {
    return MakeError(ErrorCode::kBadOpt, 0, "OPT record among the records; use Message::edns");
  }
  if (auto e = WriteName(w, rr.name, true)) return e;
  w->U16(rr.type);
  w->U16(rr.klass);
  w->U32(rr.ttl);
  const std::size_t length_at = w->size();
  w->U16(0);
  const std::optional<RdataLayout> layout = LayoutOf(rr.type);
  if (!layout) {
    w->Bytes(rr.rdata);
  } else {
    const std::span<const std::uint8_t> rdata = rr.rdata;
    const auto bad = [&rr](const std::string& why) {
      return MakeError(ErrorCode::kBadRdata, 0,
                       "RDATA of type " + std::to_string(rr.type) + " " + why);
    };
    if (rdata.size() < layout->prefix) return bad("is too short");
    w->Bytes(rdata.first(layout->prefix));
    std::size_t p = layout->prefix;
    for (int i = 0; i < layout->names; ++i) {
      std::size_t length = 0;
      if (auto e = ScanUncompressedName(rdata, p, &length))
        return bad("has a bad name: " + e->message);
      w->Name(rdata.subspan(p, length), layout->compress);
      p += length;
    }
    if (rdata.size() - p != layout->suffix) return bad("has the wrong length after its names");
    w->Bytes(rdata.subspan(p));
  }
  const std::size_t rdlength = w->size() - length_at - 2;
  if (rdlength > 0xFFFF) return MakeError(ErrorCode::kBadRdata, 0, "RDATA over 65535 bytes");
  w->Patch16(length_at, static_cast<std::uint16_t>(rdlength));
  return std::nullopt;
}

Header ReplyHeader(const Header& query) {
  Header h;
  h.id = query.id;
  h.qr = true;
  h.opcode = query.opcode;
  h.rd = query.rd;
  h.cd = query.cd;
  // We are the client's recursive resolver, whatever the answer.
  h.ra = true;
  return h;
}

void SetRcode(Message* m, RCode rcode) {
  auto value = static_cast<std::uint16_t>(rcode);
  // Without an OPT record the upper bits would be lost, turning BADVERS into
  // NOERROR; FORMERR is the closest thing that can be said.
  if (value > 0xF && !m->edns) value = static_cast<std::uint16_t>(RCode::kFormErr);
  m->header.rcode = static_cast<std::uint8_t>(value & 0xF);
  if (m->edns) m->edns->extended_rcode = static_cast<std::uint8_t>(value >> 4);
}

Edns ReplyEdns(const Edns& query, const ReplyOptions& options) {
  Edns e;
  e.udp_payload_size = options.edns_payload_size;
  // RFC 3225 section 3: the DO bit is copied into the response. Options are
  // not: we implement none, and RFC 6891 says not to echo unknown ones.
  e.dnssec_ok = query.dnssec_ok;
  return e;
}

}  // namespace

// ---------------------------------------------------------------------------

const char* ToString(RCode rcode) {
  switch (rcode) {
    case RCode::kNoError:
      return "NOERROR";
    case RCode::kFormErr:
      return "FORMERR";
    case RCode::kServFail:
      return "SERVFAIL";
    case RCode::kNxDomain:
      return "NXDOMAIN";
    case RCode::kNotImp:
      return "NOTIMP";
    case RCode::kRefused:
      return "REFUSED";
    case RCode::kBadVers:
      return "BADVERS";
  }
  return "RCODE?";
}

const char* ToString(ErrorCode code) {
  switch (code) {
    case ErrorCode::kTruncatedHeader:
      return "truncated header";
    case ErrorCode::kMessageTooLarge:
      return "message too large";
    case ErrorCode::kCountTooLarge:
      return "count too large";
    case ErrorCode::kTruncatedQuestion:
      return "truncated question";
    case ErrorCode::kTruncatedRecord:
      return "truncated record";
    case ErrorCode::kLabelTooLong:
      return "label too long";
    case ErrorCode::kNameTooLong:
      return "name too long";
    case ErrorCode::kBadPointer:
      return "bad compression pointer";
    case ErrorCode::kTooManyPointers:
      return "too many compression pointers";
    case ErrorCode::kBadRdata:
      return "bad RDATA";
    case ErrorCode::kBadOpt:
      return "bad OPT record";
    case ErrorCode::kTrailingData:
      return "trailing data";
    case ErrorCode::kNotAQuery:
      return "not a query";
    case ErrorCode::kNotImplemented:
      return "opcode not implemented";
    case ErrorCode::kBadQuestionCount:
      return "not exactly one question";
    case ErrorCode::kBadEdnsVersion:
      return "unsupported EDNS version";
    case ErrorCode::kBadName:
      return "bad name";
    case ErrorCode::kNoReply:
      return "no reply";
  }
  return "error?";
}

std::string Error::ToString() const {
  return message + " (at byte " + std::to_string(offset) + ")";
}

std::optional<std::uint32_t> ResourceRecord::Ipv4() const {
  if (type != dns_type::kA || klass != dns_class::kIn || rdata.size() != 4) return std::nullopt;
  return Get32(rdata, 0);
}

std::optional<std::string> ResourceRecord::TargetName() const {
  if (type != dns_type::kPtr && type != dns_type::kCname && type != dns_type::kNs) {
    return std::nullopt;
  }
  Result<std::string> target = DecodeName(rdata);
  if (!target) return std::nullopt;
  return std::move(*target);
}

ResourceRecord MakeARecord(std::string name, std::uint32_t ttl, std::uint32_t ipv4) {
  ResourceRecord rr;
  rr.name = std::move(name);
  rr.type = dns_type::kA;
  rr.klass = dns_class::kIn;
  rr.ttl = ttl;
  rr.rdata = {static_cast<std::uint8_t>(ipv4 >> 24), static_cast<std::uint8_t>(ipv4 >> 16),
              static_cast<std::uint8_t>(ipv4 >> 8), static_cast<std::uint8_t>(ipv4)};
  return rr;
}

Result<ResourceRecord> MakePtrRecord(std::string name, std::uint32_t ttl, std::string_view target) {
  Result<std::vector<std::uint8_t>> wire = EncodeName(target);
  if (!wire) return {std::nullopt, std::move(wire.error)};
  ResourceRecord rr;
  rr.name = std::move(name);
  rr.type = dns_type::kPtr;
  rr.klass = dns_class::kIn;
  rr.ttl = ttl;
  rr.rdata = std::move(*wire);
  return {std::move(rr), {}};
}

RCode Message::rcode() const {
  const int upper = edns ? edns->extended_rcode : 0;
  return static_cast<RCode>((upper << 4) | (header.rcode & 0xF));
}

Result<Message> ParseMessage(std::span<const std::uint8_t> bytes) {
  Message m;
  Parser parser(bytes);
  if (!parser.ParseMessage(&m)) return {std::nullopt, parser.error()};
  return {std::move(m), {}};
}

Result<std::vector<std::uint8_t>> Encode(const Message& message, std::size_t max_size) {
  // The OPT record goes in whatever the limit, like the header: a truncated
  // reply must still say that we speak EDNS (RFC 6891 section 7), and the
  // upper bits of its rcode are in there.
  std::size_t opt_size = 0;
  if (message.edns) {
    opt_size = kOptFixedSize + message.edns->options.size();
    if (kHeaderSize + opt_size > kMaxMessageSize) {
      return {std::nullopt, MakeError(ErrorCode::kBadOpt, 0, "EDNS options too large")};
    }
  }
  const std::size_t max = std::clamp(max_size, kHeaderSize + opt_size, kMaxMessageSize);
  const std::size_t limit = max - opt_size;
  Writer w;
  for (std::size_t i = 0; i < kHeaderSize; ++i) w.U8(0);

  bool truncated = false;
  std::size_t qd = 0;
  std::array<std::size_t, 3> counts = {0, 0, 0};
  for (const Question& q : message.questions) {
    const Writer::Mark mark = w.GetMark();
    if (auto e = WriteName(&w, q.name, true)) return {std::nullopt, std::move(*e)};
    w.U16(q.type);
    w.U16(q.klass);
    if (w.size() > limit) {
      w.Rollback(mark);
      truncated = true;
      break;
    }
    ++qd;
  }
  const std::array<const std::vector<ResourceRecord>*, 3> sections = {
      &message.answers, &message.authorities, &message.additionals};
  bool full = truncated;
  for (std::size_t s = 0; s < 3 && !full; ++s) {
    for (const ResourceRecord& rr : *sections[s]) {
      const Writer::Mark mark = w.GetMark();
      if (auto e = WriteRecord(&w, rr)) return {std::nullopt, std::move(*e)};
      if (w.size() > limit) {
        w.Rollback(mark);
        full = true;
        // Additional records are extras: leaving them out is no truncation.
        truncated = s < 2;
        break;
      }
      ++counts[s];
    }
  }
  std::size_t ar = counts[2];
  if (opt_size != 0) {
    const Edns& e = *message.edns;
    w.U8(0);
    w.U16(dns_type::kOpt);
    w.U16(e.udp_payload_size);
    w.U32((std::uint32_t{e.extended_rcode} << 24) | (std::uint32_t{e.version} << 16) |
          (e.dnssec_ok ? 0x8000u : 0u) | (e.z & 0x7FFFu));
    w.U16(static_cast<std::uint16_t>(e.options.size()));
    w.Bytes(e.options);
    ++ar;
  }
  w.Patch16(0, message.header.id);
  w.Patch16(2, FlagsWord(message.header, message.header.tc || truncated));
  w.Patch16(4, static_cast<std::uint16_t>(qd));
  w.Patch16(6, static_cast<std::uint16_t>(counts[0]));
  w.Patch16(8, static_cast<std::uint16_t>(counts[1]));
  w.Patch16(10, static_cast<std::uint16_t>(ar));
  return {w.Take(), {}};
}

Result<std::vector<std::uint8_t>> EncodeName(std::string_view name) {
  const auto bad = [name](ErrorCode code, std::size_t at, const std::string& why) {
    return Result<std::vector<std::uint8_t>>{
        std::nullopt, MakeError(code, at, "name \"" + std::string(name) + "\": " + why)};
  };
  std::vector<std::uint8_t> out;
  if (name.empty() || name == ".") return {std::vector<std::uint8_t>{0}, {}};
  std::size_t label_at = 0;  // where the current label's length byte goes
  out.push_back(0);
  std::size_t i = 0;
  while (i < name.size()) {
    const char c = name[i];
    if (c == '.') {
      const std::size_t length = out.size() - label_at - 1;
      if (length == 0) return bad(ErrorCode::kBadName, i, "empty label");
      out[label_at] = static_cast<std::uint8_t>(length);
      ++i;
      if (i == name.size()) break;  // one trailing dot: an absolute name
      label_at = out.size();
      out.push_back(0);
      continue;
    }
    std::uint8_t byte = static_cast<std::uint8_t>(c);
    if (c == '\\') {
      if (i + 1 >= name.size()) return bad(ErrorCode::kBadName, i, "ends in a backslash");
      if (IsDigit(name[i + 1])) {
        if (i + 3 >= name.size() || !IsDigit(name[i + 2]) || !IsDigit(name[i + 3])) {
          return bad(ErrorCode::kBadName, i, "\\DDD escape without three digits");
        }
        const int value =
            (name[i + 1] - '0') * 100 + (name[i + 2] - '0') * 10 + (name[i + 3] - '0');
        if (value > 255) return bad(ErrorCode::kBadName, i, "\\DDD escape over 255");
        byte = static_cast<std::uint8_t>(value);
        i += 4;
      } else {
        byte = static_cast<std::uint8_t>(name[i + 1]);
        i += 2;
      }
    } else {
      ++i;
    }
    out.push_back(byte);
    if (out.size() - label_at - 1 > kMaxLabelLength) {
      return bad(ErrorCode::kLabelTooLong, i, "label over 63 bytes");
    }
    if (out.size() + 1 > kMaxNameWireLength) {
      return bad(ErrorCode::kNameTooLong, i, "over 255 bytes on the wire");
    }
  }
  if (out[label_at] == 0) out[label_at] = static_cast<std::uint8_t>(out.size() - label_at - 1);
  out.push_back(0);
  return {std::move(out), {}};
}

Result<std::string> DecodeName(std::span<const std::uint8_t> wire) {
  std::size_t length = 0;
  if (auto e = ScanUncompressedName(wire, 0, &length)) return {std::nullopt, std::move(*e)};
  if (length != wire.size()) {
    return {std::nullopt, MakeError(ErrorCode::kBadName, length, "bytes after the name")};
  }
  return {WireToText(wire), {}};
}

std::string LowercaseName(std::string_view name) {
  std::string out(name);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

QueryParseResult ParseQuery(std::span<const std::uint8_t> bytes) {
  QueryParseResult r;
  const std::optional<Header> header = PeekHeader(bytes);
  if (!header) {
    r.error = MakeError(
        ErrorCode::kTruncatedHeader, bytes.size(),
        "message of " + std::to_string(bytes.size()) + " bytes is shorter than the 12-byte header");
    return r;
  }
  r.header = *header;
  if (header->qr) {
    r.error = MakeError(ErrorCode::kNotAQuery, 2, "QR is set: a response, not a query");
    return r;
  }
  Message m;
  Parser parser(bytes);
  const bool parsed = parser.ParseMessage(&m);
  // Echo the question only where the reply's QDCOUNT of 1 is then true.
  if (header->qdcount == 1 && m.questions.size() == 1) r.question = m.questions.front();
  r.edns = m.edns;
  if (header->opcode != kOpcodeQuery) {
    r.error = MakeError(ErrorCode::kNotImplemented, 2,
                        "opcode " + std::to_string(header->opcode) + " is not QUERY");
    r.reply_rcode = RCode::kNotImp;
    return r;
  }
  if (!parsed) {
    r.error = parser.error();
    r.reply_rcode = RCode::kFormErr;
    return r;
  }
  if (m.questions.size() != 1) {
    r.error = MakeError(ErrorCode::kBadQuestionCount, 4,
                        "query has " + std::to_string(m.questions.size()) + " questions, not 1");
    r.reply_rcode = RCode::kFormErr;
    return r;
  }
  if (m.edns && m.edns->version != 0) {
    r.error = MakeError(ErrorCode::kBadEdnsVersion, 0,
                        "EDNS version " + std::to_string(m.edns->version) + " is not 0");
    r.reply_rcode = RCode::kBadVers;
    return r;
  }
  Query q;
  q.header = *header;
  q.question = std::move(m.questions.front());
  q.name = LowercaseName(q.question.name);
  q.edns = std::move(m.edns);
  r.query = std::move(q);
  return r;
}

std::size_t MaxUdpReplySize(const Query& query, std::size_t our_limit) {
  std::size_t client = kMinUdpSize;
  if (query.edns) client = std::max<std::size_t>(query.edns->udp_payload_size, kMinUdpSize);
  return std::clamp(std::min(client, our_limit), kMinUdpSize, kMaxMessageSize);
}

Message MakeReply(const Query& query, RCode rcode, const ReplyOptions& options) {
  Message m;
  m.header = ReplyHeader(query.header);
  m.questions.push_back(query.question);
  if (query.edns) m.edns = ReplyEdns(*query.edns, options);
  SetRcode(&m, rcode);
  return m;
}

Result<std::vector<std::uint8_t>> BuildAddressReply(const Query& query,
                                                    std::span<const std::uint32_t> addresses,
                                                    std::uint32_t ttl,
                                                    const ReplyOptions& options) {
  Message m = MakeReply(query, RCode::kNoError, options);
  m.answers.reserve(addresses.size());
  for (std::uint32_t a : addresses) m.answers.push_back(MakeARecord(query.question.name, ttl, a));
  return Encode(m, options.max_size);
}

Result<std::vector<std::uint8_t>> BuildPtrReply(const Query& query, std::string_view target,
                                                std::uint32_t ttl, const ReplyOptions& options) {
  Result<ResourceRecord> rr = MakePtrRecord(query.question.name, ttl, target);
  if (!rr) return {std::nullopt, std::move(rr.error)};
  Message m = MakeReply(query, RCode::kNoError, options);
  m.answers.push_back(std::move(*rr));
  return Encode(m, options.max_size);
}

Result<std::vector<std::uint8_t>> BuildEmptyReply(const Query& query, RCode rcode,
                                                  const ReplyOptions& options) {
  return Encode(MakeReply(query, rcode, options), options.max_size);
}

Result<std::vector<std::uint8_t>> BuildTruncatedReply(const Query& query,
                                                      const ReplyOptions& options) {
  Message m = MakeReply(query, RCode::kNoError, options);
  m.header.tc = true;
  return Encode(m, options.max_size);
}

Result<std::vector<std::uint8_t>> BuildErrorReply(const QueryParseResult& rejected,
                                                  const ReplyOptions& options) {
  if (!rejected.reply_rcode) {
    return {std::nullopt, MakeError(ErrorCode::kNoReply, 0,
                                    "the message gets no reply: " + rejected.error.message)};
  }
  Message m;
  m.header = ReplyHeader(rejected.header);
  if (rejected.question) m.questions.push_back(*rejected.question);
  if (rejected.edns) m.edns = ReplyEdns(*rejected.edns, options);
  SetRcode(&m, *rejected.reply_rcode);
  return Encode(m, options.max_size);
}

std::optional<Header> PeekHeader(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) return std::nullopt;
  Header h;
  h.id = Get16(bytes, 0);
  const std::uint16_t flags = Get16(bytes, 2);
  h.qr = (flags & 0x8000) != 0;
  h.opcode = static_cast<std::uint8_t>((flags >> 11) & 0xF);
  h.aa = (flags & 0x0400) != 0;
  h.tc = (flags & 0x0200) != 0;
  h.rd = (flags & 0x0100) != 0;
  h.ra = (flags & 0x0080) != 0;
  h.z = (flags & 0x0040) != 0;
  h.ad = (flags & 0x0020) != 0;
  h.cd = (flags & 0x0010) != 0;
  h.rcode = static_cast<std::uint8_t>(flags & 0xF);
  h.qdcount = Get16(bytes, 4);
  h.ancount = Get16(bytes, 6);
  h.nscount = Get16(bytes, 8);
  h.arcount = Get16(bytes, 10);
  return h;
}

std::optional<std::uint16_t> ReadId(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) return std::nullopt;
  return Get16(bytes, 0);
}

bool RewriteId(std::span<std::uint8_t> bytes, std::uint16_t id) {
  if (bytes.size() < kHeaderSize) return false;
  bytes[0] = static_cast<std::uint8_t>(id >> 8);
  bytes[1] = static_cast<std::uint8_t>(id);
  return true;
}

Result<Question> PeekQuestion(std::span<const std::uint8_t> bytes) {
  const std::optional<Header> header = PeekHeader(bytes);
  if (!header) {
    return {std::nullopt, MakeError(ErrorCode::kTruncatedHeader, bytes.size(),
                                    "message is shorter than the 12-byte header")};
  }
  if (header->qdcount == 0) {
    return {std::nullopt, MakeError(ErrorCode::kBadQuestionCount, 4, "message has no question")};
  }
  Question q;
  Parser parser(bytes.first(std::min(bytes.size(), kMaxMessageSize)));
  if (!parser.ParseFirstQuestion(&q)) return {std::nullopt, parser.error()};
  return {std::move(q), {}};
}

std::string ReverseName(std::uint32_t ipv4) {
  return std::to_string(ipv4 & 0xFF) + "." + std::to_string((ipv4 >> 8) & 0xFF) + "." +
         std::to_string((ipv4 >> 16) & 0xFF) + "." + std::to_string(ipv4 >> 24) + ".in-addr.arpa";
}

std::optional<std::uint32_t> ParseReverseName(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  constexpr std::string_view kSuffix = ".in-addr.arpa";
  if (name.size() <= kSuffix.size() ||
      LowercaseName(name.substr(name.size() - kSuffix.size())) != kSuffix) {
    return std::nullopt;
  }
  name.remove_suffix(kSuffix.size());
  std::uint32_t address = 0;
  for (int octet = 0; octet < 4; ++octet) {
    const std::size_t dot = name.find('.');
    const std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > 3 || (label.size() > 1 && label[0] == '0')) {
      return std::nullopt;
    }
    std::uint32_t value = 0;
    for (char c : label) {
      if (!IsDigit(c)) return std::nullopt;
      value = value * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (value > 255) return std::nullopt;
    address |= value << (8 * octet);
    if (octet < 3) {
      if (dot == std::string_view::npos) return std::nullopt;
      name.remove_prefix(dot + 1);
    } else if (dot != std::string_view::npos) {
      return std::nullopt;  // a fifth label
    }
  }
  return address;
}

}  // namespace tunnels::resolver
