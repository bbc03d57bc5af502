"""Real proxy and web servers from Debian, started inside a world's host as
peers for the engine's tests: dante (danted), microsocks, tinyproxy, nginx,
OpenSSH's sshd.

Each constructor returns once the server accepts connections. Only uid 0
exists in a world, so servers that insist on dropping privileges get what
they need: dante is told to stay root; tinyproxy runs in a nested user
namespace as uid 1000, where it has nothing to drop."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # deprecated since 3.11, still in Debian 12's python
import os
import textwrap
from pathlib import Path

from world import Host, missing, require, wait_until


def wait_for_port(host: Host, address: str, port: int, what: str, proc, timeout=10.0):
    probe = (f"import socket; socket.create_connection(('{address}', {port}), timeout=1)"
             ".close()")

    def ready():
        if not proc.alive():
            raise AssertionError(f"{what} exited {proc.returncode}:\n{proc.tail()}")
        return host.run(["python3", "-c", probe], check=False, timeout=5).returncode == 0

    wait_until(ready, timeout=timeout, what=f"{what} on {address}:{port} to accept")


class Dante:
    """danted on address:port; with `users` ({name: password}) it requires
    RFC 1929 username/password, checked against a private passwd/shadow
    bind-mounted for danted alone. `log` is what it logs of each SOCKS
    request (the benches keep it to errors)."""

    def __init__(self, host: Host, address: str, port: int, users: dict[str, str] | None = None,
                 log: str = "connect error"):
        binary = require("danted", "dante-server")
        tmp = host.world.tmp_path
        conf = tmp / f"{host.name}.danted-{port}.conf"
        conf.write_text(textwrap.dedent(f"""\
            logoutput: stderr
            internal: {address} port = {port}
            external: {address}
            socksmethod: {"username" if users else "none"}
            clientmethod: none
            user.privileged: root
            user.unprivileged: root
            client pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 }}
            socks pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 log: {log} }}
            """))
        self.address, self.port = address, port
        argv = [binary, "-f", str(conf), "-p", str(tmp / f"{host.name}.danted-{port}.pid")]
        if users:
            passwd = tmp / f"danted-{port}.passwd"
            shadow = tmp / f"danted-{port}.shadow"
            passwd.write_text(Path("/etc/passwd").read_text() +
                              "".join(f"{u}:x:0:0::/:/bin/false\n" for u in users))
            shadow.write_text("".join(
                f"{u}:{crypt.crypt(p, crypt.mksalt(crypt.METHOD_SHA512))}:19000:0:99999:7:::\n"
                for u, p in users.items()))
            shadow.chmod(0o600)
            script = (f'mount --bind "{passwd}" /etc/passwd && '
                      f'mount --bind "{shadow}" /etc/shadow && exec "$@"')
            argv = ["sh", "-c", script, "danted"] + argv
        self.proc = host.spawn(argv, name=f"danted-{port}")
        wait_for_port(host, address, port, "danted", self.proc)

    def log(self) -> str:
        return self.proc.output()

    def stop(self):
        return self.proc.stop()


class Microsocks:
    def __init__(self, host: Host, address: str, port: int, user: str | None = None,
                 password: str | None = None):
        binary = require("microsocks", "microsocks")
        argv = [binary, "-i", address, "-p", str(port)]
        if user:
            argv += ["-u", user, "-P", password or ""]
        self.address, self.port = address, port
        self.proc = host.spawn(argv, name=f"microsocks-{port}")
        wait_for_port(host, address, port, "microsocks", self.proc)

    def kill(self):
        import signal
        self.proc.signal(signal.SIGKILL)


class Tinyproxy:
    """tinyproxy on address:port with HTTP Basic authentication."""

    def __init__(self, host: Host, address: str, port: int, user: str, password: str):
        binary = require("tinyproxy", "tinyproxy")
        conf = host.world.tmp_path / f"{host.name}.tinyproxy-{port}.conf"
        conf.write_text(textwrap.dedent(f"""\
            Port {port}
            Listen {address}
            BasicAuth {user} {password}
            LogLevel Info
            MaxClients 1000
            ConnectPort 80
            ConnectPort 443
            ConnectPort 9000
            """))
        conf.chmod(0o644)
        self.address, self.port = address, port
        argv = ["unshare", "--user", "--map-user=1000", "--map-group=1000",
                binary, "-d", "-c", str(conf)]
        self.proc = host.spawn(argv, name=f"tinyproxy-{port}")
        wait_for_port(host, address, port, "tinyproxy", self.proc)


class Nginx:
    """nginx serving `root` on address:port, in one process, as the world's root.
    The benches tune it: `main` and `http` add a line to those blocks,
    `listen` replaces the listen options, `connections` and `log_level` set
    worker_connections and error_log."""

    def __init__(self, host: Host, address: str, port: int, root: Path, *, main: str = "",
                 http: str = "", listen: str = "backlog=4096", connections: int = 4096,
                 log_level: str = "info"):
        binary = require("/usr/sbin/nginx", "nginx-light")
        tmp = host.world.tmp_path
        prefix = tmp / f"{host.name}.nginx-{port}"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(textwrap.dedent(f"""\
            daemon off;
            user root root;
            master_process off;
            worker_processes 1;
            {main}
            pid {prefix}/nginx.pid;
            error_log stderr {log_level};
            events {{ worker_connections {connections}; }}
            http {{
              access_log off;
              sendfile on;
              {http}
              client_body_temp_path {prefix};
              proxy_temp_path {prefix};
              fastcgi_temp_path {prefix};
              uwsgi_temp_path {prefix};
              scgi_temp_path {prefix};
              server {{
                listen {address}:{port} {listen};
                root {root};
                location / {{ }}
              }}
            }}
            """))
        self.address, self.port = address, port
        self.proc = host.spawn([binary, "-p", str(prefix), "-c", str(conf)], name=f"nginx-{port}")
        wait_for_port(host, address, port, "nginx", self.proc)


class Sshd:
    """OpenSSH's sshd on address:port, presenting the host keys `host_keys`
    (paths of private keys) and accepting the public keys in
    `authorized_keys` for root, with `options` added to its configuration.

    sshd separates privileges by switching to its user `sshd`, so the world
    needs more ids than root (run-in-world maps them when /etc/subuid and
    /etc/subgid give the caller a range)."""

    def __init__(self, host: Host, address: str, port: int, host_keys: list[Path],
                 authorized_keys: str, options: dict[str, str] | None = None):
        binary = require("/usr/sbin/sshd", "openssh-server")
        if int(os.environ.get("TUNNELS_WORLD_IDS", "1")) < 65535:
            missing("the world has no ids besides root, which sshd's privilege separation needs "
                    "(give the user a range in /etc/subuid and /etc/subgid; package uidmap)")
        # sshd's privilege separation directory, in the world's private /run.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        tmp = host.world.tmp_path
        self.dir = tmp / f"{host.name}.sshd-{port}"
        self.dir.mkdir()
        keys = self.dir / "authorized_keys"
        keys.write_text(authorized_keys)
        settings = {
            "ListenAddress": f"{address}:{port}",
            "PidFile": str(self.dir / "sshd.pid"),
            "AuthorizedKeysFile": str(keys),
            "StrictModes": "no",
            "UsePAM": "no",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "PermitRootLogin": "prohibit-password",
            "AllowTcpForwarding": "yes",
            "LogLevel": "VERBOSE",
            "MaxStartups": "1000",
            **(options or {}),
        }
        conf = self.dir / "sshd_config"
        conf.write_text("".join(f"HostKey {k}\n" for k in host_keys) +
                        "".join(f"{k} {v}\n" for k, v in settings.items()))
        # Without PAM, sshd refuses an account whose shadow entry it cannot
        # read ("account is locked"): as an unprivileged caller the world
        # cannot read the real /etc/shadow, so sshd gets a private one.
        shadow = self.dir / "shadow"
        shadow.write_text("root:*:19000:0:99999:7:::\n")
        shadow.chmod(0o600)
        self.host, self.address, self.port = host, address, port
        self.argv = ["sh", "-c", 'mount --bind "$0" /etc/shadow && exec "$@"', str(shadow),
                     binary, "-D", "-e", "-f", str(conf)]
        self.start()

    def start(self):
        self.proc = self.host.spawn(self.argv, name=f"sshd-{self.port}")
        wait_for_port(self.host, self.address, self.port, "sshd", self.proc)

    def log(self) -> str:
        return self.proc.output()

    def kill(self):
        """SIGKILL to sshd and every process it started (the sessions too)."""
        import signal
        # Stopped first, the whole tree, so that nothing forks or escapes
        # to init between the listing and the kill.
        stopped: list[int] = []
        while True:
            tree = [self.proc.pid, *descendants(self.proc.pid)]
            new = [pid for pid in tree if pid not in stopped]
            if not new:
                break
            for pid in new:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
                stopped.append(pid)
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.popen.wait(timeout=5)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children before their parents."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []

    def walk(p: int):
        for c in children.get(p, []):
            walk(c)
            out.append(c)
    walk(pid)
    return out
