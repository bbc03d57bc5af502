// The rule engine.
//
// Exact names and plain suffix patterns (".a.b", "*.a.b") - nearly every rule
// real users write - live in one open-addressing hash table keyed by name. A
// name of n labels costs n probes, one per suffix, and the hashes of all its
// suffixes come from a single pass over the name from the right. The table,
// its keys and what Decide() needs of each rule are flat arrays, so that a
// lookup among 100,000 rules touches a few cache lines and allocates
// nothing. Other wildcard patterns are matched one by one; the README warns
// that they are slower.
#include "config/rules.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>

#include "config/pattern.h"

namespace tunnels::config {
namespace {

constexpr std::uint32_t kNone = 0xFFFFFFFFu;
// A match list of exactly one rule is that rule's index with this bit, so
// that the common case needs no second array.
constexpr std::uint32_t kSingle = 0x80000000u;

// FNV-1a, fed the bytes of a name from the last to the first, so that the
// hash of every suffix is a step on the way to the hash of the whole name.
constexpr std::uint64_t kHashSeed = 0xcbf29ce484222325ull;
inline std::uint64_t HashStep(std::uint64_t h, char c) {
  return (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
}
// FNV's low bits, which pick the slot, are weak; this mixes in the high ones
// (MurmurHash3's finaliser). 0 marks an empty slot, so it is never a hash.
inline std::uint64_t HashFinish(std::uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h == 0 ? 1 : h;
}
std::uint64_t HashName(std::string_view name) {
  std::uint64_t h = kHashSeed;
  for (std::size_t i = name.size(); i-- > 0;) h = HashStep(h, name[i]);
  return HashFinish(h);
}

const std::vector<PortRange>& AllTcp() {
  static const std::vector<PortRange> all = {PortRange{Protocol::kTcp, 1, 65535}};
  return all;
}

// Whether every port of `ranges` is inside the union of `covered`, which
// this sorts.
bool FullyCovered(std::span<const PortRange> ranges, std::span<PortRange> covered) {
  std::sort(covered.begin(), covered.end(),
            [](const PortRange& a, const PortRange& b) { return a.first < b.first; });
  for (const PortRange& r : ranges) {
    int next = r.first;  // the first port of r not yet known to be covered
    for (const PortRange& c : covered) {
      if (c.protocol != r.protocol) continue;
      if (c.first > next) break;
      next = std::max(next, c.last + 1);
      if (next > r.last) break;
    }
    if (next <= r.last) return false;
  }
  return true;
}

Action ActionOf(const Rule& r) {
  if (r.proxies.size() == 1 && r.proxies[0] == "block") return Action::kBlock;
  if (r.proxies.size() == 1 && r.proxies[0] == "direct") return Action::kDirect;
  return Action::kProxy;
}

bool PortsOverlap(const Rule& a, const Rule& b) {
  const auto& pa = a.ports.empty() ? AllTcp() : a.ports;
  const auto& pb = b.ports.empty() ? AllTcp() : b.ports;
  for (const PortRange& x : pa) {
    for (const PortRange& y : pb) {
      if (x.protocol == y.protocol && x.first <= y.last && y.first <= x.last) return true;
    }
  }
  return false;
}

// A vector that keeps its first N elements on the stack: Decide() collects
// into it and allocates only past N, which takes a name that dozens of
// rules match at once.
template <typename T, std::size_t N>
class StackVector {
 public:
  void push_back(const T& v) {
    if (size_ < N) {
      stack_[size_] = v;
    } else {
      if (heap_.empty()) heap_.assign(stack_.begin(), stack_.end());
      heap_.push_back(v);
    }
    ++size_;
  }
  std::span<T> span() {
    return size_ <= N ? std::span<T>(stack_.data(), size_) : std::span<T>(heap_);
  }

 private:
  std::array<T, N> stack_{};
  std::vector<T> heap_;
  std::size_t size_ = 0;
};

}  // namespace

bool NormalizeName(std::string_view name, char* out, std::size_t* out_len) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > 253) return false;
  std::size_t label = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
    } else if (++label > 63) {
      return false;
    }
    // ASCII only, as DNS compares names; std::tolower would ask the locale.
    out[i] = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  }
  if (label == 0) return false;
  *out_len = name.size();
  return true;
}

struct RuleSet::Impl {
  // What Decide() needs of a rule, packed together.
  struct Info {
    std::uint32_t ports_begin = 0;  // in `ports`
    std::uint32_t ports_count = 0;  // 0: every TCP port
    int literal_labels = 0;
    int anchored_right = 0;
    Action action = Action::kProxy;
  };
  struct Slot {
    std::uint64_t hash = 0;  // 0: empty
    std::uint32_t key = 0;   // the name: offset in `keys`
    std::uint32_t key_length = 0;
    std::uint32_t exact = kNone;  // rules that match the name itself
    std::uint32_t under = kNone;  // rules that match names strictly under it
  };

  std::vector<Rule> rules;
  std::vector<Pattern> patterns;
  std::vector<Info> info;
  std::vector<PortRange> ports;
  std::vector<Slot> table;  // a power of two in size, at most half full
  std::string keys;
  std::vector<std::uint32_t> lists;    // [count, rule...] for lists of several rules
  std::vector<std::uint32_t> any;      // "*": every name
  std::vector<std::uint32_t> general;  // everything else, matched one by one
  bool block_undefined = false;

  const Slot* Find(std::uint64_t hash, std::string_view name) const {
    const std::size_t mask = table.size() - 1;
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const Slot& s = table[i];
      if (s.hash == 0) return nullptr;
      if (s.hash == hash && s.key_length == name.size() &&
          std::memcmp(keys.data() + s.key, name.data(), name.size()) == 0) {
        return &s;
      }
    }
  }

  // The slot of `name`, added if missing.
  Slot& Insert(std::string_view name) {
    const std::uint64_t hash = HashName(name);
    const std::size_t mask = table.size() - 1;
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      Slot& s = table[i];
      if (s.hash == 0) {
        s.hash = hash;
        s.key = static_cast<std::uint32_t>(keys.size());
        s.key_length = static_cast<std::uint32_t>(name.size());
        keys.append(name);
        return s;
      }
      if (s.hash == hash && s.key_length == name.size() &&
          std::memcmp(keys.data() + s.key, name.data(), name.size()) == 0) {
        return s;
      }
    }
  }

  template <typename Fn>
  void ForEachIn(std::uint32_t list, Fn& fn) const {
    if (list == kNone) return;
    if (list & kSingle) {
      fn(list & ~kSingle);
      return;
    }
    const std::uint32_t count = lists[list];
    for (std::uint32_t k = 1; k <= count; ++k) fn(lists[list + k]);
  }

  // Calls fn(rule index) for every rule whose pattern matches `name`
  // (normalised).
  template <typename Fn>
  void ForEachMatch(std::string_view name, Fn&& fn) const {
    // The name and each suffix that starts a label, from the shortest.
    std::uint64_t h = kHashSeed;
    for (std::size_t i = name.size(); i-- > 0;) {
      h = HashStep(h, name[i]);
      if (i > 0 && name[i - 1] != '.') continue;
      if (const Slot* s = Find(HashFinish(h), name.substr(i)))
        ForEachIn(i == 0 ? s->exact : s->under, fn);
    }
    for (std::uint32_t i : any) fn(i);
    if (general.empty()) return;
    // A valid name has at most 127 labels.
    std::array<std::string_view, 128> labels;
    std::size_t n = 0;
    for (std::size_t start = 0; n < labels.size();) {
      const std::size_t dot = name.find('.', start);
      labels[n++] = name.substr(start, dot == std::string_view::npos ? dot : dot - start);
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
    const std::span<const std::string_view> split(labels.data(), n);
    for (std::uint32_t i : general) {
      if (patterns[i].MatchesLabels(split)) fn(i);
    }
  }

  bool Covers(std::uint32_t rule, std::uint16_t port, Protocol protocol) const {
    const Info& r = info[rule];
    if (r.ports_count == 0) return protocol == Protocol::kTcp;
    for (std::uint32_t k = 0; k < r.ports_count; ++k) {
      if (ports[r.ports_begin + k].Contains(protocol, port)) return true;
    }
    return false;
  }

  std::span<const PortRange> PortsOf(std::uint32_t rule) const {
    const Info& r = info[rule];
    if (r.ports_count == 0) return AllTcp();
    return std::span<const PortRange>(ports).subspan(r.ports_begin, r.ports_count);
  }

  bool Better(std::uint32_t a, std::uint32_t b) const {
    const Info& pa = info[a];
    const Info& pb = info[b];
    if (pa.literal_labels != pb.literal_labels) return pa.literal_labels > pb.literal_labels;
    if (pa.anchored_right != pb.anchored_right) return pa.anchored_right > pb.anchored_right;
    return a < b;
  }

  bool SameSpecificity(std::uint32_t a, std::uint32_t b) const {
    return info[a].literal_labels == info[b].literal_labels &&
           info[a].anchored_right == info[b].anchored_right;
  }

  // The DNS answer for a name that both block rules and other rules match:
  // fake if, for some port, the rule that wins is not a block rule.
  DnsAction DnsForMixed(std::string_view name) const {
    StackVector<std::uint32_t, 32> found;
    ForEachMatch(name, [&](std::uint32_t i) { found.push_back(i); });
    const std::span<std::uint32_t> matches = found.span();
    std::sort(matches.begin(), matches.end(),
              [&](std::uint32_t a, std::uint32_t b) { return Better(a, b); });
    StackVector<PortRange, 64> covered;
    for (std::uint32_t i : matches) {
      const std::span<const PortRange> rule_ports = PortsOf(i);
      if (info[i].action != Action::kBlock && !FullyCovered(rule_ports, covered.span())) {
        return DnsAction::kFake;
      }
      for (const PortRange& r : rule_ports) covered.push_back(r);
    }
    return DnsAction::kBlock;
  }
};

RuleSet::RuleSet(const Config& config) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.rules = config.rules;
  m.block_undefined = config.options.block_undefined_domains;
  const std::size_t n = m.rules.size();
  m.patterns.reserve(n);
  m.info.reserve(n);
  std::size_t keyed = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    const Rule& rule = m.rules[i];
    std::string error;
    // Load() validated every pattern, so parsing cannot fail here.
    Pattern p = std::move(*ParsePattern(rule.pattern, &error));
    Impl::Info info;
    info.ports_begin = static_cast<std::uint32_t>(m.ports.size());
    info.ports_count = static_cast<std::uint32_t>(rule.ports.size());
    m.ports.insert(m.ports.end(), rule.ports.begin(), rule.ports.end());
    info.literal_labels = p.literal_labels;
    info.anchored_right = p.anchored_right;
    info.action = ActionOf(rule);
    m.info.push_back(info);
    if (p.kind != Pattern::Kind::kGeneral && !p.base.empty()) ++keyed;
    m.patterns.push_back(std::move(p));
  }

  std::size_t capacity = 16;
  while (capacity < 2 * keyed) capacity *= 2;
  m.table.assign(capacity, Impl::Slot{});

  // Each rule's place in a match list: the slot field it belongs to. Lists
  // are counted first and then filled, in load order.
  struct Entry {
    std::uint32_t* list;
    std::uint32_t rule;
  };
  std::vector<Entry> entries;
  entries.reserve(keyed * 2);
  std::vector<std::uint32_t> counts;  // parallel to the slots, two per slot
  counts.assign(capacity * 2, 0);
  auto add = [&](Impl::Slot& slot, bool under, std::uint32_t rule) {
    const std::size_t index = static_cast<std::size_t>(&slot - m.table.data());
    ++counts[index * 2 + (under ? 1 : 0)];
    entries.push_back(Entry{under ? &slot.under : &slot.exact, rule});
  };
  for (std::uint32_t i = 0; i < n; ++i) {
    const Pattern& p = m.patterns[i];
    switch (p.kind) {
      case Pattern::Kind::kExact:
        add(m.Insert(p.base), false, i);
        break;
      case Pattern::Kind::kSuffix: {
        if (p.base.empty()) {
          m.any.push_back(i);
          break;
        }
        Impl::Slot& slot = m.Insert(p.base);
        if (p.matches_base) add(slot, false, i);
        add(slot, true, i);
        break;
      }
      case Pattern::Kind::kGeneral:
        m.general.push_back(i);
        break;
    }
  }
  // Lists of several rules get [count, rules...] in `lists`; a list of one
  // is the rule itself, tagged.
  for (std::size_t s = 0; s < capacity; ++s) {
    for (int under = 0; under < 2; ++under) {
      const std::uint32_t count = counts[s * 2 + static_cast<std::size_t>(under)];
      if (count < 2) continue;
      std::uint32_t& list = under ? m.table[s].under : m.table[s].exact;
      list = static_cast<std::uint32_t>(m.lists.size());
      m.lists.push_back(0);  // filled in below
      m.lists.resize(m.lists.size() + count);
    }
  }
  for (const Entry& e : entries) {
    std::uint32_t& list = *e.list;
    if (list == kNone) {
      list = e.rule | kSingle;
    } else {
      std::uint32_t& count = m.lists[list];
      m.lists[list + 1 + count++] = e.rule;
    }
  }
}

RuleSet::~RuleSet() = default;
RuleSet::RuleSet(RuleSet&&) noexcept = default;
RuleSet& RuleSet::operator=(RuleSet&&) noexcept = default;

std::size_t RuleSet::size() const { return impl_->rules.size(); }

Decision RuleSet::Decide(std::string_view name, std::uint16_t port, Protocol protocol) const {
  const Impl& m = *impl_;
  Decision d;
  char buf[256];
  std::size_t len = 0;
  int matches = 0;
  bool any_block = false;
  bool any_other = false;
  std::uint32_t best = 0;
  bool have_best = false;
  std::uint32_t only = 0;
  std::string_view normal;
  if (NormalizeName(name, buf, &len)) {
    normal = std::string_view(buf, len);
    m.ForEachMatch(normal, [&](std::uint32_t i) {
      ++matches;
      only = i;
      (m.info[i].action == Action::kBlock ? any_block : any_other) = true;
      if (m.Covers(i, port, protocol) && (!have_best || m.Better(i, best))) {
        best = i;
        have_best = true;
      }
    });
  }
  if (matches == 0) {
    d.dns = m.block_undefined ? DnsAction::kBlock : DnsAction::kForward;
    d.action = m.block_undefined ? Action::kBlock : Action::kDirect;
    return d;
  }
  if (matches == 1) {
    d.dns = m.info[only].action == Action::kBlock ? DnsAction::kBlock : DnsAction::kFake;
  } else if (!any_block) {
    // The most specific rule is not a block rule, and covers some port.
    d.dns = DnsAction::kFake;
  } else if (!any_other) {
    d.dns = DnsAction::kBlock;
  } else {
    d.dns = m.DnsForMixed(normal);
  }
  if (!have_best) {
    d.action = Action::kRefuse;
    return d;
  }
  const Rule& rule = m.rules[best];
  d.rule = &rule;
  d.action = m.info[best].action;
  if (d.action == Action::kProxy) d.proxies = rule.proxies;
  if (d.action != Action::kBlock) d.forced_addresses = rule.forced_addresses;
  return d;
}

DnsAction RuleSet::DecideDns(std::string_view name) const {
  return Decide(name, 0, Protocol::kTcp).dns;
}

std::vector<RuleSet::Tie> RuleSet::FindTies() const {
  const Impl& m = *impl_;
  std::set<std::pair<std::uint32_t, std::uint32_t>> pairs;
  for (std::uint32_t r = 0; r < m.patterns.size(); ++r) {
    const std::string witness = m.patterns[r].Witness();
    m.ForEachMatch(witness, [&](std::uint32_t c) {
      if (c == r || !m.SameSpecificity(c, r)) return;
      if (!PortsOverlap(m.rules[c], m.rules[r]) || m.rules[c].SameAction(m.rules[r])) return;
      pairs.emplace(std::min(c, r), std::max(c, r));
    });
  }
  std::vector<Tie> out;
  for (const auto& [a, b] : pairs) out.push_back(Tie{&m.rules[a], &m.rules[b]});
  return out;
}

const char* ToString(DnsAction a) {
  switch (a) {
    case DnsAction::kFake:
      return "fake";
    case DnsAction::kForward:
      return "forward";
    case DnsAction::kBlock:
      return "block";
  }
  return "?";
}

const char* ToString(Action a) {
  switch (a) {
    case Action::kProxy:
      return "proxy";
    case Action::kDirect:
      return "direct";
    case Action::kBlock:
      return "block";
    case Action::kRefuse:
      return "refuse";
  }
  return "?";
}

}  // namespace tunnels::config
