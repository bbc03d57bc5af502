#include "proxies/relay.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

namespace tunnels::proxies {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

// A pipe whose two ends close with it; movable, so that empty pipes can be
// kept for reuse.
class Pipe {
 public:
  Pipe() = default;
  // An open pipe, or a closed one with `*error` set to errno.
  static Pipe Open(int* error) {
    Pipe p;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
      p.read_ = fds[0];
      p.write_ = fds[1];
    } else {
      *error = errno;
    }
    return p;
  }
  Pipe(Pipe&& other) noexcept
      : read_(std::exchange(other.read_, -1)),
        write_(std::exchange(other.write_, -1)),
        grown_(other.grown_) {}
  Pipe& operator=(Pipe&& other) noexcept {
    if (this != &other) {
      Close();
      read_ = std::exchange(other.read_, -1);
      write_ = std::exchange(other.write_, -1);
      grown_ = other.grown_;
    }
    return *this;
  }
  ~Pipe() { Close(); }

  bool ok() const { return read_ >= 0; }
  int read_end() const { return read_; }
  int write_end() const { return write_; }

  // Asks once for a pipe of kLargePipe bytes instead of the default 64 KiB,
  // so that a bulk transfer moves up to that much per pair of splice calls
  // (and the socket it reads from sends fewer window updates). It is only a
  // wish: above the unprivileged limits (fs.pipe-max-size,
  // fs.pipe-user-pages-soft) the kernel says no, and the pipe stays as it is.
  void Grow() {
    if (grown_) return;
    grown_ = true;
    (void)::fcntl(write_, F_SETPIPE_SZ, kLargePipe);
  }

 private:
  static constexpr int kLargePipe = 1 << 20;

  void Close() {
    if (read_ >= 0) ::close(read_);
    if (write_ >= 0) ::close(write_);
    read_ = write_ = -1;
  }

  int read_ = -1;
  int write_ = -1;
  bool grown_ = false;
};

// Empty pipes for reuse by the relays of this thread. A direction of a relay
// holds a pipe only while bytes are on their way through it and gives it
// back before it waits for more, so an idle connection holds none: it costs
// tunnels two descriptors (its sockets) instead of six, and a short
// connection does not open and close two pipes.
class PipePool {
 public:
  // A pipe from the pool, or a new one; a closed one with `*error` set when
  // none can be opened (out of descriptors).
  Pipe Acquire(int* error) {
    if (free_.empty()) return Pipe::Open(error);
    Pipe p = std::move(free_.back());
    free_.pop_back();
    return p;
  }
  // `pipe` must be empty (every byte spliced out of it); it is kept, or
  // closed when the pool is full.
  void Release(Pipe&& pipe) {
    if (pipe.ok() && free_.size() < kMaxFree) free_.push_back(std::move(pipe));
    pipe = Pipe();
  }

 private:
  static constexpr std::size_t kMaxFree = 32;
  std::vector<Pipe> free_;
};

PipePool& ThreadPipePool() {
  thread_local PipePool pool;
  return pool;
}

// At most this much is moved per splice call: whatever the pipe holds.
constexpr std::size_t kChunk = 1 << 20;
// A direction that has moved this much is a bulk transfer: its pipe grows.
constexpr std::uint64_t kBulk = 256 * 1024;

struct Direction {
  std::uint64_t bytes = 0;
  std::string error;
  bool writing = false;  // the error came from the socket written to, not the one read
};

// Moves bytes from `from` to `to` until `from` reaches end of stream, then
// shuts down `to`'s write side. With `wait_first`, waits for `from` to be
// readable before the first read (for a side that is not expected to have
// spoken yet: saves a read that would find nothing).
asio::awaitable<Direction> Pump(tcp::socket& from, tcp::socket& to, bool wait_first,
                                IdleWatch::Watching& watching) {
  Direction d;
  PipePool& pool = ThreadPipePool();
  Pipe pipe;  // held only while bytes are in it (and around the splice that fills it)
  const int in = from.native_handle();
  const int out = to.native_handle();
  boost::system::error_code ec;
  if (wait_first) {
    co_await from.async_wait(tcp::socket::wait_read, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      d.error = ec.message();
      co_return d;
    }
  }
  for (;;) {
    if (!pipe.ok()) {
      int error = 0;
      pipe = pool.Acquire(&error);
      if (!pipe.ok()) {
        d.error = std::string("pipe: ") + std::strerror(error);
        co_return d;
      }
    }
    const ssize_t n =
        ::splice(in, nullptr, pipe.write_end(), nullptr, kChunk, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n == 0) break;  // end of stream
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        // Nothing to read (the pipe is empty: every splice in is followed by
        // splices out until it is): give the pipe back while waiting.
        pool.Release(std::move(pipe));
        co_await from.async_wait(tcp::socket::wait_read,
                                 asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
          d.error = ec.message();
          co_return d;
        }
        continue;
      }
      d.error = std::strerror(errno);
      co_return d;
    }
    std::size_t in_pipe = static_cast<std::size_t>(n);
    while (in_pipe > 0) {
      const ssize_t m = ::splice(pipe.read_end(), nullptr, out, nullptr, in_pipe,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (m < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          co_await to.async_wait(tcp::socket::wait_write,
                                 asio::redirect_error(asio::use_awaitable, ec));
          if (ec) {
            d.error = ec.message();
            d.writing = true;
            co_return d;  // the pipe, not empty, is closed with this frame
          }
          continue;
        }
        d.error = std::strerror(errno);
        d.writing = true;
        co_return d;
      }
      in_pipe -= static_cast<std::size_t>(m);
      d.bytes += static_cast<std::uint64_t>(m);
      watching.Moved(static_cast<std::uint64_t>(m));
    }
    if (d.bytes >= kBulk) pipe.Grow();
  }
  pool.Release(std::move(pipe));
  to.shutdown(tcp::socket::shutdown_send, ec);
  co_return d;
}

// Ends both sockets at once, with a reset, so that the side that did not
// fail learns of it right away instead of waiting on a dead connection.
void Abort(tcp::socket& a, tcp::socket& b) {
  boost::system::error_code ignored;
  for (tcp::socket* s : {&a, &b}) {
    if (!s->is_open()) continue;
    s->set_option(asio::socket_base::linger(true, 0), ignored);
    s->close(ignored);
  }
}

}  // namespace

struct IdleWatch::Entry {
  std::uint64_t moved = 0;  // bytes, both ways
  std::uint64_t seen = 0;   // `moved` at the sweep that last saw it change
  Clock::time_point quiet_since;
  Clock::duration timeout{};
  bool fired = false;
  std::function<void()> on_idle;
};

struct IdleWatch::State : std::enable_shared_from_this<IdleWatch::State> {
  explicit State(asio::any_io_executor e) : executor(std::move(e)), timer(executor) {}
  asio::any_io_executor executor;
  asio::steady_timer timer;
  Clock::duration timeout{};
  Clock::duration period = Clock::duration::max();  // of the running sweep
  std::set<std::shared_ptr<Entry>> watched;
  bool sweeping = false;
  bool stopped = false;

  // Runs while connections are watched.
  static asio::awaitable<void> Sweep(std::shared_ptr<State> self) {
    boost::system::error_code ec;
    while (!self->stopped && !self->watched.empty()) {
      self->timer.expires_after(self->period);
      co_await self->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (self->stopped) break;
      const Clock::time_point now = Clock::now();
      std::vector<std::shared_ptr<Entry>> idle;
      for (const std::shared_ptr<Entry>& e : self->watched) {
        if (e->fired) continue;
        if (e->moved != e->seen) {
          e->seen = e->moved;
          e->quiet_since = now;
        } else if (now - e->quiet_since >= e->timeout) {
          e->fired = true;
          idle.push_back(e);
        }
      }
      // Outside the loop: ending a connection may unregister it.
      for (const std::shared_ptr<Entry>& e : idle) e->on_idle();
    }
    self->sweeping = false;
    self->period = Clock::duration::max();
  }

  void Add(const std::shared_ptr<Entry>& e) {
    watched.insert(e);
    const Clock::duration wanted =
        std::max<Clock::duration>(e->timeout / 4, std::chrono::milliseconds(250));
    if (sweeping && wanted >= period) return;
    period = std::min(period, wanted);
    if (sweeping) {
      timer.cancel();  // the sweep starts again with the shorter period
      return;
    }
    sweeping = true;
    asio::co_spawn(executor, Sweep(shared_from_this()), [](std::exception_ptr) {
      // Sweep reports nothing and throws only on a bug (std::bad_alloc);
      // connections then run without an idle timeout, as before the watch.
    });
  }
};

IdleWatch::IdleWatch(asio::any_io_executor executor)
    : state_(std::make_shared<State>(std::move(executor))) {}

IdleWatch::~IdleWatch() {
  state_->stopped = true;
  state_->timer.cancel();
}

void IdleWatch::SetTimeout(Clock::duration timeout) { state_->timeout = timeout; }
Clock::duration IdleWatch::timeout() const { return state_->timeout; }

IdleWatch::Watching IdleWatch::Watch(Clock::duration timeout, std::function<void()> on_idle) {
  Watching w;
  if (timeout <= Clock::duration::zero()) return w;  // nothing to watch, nothing allocated
  w.state_ = state_;
  w.entry_ = std::make_shared<Entry>();
  w.entry_->timeout = timeout;
  w.entry_->quiet_since = Clock::now();
  w.entry_->on_idle = std::move(on_idle);
  state_->Add(w.entry_);
  return w;
}

IdleWatch::Watching& IdleWatch::Watching::operator=(Watching&& other) noexcept {
  if (this != &other) {
    if (state_) state_->watched.erase(entry_);
    state_ = std::move(other.state_);
    entry_ = std::move(other.entry_);
  }
  return *this;
}

IdleWatch::Watching::~Watching() {
  if (state_) state_->watched.erase(entry_);
}

void IdleWatch::Watching::Moved(std::uint64_t bytes) {
  if (entry_) entry_->moved += bytes;
}

bool IdleWatch::Watching::fired() const { return entry_ && entry_->fired; }

std::string IdleReason(Clock::duration timeout) {
  return "idle for " +
         std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
         " s (connectionIdleTimeout); reset both sides";
}

asio::awaitable<RelayResult> Relay(std::shared_ptr<tcp::socket> client,
                                   std::shared_ptr<tcp::socket> server,
                                   std::vector<std::uint8_t> pending, IdleWatch* idle) {
  RelayResult result;
  // Unwatched however the relay ends; the pumps see the abort and end.
  auto watching = std::make_shared<IdleWatch::Watching>();
  const Clock::duration idle_timeout = idle ? idle->timeout() : Clock::duration::zero();
  if (idle) {
    *watching = idle->Watch(idle_timeout, [weak_client = std::weak_ptr<tcp::socket>(client),
                                           weak_server = std::weak_ptr<tcp::socket>(server)] {
      const auto c = weak_client.lock();
      const auto s = weak_server.lock();
      if (c && s) Abort(*c, *s);
    });
  }
  boost::system::error_code ec;
  client->native_non_blocking(true, ec);
  if (!ec) server->native_non_blocking(true, ec);
  if (!ec && !pending.empty()) {
    co_await asio::async_write(*client, asio::buffer(pending),
                               asio::redirect_error(asio::use_awaitable, ec));
    result.to_client += pending.size();
  }
  if (ec) {
    result.error = ec.message();
    Abort(*client, *server);
    co_return result;
  }

  // The server-to-client half runs as its own coroutine; this one does the
  // other half and then waits for it. A timer that never expires on its own
  // serves as the "done" signal.
  auto executor = co_await asio::this_coro::executor;
  auto done = std::make_shared<asio::steady_timer>(executor, asio::steady_timer::time_point::max());
  auto down = std::make_shared<std::optional<Direction>>();
  // The error that ended the relay, named by the side it came from: the
  // first one only, since the abort that follows it fails the other
  // direction too ("Operation canceled"), which says nothing.
  auto first_error = std::make_shared<std::string>();
  asio::co_spawn(
      executor,
      [client, server, down, done, watching, first_error]() -> asio::awaitable<void> {
        *down = co_await Pump(*server, *client, /*wait_first=*/true, *watching);
        if (!(*down)->error.empty()) {
          if (first_error->empty()) {
            *first_error = ((*down)->writing ? "client side: " : "server side: ") + (*down)->error;
          }
          Abort(*client, *server);
        }
        done->cancel();
      },
      [down, done, first_error](std::exception_ptr e) {
        // Pump reports errors as values; an exception here is a bug, and the
        // relay still has to end.
        if (e && !*down) {
          *down = Direction{0, "internal error in relay"};
          if (first_error->empty()) *first_error = "server side: internal error in relay";
        }
        done->cancel();
      });
  Direction up = co_await Pump(*client, *server, /*wait_first=*/false, *watching);
  if (!up.error.empty()) {
    if (first_error->empty()) {
      *first_error = (up.writing ? "server side: " : "client side: ") + up.error;
    }
    Abort(*client, *server);
  }
  if (!*down) {
    co_await done->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  result.to_server = up.bytes;
  result.to_client += (*down) ? (*down)->bytes : 0;
  if (watching->fired()) {
    result.error = IdleReason(idle_timeout);
  } else {
    result.error = *first_error;
  }
  boost::system::error_code ignored;
  client->close(ignored);
  server->close(ignored);
  co_return result;
}

}  // namespace tunnels::proxies
