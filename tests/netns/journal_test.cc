#include "netns/journal.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "netns/file_io.h"
#include "netns/resolv_conf.h"
#include "tests/netns/fake_kernel.h"
#include "tests/netns/temp_dir.h"

namespace tunnels::netns {
namespace {

namespace fs = std::filesystem;

struct Dir : testing::TempDir {
  Dir() : TempDir("netns-journal") {}
  const fs::path& path = dir;
};

// Records the entries it is asked to undo; fails those of one kind.
class RecordingUndoer : public Undoer {
 public:
  std::string Undo(const JournalEntry& entry) override {
    undone.push_back(entry.ToString());
    return entry.kind == fail_kind ? "cannot undo " + entry.kind : "";
  }
  std::vector<std::string> undone;
  std::string fail_kind;
};

JournalEntry Entry(std::string kind, std::map<std::string, std::string> fields) {
  return JournalEntry{std::move(kind), std::move(fields)};
}

// Opens system.journal in `dir`, which must succeed.
std::unique_ptr<Journal> OpenJournal(const Dir& dir) {
  std::string error;
  auto journal = Journal::Open(dir.path.string(), "system.journal", &error);
  INFO(error);
  REQUIRE(journal);
  return journal;
}

// What a killed instance leaves: system.journal in `dir` with `entries`,
// closed without Finish().
void LeaveJournal(const Dir& dir, const std::vector<JournalEntry>& entries) {
  auto journal = OpenJournal(dir);
  std::string error;
  for (const JournalEntry& e : entries) REQUIRE(journal->Record(e, &error));
}

// resolv.conf and its backup in a fresh directory, and the error and
// warnings of the last TakeOver.
struct ResolvConfFiles {
  Dir dir;
  const std::string path = (dir.path / "resolv.conf").string();
  const std::string backup = (dir.path / "backup").string();
  std::string error;
  std::vector<std::string> warnings;

  [[nodiscard]] bool TakeOver(const std::string& content, bool immutable = false,
                              bool* reused = nullptr) {
    return TakeOverResolvConf(path, backup, content, immutable, &error, &warnings, reused);
  }
};

TEST_CASE("Journal lines round-trip, with awkward characters escaped") {
  const JournalEntry e =
      Entry("resolvconf", {{"path", "/etc/my resolv=conf%\n"}, {"backup", "/b"}});
  const std::string line = e.ToString();
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line == "resolvconf backup=/b path=/etc/my%20resolv%3Dconf%25%0A");
  JournalEntry parsed;
  REQUIRE(ParseJournalLine(line, &parsed));
  CHECK(parsed == e);
  CHECK_FALSE(ParseJournalLine("# comment", &parsed));
  CHECK_FALSE(ParseJournalLine("", &parsed));
  CHECK_FALSE(ParseJournalLine("route network", &parsed));
  CHECK_FALSE(ParseJournalLine("route network=%4", &parsed));
}

TEST_CASE("A killed instance's entries are undone in reverse order by the next one") {
  Dir dir;
  LeaveJournal(dir,
               {Entry("nft-table", {{"name", "t"}}), Entry("route", {{"network", "198.18.0.0/15"}}),
                Entry("resolvconf", {{"path", "/r"}, {"backup", "/b"}})});
  CHECK(fs::exists(dir.path / "system.journal"));
  auto next = OpenJournal(dir);
  RecordingUndoer undoer;
  std::vector<std::string> notes;
  CHECK(next->UndoLeftovers(undoer, &notes).empty());
  CHECK(undoer.undone == std::vector<std::string>{"resolvconf backup=/b path=/r",
                                                  "route network=198.18.0.0/15",
                                                  "nft-table name=t"});
  CHECK(notes.size() == 3);
  // Undone entries are gone from the file; a second pass finds nothing.
  CHECK(dir.Read("system.journal").find("route") == std::string::npos);
  RecordingUndoer again;
  CHECK(next->UndoLeftovers(again).empty());
  CHECK(again.undone.empty());
  next->Finish();
  CHECK_FALSE(fs::exists(dir.path / "system.journal"));
}

TEST_CASE("A running instance's journal is neither shared nor cleaned up") {
  Dir dir;
  auto live = OpenJournal(dir);
  std::string error;
  REQUIRE(live->Record(Entry("route", {{"network", "198.18.0.0/15"}}), &error));
  CHECK_FALSE(Journal::Open(dir.path.string(), "system.journal", &error));
  CHECK(error.find("running tunnels system") != std::string::npos);
  RecordingUndoer undoer;
  std::vector<std::string> notes;
  CHECK(Journal::CleanupStale(dir.path.string(), "system.journal", undoer, &notes).empty());
  CHECK(undoer.undone.empty());
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find("running") != std::string::npos);
  CHECK(fs::exists(dir.path / "system.journal"));
}

TEST_CASE("Cleanup keeps the journal when an undo fails, and finishes it on a later try") {
  Dir dir;
  LeaveJournal(
      dir, {Entry("nft-table", {{"name", "t"}}), Entry("route", {{"network", "198.18.0.0/15"}})});
  RecordingUndoer failing;
  failing.fail_kind = "route";
  const std::string errors =
      Journal::CleanupStale(dir.path.string(), "system.journal", failing, nullptr);
  CHECK(errors.find("cannot undo route") != std::string::npos);
  // Every entry was still tried: one failure does not keep the others.
  CHECK(failing.undone.size() == 2);
  CHECK(fs::exists(dir.path / "system.journal"));
  // Only what failed stays in the journal.
  CHECK(dir.Read("system.journal").find("nft-table") == std::string::npos);
  RecordingUndoer working;
  CHECK(Journal::CleanupStale(dir.path.string(), "system.journal", working, nullptr).empty());
  CHECK(working.undone == std::vector<std::string>{"route network=198.18.0.0/15"});
  CHECK_FALSE(fs::exists(dir.path / "system.journal"));
  // Nothing left: nothing to do.
  CHECK(Journal::CleanupStale(dir.path.string(), "system.journal", working, nullptr).empty());
  CHECK(working.undone.size() == 1);
}

TEST_CASE("A leftover that cannot be undone stays, beside a start that does not touch it") {
  Dir dir;
  LeaveJournal(dir, {Entry("nft-table", {{"name", "t"}}),
                     Entry("resolvconf", {{"path", "/r"}, {"backup", "/b"}})});
  auto next = OpenJournal(dir);
  std::string error;
  RecordingUndoer failing;
  failing.fail_kind = "resolvconf";
  CHECK_FALSE(next->UndoLeftovers(failing).empty());
  REQUIRE(next->leftovers().size() == 1);
  const JournalEntry& left = next->leftovers()[0];
  CHECK(left.kind == "resolvconf");
  // Whether a new start would touch it again.
  CHECK(Overlaps(left, Entry("resolvconf", {{"path", "/r"}, {"backup", "/other"}})));
  CHECK(Overlaps(left, Entry("resolvconf", {{"path", "/other"}, {"backup", "/b"}})));
  CHECK_FALSE(Overlaps(left, Entry("resolvconf", {{"path", "/x"}, {"backup", "/y"}})));
  CHECK_FALSE(Overlaps(left, Entry("nft-table", {{"name", "t"}})));
  CHECK_FALSE(Overlaps(left, Entry("route", {{"network", "198.18.0.0/15"}})));
  CHECK(Overlaps(Entry("from-the-future", {}), Entry("route", {{"network", "198.18.0.0/15"}})));
  // This instance's own changes are undone; the leftover stays for a cleanup.
  REQUIRE(next->Record(Entry("nft-table", {{"name", "u"}}), &error));
  next->Finish();
  const std::string text = dir.Read("system.journal");
  CHECK(text.find("resolvconf") != std::string::npos);
  CHECK(text.find("nft-table") == std::string::npos);
}

TEST_CASE("Cleanup with forget drops a journal it cannot undo, after listing it") {
  Dir dir;
  LeaveJournal(dir, {Entry("route", {{"network", "198.18.0.0/15"}})});
  RecordingUndoer failing;
  failing.fail_kind = "route";
  std::vector<std::string> notes;
  CHECK(Journal::CleanupStale(dir.path.string(), "system.journal", failing, &notes, true).empty());
  CHECK_FALSE(fs::exists(dir.path / "system.journal"));
  bool listed = false;
  for (const auto& note : notes)
    listed = listed || note.find("route network=") != std::string::npos;
  CHECK(listed);
}

TEST_CASE("A line cut short by a kill is ignored: its change was never made") {
  Dir dir;
  std::ofstream(dir.path / "system.journal")
      << "# header\nnft-table name=t\nroute network=198.18.0.0/15\nresolvconf pa";
  auto journal = OpenJournal(dir);
  RecordingUndoer undoer;
  CHECK(journal->UndoLeftovers(undoer).empty());
  CHECK(undoer.undone ==
        std::vector<std::string>{"route network=198.18.0.0/15", "nft-table name=t"});
}

TEST_CASE("SystemUndoer removes a leftover route and table, idempotently") {
  auto state = std::make_shared<testing::FakeState>();
  state->tables.insert("t");
  state->local_routes["198.18.0.0/15"] = true;
  state->owned["live"] = "tunnels";
  state->tables.insert("live");
  testing::FakeKernel kernel(state);
  SystemUndoer undoer(kernel);
  CHECK(undoer.Undo(Entry("route", {{"network", "198.18.0.0/15"}})).empty());
  CHECK(undoer.Undo(Entry("nft-table", {{"name", "t"}})).empty());
  CHECK(state->local_routes.empty());
  CHECK(state->tables.count("t") == 0);
  // Again: already gone counts as undone.
  CHECK(undoer.Undo(Entry("route", {{"network", "198.18.0.0/15"}})).empty());
  CHECK(undoer.Undo(Entry("nft-table", {{"name", "t"}})).empty());
  // A table a running process owns is not a leftover.
  CHECK(undoer.Undo(Entry("nft-table", {{"name", "live"}})).empty());
  CHECK(state->tables.count("live") == 1);
  CHECK_FALSE(undoer.Undo(Entry("route", {{"network", "nonsense"}})).empty());
  CHECK_FALSE(undoer.Undo(Entry("teleport", {})).empty());
}

TEST_CASE("SystemUndoer restores a sysctl only if it still has tunnels' value") {
  Dir dir;
  fs::create_directories(dir.path / "net/ipv4");
  std::ofstream(dir.path / "net/ipv4/ip_forward") << "1\n";
  auto state = std::make_shared<testing::FakeState>();
  testing::FakeKernel kernel(state);
  SystemUndoer undoer(kernel, dir.path.string());
  const JournalEntry e =
      Entry("sysctl", {{"key", "net.ipv4.ip_forward"}, {"value", "1"}, {"previous", "0"}});
  CHECK(undoer.Undo(e).empty());
  CHECK(dir.Read("net/ipv4/ip_forward") == "0\n");
  std::ofstream(dir.path / "net/ipv4/ip_forward") << "2\n";
  CHECK(undoer.Undo(e).empty());
  CHECK(dir.Read("net/ipv4/ip_forward") == "2\n");
}

TEST_CASE_METHOD(ResolvConfFiles,
                 "resolv.conf: a plain file is backed up, replaced and restored with its mode") {
  std::ofstream(path) << "nameserver 10.0.0.1\n";
  ::chmod(path.c_str(), 0640);
  bool reused = true;
  REQUIRE(TakeOver(ResolvConfContent("127.0.0.1", backup), false, &reused));
  CHECK_FALSE(reused);
  CHECK(warnings.empty());
  CHECK(dir.Read("resolv.conf").find("nameserver 127.0.0.1\n") != std::string::npos);
  CHECK(dir.Read("backup") == "nameserver 10.0.0.1\n");
  CHECK(RestoreResolvConf(path, backup).empty());
  CHECK(dir.Read("resolv.conf") == "nameserver 10.0.0.1\n");
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  CHECK_FALSE(fs::exists(backup));
  // No backup: nothing to restore, nothing changed.
  CHECK(RestoreResolvConf(path, backup).empty());
  CHECK(dir.Read("resolv.conf") == "nameserver 10.0.0.1\n");
}

TEST_CASE_METHOD(ResolvConfFiles, "resolv.conf: a symbolic link comes back as the same link") {
  std::ofstream(dir.path / "stub-resolv.conf") << "nameserver 127.0.0.53\n";
  fs::create_symlink("stub-resolv.conf", path);
  REQUIRE(TakeOver("nameserver 127.0.0.1\n"));
  CHECK_FALSE(fs::is_symlink(path));
  CHECK(dir.Read("resolv.conf") == "nameserver 127.0.0.1\n");
  // The link's target is untouched.
  CHECK(dir.Read("stub-resolv.conf") == "nameserver 127.0.0.53\n");
  CHECK(RestoreResolvConf(path, backup).empty());
  REQUIRE(fs::is_symlink(path));
  CHECK(fs::read_symlink(path) == "stub-resolv.conf");
}

TEST_CASE_METHOD(ResolvConfFiles, "resolv.conf: none before tunnels, none after") {
  // The backup then says so (a link to kNoResolvConf), and the restore
  // removes tunnels' file instead of leaving it, immutable, in place.
  REQUIRE(TakeOver(ResolvConfContent("127.0.0.1", backup)));
  CHECK(IsTunnelsResolvConf(path));
  REQUIRE(fs::is_symlink(backup));
  CHECK(fs::read_symlink(backup) == kNoResolvConf);
  CHECK(RestoreResolvConf(path, backup).empty());
  CHECK_FALSE(fs::exists(fs::symlink_status(path)));
  CHECK_FALSE(fs::exists(fs::symlink_status(backup)));
}

TEST_CASE_METHOD(ResolvConfFiles, "resolv.conf: tunnels' own file is recognised, nothing else") {
  std::ofstream(path) << ResolvConfContent("127.0.0.1", "/etc/resolv.conf.tunnels-backup");
  CHECK(IsTunnelsResolvConf(path));
  std::ofstream(path) << "nameserver 127.0.0.1\n# Written by tunnels while it runs\n";
  CHECK_FALSE(IsTunnelsResolvConf(path));
  CHECK_FALSE(IsTunnelsResolvConf((dir.path / "missing").string()));
}

TEST_CASE_METHOD(ResolvConfFiles, "resolv.conf: an earlier run's backup is never overwritten") {
  std::ofstream(path) << ResolvConfContent("127.0.0.1", backup);  // left by a killed run
  std::ofstream(backup) << "nameserver 10.0.0.1\n";               // the original
  bool reused = false;
  REQUIRE(TakeOver("nameserver 127.0.0.1\n", false, &reused));
  CHECK(reused);
  CHECK(dir.Read("backup") == "nameserver 10.0.0.1\n");
  CHECK(RestoreResolvConf(path, backup).empty());
  CHECK(dir.Read("resolv.conf") == "nameserver 10.0.0.1\n");
}

TEST_CASE_METHOD(ResolvConfFiles, "resolv.conf: a stale backup is not taken for the original") {
  // The backup outlived its run (no journal), and resolv.conf has since been
  // replaced by something other than tunnels' file: that is the original.
  std::ofstream(path) << "nameserver 10.0.0.2\n";    // today's configuration
  std::ofstream(backup) << "nameserver 10.0.0.1\n";  // last month's
  bool reused = true;
  REQUIRE(TakeOver(ResolvConfContent("127.0.0.1", backup), false, &reused));
  CHECK_FALSE(reused);
  CHECK(dir.Read("backup") == "nameserver 10.0.0.2\n");
  CHECK(RestoreResolvConf(path, backup).empty());
  CHECK(dir.Read("resolv.conf") == "nameserver 10.0.0.2\n");
}

TEST_CASE_METHOD(ResolvConfFiles,
                 "resolv.conf: a bind-mounted file is rewritten and restored in place") {
  // `ip netns exec`, Docker and podman bind-mount a file over resolv.conf;
  // rename() over a mount point fails with EBUSY. The mount lives in a
  // child's own mount namespace (and user namespace, unless root), so the
  // host's mounts stay as they were; the child reports by its exit status.
  const std::string source = (dir.path / "mounted").string();
  std::ofstream(path) << "nameserver 10.9.9.9\n";
  std::ofstream(source) << "nameserver 10.0.0.1\n";
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const int flags = ::geteuid() == 0 ? CLONE_NEWNS : (CLONE_NEWUSER | CLONE_NEWNS);
    if (::unshare(flags) != 0) ::_exit(10);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(10);
    if (::mount(source.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) != 0) ::_exit(10);
    if (!TakeOver(ResolvConfContent("127.0.0.1", backup))) {
      ::_exit(1);
    }
    if (!IsTunnelsResolvConf(path)) ::_exit(2);
    if (!RestoreResolvConf(path, backup).empty()) ::_exit(3);
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 10) {
    // No mount namespace here (unprivileged user namespaces disabled).
    if (std::getenv("CI") != nullptr && std::string(std::getenv("CI")) == "true") {
      FAIL("cannot bind-mount in a new mount namespace");
    }
    WARN("skipped: cannot bind-mount in a new mount namespace");
    return;
  }
  CHECK(WEXITSTATUS(status) == 0);
  // The in-place writes went to the mounted file, which has its content back.
  CHECK(dir.Read("mounted") == "nameserver 10.0.0.1\n");
  CHECK(dir.Read("resolv.conf") == "nameserver 10.9.9.9\n");
  CHECK_FALSE(fs::exists(backup));
}

TEST_CASE_METHOD(ResolvConfFiles,
                 "resolv.conf: the immutable attribute is set, or one warning says why not") {
  std::ofstream(path) << "nameserver 10.0.0.1\n";
  REQUIRE(TakeOver("nameserver 127.0.0.1\n", true));
  // Either the file system and privileges allow it, or exactly one warning.
  if (IsImmutable(path)) {
    CHECK(warnings.empty());
  } else {
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("immutable") != std::string::npos);
  }
  // Restoring clears it first, whichever it was.
  CHECK(RestoreResolvConf(path, backup).empty());
  CHECK_FALSE(IsImmutable(path));
  CHECK(dir.Read("resolv.conf") == "nameserver 10.0.0.1\n");
}

TEST_CASE_METHOD(ResolvConfFiles,
                 "resolv.conf: an unwritable backup place fails before resolv.conf changes") {
  std::ofstream(path) << "nameserver 10.0.0.1\n";
  CHECK_FALSE(TakeOverResolvConf(path, (dir.path / "missing/dir/backup").string(), "x", false,
                                 &error, &warnings));
  CHECK(error.find("cannot back") != std::string::npos);
  CHECK(error.find("resolvconfBackupPath") != std::string::npos);
  CHECK(dir.Read("resolv.conf") == "nameserver 10.0.0.1\n");
}

TEST_CASE("The state directory must be one only its owner (root) can write") {
  // What is in it is replayed as root: a journal entry renames files and
  // deletes nftables tables. A directory others can write, or a symbolic
  // link to one, is refused before anything is read from it.
  Dir dir;
  const fs::path fresh = dir.path / "state";
  CHECK(PrepareStateDirectory(fresh.string()).empty());
  CHECK(fs::is_directory(fresh));
  CHECK((fs::status(fresh).permissions() & fs::perms::others_write) == fs::perms::none);

  fs::permissions(fresh, fs::perms::all);  // 0777, like /tmp without the sticky bit
  CHECK_THAT(PrepareStateDirectory(fresh.string()), Catch::Contains("is writable by others"));
  std::string error;
  CHECK(Journal::Open(fresh.string(), "system.journal", &error) == nullptr);
  CHECK_THAT(error, Catch::Contains("is writable by others"));
  CHECK_FALSE(fs::exists(fresh / "system.journal"));

  fs::create_directory(dir.path / "real");
  fs::create_directory_symlink(dir.path / "real", dir.path / "link");
  CHECK_THAT(PrepareStateDirectory((dir.path / "link").string()),
             Catch::Contains("is a symbolic link"));
  std::ofstream(dir.path / "file") << "x";
  CHECK_THAT(PrepareStateDirectory((dir.path / "file").string()),
             Catch::Contains("is not a directory"));
}

TEST_CASE("The state directory's parents are checked like the directory itself") {
  // Whoever can write a parent can rename the state directory away and put
  // one of their own in its place; in a sticky parent (like /tmp) they can
  // not move what is not theirs.
  Dir dir;
  const fs::path parent = dir.path / "parent";
  fs::create_directory(parent);
  fs::permissions(parent, fs::perms::all);  // 0777, not sticky
  CHECK_THAT(PrepareStateDirectory((parent / "state").string()),
             Catch::Contains("writable by others and not sticky"));
  fs::permissions(parent, fs::perms::all | fs::perms::sticky_bit);  // 1777, like /tmp
  CHECK(PrepareStateDirectory((parent / "state").string()).empty());
  // Deeper down too, and through a symbolic link to it.
  fs::permissions(parent, fs::perms::all);
  fs::create_directory(parent / "safe", dir.path);
  fs::permissions(parent / "safe", fs::perms::owner_all);
  fs::create_directory_symlink(parent / "safe", dir.path / "link");
  CHECK_THAT(PrepareStateDirectory((dir.path / "link" / "state").string()),
             Catch::Contains("the parent " + parent.string()));
}

}  // namespace
}  // namespace tunnels::netns
