#include "proxies/name_resolver.h"

#include "resolver/dns_message.h"

namespace tunnels::proxies {

namespace asio = boost::asio;

asio::awaitable<std::vector<asio::ip::address>> NameResolver::Resolve(const std::string& host,
                                                                      std::string* error) {
  boost::system::error_code ec;
  const asio::ip::address literal = asio::ip::make_address(host, ec);
  if (!ec) co_return std::vector<asio::ip::address>{literal};

  std::vector<asio::ip::address> out;
  std::string last_error = "no address";
  for (const std::uint16_t type : {resolver::dns_type::kA, resolver::dns_type::kAaaa}) {
    resolver::Message query;
    query.header.id = next_id_++;
    query.header.rd = true;
    query.questions.push_back(resolver::Question{host, type, resolver::dns_class::kIn});
    auto wire = resolver::Encode(query);
    if (!wire) {
      *error = "'" + host + "' is not a valid name";
      co_return out;
    }
    auto reply = co_await upstream_.Forward(std::move(*wire), resolver::Transport::kUdp);
    if (!reply) {
      last_error = "no upstream DNS server answered";
      continue;
    }
    const auto message = resolver::ParseMessage(*reply);
    if (!message) {
      last_error = "malformed answer from the upstream DNS server";
      continue;
    }
    if (message->rcode() != resolver::RCode::kNoError) {
      last_error =
          std::string("the upstream DNS server says ") + resolver::ToString(message->rcode());
      continue;
    }
    for (const resolver::ResourceRecord& rr : message->answers) {
      if (rr.type == resolver::dns_type::kA && rr.rdata.size() == 4) {
        out.push_back(asio::ip::address_v4(
            asio::ip::address_v4::bytes_type{rr.rdata[0], rr.rdata[1], rr.rdata[2], rr.rdata[3]}));
      } else if (rr.type == resolver::dns_type::kAaaa && rr.rdata.size() == 16) {
        asio::ip::address_v6::bytes_type b{};
        std::copy(rr.rdata.begin(), rr.rdata.end(), b.begin());
        out.push_back(asio::ip::address_v6(b));
      }
    }
  }
  if (out.empty()) *error = "cannot resolve '" + host + "': " + last_error;
  co_return out;
}

}  // namespace tunnels::proxies
