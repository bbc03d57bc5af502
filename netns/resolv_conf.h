// Taking over the machine's resolv.conf for `tunnels system`, and giving it
// back.
//
// TakeOverResolvConf:
//  1. backs `path` up to `backup`, unless `backup` exists already and
//     `path` is still tunnels' own file: such a backup, left by a killed
//     run, holds the original, and a fresh one would only copy tunnels'
//     file. A backup beside anything else is stale and is replaced.
//     A plain file is copied (content and mode) to a temporary file next
//     to `backup` and renamed into place, so a backup is never half
//     written; a symbolic link (systemd-resolved, resolvconf) is backed up
//     as a link with the same target. No `path` at all: the backup is a
//     link to kNoResolvConf, which says so.
//  2. clears the immutable attribute of `path` (an earlier run may have set
//     it), writes `content` to a temporary file next to it and renames it
//     over `path`: readers see the old file or the new one, never a part.
//     A `path` that is a mount point (a bind-mounted file, EBUSY) cannot be
//     renamed over and is rewritten in place instead.
//  3. with `immutable`, sets FS_IMMUTABLE_FL (chattr +i) through the
//     FS_IOC_SETFLAGS ioctl, so that DHCP clients and network managers do
//     not replace it while tunnels runs. A file system without the attribute
//     (tmpfs before Linux 6.0, some network file systems), or a process
//     without CAP_LINUX_IMMUTABLE, gives a warning, not a failure.
//
// RestoreResolvConf clears the attribute and renames the backup back over
// `path` (a link comes back as the same link), which also removes the
// backup; over a mount point it copies the backup's content in place; a
// kNoResolvConf backup removes `path` instead. No backup: nothing to
// restore.
#pragma once

#include <string>
#include <vector>

namespace tunnels::netns {

// False with a sentence in `*error` when a step failed; steps done before
// stay done (the journal's resolvconf entry undoes them). `warnings` gets
// a sentence per problem that is not a failure; `reused_backup`, if given,
// whether an earlier run's backup was kept.
bool TakeOverResolvConf(const std::string& path, const std::string& backup,
                        const std::string& content, bool immutable, std::string* error,
                        std::vector<std::string>* warnings, bool* reused_backup = nullptr);

// "" when restored or when there is no backup; otherwise why not.
std::string RestoreResolvConf(const std::string& path, const std::string& backup);

// The target of the backup link that stands for "there was no resolv.conf".
inline constexpr char kNoResolvConf[] = "(tunnels: there was no resolv.conf)";

// Whether `path` is the file tunnels writes (ResolvConfContent's first line).
bool IsTunnelsResolvConf(const std::string& path);

// The file tunnels writes: one nameserver, the DNS server's address
// (0.0.0.0 and :: as the loopback address of their family).
std::string ResolvConfContent(const std::string& dns_address, const std::string& backup);

// Whether FS_IMMUTABLE_FL is set on `path` (false when it cannot be read).
bool IsImmutable(const std::string& path);

}  // namespace tunnels::netns
