// netns_probe: drives netns::Interception for tests/integration/test_netns.py.
//
//   netns_probe [--table NAME] [--range A.B.C.D/LEN] [--port N] [--no-listen]
//
// Opens a transparent (IP_TRANSPARENT) listener on 127.0.0.1:N (N = 0: the
// kernel picks), creates the Interception for it, prints
//   note: <sentence>               for each leftover replaced
//   ready port=N
// then prints "accepted local=A:P peer=B:Q" for each connection it accepts
// (and closes it). On SIGTERM or SIGINT it removes the Interception, prints
// "removed" and exits 0. Errors: "error: <sentence>" on stderr, exit 1.
// --no-listen: no listener, for testing what happens without one (needs
// --port).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "netns/interception.h"
#include "netns/unique_fd.h"
#include "tests/netns/probe_args.h"

namespace {

using tunnels::netns::Interception;
using tunnels::netns::InterceptionSpec;
using tunnels::netns::UniqueFd;
using tunnels::netns::testing::Fail;
using tunnels::netns::testing::ParseRange;

std::string Text(const sockaddr_in& a) {
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
  return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

}  // namespace

int main(int argc, char** argv) {
  InterceptionSpec spec;
  int port = 0;
  bool listen_too = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--table" && has_value) {
      spec.table_name = argv[++i];
    } else if (arg == "--range" && has_value) {
      if (!ParseRange(argv[++i], &spec.network, &spec.prefix_length)) return Fail("bad --range");
    } else if (arg == "--port" && has_value) {
      port = std::atoi(argv[++i]);
    } else if (arg == "--no-listen") {
      listen_too = false;
    } else {
      return Fail(
          "usage: netns_probe [--table NAME] [--range A.B.C.D/LEN] [--port N] "
          "[--no-listen]");
    }
  }
  if (port < 0 || port > 65535 || (!listen_too && port == 0)) return Fail("bad --port");

  // Signals arrive through a descriptor, so that the exit path is ordinary
  // code that runs the destructors.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  if (sigprocmask(SIG_BLOCK, &signals, nullptr) != 0) return Fail("sigprocmask failed");
  UniqueFd signal_fd(signalfd(-1, &signals, SFD_CLOEXEC));
  if (!signal_fd) return Fail(std::string("signalfd: ") + std::strerror(errno));

  UniqueFd listener;
  if (listen_too) {
    listener = UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int on = 1;
    if (!listener) return Fail(std::string("socket: ") + std::strerror(errno));
    // tproxy hands packets only to sockets with IP_TRANSPARENT.
    if (setsockopt(listener.get(), SOL_IP, IP_TRANSPARENT, &on, sizeof on) != 0) {
      return Fail(std::string("cannot set IP_TRANSPARENT on the listener: ") +
                  std::strerror(errno) + " (needs CAP_NET_ADMIN or CAP_NET_RAW)");
    }
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    at.sin_port = htons(static_cast<std::uint16_t>(port));
    socklen_t length = sizeof at;
    if (bind(listener.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
        listen(listener.get(), 64) != 0 ||
        getsockname(listener.get(), reinterpret_cast<sockaddr*>(&at), &length) != 0) {
      return Fail(std::string("cannot listen on 127.0.0.1: ") + std::strerror(errno));
    }
    port = ntohs(at.sin_port);
  }
  spec.listener_port = static_cast<std::uint16_t>(port);

  std::string error;
  std::unique_ptr<Interception> interception = Interception::Create(spec, &error);
  if (!interception) return Fail(error);
  for (const std::string& note : interception->replaced()) std::printf("note: %s\n", note.c_str());
  std::printf("ready port=%d\n", port);
  std::fflush(stdout);

  while (true) {
    pollfd fds[2] = {{signal_fd.get(), POLLIN, 0}, {listener.get(), POLLIN, 0}};
    const nfds_t count = listener ? 2 : 1;
    if (poll(fds, count, -1) < 0) {
      if (errno == EINTR) continue;
      return Fail(std::string("poll: ") + std::strerror(errno));
    }
    if (fds[0].revents != 0) break;
    if (count == 2 && fds[1].revents != 0) {
      sockaddr_in local{}, peer{};
      socklen_t length = sizeof peer;
      UniqueFd connection(
          accept4(listener.get(), reinterpret_cast<sockaddr*>(&peer), &length, SOCK_CLOEXEC));
      if (!connection) continue;
      length = sizeof local;
      getsockname(connection.get(), reinterpret_cast<sockaddr*>(&local), &length);
      std::printf("accepted local=%s peer=%s\n", Text(local).c_str(), Text(peer).c_str());
      std::fflush(stdout);
    }
  }
  if (std::string errors = interception->Remove(); !errors.empty()) return Fail(errors);
  std::printf("removed\n");
  return 0;
}
