// The table of the main options (main_options.def) as data: what the
// loader reads, and what a reload may apply to a running tunnels.
#pragma once

#include <span>
#include <string_view>

#include "config/config.h"

namespace tunnels::config {

// What a reload does with a changed option.
enum class Reload {
  kApplied,  // takes the new value at once
  kRestart,  // keeps the running value; the change waits for a restart
};

struct MainOption {
  std::string_view key;  // the YAML key
  Reload reload;
  std::string_view example;  // a valid value other than the default
  // Whether `a` and `b` have the same value of this option.
  bool (*same)(const Options& a, const Options& b);
  // Sets this option of `to` to its value in `from`.
  void (*copy)(Options& to, const Options& from);
};

// Every main option, in the order of main_options.def.
std::span<const MainOption> MainOptions();

// The option of that key; null if there is none.
const MainOption* FindMainOption(std::string_view key);

}  // namespace tunnels::config
