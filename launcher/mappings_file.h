// The name-to-fake-address mappings of `tunnels system`, saved in the state
// directory so that programs that cached a fake address keep reaching
// their name across a restart or an upgrade.
//
// The file starts with the fake address range; one mapping per line,
// "ADDRESS NAME". A file for another range (privateAddresses changed) is
// ignored: its addresses mean nothing in the new one.
#pragma once

#include <string>
#include <vector>

#include "resolver/fake_pool.h"

namespace tunnels::launcher {

inline constexpr char kMappingsFileName[] = "mappings";

std::string SerializeMappings(const std::string& range,
                              const std::vector<resolver::FakePool::Mapping>& mappings);

// False with a sentence in `*why` when `text` is not a mappings file or is
// one for another range.
bool ParseMappings(const std::string& text, const std::string& range,
                   std::vector<resolver::FakePool::Mapping>* mappings, std::string* why);

// Writes `text` to a temporary file next to `path`, flushes it and renames
// it over `path`, so that a crash leaves the old file or the new one.
bool WriteFileAtomically(const std::string& path, const std::string& text, std::string* error);

// The file's content; false (with `*error` set unless it does not exist)
// when it cannot be read. `*missing` tells which.
bool ReadFile(const std::string& path, std::string* text, bool* missing, std::string* error);

}  // namespace tunnels::launcher
