#include "proxies/ssh_fingerprint.h"

namespace tunnels::proxies {

std::string Md5Hex(std::span<const std::uint8_t> md5) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::uint8_t b : md5) {
    if (!out.empty()) out += ':';
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

std::string Sha256Base64(std::span<const std::uint8_t> sha256) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 3 <= sha256.size(); i += 3) {
    const std::uint32_t v =
        (std::uint32_t{sha256[i]} << 16) | (std::uint32_t{sha256[i + 1]} << 8) | sha256[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const std::size_t rest = sha256.size() - i;
  if (rest > 0) {
    std::uint32_t v = std::uint32_t{sha256[i]} << 16;
    if (rest == 2) v |= std::uint32_t{sha256[i + 1]} << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    if (rest == 2) out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

PinCheck CheckPins(const std::vector<config::Fingerprint>& pins, const PresentedKey& key) {
  bool pinned = false;
  for (const config::Fingerprint& pin : pins) {
    if (pin.key_type != key.type) continue;
    pinned = true;
    const std::string& presented =
        pin.form == config::Fingerprint::Form::kMd5Hex ? key.md5 : key.sha256;
    if (pin.value == presented) return PinCheck::kMatch;
  }
  return pinned ? PinCheck::kMismatch : PinCheck::kUnpinnedType;
}

const char* PinKey(config::HostKeyType type) {
  switch (type) {
    case config::HostKeyType::kRsa:
      return "rsaFingerprint";
    case config::HostKeyType::kEcdsa:
      return "ecdsaFingerprint";
    case config::HostKeyType::kEd25519:
      return "ed25519Fingerprint";
  }
  return "?";
}

}  // namespace tunnels::proxies
