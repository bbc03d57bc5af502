// Deadline on real loopback sockets.
#include "resolver/deadline.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <optional>

namespace asio = boost::asio;
using asio::ip::tcp;
using tunnels::resolver::Deadline;

TEST_CASE("an operation started after the deadline passed fails at once", "[deadline]") {
  // The timer fires while no operation is pending (the previous one's
  // completion was already queued): the next one must not wait without a
  // deadline, as it would if the timer only cancelled what was pending.
  asio::io_context io(1);
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  auto socket = std::make_shared<tcp::socket>(io);
  socket->connect(acceptor.local_endpoint());
  tcp::socket peer = acceptor.accept();  // says nothing: a read would wait forever

  Deadline<tcp::socket> guard(socket, std::chrono::steady_clock::now());
  io.run_for(std::chrono::milliseconds(50));  // the timer fires; nothing pending
  CHECK(guard.expired());

  std::optional<boost::system::error_code> result;
  std::uint8_t byte = 0;
  asio::async_read(*socket, asio::buffer(&byte, 1),
                   [&](const boost::system::error_code& ec, std::size_t) { result = ec; });
  io.restart();
  io.run_for(std::chrono::seconds(2));
  REQUIRE(result.has_value());
  CHECK(*result);
}

TEST_CASE("a deadline that does not pass leaves the socket alone", "[deadline]") {
  asio::io_context io(1);
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  auto socket = std::make_shared<tcp::socket>(io);
  socket->connect(acceptor.local_endpoint());
  tcp::socket peer = acceptor.accept();
  {
    Deadline<tcp::socket> guard(socket, std::chrono::steady_clock::now() + std::chrono::hours(1));
    io.run_for(std::chrono::milliseconds(20));
    CHECK(!guard.expired());
  }
  io.run_for(std::chrono::milliseconds(20));  // the cancelled timer's handler runs
  CHECK(socket->is_open());
}
