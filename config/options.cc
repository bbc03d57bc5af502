#include "config/options.h"

#include <algorithm>
#include <array>

namespace tunnels::config {
namespace {

constexpr auto kMainOptions = std::to_array<MainOption>({
#define TUNNELS_OPTION(key, member, type, default_value, reload, example, ...) \
  {#key, Reload::reload, example,                                              \
   [](const Options& a, const Options& b) { return a.member == b.member; },    \
   [](Options& to, const Options& from) { to.member = from.member; }},
#include "config/main_options.def"
#undef TUNNELS_OPTION
});

}  // namespace

std::span<const MainOption> MainOptions() { return kMainOptions; }

const MainOption* FindMainOption(std::string_view key) {
  const auto it = std::find_if(kMainOptions.begin(), kMainOptions.end(),
                               [&](const MainOption& o) { return o.key == key; });
  return it == kMainOptions.end() ? nullptr : &*it;
}

}  // namespace tunnels::config
