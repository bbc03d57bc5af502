#include "launcher/sandbox_files.h"

#include <algorithm>
#include <sstream>
#include <vector>

namespace tunnels::launcher {

std::string SandboxResolvConf() {
  return "# Written by tunnels run: names are resolved by tunnels inside this sandbox.\n"
         "nameserver 127.0.0.1\n"
         "options edns0 trust-ad\n";
}

std::string SandboxNsswitch(const std::string& machine_nsswitch) {
  std::istringstream in(machine_nsswitch);
  std::ostringstream out;
  std::string line;
  bool saw_hosts = false;
  while (std::getline(in, line)) {
    const std::size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line.compare(start, 6, "hosts:") != 0) {
      out << line << "\n";
      continue;
    }
    saw_hosts = true;
    std::istringstream words(line.substr(start + 6));
    std::vector<std::string> kept;
    std::string word;
    bool dropping = false;
    bool has_dns = false;
    while (words >> word) {
      if (word.starts_with("[")) {
        // An action belongs to the source before it; it goes with that source.
        if (!dropping) kept.push_back(word);
        continue;
      }
      dropping = word.starts_with("resolve") || word.starts_with("mdns");
      if (dropping) continue;
      if (word == "dns") has_dns = true;
      kept.push_back(word);
    }
    if (!has_dns) kept.push_back("dns");
    // An action left at the front (its source removed) would be a syntax error.
    while (!kept.empty() && kept.front().starts_with("[")) kept.erase(kept.begin());
    out << "hosts:";
    for (const std::string& w : kept) out << " " << w;
    out << "\n";
  }
  if (!saw_hosts) out << "hosts: files dns\n";
  return out.str();
}

std::vector<std::string> ProgramEnvironment(const std::vector<std::string>& caller,
                                            const std::string& user, const std::string& home,
                                            const std::string& shell) {
  // What a desktop program needs to reach the user's display, session bus
  // and terminal, and the user's locale; nothing that changes what a
  // program loads or runs (LD_PRELOAD, PYTHONPATH, BASH_ENV, IFS...).
  static const char* const kKept[] = {
      "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS",
      "TERM",    "COLORTERM",       "LANG",       "LANGUAGE",        "TZ"};
  std::vector<std::string> out;
  for (const std::string& entry : caller) {
    const std::size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    const std::string name = entry.substr(0, eq);
    const bool kept =
        name.starts_with("LC_") ||
        std::any_of(std::begin(kKept), std::end(kKept), [&](const char* k) { return name == k; });
    if (kept) out.push_back(entry);
  }
  out.push_back("HOME=" + (home.empty() ? std::string("/") : home));
  if (!user.empty()) {
    out.push_back("USER=" + user);
    out.push_back("LOGNAME=" + user);
  }
  out.push_back("SHELL=" + (shell.empty() ? std::string("/bin/sh") : shell));
  // Debian's ENV_PATH (login.defs) for an ordinary user.
  out.push_back("PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games");
  return out;
}

}  // namespace tunnels::launcher
