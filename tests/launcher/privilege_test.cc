#include "launcher/privilege.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace tunnels::launcher {
namespace {

// Sets SUDO_UID and SUDO_GID while it lives, as sudo does for tunnels.
class SudoEnvironment {
 public:
  explicit SudoEnvironment(uid_t uid) {
    ::setenv("SUDO_UID", std::to_string(uid).c_str(), 1);
    ::setenv("SUDO_GID", std::to_string(uid).c_str(), 1);
  }
  ~SudoEnvironment() {
    ::unsetenv("SUDO_UID");
    ::unsetenv("SUDO_GID");
  }
  SudoEnvironment(const SudoEnvironment&) = delete;
  SudoEnvironment& operator=(const SudoEnvironment&) = delete;
};

TEST_CASE("InvokerRights changes the calling thread's rights only") {
  // `tunnels system` reads a reload on its own thread while the I/O thread
  // needs root's rights (the engine's socket mark needs CAP_NET_ADMIN).
  if (::getuid() != 0) {
    WARN("skipped: needs root, as tunnels under sudo is");
    return;
  }
  const SudoEnvironment sudo(65534);
  const Identity invoker = FindInvoker();
  REQUIRE(invoker.uid == 65534);
  std::mutex m;
  std::condition_variable cv;
  bool dropped = false;
  bool done = false;
  uid_t reader_euid = 0;
  std::thread reader([&] {
    const InvokerRights rights(invoker);
    std::unique_lock lock(m);
    reader_euid = ::geteuid();
    dropped = rights.error().empty();
    cv.notify_all();
    cv.wait(lock, [&] { return done; });
  });
  uid_t other_euid = 65534;
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return dropped || reader_euid != 0; });
    other_euid = ::geteuid();
    done = true;
    cv.notify_all();
  }
  reader.join();
  CHECK(dropped);
  CHECK(reader_euid == 65534);
  CHECK(other_euid == 0);
  CHECK(::geteuid() == 0);
}

}  // namespace
}  // namespace tunnels::launcher
