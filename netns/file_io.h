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

}  // namespace tunnels::netns
