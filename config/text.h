// Small text and address helpers shared inside the config library.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace tunnels::config {

std::string_view Trim(std::string_view s);
std::string ToLower(std::string_view s);
// Splits on `sep`, trims each piece; keeps empty pieces so callers can report them.
std::vector<std::string_view> SplitTrim(std::string_view s, char sep);

// Splits on `sep` into trimmed pieces, each with the offset in `s` where it
// starts (for an empty piece, where it would start), so that diagnostics can
// point at the piece.
std::vector<std::pair<std::string, std::size_t>> SplitWithOffsets(std::string_view s, char sep);

// The closest of `candidates` to `word` if it is close enough to be a likely
// typo, for "did you mean" hints.
std::optional<std::string> Closest(std::string_view word,
                                   const std::vector<std::string>& candidates);

bool IsIpv4Literal(std::string_view s);
bool IsIpv6Literal(std::string_view s);
bool IsHostName(std::string_view s);  // letters, digits, '-', '_', dots; no empty label

std::optional<std::uint16_t> ParsePort(std::string_view s);  // 1..65535
// A whole number without sign, surrounding spaces allowed.
std::optional<std::uint64_t> ParseUnsigned(std::string_view s);

// "host", "host:port", "1.2.3.4:port", "[v6]:port", or a bare IPv6 literal.
// On failure returns nullopt and sets `error`.
struct HostPort {
  std::string host;
  std::optional<std::uint16_t> port;
};
std::optional<HostPort> ParseHostPort(std::string_view s, std::string* error);

std::optional<Ipv4Prefix> ParseIpv4Prefix(std::string_view s, std::string* error);

// Nameservers of a resolv.conf file, with port 53.
std::vector<Endpoint> ReadResolvConfNameservers(const std::string& path);

}  // namespace tunnels::config
