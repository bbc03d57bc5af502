// The ssh connector.
//
// One SshSession per ssh proxy owns the libssh session, and only its own
// thread ever touches it (libssh is not thread-safe per session): the thread
// runs an io_context of its own, so the encryption of one proxy's traffic
// runs beside the engine's relaying instead of inside it.
//
// Each connection is a direct-tcpip channel. Once it is open the engine
// hands the session the client's socket itself (Stream::carry), and the
// session thread moves the bytes between the socket and the channel: each
// chunk is copied once, from libssh to the socket, with no other thread
// woken for it, and a connection holds one descriptor instead of three (an
// earlier design bridged each channel to a socketpair that the engine
// relayed). The
// session thread also does what the relay does for other connectors:
// half-closes, a reset of the client when the channel fails or the session
// dies, the idle timeout (its own IdleWatch) and the byte counts.
//
// Flow control never buffers without bound: bytes are read from a client
// only as far as the channel's remote window allows and not while the
// session's socket is full; bytes from the server that the client cannot
// take stay in libssh's channel buffer, which stops growing the window, so
// the server stops sending on that channel alone.
//
// The SSH handshake itself (key exchange, host key check, authentication)
// runs in libssh's blocking mode with a timeout, on the session thread: no
// channel exists yet, so nothing else waits on that thread meanwhile. Once
// authenticated the session is switched to non-blocking mode and driven by
// readiness of its socket.
#include "proxies/ssh_connector.h"

#include <fcntl.h>
#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>  // ssh_send_keepalive
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "proxies/name_resolver.h"
#include "proxies/relay.h"
#include "proxies/ssh_fingerprint.h"

namespace tunnels::proxies {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr const char* kModule = "SSH";

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

struct Channel;

// What an attempt to open a channel gives the engine: the channel (owned by
// the session thread; only handed back to it), or why not.
struct OpenResult {
  std::weak_ptr<Channel> channel;
  bool ok = false;
  std::string error;
};

// The SSH transport (a connected TCP socket to the server, possibly through
// the parent SOCKS5 proxy), made on the engine's thread, where the resolver
// lives; handed over as a descriptor.
struct TransportBox {
  bool done = false;
  Fd fd;
  std::string error;
};

std::optional<config::HostKeyType> KeyType(ssh_key key) {
  switch (ssh_key_type(key)) {
    case SSH_KEYTYPE_RSA:
      return config::HostKeyType::kRsa;
    case SSH_KEYTYPE_ECDSA:
    case SSH_KEYTYPE_ECDSA_P256:
    case SSH_KEYTYPE_ECDSA_P384:
    case SSH_KEYTYPE_ECDSA_P521:
      return config::HostKeyType::kEcdsa;
    case SSH_KEYTYPE_ED25519:
      return config::HostKeyType::kEd25519;
    default:
      return std::nullopt;
  }
}

std::string KeyHash(ssh_key key, ssh_publickey_hash_type type, bool md5) {
  unsigned char* hash = nullptr;
  std::size_t length = 0;
  if (ssh_get_publickey_hash(key, type, &hash, &length) != SSH_OK) return "?";
  const std::span<const std::uint8_t> bytes(hash, length);
  std::string out = md5 ? Md5Hex(bytes) : Sha256Base64(bytes);
  ssh_clean_pubkey_hash(&hash);
  return out;
}

// The host key algorithms in the order to offer them: the pinned types
// first, so that a server with several keys presents one that can be checked.
std::string HostKeyPreference(const config::SshSettings& ssh) {
  const std::vector<std::pair<config::HostKeyType, std::string>> all = {
      {config::HostKeyType::kEd25519, "ssh-ed25519"},
      {config::HostKeyType::kEcdsa, "ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521"},
      {config::HostKeyType::kRsa, "rsa-sha2-512,rsa-sha2-256,ssh-rsa"}};
  std::string pinned, rest;
  for (const auto& [type, names] : all) {
    const bool is_pinned =
        std::any_of(ssh.fingerprints.begin(), ssh.fingerprints.end(),
                    [&](const config::Fingerprint& f) { return f.key_type == type; });
    std::string& to = is_pinned ? pinned : rest;
    to += (to.empty() ? "" : ",") + names;
  }
  return pinned.empty() ? rest : rest.empty() ? pinned : pinned + "," + rest;
}

// libssh's "Channel opening failure: channel 3 error (1) open failed" in
// words: the RFC 4254 reason code, and what the server said.
std::string RefusalText(const std::string& error) {
  const std::size_t at = error.find("error (");
  if (at == std::string::npos || at + 9 > error.size() || error[at + 8] != ')') return error;
  static constexpr const char* kReasons[] = {"", "administratively prohibited", "connect failed",
                                             "unknown channel type", "resource shortage"};
  const int code = error[at + 7] - '0';
  std::string text =
      code >= 1 && code <= 4 ? kReasons[code] : "reason " + std::string(1, error[at + 7]);
  const std::string said = at + 10 <= error.size() ? error.substr(at + 10) : "";
  if (!said.empty()) text += " (the server says: " + said + ")";
  return text;
}

// With AES instructions, AES-GCM costs both ends less than ChaCha20-Poly1305
// (libssh's and OpenSSH's first choice): about a fifth more throughput on a
// busy machine. Without them, libssh's own order.
const char* PreferredCiphers() {
#if defined(__x86_64__) || defined(__i386__)
  if (__builtin_cpu_supports("aes")) {
    return "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
           "aes256-ctr,aes192-ctr,aes128-ctr";
  }
#endif
  return nullptr;
}

class SshSession;

// A session thread's io_context. Once that thread has ended,
// EndPendingWork() destroys what still waits in it, while the session is
// whole: an engine coroutine waiting for an Open or a Carry holds its
// configuration generation, and with it this session (a cycle that would
// otherwise keep both, and the thread, alive past the engine).
class SessionIo : public asio::io_context {
 public:
  SessionIo() : io_context(1) {}
  void EndPendingWork() { shutdown(); }
};

// One direct-tcpip channel and the client's socket it carries.
struct Channel {
  Channel(SshSession& s, asio::io_context& io, std::uint64_t g) : session(s), local(io), gen(g) {}
  SshSession& session;
  asio::posix::stream_descriptor local;  // the client's socket, once carried
  std::uint64_t gen;                     // the session generation it belongs to
  // For the engine's result.
  std::uint64_t to_server = 0;
  std::uint64_t to_client = 0;
  std::string end_reason;  // empty for a clean end
  IdleWatch::Watching watching;
  Clock::duration watching_timeout{};
  asio::steady_timer* done = nullptr;  // Carry's wait, cancelled by End
  ssh_channel channel = nullptr;
  ssh_channel_callbacks_struct callbacks{};
  std::string what;  // host:port, for log lines
  // The local end could not take all the server sent: libssh holds the
  // rest until the drain coroutine has written it.
  bool stalled = false;
  bool draining = false;
  std::vector<std::uint8_t> backlog;  // read from libssh, not yet written locally
  bool remote_eof = false;            // the server sent EOF
  bool down_done = false;             // ...and it was passed on (shutdown of our end)
  bool up_done = false;               // the client's EOF was sent to the server
  bool remote_closed = false;
  bool ended = false;
  // Callbacks come from the channel's creation on; until the channel is open
  // and carries the client's socket (registered), they only note what
  // happened.
  bool registered = false;
  std::weak_ptr<Channel> self;
};

class SshSession {
 public:
  SshSession(const config::Proxy& proxy, ConnectorContext& context, asio::any_io_executor engine)
      : proxy_(proxy),
        context_(context),
        engine_(std::move(engine)),
        io_(std::make_shared<SessionIo>()),
        work_(asio::make_work_guard(*io_)),
        idle_(io_->get_executor()),
        keepalive_(*io_) {
    prefix_ = "ssh proxy '" + proxy_.name + "' (" + proxy_.address.ToString() + "): ";
    if (proxy_.ssh.parent_socks5) {
      config::Proxy parent;
      parent.name = proxy_.name + " parentSocks5Proxy";
      parent.type = config::ProxyType::kSocks5;
      parent.address = *proxy_.ssh.parent_socks5;
      parent_ = MakeSocks5Connector(parent, context_);
    }
    asio::co_spawn(*io_, Supervise(), [this](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log().Error(kModule, prefix_ + "the session supervisor stopped: " + ex.what());
      }
    });
    thread_ = std::thread([io = io_] { io->run(); });
  }

  ~SshSession() { Stop(); }

  // Ends the channels (their clients get a reset), the session and its
  // thread, and destroys what waited in its io_context; on the engine's
  // thread. Called once more, it does nothing.
  void Stop() {
    if (!thread_.joinable()) return;
    stopped_ = true;
    {
      // A blocking handshake on the session's thread would hold up the
      // join below, on the engine's thread, for its whole timeout: every
      // connection and DNS answer would wait. Cut it short, and keep one
      // from starting.
      std::lock_guard lock(handshake_mutex_);
      destroying_ = true;
      if (handshake_fd_ >= 0) ::shutdown(handshake_fd_, SHUT_RDWR);
    }
    asio::post(*io_, [this] {
      stopping_ = true;
      SessionDown("tunnels is stopping", config::LogLevel::kDebug);
      keepalive_.cancel();
      WakeAll();
      work_.reset();
      // The woken coroutines end in the next turns; whatever still waits
      // after that (a transport being connected on the engine's thread) is
      // not waited for.
      asio::post(*io_, [io = io_] { asio::post(*io, [io] { io->stop(); }); });
    });
    thread_.join();
    io_->EndPendingWork();
  }
  // Whether Stop() was called; the engine's thread's.
  bool stopped() const { return stopped_; }

  // The configuration moved on: serve the channels there are, then close,
  // and connect again only for a connection that waits (one that started
  // before the reload).
  void Retire() {
    asio::post(*io_, [this] {
      retired_ = true;
      Wake(kState);
      MaybeRetire();
    });
  }

  SshSession(const SshSession&) = delete;
  SshSession& operator=(const SshSession&) = delete;

  asio::io_context& io() { return *io_; }

  // Run on the session's thread.
  asio::awaitable<OpenResult> Open(Target target, Clock::time_point deadline);
  // Moves the bytes between the channel and the client's socket `fd` (taken
  // over) until both are done.
  asio::awaitable<RelayResult> Carry(std::weak_ptr<Channel> channel, int fd,
                                     Clock::duration idle_timeout);
  // Ends a channel the engine did not carry (it stopped meanwhile).
  void Abandon(const std::weak_ptr<Channel>& channel) {
    if (auto c = channel.lock()) End(*c, true, "not carried");
  }

 private:
  const config::Log& log() const { return context_.log; }

  asio::awaitable<void> Supervise();
  asio::awaitable<bool> Establish(std::string* error);
  bool Handshake(int fd, std::string* error);
  bool HandshakeSteps(std::string* error);
  bool VerifyHostKey(std::string* error);
  bool Authenticate(std::string* error);
  asio::awaitable<void> ReadLoop(std::uint64_t gen);
  asio::awaitable<void> KeepaliveLoop(std::uint64_t gen);
  asio::awaitable<void> WriteWait(std::uint64_t gen);
  void SessionDown(const std::string& why, config::LogLevel level);
  void MaybeRetire();
  asio::awaitable<void> CloseWhenAnswered(std::shared_ptr<Channel> c, Target target);
  int AskOpen(ssh_channel channel, const Target& target);
  bool Up(std::uint64_t gen) const { return up_ && gen == generation_ && !stopping_; }

  // What a coroutine waits for. Wakes are targeted: with hundreds of
  // channels, waking every waiter at every packet costs more than the
  // packets.
  enum Kind { kState, kWritable, kKinds };  // session state; window or flushed output
  // Waits until Wake(kind), or with `opening` until that channel is open,
  // or `deadline`; returns false at the deadline.
  asio::awaitable<bool> Sleep(Clock::time_point deadline, Kind kind = kState,
                              ssh_channel opening = nullptr);
  void Wake(Kind kind) {
    for (asio::steady_timer* t : sleepers_[kind]) t->cancel();
  }
  void WakeOpened() {
    for (const auto& [timer, channel] : opening_) {
      if (ssh_channel_is_open(channel)) timer->cancel();
    }
  }
  void WakeAll() {
    Wake(kState);
    Wake(kWritable);
    for (const auto& entry : opening_) entry.first->cancel();
  }
  // After packets came in or output went out.
  void WakeForProgress() {
    WakeOpened();
    if (!write_waiting_ && !sleepers_[kWritable].empty()) Wake(kWritable);
  }

  // Pumps libssh once: reads what arrived (running the channel callbacks)
  // and writes what is pending. False when the session broke.
  bool Poll(bool* drained = nullptr);
  void Flush();  // soon, once for all the writes of this turn

  // Channels.
  static int OnData(ssh_session, ssh_channel, void* data, std::uint32_t len, int is_stderr,
                    void* user);
  static void OnEof(ssh_session, ssh_channel, void* user);
  static void OnClose(ssh_session, ssh_channel, void* user);
  void StartDrain(const std::shared_ptr<Channel>& c);
  asio::awaitable<void> Drain(std::shared_ptr<Channel> c);
  asio::awaitable<void> PumpUp(std::shared_ptr<Channel> c);
  void PassEof(Channel& c);
  void MaybeFinish(Channel& c);
  // Ends a channel: cleanly (FIN to the engine) or with a reset.
  void End(Channel& c, bool reset, const std::string& why);
  void Spawn(asio::awaitable<void> a, const char* what);

  const config::Proxy proxy_;
  ConnectorContext& context_;  // engine thread only
  asio::any_io_executor engine_;
  std::unique_ptr<Connector> parent_;  // engine thread only
  std::string prefix_;
  std::shared_ptr<SessionIo> io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  IdleWatch idle_;  // of the carried channels; the session thread's
  std::thread thread_;
  // The blocking handshake's socket, while it runs, for ~SshSession to cut
  // it short from the engine's thread; and whether that has begun.
  std::mutex handshake_mutex_;
  int handshake_fd_ = -1;
  bool destroying_ = false;
  bool stopped_ = false;  // the engine's thread's

  // Everything below belongs to the session thread.
  ssh_session ssh_ = nullptr;
  ssh_event event_ = nullptr;
  std::unique_ptr<asio::posix::stream_descriptor> socket_;  // libssh's, not owned
  bool up_ = false;
  bool stopping_ = false;
  bool retired_ = false;  // by a reload: see Retire
  bool flush_posted_ = false;
  bool write_waiting_ = false;
  std::uint64_t generation_ = 0;
  std::size_t waiting_ = 0;  // Open calls waiting for the session
  std::size_t opens_ = 0;    // Open calls in progress: a retired session stays for them
  Clock::time_point last_rx_;
  ssh_counter_struct counters_{};  // the socket's bytes, counted by libssh
  std::uint64_t seen_in_ = 0;
  std::string last_error_;
  asio::steady_timer keepalive_;
  std::set<asio::steady_timer*> sleepers_[kKinds];
  std::map<asio::steady_timer*, ssh_channel> opening_;
  std::unordered_map<Channel*, std::shared_ptr<Channel>> channels_;
  // For the copies between a channel and its local end; no copy spans a
  // co_await, so every channel shares it.
  std::vector<std::uint8_t> buffer_ = std::vector<std::uint8_t>(64 * 1024);
};

void SshSession::Spawn(asio::awaitable<void> a, const char* what) {
  asio::co_spawn(*io_, std::move(a), [this, what](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log().Limited(kModule, config::LogLevel::kWarning,
                    prefix_ + what + " ended on an internal error: " + ex.what());
    }
  });
}

asio::awaitable<bool> SshSession::Sleep(Clock::time_point deadline, Kind kind,
                                        ssh_channel opening) {
  asio::steady_timer timer(*io_, deadline);
  if (opening) {
    opening_[&timer] = opening;
  } else {
    sleepers_[kind].insert(&timer);
  }
  boost::system::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (opening) {
    opening_.erase(&timer);
  } else {
    sleepers_[kind].erase(&timer);
  }
  co_return ec == asio::error::operation_aborted;
}

asio::awaitable<OpenResult> SshSession::Open(Target target, Clock::time_point deadline) {
  OpenResult result;
  // However Open ends, a retired session may have nothing left to serve.
  struct Opening {
    SshSession& s;
    explicit Opening(SshSession& session) : s(session) { ++s.opens_; }
    ~Opening() {
      if (--s.opens_ == 0 && s.retired_) asio::post(*s.io_, [p = &s] { p->MaybeRetire(); });
    }
  } opening(*this);
  ++waiting_;
  Wake(kState);  // the supervisor may be waiting for demand, or in a backoff
  while (!up_ && !stopping_ && Clock::now() < deadline) co_await Sleep(deadline);
  --waiting_;
  if (stopping_) {
    result.error = "tunnels is stopping";
    co_return result;
  }
  if (!up_) {
    result.error =
        "no SSH session (" + (last_error_.empty() ? "not up in time" : last_error_) + ")";
    co_return result;
  }
  const std::uint64_t gen = generation_;
  ssh_channel channel = ssh_channel_new(ssh_);
  if (!channel) {
    result.error = "cannot create a channel: " + std::string(ssh_get_error(ssh_));
    co_return result;
  }
  auto c = std::make_shared<Channel>(*this, *io_, gen);
  c->self = c;
  c->channel = channel;
  c->what = target.ToString();
  // Set before the open, so that nothing the server sends right after its
  // confirmation is missed (and no drain is needed to look for it).
  ssh_callbacks_init(&c->callbacks);
  c->callbacks.userdata = c.get();
  c->callbacks.channel_data_function = &SshSession::OnData;
  c->callbacks.channel_eof_function = &SshSession::OnEof;
  c->callbacks.channel_close_function = &SshSession::OnClose;
  ssh_set_channel_callbacks(channel, &c->callbacks);
  int rc = SSH_AGAIN;
  for (;;) {
    rc = AskOpen(channel, target);
    if (rc != SSH_AGAIN) break;
    Flush();
    // Asking libssh again while the channel is still opening costs a poll
    // of the socket, for every waiting channel at every packet: ask again
    // only once it is open, or every 20 ms for a refusal (libssh has no
    // cheap test for that).
    const Clock::time_point asked = Clock::now();
    while (Up(gen) && Clock::now() < deadline && !ssh_channel_is_open(channel) &&
           Clock::now() < asked + std::chrono::milliseconds(20)) {
      co_await Sleep(std::min(deadline, asked + std::chrono::milliseconds(20)), kState, channel);
    }
    if (!Up(gen) || Clock::now() >= deadline) break;
  }
  if (!Up(gen)) {
    // The session went down with the channel: libssh freed it.
    result.error = "the SSH session ended while opening a channel to " + target.ToString();
    co_return result;
  }
  if (rc == SSH_AGAIN) {
    result.error = "no answer in time to open a channel to " + target.ToString();
    c->ended = true;  // what the server may send on it is dropped
    Spawn(CloseWhenAnswered(c, std::move(target)), "a late channel");
    co_return result;
  }
  if (rc != SSH_OK) {
    if (result.error.empty()) {
      result.error = "the server refused a channel to " + target.ToString() + ": " +
                     RefusalText(ssh_get_error(ssh_));
      log().Limited(kModule, config::LogLevel::kInfo, prefix_ + result.error);
    }
    ssh_remove_channel_callbacks(channel, &c->callbacks);
    if (ssh_channel_is_open(channel)) ssh_channel_close(channel);
    ssh_channel_free(channel);
    c->channel = nullptr;
    c->ended = true;
    Flush();
    co_return result;
  }
  channels_.emplace(c.get(), c);
  result.channel = c;
  result.ok = true;
  co_return result;
}

asio::awaitable<RelayResult> SshSession::Carry(std::weak_ptr<Channel> channel, int fd,
                                               Clock::duration idle_timeout) {
  Fd client(fd);
  RelayResult result;
  const std::shared_ptr<Channel> c = channel.lock();
  if (!c || c->ended || !Up(c->gen)) {
    // The session went down between the open and now.
    const linger reset{1, 0};
    ::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    result.error = c && !c->end_reason.empty() ? c->end_reason : "the SSH session ended";
    co_return result;
  }
  boost::system::error_code ec;
  c->local.assign(client.release(), ec);
  if (ec) {
    End(*c, true, "taking the client's socket: " + ec.message());
    result.error = c->end_reason;
    co_return result;
  }
  c->registered = true;
  c->watching = idle_.Watch(idle_timeout, [this, channel] {
    if (auto p = channel.lock()) End(*p, true, IdleReason(p->watching_timeout));
  });
  c->watching_timeout = idle_timeout;
  asio::steady_timer done(*io_, asio::steady_timer::time_point::max());
  c->done = &done;
  if (c->stalled) {
    StartDrain(c);  // the server spoke before the client's socket was here
  } else if (c->remote_eof) {
    PassEof(*c);
  }
  if (!c->ended) Spawn(PumpUp(c), "a channel");
  if (!c->ended) co_await done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  c->done = nullptr;
  result.to_server = c->to_server;
  result.to_client = c->to_client;
  result.error = c->end_reason;
  co_return result;
}

asio::awaitable<void> SshSession::Supervise() {
  int failures = 0;
  Clock::time_point failed_at;
  bool ever_up = false;
  while (!stopping_) {
    if (retired_ || (!ever_up && failures == 0)) {
      // Opened on first use; once retired, only for a connection that
      // waits for it.
      while (waiting_ == 0 && !stopping_) co_await Sleep(Clock::time_point::max());
    }
    if (failures > 0) {
      // Exponential backoff; a connection waiting shortens it to a second,
      // so that a server back from a restart is used soon.
      const auto backoff = std::min<Clock::duration>(
          std::chrono::milliseconds(250) * (1 << std::min(failures - 1, 7)),
          std::chrono::seconds(30));
      for (;;) {
        const auto wait =
            waiting_ > 0 ? std::min<Clock::duration>(backoff, std::chrono::seconds(1)) : backoff;
        if (stopping_ || Clock::now() >= failed_at + wait) break;
        co_await Sleep(failed_at + wait);
      }
    }
    if (stopping_) break;
    std::string error;
    const bool ok = co_await Establish(&error);
    if (stopping_) break;
    if (!ok) {
      ++failures;
      failed_at = Clock::now();
      last_error_ = error;
      log().Limited(kModule, config::LogLevel::kWarning, prefix_ + error);
      Wake(kState);
      continue;
    }
    failures = 0;
    ever_up = true;
    last_error_.clear();
    const char* cipher = ssh_get_cipher_in(ssh_);
    log().Info(kModule, prefix_ + "session up (" + proxy_.ssh.username + "@" +
                            proxy_.address.ToString() + ", " + (cipher ? cipher : "?") + ")");
    const std::uint64_t gen = generation_;
    Wake(kState);
    MaybeRetire();  // up for a connection that gave up meanwhile
    while (Up(gen)) co_await Sleep(Clock::time_point::max());
  }
}

asio::awaitable<bool> SshSession::Establish(std::string* error) {
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(10);
  auto box = std::make_shared<TransportBox>();
  const Target server{proxy_.address.host, proxy_.address.port};
  // What owns this session, the parent connector and the context (the
  // engine's configuration generation), held until the connection is made:
  // a reload may drop its last other reference meanwhile. Gone already:
  // this session is being destroyed.
  std::shared_ptr<const void> owner = context_.owner.lock();
  if (!owner) {
    *error = "stopping";
    co_return false;
  }
  // On the engine's thread: the resolver and the parent connector live there.
  asio::co_spawn(
      engine_,
      // `owner` moves into the coroutine: the last reference must never be
      // dropped on this session's own thread, whose destructor joins it.
      [this, box, server, deadline, io = io_, owner = std::move(owner)]() -> asio::awaitable<void> {
        std::string e;
        Fd fd;
        if (parent_) {
          std::optional<Stream> stream = co_await parent_->Connect(server, deadline, &e);
          if (stream && !stream->pending.empty()) {
            e = "the parent SOCKS5 proxy sent data before the SSH server did";
          } else if (stream) {
            fd = Fd(::fcntl(stream->socket.native_handle(), F_DUPFD_CLOEXEC, 0));
            if (fd.get() < 0) e = Errno("dup");
          }
        } else {
          std::optional<tcp::socket> socket =
              co_await ConnectTcp(context_.resolver, server.host, server.port, deadline, &e);
          if (socket) {
            fd = Fd(::fcntl(socket->native_handle(), F_DUPFD_CLOEXEC, 0));
            if (fd.get() < 0) e = Errno("dup");
          }
        }
        // Back on the session's thread; if the session is gone, the handler
        // is destroyed with its io_context and the descriptor closed.
        asio::post(*io, [this, box, fd = std::make_shared<Fd>(std::move(fd)), e]() mutable {
          box->fd = std::move(*fd);
          box->error = e;
          box->done = true;
          Wake(kState);
        });
      },
      asio::detached);
  while (!box->done && !stopping_ && Clock::now() < deadline) co_await Sleep(deadline);
  if (!box->done) {
    *error = stopping_ ? "stopping" : "cannot reach the SSH server in time";
    co_return false;
  }
  if (box->fd.get() < 0) {
    *error = box->error;
    co_return false;
  }
  co_return Handshake(box->fd.release(), error);
}

// The blocking part: key exchange, host key, authentication.
bool SshSession::Handshake(int fd, std::string* error) {
  ssh_ = ssh_new();
  if (!ssh_) {
    ::close(fd);
    *error = "cannot create an SSH session";
    return false;
  }
  bool no_config = false;
  long timeout = 10;
  unsigned int port = proxy_.address.port;
  int socket = fd;
  ssh_options_set(ssh_, SSH_OPTIONS_PROCESS_CONFIG, &no_config);
  ssh_options_set(ssh_, SSH_OPTIONS_FD, &socket);
  ssh_options_set(ssh_, SSH_OPTIONS_HOST, proxy_.address.host.c_str());
  ssh_options_set(ssh_, SSH_OPTIONS_PORT, &port);
  ssh_options_set(ssh_, SSH_OPTIONS_USER, proxy_.ssh.username.c_str());
  ssh_options_set(ssh_, SSH_OPTIONS_TIMEOUT, &timeout);
  const std::string known =
      proxy_.ssh.known_hosts_file.empty() ? "/dev/null" : proxy_.ssh.known_hosts_file;
  ssh_options_set(ssh_, SSH_OPTIONS_KNOWNHOSTS, known.c_str());
  ssh_options_set(ssh_, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, known.c_str());
  if (proxy_.ssh.known_hosts_file.empty()) {
    const std::string hostkeys = HostKeyPreference(proxy_.ssh);
    ssh_options_set(ssh_, SSH_OPTIONS_HOSTKEYS, hostkeys.c_str());
  }
  if (const char* ciphers = PreferredCiphers()) {
    ssh_options_set(ssh_, SSH_OPTIONS_CIPHERS_C_S, ciphers);
    ssh_options_set(ssh_, SSH_OPTIONS_CIPHERS_S_C, ciphers);
  }
  ssh_set_blocking(ssh_, 1);
  bool ok = false;
  {
    std::lock_guard lock(handshake_mutex_);
    if (!destroying_) handshake_fd_ = fd;
  }
  if (handshake_fd_ < 0) {
    *error = "stopping";
  } else {
    ok = HandshakeSteps(error);
    std::lock_guard lock(handshake_mutex_);
    handshake_fd_ = -1;  // before the descriptor is closed (by ssh_disconnect)
  }
  if (!ok) {
    ssh_disconnect(ssh_);
    ssh_free(ssh_);
    ssh_ = nullptr;
    return false;
  }
  ssh_set_blocking(ssh_, 0);
  counters_ = {};
  seen_in_ = 0;
  ssh_set_counters(ssh_, &counters_, nullptr);
  event_ = ssh_event_new();
  ssh_event_add_session(event_, ssh_);
  socket_ = std::make_unique<asio::posix::stream_descriptor>(*io_, ssh_get_fd(ssh_));
  ++generation_;
  up_ = true;
  last_rx_ = Clock::now();
  Spawn(ReadLoop(generation_), "the session reader");
  Spawn(KeepaliveLoop(generation_), "the keepalive");
  return true;
}

// Key exchange, host key, authentication: blocking, each bounded by the
// session's timeout, or cut short by ~SshSession.
bool SshSession::HandshakeSteps(std::string* error) {
  if (ssh_connect(ssh_) != SSH_OK) {
    *error = std::string("SSH handshake failed: ") + ssh_get_error(ssh_);
    return false;
  }
  return VerifyHostKey(error) && Authenticate(error);
}

bool SshSession::VerifyHostKey(std::string* error) {
  ssh_key key = nullptr;
  if (ssh_get_server_publickey(ssh_, &key) != SSH_OK) {
    *error = std::string("cannot get the server's host key: ") + ssh_get_error(ssh_);
    return false;
  }
  const std::optional<config::HostKeyType> type = KeyType(key);
  PresentedKey presented;
  presented.md5 = KeyHash(key, SSH_PUBLICKEY_HASH_MD5, true);
  presented.sha256 = KeyHash(key, SSH_PUBLICKEY_HASH_SHA256, false);
  const std::string type_name = ssh_key_type_to_char(ssh_key_type(key));
  ssh_key_free(key);
  if (!proxy_.ssh.known_hosts_file.empty() &&
      ssh_session_is_known_server(ssh_) == SSH_KNOWN_HOSTS_OK) {
    return true;
  }
  std::string why;
  if (!type) {
    why = "tunnels cannot pin " + type_name + " keys";
  } else {
    presented.type = *type;
    switch (CheckPins(proxy_.ssh.fingerprints, presented)) {
      case PinCheck::kMatch:
        return true;
      case PinCheck::kMismatch:
        why = std::string("it does not match ") + PinKey(*type);
        break;
      case PinCheck::kUnpinnedType:
        why = std::string("no ") + PinKey(*type) + " is set";
        break;
    }
    if (!proxy_.ssh.known_hosts_file.empty()) {
      why += " and " + proxy_.ssh.known_hosts_file + " has no matching entry";
    }
  }
  *error = "refused the server's host key before authentication: " + why + ". The server " +
           proxy_.address.ToString() + " presented the " + type_name +
           " key SHA256:" + presented.sha256 + " (MD5 " + presented.md5 +
           "); if that is your server's key (check it on the server with "
           "'ssh-keygen -lf' on its host key), pin it";
  return false;
}

bool SshSession::Authenticate(std::string* error) {
  ssh_key key = nullptr;
  const char* passphrase = proxy_.ssh.private_key_passphrase.empty()
                               ? nullptr
                               : proxy_.ssh.private_key_passphrase.c_str();
  if (ssh_pki_import_privkey_file(proxy_.ssh.private_key.c_str(), passphrase, nullptr, nullptr,
                                  &key) != SSH_OK) {
    *error = "cannot load the private key " + proxy_.ssh.private_key +
             (passphrase ? " (is privateKeyPassphrase right?)"
                         : " (if it is encrypted, set privateKeyPassphrase)");
    return false;
  }
  const int rc = ssh_userauth_publickey(ssh_, nullptr, key);
  ssh_key_free(key);
  if (rc == SSH_AUTH_SUCCESS) return true;
  if (rc == SSH_AUTH_DENIED || rc == SSH_AUTH_PARTIAL) {
    *error = "the server " + proxy_.address.ToString() + " rejected the key " +
             proxy_.ssh.private_key + " for user '" + proxy_.ssh.username + "'";
  } else {
    *error = std::string("authentication failed: ") + ssh_get_error(ssh_);
  }
  return false;
}

bool SshSession::Poll(bool* drained) {
  if (drained) *drained = false;
  // libssh reads at most 4 KiB per turn; a turn that finds nothing to do
  // (SSH_AGAIN: its poll saw neither input nor room for pending output)
  // means the socket is drained.
  for (int i = 0; i < 256; ++i) {
    const int rc = ssh_event_dopoll(event_, 0);
    if (rc == SSH_ERROR || !ssh_is_connected(ssh_)) return false;
    if (rc == SSH_AGAIN) {
      if (drained) *drained = true;
      break;
    }
  }
  return true;
}

void SshSession::Flush() {
  if (flush_posted_ || !up_) return;
  flush_posted_ = true;
  asio::post(*io_, [this, gen = generation_] {
    flush_posted_ = false;
    if (!Up(gen)) return;
    if (!Poll()) {
      SessionDown(std::string("the session broke: ") + ssh_get_error(ssh_),
                  config::LogLevel::kWarning);
      return;
    }
    WakeForProgress();
    // Output left over means the socket's buffer is full; its becoming
    // writable again is an edge the reactor reports.
    if ((ssh_get_poll_flags(ssh_) & SSH_WRITE_PENDING) && !write_waiting_) {
      write_waiting_ = true;
      Spawn(WriteWait(gen), "the session writer");
    }
  });
}

asio::awaitable<void> SshSession::WriteWait(std::uint64_t gen) {
  boost::system::error_code ec;
  co_await socket_->async_wait(asio::posix::stream_descriptor::wait_write,
                               asio::redirect_error(asio::use_awaitable, ec));
  if (Up(gen)) write_waiting_ = false;
  if (!ec && Up(gen)) Flush();
}

asio::awaitable<void> SshSession::ReadLoop(std::uint64_t gen) {
  bool drained = true;
  while (Up(gen)) {
    boost::system::error_code ec;
    // Waited for only once nothing is left unread: the reactor reports
    // readiness by edges.
    if (drained) {
      co_await socket_->async_wait(asio::posix::stream_descriptor::wait_read,
                                   asio::redirect_error(asio::use_awaitable, ec));
    } else {
      co_await asio::post(*io_, asio::use_awaitable);  // let the channels run
    }
    if (!Up(gen)) break;
    last_rx_ = Clock::now();
    const bool ok = Poll(&drained);
    if (!ok) {
      SessionDown(std::string("the session ended: ") +
                      (ssh_get_error(ssh_)[0] ? ssh_get_error(ssh_) : "closed by the server"),
                  config::LogLevel::kWarning);
      break;
    }
    WakeForProgress();
    if ((ssh_get_poll_flags(ssh_) & SSH_WRITE_PENDING) && !write_waiting_) Flush();
  }
}

asio::awaitable<void> SshSession::KeepaliveLoop(std::uint64_t gen) {
  const auto interval = std::chrono::duration_cast<Clock::duration>(proxy_.ssh.keepalive_interval);
  while (Up(gen)) {
    keepalive_.expires_after(interval / 4);
    boost::system::error_code ec;
    co_await keepalive_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!Up(gen)) break;
    // Whoever read it (the reader, a flush, a channel being opened), what
    // came in shows the server is there.
    if (counters_.in_bytes != seen_in_) {
      seen_in_ = counters_.in_bytes;
      last_rx_ = Clock::now();
    }
    const auto idle = Clock::now() - last_rx_;
    if (idle > interval + interval / 2) {
      SessionDown(
          "no answer from the server for " +
              std::to_string(std::chrono::duration_cast<std::chrono::seconds>(idle).count()) +
              " s (keepaliveInterval " + std::to_string(proxy_.ssh.keepalive_interval.count()) +
              " s)",
          config::LogLevel::kWarning);
      break;
    }
    if (idle >= interval / 4) {
      // keepalive@openssh.com with want-reply: any answer, even a refusal,
      // shows that the server is there. No shell, no command.
      ssh_send_keepalive(ssh_);
      Flush();
    }
  }
}

void SshSession::SessionDown(const std::string& why, config::LogLevel level) {
  if (!up_) return;
  up_ = false;
  last_error_ = why;
  log().Write(kModule, level,
              prefix_ + why + "; " + std::to_string(channels_.size()) + " channel(s) reset" +
                  (stopping_ || retired_ ? "" : ", reconnecting"));
  // Channels end with a reset: their data may be incomplete.
  auto channels = std::move(channels_);
  channels_.clear();
  for (const auto& [key, c] : channels) {
    c->channel = nullptr;  // freed with the session below
    End(*c, true, "the SSH session ended (" + why + ")");
  }
  if (socket_) {
    socket_->cancel();
    socket_->release();
    socket_.reset();
  }
  write_waiting_ = false;
  keepalive_.cancel();
  if (event_) {
    ssh_event_remove_session(event_, ssh_);
    ssh_event_free(event_);
    event_ = nullptr;
  }
  ssh_disconnect(ssh_);
  ssh_free(ssh_);
  ssh_ = nullptr;
  WakeAll();
}

void SshSession::MaybeRetire() {
  if (retired_ && up_ && channels_.empty() && opens_ == 0) {
    SessionDown("closed: no connection uses it since the configuration was reloaded",
                config::LogLevel::kInfo);
  }
}

// Opens a direct-tcpip channel, or asks again whether it is open: SSH_OK,
// SSH_AGAIN while the server has not answered, SSH_ERROR. libssh reads the
// session's socket for that (what it reads the reader never sees: see
// KeepaliveLoop).
int SshSession::AskOpen(ssh_channel channel, const Target& target) {
  return ssh_channel_open_forward(channel, target.host.c_str(), target.port, "127.0.0.1", 0);
}

// A channel whose connection gave up before the server answered its open
// (the server's connect to the target is slow) may still be confirmed.
// Freed at once, it would be forgotten by libssh, which ignores a
// confirmation for a channel it does not know, while the server kept the
// channel and its connection to the target open for as long as the
// session lasts. So it is kept until the server answers, then closed.
asio::awaitable<void> SshSession::CloseWhenAnswered(std::shared_ptr<Channel> c, Target target) {
  // A server that never answers at all: given up on, not polled forever.
  const Clock::time_point give_up = Clock::now() + std::chrono::minutes(5);
  int rc = SSH_AGAIN;
  while (Up(c->gen) && Clock::now() < give_up) {
    // Asked again (it polls the socket, so not often): SSH_OK once the
    // server confirmed, SSH_ERROR once it refused.
    rc = AskOpen(c->channel, target);
    if (rc != SSH_AGAIN) break;
    // Woken at once by a confirmation; a refusal is seen at the next ask.
    co_await Sleep(std::min(give_up, Clock::now() + std::chrono::seconds(1)), kState, c->channel);
  }
  if (!Up(c->gen)) co_return;  // libssh freed it with the session
  ssh_remove_channel_callbacks(c->channel, &c->callbacks);
  if (rc == SSH_OK) {
    log().Debug(kModule, prefix_ + "closed the channel to " + c->what +
                             " that the server opened after its connection had given up");
    ssh_channel_close(c->channel);
  }
  ssh_channel_free(c->channel);
  c->channel = nullptr;
  Flush();
}

// --- channels ---------------------------------------------------------------

int SshSession::OnData(ssh_session, ssh_channel, void* data, std::uint32_t len, int is_stderr,
                       void* user) {
  auto* c = static_cast<Channel*>(user);
  if (is_stderr) return static_cast<int>(len);  // direct-tcpip has none; dropped
  if (c->ended) return static_cast<int>(len);
  if (!c->registered) {
    c->stalled = true;  // kept by libssh until the client's socket is here
    return 0;
  }
  if (c->stalled) return 0;
  const ssize_t n = ::send(c->local.native_handle(), data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    // The client is gone (it reset): the channel goes too.
    const std::string why = std::strerror(errno);
    asio::post(c->session.io(), [s = &c->session, weak = c->self, why] {
      if (auto p = weak.lock()) s->End(*p, true, why);
    });
    return static_cast<int>(len);
  }
  const std::uint32_t sent = n < 0 ? 0 : static_cast<std::uint32_t>(n);
  c->to_client += sent;
  c->watching.Moved(sent);
  if (sent < len) {
    c->stalled = true;
    asio::post(c->session.io(), [s = &c->session, weak = c->self] {
      if (auto p = weak.lock()) s->StartDrain(p);
    });
  }
  return static_cast<int>(sent);
}

void SshSession::OnEof(ssh_session, ssh_channel, void* user) {
  auto* c = static_cast<Channel*>(user);
  c->remote_eof = true;
  if (!c->registered) return;
  asio::post(c->session.io(), [s = &c->session, weak = c->self] {
    auto p = weak.lock();
    if (p && !p->stalled) s->PassEof(*p);
  });
}

void SshSession::OnClose(ssh_session, ssh_channel, void* user) {
  auto* c = static_cast<Channel*>(user);
  c->remote_eof = true;
  c->remote_closed = true;
  if (!c->registered) return;
  asio::post(c->session.io(), [s = &c->session, weak = c->self] {
    if (auto p = weak.lock()) {
      if (!p->stalled) s->PassEof(*p);
      s->MaybeFinish(*p);
    }
  });
}

void SshSession::StartDrain(const std::shared_ptr<Channel>& c) {
  if (c->draining || c->ended) return;
  c->draining = true;
  Spawn(Drain(c), "a channel's drain");
}

// Writes what libssh holds for a stalled channel, as fast as the local end
// takes it; then the data callback takes over again.
asio::awaitable<void> SshSession::Drain(std::shared_ptr<Channel> c) {
  std::vector<std::uint8_t>& buffer = buffer_;
  while (!c->ended && Up(c->gen)) {
    if (c->backlog.empty()) {
      const int n = ssh_channel_read_nonblocking(c->channel, buffer.data(),
                                                 static_cast<std::uint32_t>(buffer.size()), 0);
      if (n == 0) {
        c->stalled = false;
        break;
      }
      if (n == SSH_EOF) {
        c->stalled = false;
        c->remote_eof = true;
        break;
      }
      if (n < 0) {
        End(*c, true, std::string("reading the channel: ") + ssh_get_error(ssh_));
        break;
      }
      c->backlog.assign(buffer.begin(), buffer.begin() + n);
      Flush();  // the read may have grown the window
    }
    const ssize_t m = ::send(c->local.native_handle(), c->backlog.data(), c->backlog.size(),
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (m > 0) {
      c->backlog.erase(c->backlog.begin(), c->backlog.begin() + m);
      c->to_client += static_cast<std::uint64_t>(m);
      c->watching.Moved(static_cast<std::uint64_t>(m));
      continue;
    }
    if (m < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      End(*c, true, std::strerror(errno));
      break;
    }
    boost::system::error_code ec;
    co_await c->local.async_wait(asio::posix::stream_descriptor::wait_write,
                                 asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
  }
  c->draining = false;
  if (!c->ended && !c->stalled && c->remote_eof) PassEof(*c);
}

void SshSession::PassEof(Channel& c) {
  if (c.down_done || c.ended) return;
  c.down_done = true;
  ::shutdown(c.local.native_handle(), SHUT_WR);
  MaybeFinish(c);
}

void SshSession::MaybeFinish(Channel& c) {
  if (c.ended) return;
  if (c.down_done && (c.up_done || c.remote_closed)) End(c, false, "");
}

void SshSession::End(Channel& c, bool reset, const std::string& why) {
  if (c.ended) return;
  c.ended = true;
  if (!why.empty() && log().Enabled(kModule, config::LogLevel::kDebug)) {
    log().Debug(kModule, prefix_ + "channel to " + c.what + " reset: " + why);
  }
  if (reset) c.end_reason = why.empty() ? "reset" : why;
  boost::system::error_code ignored;
  if (reset && c.local.is_open()) {
    // The client learns that the connection failed, instead of taking its
    // end for the end of the answer.
    const linger abort{1, 0};
    ::setsockopt(c.local.native_handle(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  }
  c.local.close(ignored);
  c.watching = IdleWatch::Watching();
  if (c.done) c.done->cancel();
  if (c.channel) {
    ssh_remove_channel_callbacks(c.channel, &c.callbacks);
    ssh_channel_close(c.channel);
    ssh_channel_free(c.channel);
    c.channel = nullptr;
    Flush();
  }
  channels_.erase(&c);
  // Posted: End runs inside the loops of the channel's own coroutines.
  if (retired_ && channels_.empty()) asio::post(*io_, [this] { MaybeRetire(); });
}

// Client to server: as much as the remote window allows, only while the
// session's output is flushed.
asio::awaitable<void> SshSession::PumpUp(std::shared_ptr<Channel> c) {
  std::vector<std::uint8_t>& buffer = buffer_;
  boost::system::error_code ec;
  while (!c->ended && Up(c->gen)) {
    co_await c->local.async_wait(asio::posix::stream_descriptor::wait_read,
                                 asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    for (;;) {
      while (!c->ended && Up(c->gen) &&
             (ssh_channel_window_size(c->channel) == 0 || write_waiting_)) {
        Flush();
        co_await Sleep(Clock::time_point::max(), kWritable);
      }
      if (c->ended || !Up(c->gen)) co_return;
      const std::size_t room =
          std::min<std::size_t>(buffer.size(), ssh_channel_window_size(c->channel));
      const ssize_t n = ::recv(c->local.native_handle(), buffer.data(), room, MSG_DONTWAIT);
      if (n > 0) {
        c->to_server += static_cast<std::uint64_t>(n);
        c->watching.Moved(static_cast<std::uint64_t>(n));
        std::size_t done = 0;
        const std::uint8_t* data = buffer.data();
        std::vector<std::uint8_t> held;  // buffer_ is shared: kept here across a wait
        while (done < static_cast<std::size_t>(n)) {
          const int w =
              ssh_channel_write(c->channel, data + done,
                                static_cast<std::uint32_t>(static_cast<std::size_t>(n) - done));
          if (w < 0 && w != SSH_AGAIN) {
            End(*c, true, std::string("writing to the channel: ") + ssh_get_error(ssh_));
            co_return;
          }
          Flush();
          if (w > 0) {
            done += static_cast<std::size_t>(w);
          } else {
            // A key re-exchange holds writes back for a moment.
            if (held.empty()) {
              held.assign(data, data + n);
              data = held.data();
            }
            co_await Sleep(Clock::now() + std::chrono::milliseconds(100), kWritable);
            if (c->ended || !Up(c->gen)) co_return;
          }
        }
        continue;
      }
      if (n == 0) {
        c->up_done = true;
        ssh_channel_send_eof(c->channel);
        Flush();
        MaybeFinish(*c);
        co_return;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      End(*c, true, std::string("the client's side: ") + std::strerror(errno));
      co_return;
    }
  }
}

class SshConnector : public Connector {
 public:
  SshConnector(const config::Proxy& proxy, ConnectorContext& context)
      : proxy_(proxy), context_(context) {}

  asio::awaitable<std::optional<Stream>> Connect(const Target& target, Clock::time_point deadline,
                                                 std::string* error) override {
    auto executor = co_await asio::this_coro::executor;
    if (stopped_) {
      *error = "ssh proxy '" + proxy_.name + "': tunnels is stopping";
      co_return std::nullopt;
    }
    if (!session_) {
      session_ = std::make_unique<SshSession>(proxy_, context_, executor);
      if (retired_) session_->Retire();
    }
    OpenResult r = co_await asio::co_spawn(session_->io(), session_->Open(target, deadline),
                                           asio::use_awaitable);
    if (!r.ok) {
      *error = "ssh proxy '" + proxy_.name + "' (" + proxy_.address.ToString() + "): " + r.error;
      co_return std::nullopt;
    }
    Stream stream{tcp::socket(executor), {}, {}};
    // Ends the channel if the engine never carries it (it stopped meanwhile).
    auto unclaimed = std::make_shared<Unclaimed>(*session_, std::move(r.channel));
    stream.carry = [unclaimed](std::shared_ptr<tcp::socket> client,
                               Clock::duration idle_timeout) -> asio::awaitable<RelayResult> {
      return Carry(unclaimed, std::move(client), idle_timeout);
    };
    co_return stream;
  }

  const std::string& name() const override { return proxy_.name; }

  void Retire() override {
    retired_ = true;
    if (session_) session_->Retire();
  }

  void Stop() override {
    stopped_ = true;
    if (session_) session_->Stop();
  }

 private:
  // A channel opened for the engine and not yet carried.
  struct Unclaimed {
    Unclaimed(SshSession& s, std::weak_ptr<Channel> c) : session(s), channel(std::move(c)) {}
    ~Unclaimed() {
      if (!claimed && !session.stopped()) {
        asio::post(session.io(), [s = &session, c = std::move(channel)] { s->Abandon(c); });
      }
    }
    SshSession& session;
    std::weak_ptr<Channel> channel;
    bool claimed = false;
  };

  // On the engine's thread: the client's socket leaves the engine's reactor
  // (a duplicate of its descriptor goes to the session thread, and the
  // engine's is closed, so that the engine is not woken by its traffic).
  static asio::awaitable<RelayResult> Carry(std::shared_ptr<Unclaimed> unclaimed,
                                            std::shared_ptr<tcp::socket> client,
                                            Clock::duration idle_timeout) {
    unclaimed->claimed = true;
    RelayResult result;
    if (unclaimed->session.stopped()) {
      // Its thread has ended: nothing would ever complete this connection.
      result.error = "tunnels is stopping";
      boost::system::error_code ignored;
      client->set_option(asio::socket_base::linger(true, 0), ignored);
      client->close(ignored);
      co_return result;
    }
    const int fd = ::fcntl(client->native_handle(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
      result.error = Errno("duplicating the client's socket");
      unclaimed->claimed = false;  // the channel is ended with it
      boost::system::error_code ignored;
      client->set_option(asio::socket_base::linger(true, 0), ignored);
      client->close(ignored);
      co_return result;
    }
    boost::system::error_code ignored;
    client->close(ignored);
    SshSession& session = unclaimed->session;
    co_return co_await asio::co_spawn(
        session.io(), session.Carry(unclaimed->channel, fd, idle_timeout), asio::use_awaitable);
  }

  config::Proxy proxy_;
  ConnectorContext& context_;
  std::unique_ptr<SshSession> session_;
  bool retired_ = false;
  bool stopped_ = false;
};

}  // namespace

std::unique_ptr<Connector> MakeSshConnector(const config::Proxy& proxy, ConnectorContext& context) {
  return std::make_unique<SshConnector>(proxy, context);
}

}  // namespace tunnels::proxies
