// Host key fingerprints of an ssh proxy's server: the two forms users copy
// around, and whether a presented key matches what the configuration pins.
// No libssh here, so that the matching rules are unit-tested on their own.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "config/config.h"

namespace tunnels::proxies {

// "0f:1e:...", 16 lowercase hex bytes separated by ':' (older OpenSSH, the
// original tunnels).
std::string Md5Hex(std::span<const std::uint8_t> md5);

// Base64 without padding, as OpenSSH prints after "SHA256:".
std::string Sha256Base64(std::span<const std::uint8_t> sha256);

// What a presented key is, in both forms.
struct PresentedKey {
  config::HostKeyType type = config::HostKeyType::kRsa;
  std::string md5;     // Md5Hex form
  std::string sha256;  // Sha256Base64 form, without "SHA256:"
};

enum class PinCheck { kMatch, kMismatch, kUnpinnedType };

// A key matches when a fingerprint pinned for its type equals it in that
// fingerprint's form. A type with nothing pinned never matches.
PinCheck CheckPins(const std::vector<config::Fingerprint>& pins, const PresentedKey& key);

// The config key that pins `type`: "ed25519Fingerprint"...
const char* PinKey(config::HostKeyType type);

}  // namespace tunnels::proxies
