// `tunnels system CONF...` (also the bare `tunnels CONF...` of the original):
// the engine for the machine's own network namespace, in the foreground.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "config/log.h"
#include "resolver/fake_pool.h"

namespace tunnels::launcher {

struct SystemOptions {
  std::vector<std::string> paths;
  config::LogLevel level = config::LogLevel::kInfo;
};

// Runs until SIGINT or SIGTERM; returns the exit status. SIGHUP reloads.
int RunSystem(const SystemOptions& options);

// `tunnels cleanup`, system part: undoes what a killed `tunnels system`
// journaled in `state_dir`, unless it still runs. Without a journal (it
// lives in /run, which a reboot empties) but with tunnels' own file at
// `resolv_conf` and a backup at `backup`, puts the backup back. With
// `forget`, a journal whose entries cannot all be undone is removed after
// listing them. With `journal_only` (the guardian's), only the journal.
// Exit status.
int CleanupSystem(const std::string& state_dir, const std::string& resolv_conf,
                  const std::string& backup, bool forget = false, bool journal_only = false);

// Shared with `tunnels run`.
//
// Spawns `task` on `io`; if it ends by an exception, says so under
// `module` (`log` must outlive the io_context's run).
void SpawnLogged(boost::asio::io_context& io, boost::asio::awaitable<void> task,
                 const config::Log& log, const std::string& module);
// Expires the pool's unused fake addresses every `every`, on a coroutine
// that ends when `timer` is cancelled or its io_context goes.
void ScheduleExpiry(boost::asio::steady_timer& timer, resolver::FakePool& pool,
                    std::chrono::seconds every, const config::Log& log);
// Every relayed connection holds two sockets and two pipes; the usual soft
// limit of 1024 descriptors would cap tunnels at about 250 connections.
void RaiseFileLimit(const config::Log& log);

}  // namespace tunnels::launcher
