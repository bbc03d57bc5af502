// The splice relay on real loopback TCP connections: bytes intact both ways
// (through pooled pipes, large enough to make them grow), half-close kept,
// and idle relays holding no pipes.
#include "proxies/relay.h"

#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace tunnels::proxies;
namespace asio = boost::asio;
using asio::ip::tcp;
using Bytes = std::vector<std::uint8_t>;

namespace {

// A connected pair: a plain descriptor for the test's side (used with
// blocking calls from a thread) and an asio socket for the relay's side.
struct Pair {
  int app = -1;
  std::shared_ptr<tcp::socket> relay;
};

Pair Connect(asio::io_context& io, tcp::acceptor& acceptor) {
  Pair p;
  p.app = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(p.app >= 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(acceptor.local_endpoint().port());
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(p.app, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0);
  p.relay = std::make_shared<tcp::socket>(io);
  acceptor.accept(*p.relay);
  return p;
}

int OpenDescriptors() {
  int n = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  REQUIRE(dir != nullptr);
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n - 1;  // the directory's own descriptor
}

Bytes Random(std::size_t n, std::uint32_t seed) {
  std::mt19937 random(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<std::uint8_t>(random());
  return b;
}

void SendAll(int fd, const Bytes& data) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<std::size_t>(n);
  }
}

Bytes ReadAll(int fd) {
  Bytes out;
  std::uint8_t buffer[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return out;
    out.insert(out.end(), buffer, buffer + n);
  }
}

}  // namespace

TEST_CASE("relay carries bytes intact both ways and keeps half-close, connection after connection",
          "[relay]") {
  asio::io_context io(1);
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  // Several connections one after another, so that pipes come back from the
  // pool; more than 256 KiB each way, so that they grow too.
  for (std::uint32_t round = 0; round < 6; ++round) {
    Pair client = Connect(io, acceptor);
    Pair server = Connect(io, acceptor);
    const Bytes up = Random(700 * 1024 + round, round);
    const Bytes down = Random(900 * 1024 + 7 * round, round + 100);
    const Bytes pending = {'h', 'i'};
    std::optional<RelayResult> result;
    asio::co_spawn(io, Relay(client.relay, server.relay, pending),
                   [&](std::exception_ptr e, RelayResult r) {
                     REQUIRE(!e);
                     result = r;
                   });
    Bytes got_up, got_down;
    // The client sends everything and shuts down its side; the server
    // answers only once it has seen the end, as a half-closing protocol does.
    std::thread app_client([&] {
      SendAll(client.app, up);
      ::shutdown(client.app, SHUT_WR);
      got_down = ReadAll(client.app);
    });
    std::thread app_server([&] {
      got_up = ReadAll(server.app);
      SendAll(server.app, down);
      ::shutdown(server.app, SHUT_WR);
    });
    io.run();
    io.restart();
    app_client.join();
    app_server.join();
    ::close(client.app);
    ::close(server.app);
    REQUIRE(result.has_value());
    CHECK(result->error.empty());
    CHECK(got_up == up);
    Bytes expected = pending;
    expected.insert(expected.end(), down.begin(), down.end());
    CHECK(got_down == expected);
    CHECK(result->to_server == up.size());
    CHECK(result->to_client == expected.size());
  }
}

TEST_CASE("idle relays hold no pipes", "[relay]") {
  asio::io_context io(1);
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  constexpr std::size_t kRelays = 40;
  std::vector<Pair> clients, servers;
  for (std::size_t i = 0; i < kRelays; ++i) {
    clients.push_back(Connect(io, acceptor));
    servers.push_back(Connect(io, acceptor));
  }
  const int before = OpenDescriptors();
  std::size_t finished = 0;
  for (std::size_t i = 0; i < kRelays; ++i) {
    asio::co_spawn(io, Relay(clients[i].relay, servers[i].relay, {}),
                   [&](std::exception_ptr e, RelayResult) {
                     REQUIRE(!e);
                     ++finished;
                   });
  }
  io.run_for(std::chrono::milliseconds(200));
  // Each relay looked for bytes and found none: the pipe it used for that
  // went back to the pool. Two pipes per relay would be 160 descriptors.
  CHECK(OpenDescriptors() - before <= 4);
  CHECK(finished == 0);
  for (std::size_t i = 0; i < kRelays; ++i) {
    ::shutdown(clients[i].app, SHUT_WR);
    ::shutdown(servers[i].app, SHUT_WR);
  }
  io.run_for(std::chrono::seconds(10));
  CHECK(finished == kRelays);
  for (std::size_t i = 0; i < kRelays; ++i) {
    ::close(clients[i].app);
    ::close(servers[i].app);
  }
}

TEST_CASE("a relay is reset on both sides once idle for the watch's timeout, not before",
          "[relay]") {
  asio::io_context io(1);
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  Pair client = Connect(io, acceptor);
  Pair server = Connect(io, acceptor);
  IdleWatch idle(io.get_executor());
  idle.SetTimeout(std::chrono::seconds(1));
  std::optional<RelayResult> result;
  asio::co_spawn(io, Relay(client.relay, server.relay, {}, &idle),
                 [&](std::exception_ptr e, RelayResult r) {
                   REQUIRE(!e);
                   result = r;
                 });
  // Busy for 2 s, twice the timeout, with a byte every 200 ms: kept. Then
  // silent: both sides get a reset 1 to 1.25 s later (a sweep every 250 ms).
  int client_error = 0, server_error = 0;
  double silent_for = 0;
  std::thread app([&] {
    const auto start = std::chrono::steady_clock::now();
    std::uint8_t byte = 'x';
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(2)) {
      REQUIRE(::send(client.app, &byte, 1, MSG_NOSIGNAL) == 1);
      REQUIRE(::recv(server.app, &byte, 1, 0) == 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    const auto last = std::chrono::steady_clock::now();
    if (::recv(client.app, &byte, 1, 0) < 0) client_error = errno;
    silent_for = std::chrono::duration<double>(std::chrono::steady_clock::now() - last).count();
    if (::recv(server.app, &byte, 1, 0) < 0) server_error = errno;
  });
  io.run();
  app.join();
  ::close(client.app);
  ::close(server.app);
  REQUIRE(result.has_value());
  CHECK(client_error == ECONNRESET);
  CHECK(server_error == ECONNRESET);
  CHECK(silent_for >= 0.9);
  CHECK(silent_for < 5);  // 1.25 s, with room for a loaded machine
  CHECK(result->error == "idle for 1 s (connectionIdleTimeout); reset both sides");
  CHECK(result->to_server >= 10);
}

TEST_CASE("a reset names the side it came from, not the side the relay then aborted", "[relay]") {
  for (const bool server_resets : {true, false}) {
    CAPTURE(server_resets);
    asio::io_context io(1);
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    Pair client = Connect(io, acceptor);
    Pair server = Connect(io, acceptor);
    std::optional<RelayResult> result;
    asio::co_spawn(io, Relay(client.relay, server.relay, {}),
                   [&](std::exception_ptr e, RelayResult r) {
                     REQUIRE(!e);
                     result = r;
                   });
    // One side resets (SO_LINGER 0, then close) while the other waits for
    // bytes; the relay's abort then fails the waiting side's read as well.
    const int resetting = server_resets ? server.app : client.app;
    const linger abort_now{1, 0};
    REQUIRE(::setsockopt(resetting, SOL_SOCKET, SO_LINGER, &abort_now, sizeof abort_now) == 0);
    // Some bytes first, so that both directions are past their first wait.
    SendAll(server.app, Bytes(100, 1));
    SendAll(client.app, Bytes(100, 2));
    ::close(resetting);
    io.run();
    ::close(server_resets ? client.app : server.app);
    REQUIRE(result.has_value());
    CHECK_THAT(result->error, Catch::StartsWith(server_resets ? "server side: " : "client side: "));
    CHECK_THAT(result->error, !Catch::Contains("Operation canceled"));
  }
}
