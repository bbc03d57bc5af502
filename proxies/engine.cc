#include "proxies/engine.h"

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "proxies/name_resolver.h"
#include "proxies/relay.h"
#include "proxies/ssh_connector.h"

namespace tunnels::proxies {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

template <typename T>
std::string Text(const T& v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// Ends a client connection with a reset, so that the program learns at once
// that the connection is refused instead of waiting for a timeout.
void Reset(tcp::socket& socket) {
  boost::system::error_code ignored;
  socket.set_option(asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

// Releases a fake address's hold when the connection ends, however it ends.
// A connection still suspended when tunnels stops is destroyed with the
// io_context, after the engine and possibly the pool: then there is nothing
// to release into (`engine_alive` has expired).
class Hold {
 public:
  Hold(resolver::FakePool& pool, std::uint32_t address, std::weak_ptr<const bool> engine_alive)
      : pool_(pool), address_(address), engine_alive_(std::move(engine_alive)) {}
  ~Hold() {
    if (!engine_alive_.expired()) pool_.Release(address_);
  }
  Hold(const Hold&) = delete;
  Hold& operator=(const Hold&) = delete;

 private:
  resolver::FakePool& pool_;
  std::uint32_t address_;
  std::weak_ptr<const bool> engine_alive_;
};

// The server's address, when the stream has a socket of its own.
tcp::endpoint PeerOf(const Stream& stream) {
  boost::system::error_code ec;
  if (stream.carry) return {};
  const tcp::endpoint peer = stream.socket.remote_endpoint(ec);
  return ec ? tcp::endpoint{} : peer;
}

// How the [NET] line names the way a connection went: the proxy, and for
// `direct` the address connected to, since which of the name's addresses
// answered is what a user checks a direct rule by.
std::string Via(const std::string& proxy, const tcp::endpoint& peer) {
  return proxy == "direct" && peer.port() != 0 ? proxy + " (" + Text(peer) + ")" : proxy;
}

}  // namespace

struct Engine::Impl {
  // First, so that it expires last: see Hold.
  std::shared_ptr<const bool> alive = std::make_shared<const bool>(true);
  // What a connection is decided and carried by: one configuration's rules
  // and connectors. A connection holds the generation it started with, so a
  // reload changes new connections only.
  struct Generation {
    Generation(std::shared_ptr<const config::Config> c, std::shared_ptr<const config::RuleSet> r,
               NameResolver& resolver, const config::Log& l)
        : config(std::move(c)),
          rules(std::move(r)),
          context{resolver, l, config->options.random_credentials_length} {}
    std::shared_ptr<const config::Config> config;
    std::shared_ptr<const config::RuleSet> rules;
    ConnectorContext context;
    std::map<std::string, std::unique_ptr<Connector>> connectors;
  };

  asio::io_context& io;
  Options options;
  resolver::FakePool& pool;
  const config::Log& log;
  NameResolver resolver;
  std::shared_ptr<Generation> current;  // for new connections
  // Every generation still alive: the current one and those that live
  // connections hold, for Shutdown.
  std::vector<std::weak_ptr<Generation>> generations;
  tcp::acceptor acceptor;
  std::size_t active = 0;
  std::size_t relaying = 0;  // of `active`: past their proxy's handshake
  bool stopped = false;
  std::mt19937_64 random{std::random_device{}()};
  // The cap on connections at once, below the limit of open files (each
  // relayed connection takes two descriptors), leaving a reserve for DNS
  // (its TCP slots, upstream sockets) and control: set by Start().
  std::size_t max_total = 0;
  std::map<asio::ip::address, std::size_t> per_source;  // connections by client address
  bool capping = false;  // the cap bit and it was logged: once until it lets go
  // Sources whose own cap bit and was logged: once until all their
  // connections have ended, whatever other sources' connections do.
  std::set<asio::ip::address> capped_sources;
  IdleWatch idle;  // its timeout is the current generation's

  Impl(asio::io_context& io_context, Options o, resolver::FakePool& p, resolver::Upstream& upstream,
       const config::Log& l)
      : io(io_context),
        options(o),
        pool(p),
        log(l),
        resolver(upstream, &l),
        acceptor(io_context),
        idle(io_context.get_executor()) {}

  std::shared_ptr<Generation> MakeGeneration(std::shared_ptr<const config::Config> config,
                                             std::shared_ptr<const config::RuleSet> rules) {
    idle.SetTimeout(config->options.connection_idle_timeout);
    resolver.SetPolicy({config->options.private_addresses.address,
                        config->options.private_addresses.length,
                        config->options.allow_private_answers});
    auto g = std::make_shared<Generation>(std::move(config), std::move(rules), resolver, log);
    g->context.owner = g;
    AddConnectors(*g->config, g->context, g->connectors);
    std::erase_if(generations, [](const std::weak_ptr<Generation>& w) { return w.expired(); });
    generations.push_back(g);
    return g;
  }

  static void AddConnectors(const config::Config& c, ConnectorContext& context,
                            std::map<std::string, std::unique_ptr<Connector>>& connectors) {
    connectors["direct"] = MakeDirectConnector(context);
    for (const auto& [name, proxy] : c.proxies) {
      switch (proxy.type) {
        case config::ProxyType::kSocks5:
          connectors[name] = MakeSocks5Connector(proxy, context);
          break;
        case config::ProxyType::kHttp:
          connectors[name] = MakeHttpConnector(proxy, context);
          break;
        case config::ProxyType::kSsh:
          connectors[name] = MakeSshConnector(proxy, context);
          break;
        default:
          break;
      }
    }
  }

  asio::awaitable<void> Accept();
  asio::awaitable<void> Serve(std::shared_ptr<tcp::socket> client);
  // Relays a connection its connector has made, then logs its [NET] line.
  asio::awaitable<void> Carry(std::shared_ptr<tcp::socket> client, Stream stream, std::string what,
                              std::string proxy);
};

asio::awaitable<void> Engine::Impl::Accept() {
  asio::steady_timer backoff(io);
  while (!stopped) {
    auto client = std::make_shared<tcp::socket>(io);
    boost::system::error_code ec;
    co_await acceptor.async_accept(*client, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (stopped || ec == asio::error::operation_aborted) break;
      // Out of file descriptors and the like: say so, wait a moment rather
      // than spin, and keep serving the connections that exist.
      log.Limited("ENGINE", config::LogLevel::kWarning, "accepting a connection: " + ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    boost::system::error_code peer_ec;
    const asio::ip::address source = client->remote_endpoint(peer_ec).address();
    const std::size_t per_source_cap = current->config->options.max_connections_per_source;
    std::size_t& from_source = per_source[source];
    const bool total_full = active >= max_total;
    if (total_full || (per_source_cap != 0 && from_source >= per_source_cap)) {
      if (from_source == 0) per_source.erase(source);
      // One line while the cap bites, not one per refused connection.
      const bool first =
          total_full ? !std::exchange(capping, true) : capped_sources.insert(source).second;
      if (first) {
        log.Warning("ENGINE",
                    "refusing new connections: " + std::to_string(active) + " at once (cap " +
                        std::to_string(max_total) + ", from the limit of open files), " +
                        std::to_string(from_source) + " from " + source.to_string() +
                        " (maxConnectionsPerSource " + std::to_string(per_source_cap) + ")");
      }
      Reset(*client);
      continue;
    }
    ++from_source;
    ++active;
    asio::co_spawn(io, Serve(client), [this, source](std::exception_ptr e) {
      --active;
      if (const auto it = per_source.find(source); it != per_source.end() && --it->second == 0) {
        per_source.erase(it);
        capped_sources.erase(source);
      }
      if (capping && active < max_total * 9 / 10) capping = false;
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log.Limited("ENGINE", config::LogLevel::kWarning,
                    std::string("a connection ended on an internal error: ") + ex.what());
      }
    });
  }
}

asio::awaitable<void> Engine::Impl::Serve(std::shared_ptr<tcp::socket> client) {
  boost::system::error_code ec;
  const tcp::endpoint local = client->local_endpoint(ec);
  if (ec || !local.address().is_v4()) {
    Reset(*client);
    co_return;
  }
  const std::uint32_t address = local.address().to_v4().to_uint();
  const std::uint16_t port = local.port();
  // Only refusals name the address: no formatting on the way of a relayed
  // connection.
  auto where = [&local] { return Text(local); };
  if (!pool.Contains(address)) {
    log.Limited("ENGINE", config::LogLevel::kInfo,
                "refused a connection to " + where() + ": not a fake address");
    Reset(*client);
    co_return;
  }
  if (address == pool.blackhole()) {
    log.Limited("ENGINE", config::LogLevel::kDebug,
                "refused a connection to the blackhole " + where());
    Reset(*client);
    co_return;
  }
  const std::optional<std::string> name = pool.Hold(address);
  if (!name) {
    log.Limited("ENGINE", config::LogLevel::kInfo,
                "refused a connection to " + where() +
                    ": no name is mapped to this address (it expired, or tunnels restarted)");
    Reset(*client);
    co_return;
  }
  Hold hold(pool, address, alive);
  const std::shared_ptr<Generation> generation = current;
  const config::Decision d = generation->rules->Decide(*name, port, config::Protocol::kTcp);
  const std::string what = *name + ":" + std::to_string(port);
  if (d.action == config::Action::kRefuse || d.action == config::Action::kBlock) {
    log.Limited("ENGINE", config::LogLevel::kInfo,
                "refused " + what + ": " +
                    (d.action == config::Action::kBlock && d.rule
                         ? "blocked by the rule at " + d.rule->where.ToString()
                         : std::string("no rule for this port")));
    Reset(*client);
    co_return;
  }

  Target target{*name, port};
  if (!d.forced_addresses.empty()) {
    const config::Target& forced = d.forced_addresses[random() % d.forced_addresses.size()];
    target = Target{forced.host, forced.port.value_or(port), /*user_written=*/true};
  }
  std::vector<std::string> chain(d.proxies.begin(), d.proxies.end());
  if (d.action == config::Action::kDirect) chain = {"direct"};

  std::string errors;
  for (const std::string& proxy : chain) {
    const auto it = generation->connectors.find(proxy);
    if (it == generation->connectors.end()) {
      errors += (errors.empty() ? "" : "; ") + proxy + ": this proxy type is not supported yet";
      continue;
    }
    std::string error;
    std::optional<Stream> stream =
        co_await it->second->Connect(target, Clock::now() + options.connect_timeout, &error);
    if (stopped) {
      Reset(*client);
      co_return;
    }
    if (!stream) {
      errors += (errors.empty() ? "" : "; ") + error;
      continue;
    }
    if (log.Enabled("ENGINE", config::LogLevel::kDebug)) {
      log.Debug("ENGINE", what + " via " + proxy +
                              (target.host != *name ? " to " + target.ToString() : std::string()));
    }
    co_await Carry(std::move(client), std::move(*stream), what, proxy);
    co_return;
  }
  log.Limited("ENGINE", config::LogLevel::kWarning, "cannot connect " + what + ": " + errors);
  Reset(*client);
}

asio::awaitable<void> Engine::Impl::Carry(std::shared_ptr<tcp::socket> client, Stream stream,
                                          std::string what, std::string proxy) {
  struct Count {
    std::size_t& n;
    explicit Count(std::size_t& c) : n(++c) {}
    ~Count() { --n; }
  } relaying_now(relaying);
  const tcp::endpoint peer = PeerOf(stream);
  const Clock::time_point start = Clock::now();
  RelayResult r;
  if (stream.carry) {
    r = co_await stream.carry(client, idle.timeout());
  } else {
    auto server = std::make_shared<tcp::socket>(std::move(stream.socket));
    r = co_await Relay(client, server, std::move(stream.pending), &idle);
  }
  // One line per connection, at its end (as many as connections, whatever
  // the peers do: not rate-limited); formatted only when shown.
  if (log.Enabled("NET", config::LogLevel::kInfo)) {
    char duration[32];
    std::snprintf(duration, sizeof duration, "%.3f s",
                  std::chrono::duration<double>(Clock::now() - start).count());
    log.Info("NET", what + " via " + Via(proxy, peer) + " -> " +
                        (r.error.empty() ? "closed" : r.error) + ", " +
                        std::to_string(r.to_server) + " bytes up, " + std::to_string(r.to_client) +
                        " down, " + duration);
  }
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::Create(asio::io_context& io, Options options,
                                       std::shared_ptr<const config::Config> config,
                                       std::shared_ptr<const config::RuleSet> rules,
                                       resolver::FakePool& pool, resolver::Upstream& upstream,
                                       const config::Log& log, std::string* error) {
  auto impl = std::make_unique<Impl>(io, options, pool, upstream, log);
  impl->current = impl->MakeGeneration(std::move(config), std::move(rules));
  const tcp::endpoint at(options.listen_address, options.port);
  boost::system::error_code ec;
  impl->acceptor.open(at.protocol(), ec);
  if (!ec) {
    // The listener must accept connections whose destination is not one of
    // its own addresses (the fake ones): that is what IP_TRANSPARENT allows,
    // and it needs CAP_NET_ADMIN.
    const int on = 1;
    if (::setsockopt(impl->acceptor.native_handle(), SOL_IP, IP_TRANSPARENT, &on, sizeof on) != 0) {
      ec.assign(errno, boost::system::system_category());
      *error = "cannot set IP_TRANSPARENT on the engine's listener: " + ec.message() +
               " (it needs CAP_NET_ADMIN: run as root, or inside a user namespace you own)";
      return nullptr;
    }
  }
  if (!ec) impl->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  // Accepted sockets inherit TCP_NODELAY from the listener: whatever the
  // server sends reaches the client at once, as it would without tunnels,
  // and no setsockopt per connection is needed.
  if (!ec) impl->acceptor.set_option(tcp::no_delay(true), ec);
  if (!ec) impl->acceptor.bind(at, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = "cannot listen on tcp " + Text(at) + " for the engine: " + ec.message();
    return nullptr;
  }
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

std::uint16_t Engine::port() const { return impl_->acceptor.local_endpoint().port(); }
std::size_t Engine::active_connections() const { return impl_->active; }
std::size_t Engine::relaying_connections() const { return impl_->relaying; }

void Engine::Start() {
  // After the launcher raised the soft limit to the hard one.
  rlimit limit{};
  const std::size_t files =
      ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
          ? static_cast<std::size_t>(limit.rlim_cur)
          : std::size_t{1} << 20;
  constexpr std::size_t kReserve = 512;  // DNS's 256 TCP slots, upstream sockets, control
  impl_->max_total = files > kReserve + 64 ? (files - kReserve) / 2 : 32;
  asio::co_spawn(impl_->io, impl_->Accept(), [this](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      impl_->log.Error("ENGINE", std::string("the listener stopped: ") + ex.what());
    }
  });
}

void Engine::Update(std::shared_ptr<const config::Config> config,
                    std::shared_ptr<const config::RuleSet> rules) {
  const std::shared_ptr<Impl::Generation> old =
      std::exchange(impl_->current, impl_->MakeGeneration(std::move(config), std::move(rules)));
  // Kept alive by a long connection, the old generation would otherwise
  // keep its ssh sessions up (keepalives, reconnections) for nothing.
  for (const auto& [name, connector] : old->connectors) connector->Retire();
  // A reload is when a user expects names to be looked up afresh (as
  // dnsmasq's cache is cleared by SIGHUP), e.g. after fixing a DNS record.
  impl_->resolver.ForgetAll();
}

void Engine::Stop() {
  impl_->stopped = true;
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
}

void Engine::Shutdown() {
  Stop();
  // Held while they stop: a coroutine that a connector's thread held, ended
  // by its Stop, may have held the last reference to its generation.
  std::vector<std::shared_ptr<Impl::Generation>> live;
  for (const auto& w : impl_->generations) {
    if (auto g = w.lock()) live.push_back(std::move(g));
  }
  for (const auto& g : live) {
    for (const auto& [name, connector] : g->connectors) connector->Stop();
  }
}

}  // namespace tunnels::proxies
