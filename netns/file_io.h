// Whole-file reads and writes on a file descriptor, for the small state
// files of netns/ (state files, the journal, resolv.conf and its backup):
// retried on EINTR and on short writes, so that callers see all or an error.
#pragma once

#include <string>
#include <string_view>

namespace tunnels::netns {

// Reads the whole file from offset 0, whatever the descriptor's offset (a
// journal that was appended to is read from its start), into `*out`. False
// with errno set on a read error.
bool ReadAll(int fd, std::string* out);

// Writes all of `text` at the descriptor's offset. False with errno set
// when the file system refuses (or takes nothing).
bool WriteAll(int fd, std::string_view text);

// Creates the state directory `dir` (mode 0755) when missing, and checks
// that it is fit for what tunnels keeps there and later replays as root:
// a real directory (not a symbolic link) owned by the effective user or by
// root, and writable by nobody else. "" when it is, or a sentence naming the
// directory, what is wrong and what to do.
std::string PrepareStateDirectory(const std::string& dir);

}  // namespace tunnels::netns
