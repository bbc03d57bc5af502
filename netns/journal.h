// A write-ahead journal of the changes `tunnels system` makes to the
// machine, so that what a killed instance left behind can be undone.
//
// Every change (the nftables table, the local route, resolv.conf, a kernel
// parameter) is appended to the journal and flushed to the file system
// BEFORE it is made. An instance that exits normally undoes its changes
// itself and then empties and removes the journal. One killed by SIGKILL
// (or a power cut of a machine whose /run is not a tmpfs) leaves the
// journal behind; `tunnels cleanup` and the next start read it and undo
// every entry in reverse order. Each undo is idempotent (something already
// gone counts as undone), so an entry recorded for a change that the kill
// prevented, or a cleanup interrupted half way, is harmless: the journal is
// removed only when every entry was undone.
//
// The running instance holds an flock on its journal, so that a cleanup
// never undoes a live instance's changes and two instances cannot share
// one state directory.
//
// File format, one entry per line: KIND key=value ..., values with '%',
// ' ', '=' and control characters percent-escaped; '#' lines are comments.
// A last line without its newline (the process died while writing it) is
// ignored: its change was never made.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "netns/kernel.h"
#include "netns/unique_fd.h"

namespace tunnels::netns {

struct JournalEntry {
  // "nft-table" {name}, "route" {network}, "resolvconf" {path, backup},
  // "sysctl" {key, value, previous}.
  std::string kind;
  std::map<std::string, std::string> fields;

  std::string Field(const std::string& key) const;  // "" when missing
  std::string ToString() const;                     // the line, without '\n'
  friend bool operator==(const JournalEntry&, const JournalEntry&) = default;
};

// Whether the changes `a` and `b` stand for touch the same object (the
// same table, network, file or kernel parameter), so that one cannot be
// made while the other is not undone. Entries of an unknown kind overlap
// everything.
[[nodiscard]] bool Overlaps(const JournalEntry& a, const JournalEntry& b);

// Parses one journal line; false when it is not an entry.
bool ParseJournalLine(const std::string& line, JournalEntry* entry);

// Undoes one entry. The real one touches the system; tests record.
class Undoer {
 public:
  virtual ~Undoer() = default;
  // "" when undone or already gone; otherwise a sentence saying what could
  // not be undone and why.
  virtual std::string Undo(const JournalEntry& entry) = 0;
};

// Undoes entries through a Kernel (route, nftables table), the file system
// (resolv.conf: RestoreResolvConf) and /proc/sys (sysctl: Sysctl::Adopt).
// A table that a running process owns is left alone: it is not a leftover.
class SystemUndoer : public Undoer {
 public:
  explicit SystemUndoer(Kernel& kernel, std::string sysctl_root = "/proc/sys")
      : kernel_(kernel), sysctl_root_(std::move(sysctl_root)) {}
  std::string Undo(const JournalEntry& entry) override;

 private:
  Kernel& kernel_;
  std::string sysctl_root_;
};

class Journal {
 public:
  // Opens (creating it and, one level, `dir`) the journal `dir`/`name` and
  // takes its flock. Null with a sentence in `*error` when another running
  // instance holds it or the file cannot be opened. Entries a killed
  // instance left are not touched yet: see UndoLeftovers.
  static std::unique_ptr<Journal> Open(const std::string& dir, const std::string& name,
                                       std::string* error);

  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal() = default;  // keeps the file: entries not undone stay for cleanup

  // The entries left by a killed instance (those in the file when it was
  // opened), undone in reverse order through `undoer`. Returns "" when all
  // were undone, otherwise the failures; either way the file then holds
  // only the entries not undone (see leftovers()). `notes` gets a sentence
  // per entry undone.
  std::string UndoLeftovers(Undoer& undoer, std::vector<std::string>* notes = nullptr);

  // Appends an entry and flushes it to the file system. Call before
  // making the change. False with a sentence in `*error` on failure (then
  // the change must not be made).
  bool Record(const JournalEntry& entry, std::string* error);

  // The entries a killed instance left that are not undone yet.
  const std::vector<JournalEntry>& leftovers() const { return leftovers_; }

  // Every entry recorded (by Record) since opening, in order.
  const std::vector<JournalEntry>& recorded() const { return recorded_; }

  // After the recorded changes were undone: empties and removes the file,
  // or, while leftovers() remain, keeps only them in it.
  void Finish();

  const std::string& path() const { return path_; }

  // For `tunnels cleanup`: undoes the leftovers of the journal `dir`/`name`
  // unless a running instance holds it (then `notes` says so and nothing is
  // done), and removes it when all were undone. No journal: nothing to do.
  // Returns "" or the failures. With `forget`, entries that cannot be
  // undone are listed in `notes` and the journal is removed all the same.
  static std::string CleanupStale(const std::string& dir, const std::string& name, Undoer& undoer,
                                  std::vector<std::string>* notes, bool forget = false);

 private:
  Journal(std::string path, UniqueFd fd, std::vector<JournalEntry> leftovers);
  bool Rewrite(std::string* error);

  std::string path_;
  UniqueFd fd_;  // holds the flock
  std::vector<JournalEntry> leftovers_;
  std::vector<JournalEntry> recorded_;
};

// The journal of `tunnels system` in its state directory.
inline constexpr char kSystemJournalName[] = "system.journal";

}  // namespace tunnels::netns
