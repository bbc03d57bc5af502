#include "proxies/ssh_fingerprint.h"

#include <catch2/catch.hpp>
#include <vector>

using namespace tunnels;
using namespace tunnels::proxies;

namespace {

// The host key of the examples below: its MD5 and SHA256 digests.
const std::vector<std::uint8_t> kMd5 = {0x01, 0x23, 0x45, 0x97, 0x89, 0xab, 0xcd, 0xef,
                                        0x01, 0x23, 0x45, 0x97, 0x89, 0xab, 0xcd, 0xff};
std::vector<std::uint8_t> Sha() {
  std::vector<std::uint8_t> v(32);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint8_t>(i * 7 + 3);
  return v;
}

config::Fingerprint Pin(config::HostKeyType type, config::Fingerprint::Form form,
                        std::string value) {
  config::Fingerprint f;
  f.key_type = type;
  f.form = form;
  f.value = std::move(value);
  return f;
}

}  // namespace

TEST_CASE("MD5 fingerprints are lowercase colon-separated hex", "[ssh]") {
  CHECK(Md5Hex(kMd5) == "01:23:45:97:89:ab:cd:ef:01:23:45:97:89:ab:cd:ff");
  CHECK(Md5Hex({}) == "");
}

TEST_CASE("SHA256 fingerprints are base64 without padding, as OpenSSH prints them", "[ssh]") {
  // RFC 4648 test vectors, padding dropped.
  auto b64 = [](std::string_view s) {
    return Sha256Base64(std::vector<std::uint8_t>(s.begin(), s.end()));
  };
  CHECK(b64("") == "");
  CHECK(b64("f") == "Zg");
  CHECK(b64("fo") == "Zm8");
  CHECK(b64("foo") == "Zm9v");
  CHECK(b64("foob") == "Zm9vYg");
  CHECK(b64("fooba") == "Zm9vYmE");
  CHECK(b64("foobar") == "Zm9vYmFy");
  // A 32-byte digest is 43 characters (what the config loader expects).
  CHECK(Sha256Base64(Sha()).size() == 43);
  CHECK(Sha256Base64(std::vector<std::uint8_t>(32, 0xff)) ==
        "//////////////////////////////////////////8");
}

TEST_CASE("a key matches a pin of its own type in either form", "[ssh]") {
  using config::HostKeyType;
  using Form = config::Fingerprint::Form;
  PresentedKey key{HostKeyType::kEd25519, Md5Hex(kMd5), Sha256Base64(Sha())};

  CHECK(CheckPins({Pin(HostKeyType::kEd25519, Form::kMd5Hex, key.md5)}, key) == PinCheck::kMatch);
  CHECK(CheckPins({Pin(HostKeyType::kEd25519, Form::kSha256Base64, key.sha256)}, key) ==
        PinCheck::kMatch);
  // One of two pins of the type is enough (a key being rotated).
  CHECK(CheckPins({Pin(HostKeyType::kEd25519, Form::kSha256Base64, "x"),
                   Pin(HostKeyType::kEd25519, Form::kMd5Hex, key.md5)},
                  key) == PinCheck::kMatch);
  // The right value pinned for another type does not count.
  CHECK(CheckPins({Pin(HostKeyType::kRsa, Form::kMd5Hex, key.md5)}, key) ==
        PinCheck::kUnpinnedType);
  CHECK(CheckPins({}, key) == PinCheck::kUnpinnedType);
  // A value in the other form's text never matches.
  CHECK(CheckPins({Pin(HostKeyType::kEd25519, Form::kMd5Hex, key.sha256)}, key) ==
        PinCheck::kMismatch);
  // Base64 is case-sensitive.
  std::string upper = key.sha256;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  CHECK(CheckPins({Pin(HostKeyType::kEd25519, Form::kSha256Base64, upper)}, key) ==
        PinCheck::kMismatch);
}

TEST_CASE("pin keys are named as in the configuration", "[ssh]") {
  CHECK(std::string(PinKey(config::HostKeyType::kRsa)) == "rsaFingerprint");
  CHECK(std::string(PinKey(config::HostKeyType::kEcdsa)) == "ecdsaFingerprint");
  CHECK(std::string(PinKey(config::HostKeyType::kEd25519)) == "ed25519Fingerprint");
}
