#include "config/config.h"

#include <arpa/inet.h>

#include "config/rules.h"

namespace tunnels::config {

std::string SourceLocation::ToString() const {
  if (line == 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string Diagnostic::ToString() const {
  return where.ToString() + (severity == Severity::kError ? ": error: " : ": warning: ") + message;
}

const char* ToString(Protocol p) { return p == Protocol::kTcp ? "tcp" : "udp"; }

std::string Endpoint::ToString() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string Target::ToString() const {
  if (!port) return host;
  return Endpoint{host, *port}.ToString();
}

const char* ToString(ProxyType t) {
  switch (t) {
    case ProxyType::kSocks5:
      return "socks5";
    case ProxyType::kHttp:
      return "http";
    case ProxyType::kSsh:
      return "ssh";
    case ProxyType::kDirect:
      return "direct";
    case ProxyType::kBlock:
      return "block";
  }
  return "?";
}

const char* ToString(HostKeyType t) {
  switch (t) {
    case HostKeyType::kRsa:
      return "rsa";
    case HostKeyType::kEcdsa:
      return "ecdsa";
    case HostKeyType::kEd25519:
      return "ed25519";
  }
  return "?";
}

std::string Ipv4Prefix::ToString() const {
  in_addr a{};
  a.s_addr = htonl(address);
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(length);
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
