// libFuzzer target for the configuration loader and the rule engine.
//
// The input is one configuration file, or two when it contains the line
// "---8<---" (so that merging options, proxies, port aliases and rules across
// files is exercised too). Whatever the input, LoadDocuments must not crash
// or throw, its diagnostics must point inside the documents, and an ok result
// must compile into a RuleSet that decides names taken from the rules and
// from the input consistently. A broken promise aborts with the reason.
//
// Run with a scratch corpus first, so that the checked-in seeds stay as they are:
//   ./config_fuzz -max_total_time=300 -timeout=10 -rss_limit_mb=2048 \
//       /tmp/config-corpus ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/config
#include <stdlib.h>
#include <unistd.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "tests/config/load_checks.h"

namespace {

constexpr std::string_view kSplit = "\n---8<---\n";

// A resolv.conf of the fuzzer's own, so that a configuration without
// upstreamDns loads the same on every machine. It has a fixed name, so that
// runs leave one file behind at most, and is renamed into place, so that
// parallel jobs never read it half written.
const tunnels::config::LoadOptions& Options() {
  static const tunnels::config::LoadOptions options = [] {
    tunnels::config::LoadOptions o;
    o.system_resolv_conf = "/tmp/tunnels-config-fuzz-resolv.conf";
    char temp[] = "/tmp/tunnels-config-fuzz-resolv.XXXXXX";
    const int fd = mkstemp(temp);
    constexpr std::string_view kText = "nameserver 192.0.2.1\n";
    if (fd < 0 || write(fd, kText.data(), kText.size()) != static_cast<ssize_t>(kText.size()) ||
        close(fd) != 0 || rename(temp, o.system_resolv_conf.c_str()) != 0) {
      perror("config_fuzz: writing resolv.conf");
      abort();
    }
    return o;
  }();
  return options;
}

// Words of the input that could be names (and a few that are nearly), to
// ask the rule engine about besides the names made from the rules.
std::vector<std::string> NamesIn(std::string_view text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < text.size() && out.size() < 16) {
    auto in_word = [&](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ||
             c == '*';
    };
    while (i < text.size() && !in_word(text[i])) ++i;
    const std::size_t start = i;
    while (i < text.size() && in_word(text[i])) ++i;
    if (i - start >= 3 && text.substr(start, i - start).find('.') != std::string_view::npos) {
      std::string name(text.substr(start, i - start));
      for (char& c : name) {
        if (c == '*') c = 'x';
      }
      out.push_back(std::move(name));
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<tunnels::config::Document> docs;
  if (const std::size_t cut = input.find(kSplit); cut != std::string_view::npos) {
    docs.push_back({"fuzz-a.yml", std::string(input.substr(0, cut + 1))});
    docs.push_back({"fuzz-b.yml", std::string(input.substr(cut + kSplit.size()))});
  } else {
    docs.push_back({"fuzz.yml", std::string(input)});
  }
  const tunnels::config::LoadResult result = tunnels::config::LoadDocuments(docs, Options());
  // Fewer names than the robustness test decides: more inputs a second
  // find more than more names per input.
  const std::string violation =
      tunnels::testing::CheckResult(docs, result, NamesIn(input), /*max_names=*/48);
  if (!violation.empty()) {
    fprintf(stderr, "config_fuzz: %s\n", violation.c_str());
    abort();
  }
  return 0;
}
