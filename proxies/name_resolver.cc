#include "proxies/name_resolver.h"

#include <boost/asio/co_spawn.hpp>
#include <cctype>
#include <string_view>

#include "proxies/wakeup.h"
#include "resolver/dns_message.h"

namespace tunnels::proxies {

namespace asio = boost::asio;
using Reply = std::optional<std::vector<std::uint8_t>>;

namespace {

// The addresses in the A and AAAA replies (either may be missing), kept in
// `cache` for as long as both may be.
AddressCache::Answer Combine(const std::string& host, const Reply (&replies)[2],
                             const std::string& aaaa_failure, AddressCache& cache) {
  AddressCache::Answer answer;
  std::string last_error = "no address";
  bool failed = false;  // a reply missing, malformed, truncated or not NOERROR/NXDOMAIN
  std::chrono::seconds ttl = kMaxPositiveTtl;
  for (int i = 0; i < 2; ++i) {
    const Reply& reply = replies[i];
    if (!reply) {
      last_error = i == 1 && !aaaa_failure.empty() ? "the AAAA lookup failed: " + aaaa_failure
                                                   : "no upstream DNS server answered";
      failed = true;
      continue;
    }
    const auto message = resolver::ParseMessage(*reply);
    if (!message) {
      last_error = "malformed answer from the upstream DNS server";
      failed = true;
      continue;
    }
    const resolver::RCode rcode = message->rcode();
    if (message->header.tc ||
        (rcode != resolver::RCode::kNoError && rcode != resolver::RCode::kNxDomain)) {
      failed = true;
    } else {
      ttl = std::min(ttl, CacheTtl(*message));
    }
    if (rcode != resolver::RCode::kNoError) {
      last_error = std::string("the upstream DNS server says ") + resolver::ToString(rcode);
      continue;
    }
    for (const resolver::ResourceRecord& rr : message->answers) {
      if (rr.klass != resolver::dns_class::kIn) continue;
      if (rr.type == resolver::dns_type::kA && rr.rdata.size() == 4) {
        answer.addresses.push_back(asio::ip::address_v4(
            asio::ip::address_v4::bytes_type{rr.rdata[0], rr.rdata[1], rr.rdata[2], rr.rdata[3]}));
      } else if (rr.type == resolver::dns_type::kAaaa && rr.rdata.size() == 16) {
        asio::ip::address_v6::bytes_type b{};
        std::copy(rr.rdata.begin(), rr.rdata.end(), b.begin());
        answer.addresses.push_back(asio::ip::address_v6(b));
      }
    }
  }
  if (answer.addresses.empty()) answer.error = "cannot resolve '" + host + "': " + last_error;
  // A failed half (an upstream that refuses AAAA, say) does not cost every
  // connection a lookup when the other half has addresses: they are kept
  // briefly, and the failed half asked for again after that. Nothing is kept
  // when there is no address at all: the next connection asks again.
  if (failed && answer.addresses.empty()) return answer;
  if (failed) ttl = std::min(ttl, kDefaultNegativeTtl);
  cache.Store(host, answer, ttl, AddressCache::Clock::now());
  return answer;
}

bool InV4(std::uint32_t a, std::uint32_t network, int length) {
  const std::uint32_t mask = length == 0 ? 0 : ~0u << (32 - length);
  return (a & mask) == network;
}

bool IsLocalhostName(std::string host) {
  if (!host.empty() && host.back() == '.') host.pop_back();
  for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  constexpr std::string_view kName = "localhost";
  return host == kName ||
         (host.size() > kName.size() + 1 &&
          host.compare(host.size() - kName.size() - 1, std::string::npos, ".localhost") == 0);
}

}  // namespace

std::string RefusedAnswer(const std::string& host, const asio::ip::address& address,
                          const AnswerPolicy& policy) {
  asio::ip::address_v4 v4;
  if (address.is_v6()) {
    const asio::ip::address_v6 v6 = address.to_v6();
    if (v6.is_v4_mapped()) {
      v4 = asio::ip::make_address_v4(asio::ip::v4_mapped, v6);
    } else {
      const auto b = v6.to_bytes();
      if (v6.is_loopback()) return IsLocalhostName(host) ? "" : "a loopback address";
      if (v6.is_unspecified()) return "the unspecified address";
      if (v6.is_link_local()) return "a link-local address";
      if (v6.is_multicast()) return "a multicast address";
      if (!policy.allow_private && (b[0] & 0xFE) == 0xFC) {
        return "a private (ULA) address, and allowPrivateAnswers is false";
      }
      return "";
    }
  } else {
    v4 = address.to_v4();
  }
  const std::uint32_t a = v4.to_uint();
  if (InV4(a, 0x7F000000u, 8)) return IsLocalhostName(host) ? "" : "a loopback address";
  if (InV4(a, 0x00000000u, 8)) return "an address of 0.0.0.0/8 (this host)";
  if (InV4(a, 0xA9FE0000u, 16)) return "a link-local address";
  if (InV4(a, 0xE0000000u, 4)) return "a multicast address";
  if (InV4(a, 0xF0000000u, 4)) return "a reserved address (240.0.0.0/4)";
  if (InV4(a, policy.fake_network, policy.fake_prefix_length)) {
    return "an address of tunnels' own fake range (privateAddresses)";
  }
  if (!policy.allow_private &&
      (InV4(a, 0x0A000000u, 8) || InV4(a, 0xAC100000u, 12) || InV4(a, 0xC0A80000u, 16))) {
    return "a private (RFC 1918) address, and allowPrivateAnswers is false";
  }
  return "";
}

struct NameResolver::Lookup {
  explicit Lookup(const asio::any_io_executor& executor) : wakeup(executor) {}
  bool done = false;
  Wakeup wakeup;
  AddressCache::Answer answer{{}, "the lookup ended before an answer"};
};

NameResolver::~NameResolver() = default;

std::vector<asio::ip::address> NameResolver::Allowed(const std::string& host,
                                                     std::vector<asio::ip::address> addresses,
                                                     std::string* error) const {
  std::string refused;
  std::erase_if(addresses, [&](const asio::ip::address& a) {
    const std::string why = RefusedAnswer(host, a, policy_);
    if (why.empty()) return false;
    refused += (refused.empty() ? "" : ", ") + a.to_string() + " (" + why + ")";
    return true;
  });
  if (!refused.empty()) {
    // Rate-limited: a program can ask for the name as often as it likes.
    if (log_) {
      log_->Limited("ENGINE", config::LogLevel::kWarning,
                    "refused the upstream DNS server's answer for '" + host + "': " + refused +
                        " (a possible DNS rebinding attack; see allowPrivateAnswers)");
    }
    if (addresses.empty()) {
      *error = "cannot resolve '" + host + "': every address the upstream DNS server gave " +
               "is refused: " + refused;
    }
  }
  return addresses;
}

asio::awaitable<std::vector<asio::ip::address>> NameResolver::Resolve(const std::string& host,
                                                                      std::string* error,
                                                                      bool check) {
  // An IP address the user wrote (a proxy's, a forcedAddress) is used as
  // written: only answers from the upstream DNS server are checked.
  boost::system::error_code ec;
  const asio::ip::address literal = asio::ip::make_address(host, ec);
  if (!ec) co_return std::vector<asio::ip::address>{literal};

  if (const AddressCache::Answer* hit = cache_.Find(host, AddressCache::Clock::now())) {
    if (hit->addresses.empty()) *error = hit->error;
    co_return check ? Allowed(host, hit->addresses, error) : hit->addresses;
  }

  std::shared_ptr<Lookup> lookup;
  if (const auto it = in_flight_.find(host); it != in_flight_.end()) {
    lookup = it->second;
    while (!lookup->done) co_await lookup->wakeup.Wait();
  } else {
    lookup = std::make_shared<Lookup>(co_await asio::this_coro::executor);
    in_flight_.emplace(host, lookup);
    // The requests waiting for this lookup hear of its end however it ends.
    // A coroutine still suspended when tunnels stops is destroyed with the
    // io_context, after this resolver: then there is nobody left to tell.
    struct Publish {
      NameResolver& self;
      std::weak_ptr<const bool> self_alive;
      const std::string& host;
      Lookup& lookup;
      ~Publish() {
        if (self_alive.expired()) return;
        self.in_flight_.erase(host);
        lookup.done = true;
        lookup.wakeup.Notify();
      }
    } publish{*this, alive_, host, *lookup};
    lookup->answer = co_await Ask(host);
  }
  if (lookup->answer.addresses.empty()) *error = lookup->answer.error;
  co_return check ? Allowed(host, lookup->answer.addresses, error) : lookup->answer.addresses;
}

asio::awaitable<AddressCache::Answer> NameResolver::Ask(const std::string& host) {
  std::vector<std::uint8_t> wires[2];
  const std::uint16_t types[2] = {resolver::dns_type::kA, resolver::dns_type::kAaaa};
  for (int i = 0; i < 2; ++i) {
    resolver::Message query;
    query.header.id = next_id_++;  // Upstream replaces it with a random one
    query.header.rd = true;
    query.questions.push_back(resolver::Question{host, types[i], resolver::dns_class::kIn});
    auto wire = resolver::Encode(query);
    if (!wire) co_return AddressCache::Answer{{}, "'" + host + "' is not a valid name"};
    wires[i] = std::move(*wire);
  }

  // AAAA in a coroutine of its own, so that both questions are out at once:
  // a lookup takes one round trip, not two. It needs only the Upstream,
  // which outlives the engine.
  struct Part {
    explicit Part(const asio::any_io_executor& executor) : wakeup(executor) {}
    bool ready = false;
    Wakeup wakeup;
    Reply reply;
    std::string failure;
  };
  const auto executor = co_await asio::this_coro::executor;
  auto aaaa = std::make_shared<Part>(executor);
  asio::co_spawn(executor, upstream_.Forward(std::move(wires[1]), resolver::Transport::kUdp),
                 [aaaa](std::exception_ptr e, Reply reply) {
                   if (e) {
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& x) {
                       aaaa->failure = x.what();
                     } catch (...) {
                       aaaa->failure = "an unknown exception";
                     }
                   }
                   aaaa->reply = std::move(reply);
                   aaaa->ready = true;
                   aaaa->wakeup.Notify();
                 });
  Reply replies[2];
  replies[0] = co_await upstream_.Forward(std::move(wires[0]), resolver::Transport::kUdp);
  while (!aaaa->ready) co_await aaaa->wakeup.Wait();
  replies[1] = std::move(aaaa->reply);

  co_return Combine(host, replies, aaaa->failure, cache_);
}

}  // namespace tunnels::proxies
