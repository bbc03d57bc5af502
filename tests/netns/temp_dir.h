#pragma once

// A private directory for one test, and reading and writing the files in
// it: what the netns tests (journal, sysctl, sandbox link) stand their
// state directories and stand-ins for /proc/sys on.

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tunnels::netns::testing {

// The whole content of `path`; empty if it cannot be read.
inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A fresh directory under the system's temporary one, named after
// `prefix`, removed with all it holds when the test ends.
struct TempDir {
  std::filesystem::path dir;

  explicit TempDir(const std::string& prefix) {
    std::string templ = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    REQUIRE(mkdtemp(templ.data()) != nullptr);
    dir = templ;
  }
  ~TempDir() { std::filesystem::remove_all(dir); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes `content` to `relative`, creating the folders on its way.
  void Put(const std::string& relative, const std::string& content) const {
    std::filesystem::create_directories((dir / relative).parent_path());
    std::ofstream(dir / relative) << content;
  }
  std::string Read(const std::string& relative) const { return ReadFile(dir / relative); }
};

}  // namespace tunnels::netns::testing
