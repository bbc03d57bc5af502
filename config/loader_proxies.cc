// Proxies.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "config/loader.h"
#include "config/text.h"

namespace tunnels::config::internal {

namespace {

const std::vector<std::string>& ProxyKeys(ProxyType type) {
  static const std::vector<std::string> socks = {"type", "address", "port", "username", "password"};
  static const std::vector<std::string> ssh = {
      "type",           "address",           "port",
      "username",       "privateKey",        "privateKeyPassphrase",
      "rsaFingerprint", "ecdsaFingerprint",  "ed25519Fingerprint",
      "knownHostsFile", "parentSocks5Proxy", "keepaliveInterval"};
  return type == ProxyType::kSsh ? ssh : socks;
}

std::optional<ProxyType> ParseProxyType(const std::string& s) {
  if (s == "socks5") return ProxyType::kSocks5;
  if (s == "http") return ProxyType::kHttp;
  if (s == "ssh") return ProxyType::kSsh;
  return std::nullopt;
}

bool IsBase64(std::string_view s) {
  while (!s.empty() && s.back() == '=') s.remove_suffix(1);
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/';
  });
}

// "SHA256:base64" (OpenSSH) or 16 colon-separated hex bytes (MD5, as the
// original tunnels and older OpenSSH print).
std::optional<Fingerprint> ParseFingerprint(std::string text, std::string* error) {
  Fingerprint f;
  if (text.starts_with("SHA256:")) {
    std::string b64 = text.substr(7);
    while (!b64.empty() && b64.back() == '=') b64.pop_back();
    if (b64.size() != 43 || !IsBase64(b64)) {
      *error =
          "a SHA256 fingerprint is 'SHA256:' and 43 base64 characters, as ssh-keygen -lf "
          "prints";
      return std::nullopt;
    }
    f.form = Fingerprint::Form::kSha256Base64;
    f.value = b64;
    return f;
  }
  if (text.starts_with("MD5:")) text = text.substr(4);
  const std::string lower = ToLower(text);
  bool ok = lower.size() == 47;
  for (std::size_t i = 0; ok && i < lower.size(); ++i) {
    ok = (i % 3 == 2) ? lower[i] == ':' : std::isxdigit(static_cast<unsigned char>(lower[i])) != 0;
  }
  if (!ok) {
    *error =
        "expected an MD5 fingerprint (16 hex bytes separated by ':') or 'SHA256:' and "
        "base64";
    return std::nullopt;
  }
  f.form = Fingerprint::Form::kMd5Hex;
  f.value = lower;
  return f;
}

std::string ReadableError(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::strerror(errno);
  ::close(fd);
  return "";
}

// The value of a field of the proxy, if it has one.
std::optional<std::string> Field(const ProxyFields& fields, const std::string& key) {
  if (const auto it = fields.find(key); it != fields.end()) return it->second.Scalar();
  return std::nullopt;
}

}  // namespace

void Loader::ReadProxy(const std::string& name, const YAML::Node& key_node,
                       const YAML::Node& value) {
  const SourceLocation here = Where(key_node);
  if (name == "direct" || name == "block") {
    Error(here, "'" + name + "' is a built-in proxy and cannot be redefined");
    return;
  }
  if (name.empty() || name.find_first_of(", \t") != std::string::npos) {
    Error(here, "proxy name '" + name + "' may not contain commas or spaces");
    return;
  }
  if (const auto it = proxies_.find(name); it != proxies_.end()) {
    Error(here, "proxy '" + name + "' is already defined at " + it->second.where.ToString());
    return;
  }
  Proxy proxy;
  proxy.name = name;
  proxy.where = here;
  // A proxy with errors is still recorded, so that the rules that use it are
  // not reported a second time as naming an unknown proxy.
  auto keep = [&] { proxies_.emplace(name, proxy); };
  if (!value.IsMap()) {
    Error(value.IsNull() ? here : Where(value),
          "proxy '" + name + "' must be a mapping with at least 'type'");
    return keep();
  }
  const YAML::Node type_node = value["type"];
  if (!type_node) {
    Error(here, "proxy '" + name + "' has no 'type' (socks5, http or ssh)");
    return keep();
  }
  if (!ExpectScalar(type_node, "type")) return keep();
  const auto type = ParseProxyType(ToLower(Trim(type_node.Scalar())));
  if (!type) {
    std::string message = "proxy '" + name + "': unknown type '" + type_node.Scalar() + "'";
    if (auto hint = Closest(type_node.Scalar(), {"socks5", "http", "ssh"})) {
      message += "; did you mean '" + *hint + "'?";
    } else {
      message += " (socks5, http or ssh)";
    }
    Error(Where(type_node), message);
    return keep();
  }
  proxy.type = *type;

  ProxyFields fields;
  ForEachEntry(value, "proxy '" + name + "'",
               [&](const std::string& key, const YAML::Node& k, const YAML::Node& v) {
                 const auto& allowed = ProxyKeys(proxy.type);
                 if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
                   std::string message = "proxy '" + name + "' (" + ToString(proxy.type) +
                                         "): unknown option '" + key + "'";
                   if (auto hint = Closest(key, allowed)) {
                     message += "; did you mean '" + *hint + "'?";
                   }
                   Error(Where(k), message);
                   return;
                 }
                 if (key != "type" && ExpectScalar(v, "'" + key + "'")) fields[key] = v;
               });
  auto field = [&](const std::string& key) { return Field(fields, key); };

  if (!fields.contains("address")) {
    Error(here, "proxy '" + name + "' has no 'address'");
    return keep();
  }
  const YAML::Node& address_node = fields["address"];
  std::string address = std::string(Trim(address_node.Scalar()));
  std::optional<Credentials> credentials;
  if (proxy.type != ProxyType::kSsh) {
    // [user:password@]host[:port]; the password may itself contain ':' or '@'.
    if (const std::size_t at = address.rfind('@'); at != std::string::npos) {
      const std::string userinfo = address.substr(0, at);
      const std::size_t colon = userinfo.find(':');
      credentials = Credentials{userinfo.substr(0, colon),
                                colon == std::string::npos ? "" : userinfo.substr(colon + 1)};
      address = address.substr(at + 1);
    }
  }
  std::string error;
  const auto hp = ParseHostPort(address, &error);
  if (!hp) {
    Error(Where(address_node), "proxy '" + name + "': address: " + error);
    return keep();
  }
  proxy.address.host = hp->host;
  const std::uint16_t default_port = proxy.type == ProxyType::kSocks5 ? 1080
                                     : proxy.type == ProxyType::kHttp ? 80
                                                                      : 22;
  proxy.address.port = hp->port.value_or(default_port);
  if (auto port_text = field("port")) {
    const auto port = ParsePort(Trim(*port_text));
    if (!port) {
      Error(Where(fields["port"]),
            "proxy '" + name + "': port: '" + *port_text + "' is not a port number (1-65535)");
    } else if (hp->port && *hp->port != *port) {
      Error(Where(fields["port"]), "proxy '" + name + "': port " + std::to_string(*port) +
                                       " contradicts the port in address (" +
                                       std::to_string(*hp->port) + ")");
    } else {
      proxy.address.port = *port;
    }
  }

  if (proxy.type == ProxyType::kSsh) {
    ReadSsh(proxy, fields, here);
  } else {
    ReadCredentials(proxy, fields, std::move(credentials), address_node);
  }
  keep();
}

void Loader::ReadSsh(Proxy& proxy, const ProxyFields& fields, const SourceLocation& here) {
  const std::string& name = proxy.name;
  auto field = [&](const std::string& key) { return Field(fields, key); };
  auto read = [&](const char* key, std::string* out) {
    if (auto v = field(key)) *out = *v;
  };
  read("username", &proxy.ssh.username);
  read("privateKeyPassphrase", &proxy.ssh.private_key_passphrase);
  if (proxy.ssh.username.empty()) Error(here, "ssh proxy '" + name + "' needs a 'username'");
  if (auto key = field("privateKey")) {
    const SourceLocation kw = Where(fields.at("privateKey"));
    if (key->starts_with("~")) {
      Error(kw, "ssh proxy '" + name +
                    "': privateKey: '~' is not expanded (tunnels runs as "
                    "root); write the full path");
    } else if (!key->starts_with("/")) {
      Error(kw, "ssh proxy '" + name + "': privateKey: '" + *key + "' must be a full path");
    } else if (const std::string e = ReadableError(*key); !e.empty()) {
      const std::string message =
          "ssh proxy '" + name + "': cannot read private key '" + *key + "': " + e;
      if (load_options_.inspect_only && e == std::strerror(EACCES)) {
        // Other proxies and rules are still worth checking.
        Warning(kw, message + "; proxy '" + name + "' is not checked further");
        proxy.unusable = message;
        proxy.ssh.private_key = *key;
      } else {
        Error(kw, message);
      }
    } else {
      proxy.ssh.private_key = *key;
    }
  } else {
    Error(here, "ssh proxy '" + name + "' needs a 'privateKey' (full path to the key file)");
  }
  if (auto known = field("knownHostsFile")) {
    const SourceLocation kw = Where(fields.at("knownHostsFile"));
    if (!known->starts_with("/")) {
      Error(kw, "ssh proxy '" + name + "': knownHostsFile must be a full path");
    } else if (const std::string e = ReadableError(*known); !e.empty()) {
      Error(kw, "ssh proxy '" + name + "': cannot read knownHostsFile '" + *known + "': " + e);
    } else {
      proxy.ssh.known_hosts_file = *known;
    }
  }
  const std::array<std::pair<const char*, HostKeyType>, 3> pins = {
      {{"rsaFingerprint", HostKeyType::kRsa},
       {"ecdsaFingerprint", HostKeyType::kEcdsa},
       {"ed25519Fingerprint", HostKeyType::kEd25519}}};
  for (const auto& [key, key_type] : pins) {
    auto text = field(key);
    if (!text) continue;
    std::string ferror;
    if (auto f = ParseFingerprint(std::string(Trim(*text)), &ferror)) {
      f->key_type = key_type;
      proxy.ssh.fingerprints.push_back(*f);
    } else {
      Error(Where(fields.at(key)), "ssh proxy '" + name + "': " + key + ": " + ferror);
    }
  }
  const bool pinned = field("knownHostsFile") ||
                      std::any_of(pins.begin(), pins.end(),
                                  [&](const auto& pin) { return fields.contains(pin.first); });
  if (!pinned) {
    Error(here, "ssh proxy '" + name +
                    "' pins no host key: set rsaFingerprint, ecdsaFingerprint, "
                    "ed25519Fingerprint or knownHostsFile (tunnels never trusts an unknown "
                    "host key; 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub' on the "
                    "server prints it)");
  }
  if (auto parent = field("parentSocks5Proxy")) {
    std::string perror;
    const auto php = ParseHostPort(*parent, &perror);
    if (!php) {
      Error(Where(fields.at("parentSocks5Proxy")),
            "ssh proxy '" + name + "': parentSocks5Proxy: " + perror);
    } else {
      proxy.ssh.parent_socks5 = Endpoint{php->host, php->port.value_or(1080)};
    }
  }
  if (auto interval = field("keepaliveInterval")) {
    const auto seconds = ParseUnsigned(Trim(*interval));
    if (!seconds || *seconds < 1 || *seconds > 3600) {
      Error(Where(fields.at("keepaliveInterval")),
            "ssh proxy '" + name + "': keepaliveInterval: '" + *interval +
                "' is not a number of seconds from 1 to 3600");
    } else {
      proxy.ssh.keepalive_interval = std::chrono::seconds(*seconds);
    }
  }
}

void Loader::ReadCredentials(Proxy& proxy, const ProxyFields& fields,
                             std::optional<Credentials> credentials,
                             const YAML::Node& address_node) {
  const std::string& name = proxy.name;
  auto field = [&](const std::string& key) { return Field(fields, key); };
  // The older separate keys of the original are accepted too.
  if (auto user = field("username")) {
    if (credentials && credentials->username != *user) {
      Error(Where(fields.at("username")),
            "proxy '" + name + "': username contradicts the one in address");
    }
    if (!credentials) credentials = Credentials{};
    credentials->username = *user;
  }
  if (auto pass = field("password")) {
    if (!credentials) credentials = Credentials{};
    credentials->password = *pass;
  }
  if (credentials && (credentials->username.size() > 255 || credentials->password.size() > 255)) {
    Error(Where(address_node),
          "proxy '" + name + "': username and password are limited to 255 bytes each");
  }
  proxy.credentials = credentials;
}

}  // namespace tunnels::config::internal
