#include "netns/run_state.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

namespace tunnels::netns {
namespace {

namespace fs = std::filesystem;

struct StateDir {
  fs::path dir;
  StateDir() {
    std::string templ = (fs::temp_directory_path() / "netns-run-state-XXXXXX").string();
    REQUIRE(mkdtemp(templ.data()) != nullptr);
    dir = templ;
  }
  ~StateDir() { fs::remove_all(dir); }
};

// A child that has exited and stays a zombie until reaped.
struct Zombie {
  pid_t pid = ::fork();
  Zombie() {
    REQUIRE(pid >= 0);
    if (pid == 0) ::_exit(0);
    // Readiness: waitid with WNOWAIT returns once it has exited, and
    // leaves it unreaped.
    siginfo_t info{};
    REQUIRE(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) == 0);
  }
  ~Zombie() {
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
};

// The pid of a process that has ended and been reaped.
pid_t DeadPid() {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) ::_exit(0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return pid;
}

std::string RunName(pid_t pid) { return "run-" + std::to_string(pid); }

TEST_CASE("a running process counts as running; a zombie and a reaped one do not") {
  CHECK(ProcessRunning(::getpid()));
  CHECK_FALSE(ProcessRunning(DeadPid()));
  const Zombie zombie;
  CHECK_FALSE(ProcessRunning(zombie.pid));
}

TEST_CASE("stale run directories go; a live instance's and unrelated files stay") {
  StateDir state;
  const fs::path dead = state.dir / RunName(DeadPid());
  const fs::path live = state.dir / RunName(::getpid());
  fs::create_directories(dead / "inside");
  std::ofstream(dead / "resolv.conf") << "nameserver 127.0.0.1\n";
  fs::create_directories(live);
  fs::create_directories(state.dir / "run-abc");
  fs::create_directories(state.dir / "run-");
  fs::create_directories(state.dir / "other");
  std::ofstream(state.dir / "run-1") << "a file, not a directory\n";
  // A name no pid can have: skipped, not a crash (std::stoi would throw).
  fs::create_directories(state.dir / "run-99999999999999999999");

  RemoveStaleRunDirectories(state.dir.string());

  CHECK_FALSE(fs::exists(dead));
  CHECK(fs::is_directory(live));
  CHECK(fs::is_directory(state.dir / "run-abc"));
  CHECK(fs::is_directory(state.dir / "run-"));
  CHECK(fs::is_directory(state.dir / "other"));
  CHECK(fs::is_regular_file(state.dir / "run-1"));
  CHECK(fs::is_directory(state.dir / "run-99999999999999999999"));
}

TEST_CASE("cleanup of stale runs needs no kernel when no link state was left") {
  StateDir state;
  const fs::path dead = state.dir / RunName(DeadPid());
  fs::create_directories(dead);
  std::vector<std::string> notes;
  CHECK(CleanupStaleRuns(state.dir.string(), &notes) == "");
  CHECK(notes.empty());
  CHECK_FALSE(fs::exists(dead));
}

TEST_CASE("cleanup of a state directory that does not exist does nothing") {
  CHECK(CleanupStaleRuns("/nonexistent/tunnels-state") == "");
}

TEST_CASE("the run directory replaces a dead one of the same pid and goes with its owner") {
  StateDir state;
  const fs::path mine = state.dir / RunName(::getpid());
  fs::create_directories(mine);
  std::ofstream(mine / "left") << "by an instance that had this pid\n";
  {
    const RunDirectory files(state.dir.string());
    REQUIRE(files.path() == mine.string());
    CHECK_FALSE(fs::exists(mine / "left"));
    struct stat st {};
    REQUIRE(::stat(files.path().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
  }
  CHECK_FALSE(fs::exists(mine));
}

TEST_CASE("a run directory that cannot be created has an empty path") {
  const RunDirectory files("/nonexistent/tunnels-state");
  CHECK(files.path().empty());
}

}  // namespace
}  // namespace tunnels::netns
