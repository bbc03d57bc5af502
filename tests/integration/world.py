"""Building blocks for integration tests that run inside a private world.

The world itself (user + network + mount + PID namespaces) is made by the
`run-in-world` wrapper; this module builds test networks inside it:

    h = world.host("client")            # a network namespace
    s = world.host("server")
    link(h, s, "10.1.0.1/30", "10.1.0.2/30")
    p = s.spawn(["some-daemon", "--port", "0"])
    m = wait_for_log(p, r"listening on udp [\\d.]+:(\\d+)")
    port = int(m.group(1))

Everything a World starts is stopped when the World is closed (the `world`
fixture in conftest.py does that at teardown).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import pytest

# --------------------------------------------------------------------------
# Prerequisites and polling
# --------------------------------------------------------------------------


def in_ci() -> bool:
    """True when the environment says this is a CI run (CI=true)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str) -> None:
    """A prerequisite is missing: fail under CI=true, skip otherwise."""
    if in_ci():
        pytest.fail(f"missing prerequisite (CI=true, so this is a failure): {reason}",
                    pytrace=False)
    pytest.skip(f"missing prerequisite: {reason}")


def require(tool: str, package: str | None = None) -> str:
    """Return the path of executable `tool` (a name looked up on PATH, or a
    path); if it is missing, fail under CI=true and skip otherwise."""
    path = shutil.which(tool)
    if path is None:
        hint = f" (install Debian package {package})" if package else ""
        missing(f"'{tool}' not found{hint}")
    return path  # type: ignore[return-value]


def built_executable(var: str, target: str) -> Path:
    """The test program whose path ctest puts in environment variable
    `var` (the build tree's `target`); if it is unset or not an
    executable, fail under CI=true and skip otherwise."""
    value = os.environ.get(var)
    if not value:
        missing(f"{var} is not set (run through ctest, or export the path of {target} in "
                "the build tree)")
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        missing(f"{var}={value} is not an executable file (build it first)")
    return path


def in_world() -> bool:
    """True when running inside run-in-world."""
    return os.environ.get("TUNNELS_WORLD") == "1"


class WaitTimeout(AssertionError):
    """wait_until / wait_for_log gave up."""


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0,
               what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy and return that.

    Polls quickly at first (10 ms) and backs off to 200 ms. Raises WaitTimeout
    naming `what` (and the last value seen) once `timeout` seconds passed.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what} "
                              f"(last value: {value!r})")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.2)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


class CommandFailed(AssertionError):
    def __init__(self, host: str, cmd: Sequence[str], result: subprocess.CompletedProcess):
        self.result = result
        super().__init__(
            f"[{host}] {shlex.join(cmd)} exited {result.returncode}\n"
            f"--- stdout ---\n{_tail(result.stdout or '', 30)}\n"
            f"--- stderr ---\n{_tail(result.stderr or '', 30)}")


class Proc:
    """A long-running process started by Host.spawn; stdout and stderr go
    (merged) to `log_path`."""

    def __init__(self, host: "Host", name: str, argv: list[str], popen: subprocess.Popen,
                 log_path: Path):
        self.host = host
        self.name = name
        self.argv = argv
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the process printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """Current size of the output; pass it as `since` to wait_for_log to
        look only at what is printed afterwards."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def tail(self, lines: int = 40) -> str:
        return _tail(self.output(), lines)

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM the process group, SIGKILL it after `timeout`; reap it and
        return the exit status (negative: killed by that signal)."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        # Whatever is left of the group (daemon children) goes too.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.popen.wait()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.returncode}"
        return f"<Proc {self.host.name}/{self.name} pid={self.pid} {state}>"


def wait_for_log(proc: Proc, regex: str | re.Pattern, timeout: float = 5.0,
                 since: int = 0) -> re.Match:
    """Wait until `proc`'s output (from byte offset `since`) matches `regex`
    (searched with re.MULTILINE) and return the match. Fails at once if the
    process exits without printing it, and shows the output's tail."""
    pattern = re.compile(regex, re.MULTILINE) if isinstance(regex, str) else regex
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        exited = not proc.alive()          # read the state before the output
        text = proc.output()[since:]
        m = pattern.search(text)
        if m:
            return m
        if exited:
            raise WaitTimeout(f"{proc!r} exited before printing /{pattern.pattern}/; "
                              f"its output ends with:\n{proc.tail()}")
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {proc!r} to print "
                              f"/{pattern.pattern}/; its output ends with:\n{proc.tail()}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


# --------------------------------------------------------------------------
# Hosts and links
# --------------------------------------------------------------------------


def _argv(cmd: Any) -> list[str]:
    if isinstance(cmd, str):
        return ["sh", "-c", cmd]
    return [os.fspath(c) for c in cmd]


class Host:
    """A network namespace of the world (`ip netns add NAME`), with lo up."""

    def __init__(self, world: "World", name: str):
        self.world = world
        self.name = name
        self.addresses: list[str] = []   # addresses given by link(), without prefix
        self._ifnames: set[str] = {"lo"}
        self._nameserver: Path | None = None
        _ip("netns", "add", name)
        self.run(["ip", "link", "set", "lo", "up"])
        # No duplicate address detection in a world of private links: every
        # IPv6 address, link-local ones included, is usable once its link is
        # up (instead of "tentative" for a second or more).
        self.run(["sh", "-c", "for c in all default; do "
                  "echo 0 > /proc/sys/net/ipv6/conf/$c/accept_dad; done"])

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.name}"

    def _wrap(self, argv: list[str]) -> list[str]:
        prefix = ["ip", "netns", "exec", self.name]
        if self._nameserver is not None:
            # `ip netns exec` gives the command its own mount namespace, so
            # this bind mount is seen by that command (and children) only.
            prefix += ["sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                       str(self._nameserver)]
        return prefix + argv

    def use_nameserver(self, address: str) -> None:
        """Make commands run in this host from now on resolve names through
        `address` port 53 (a private /etc/resolv.conf for this host)."""
        path = self.world.tmp_path / f"{self.name}.resolv.conf"
        path.write_text(f"nameserver {address}\noptions timeout:2 attempts:1\n")
        self._nameserver = path

    def run(self, cmd: Any, check: bool = True, timeout: float = 30.0,
            input: str | None = None, env: Mapping[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        """Run a command (argv list, or a string for sh -c) in this host and
        wait for it; returns CompletedProcess with text stdout/stderr. With
        check=True a non-zero exit raises CommandFailed showing its output."""
        argv = _argv(cmd)
        full_env = None if env is None else {**os.environ, **env}
        try:
            result = subprocess.run(self._wrap(argv), capture_output=True, text=True,
                                    timeout=timeout, input=input, env=full_env,
                                    stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"[{self.name}] {shlex.join(argv)} did not finish "
                                 f"within {timeout}s; stderr: {e.stderr!r}") from None
        if check and result.returncode != 0:
            raise CommandFailed(self.name, argv, result)
        return result

    def spawn(self, cmd: Any, name: str | None = None, env: Mapping[str, str] | None = None,
              line_buffered: bool = True, cwd: str | os.PathLike | None = None) -> Proc:
        """Start a long-running command in this host. Its stdout+stderr go to
        <tmp>/<host>.<name>.log; it is stopped and reaped when the world
        closes, and its log tail is shown if the test fails. line_buffered
        runs it under `stdbuf -oL -eL` so C/C++ stdio output reaches the log
        line by line (no effect on static binaries: they must flush)."""
        argv = _argv(cmd)
        name = name or Path(argv[0]).name
        base = f"{self.name}.{name}"
        log_path = self.world.tmp_path / f"{base}.log"
        for n in itertools.count(2):
            if not log_path.exists():
                break
            log_path = self.world.tmp_path / f"{base}-{n}.log"
        run_argv = (["stdbuf", "-oL", "-eL"] if line_buffered else []) + argv
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(self._wrap(run_argv), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                     cwd=cwd, start_new_session=True)
        proc = Proc(self, name, argv, popen, log_path)
        self.world.procs.append(proc)
        return proc

    def ifname_for(self, peer: "Host") -> str:
        base = f"to-{peer.name}"[:13]
        name = base
        for n in itertools.count(2):
            if name not in self._ifnames:
                break
            name = f"{base}{n}"
        self._ifnames.add(name)
        return name

    def __repr__(self) -> str:
        return f"<Host {self.name}>"


def _ip(*args: str) -> None:
    """`ip ARGS` in the world's own (root) network namespace."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise CommandFailed("world", ["ip", *args], result)


class Link(NamedTuple):
    a: Host
    b: Host
    a_if: str        # interface name inside a
    b_if: str        # interface name inside b
    a_ip: str        # a's address on the link, without prefix length
    b_ip: str


def _add_address(host: Host, ifname: str, addr: str) -> str:
    iface = ipaddress.ip_interface(addr)
    extra = ["nodad"] if iface.version == 6 else []   # usable at once, no DAD wait
    host.run(["ip", "addr", "add", addr, "dev", ifname, *extra])
    host.addresses.append(str(iface.ip))
    return str(iface.ip)


def link(a: Host, b: Host, a_addr: str, b_addr: str) -> Link:
    """Connect hosts a and b with a veth pair, give each end its address
    (CIDR, e.g. "10.1.0.1/30", IPv4 or IPv6) and bring both ends up."""
    a_if, b_if = a.ifname_for(b), b.ifname_for(a)
    _ip("link", "add", a_if, "netns", a.name, "type", "veth",
        "peer", "name", b_if, "netns", b.name)
    a_ip = _add_address(a, a_if, a_addr)
    b_ip = _add_address(b, b_if, b_addr)
    a.run(["ip", "link", "set", a_if, "up"])
    b.run(["ip", "link", "set", b_if, "up"])
    # Usable once the kernel says both ends are up (carrier) and no address
    # is still tentative: before that, an IPv6 neighbour solicitation can be
    # lost, and a first ping with it.
    for host, ifname in ((a, a_if), (b, b_if)):
        wait_until(lambda: _ready(host, ifname), timeout=10,
                   what=f"{ifname} in {host.name} to be up with its addresses")
    return Link(a, b, a_if, b_if, a_ip, b_ip)


def _ready(host: Host, ifname: str) -> bool:
    link_state = host.run(["ip", "-o", "link", "show", "dev", ifname]).stdout
    addresses = host.run(["ip", "-o", "addr", "show", "dev", ifname]).stdout
    return "state UP" in link_state and "tentative" not in addresses


class World:
    """The hosts and processes of one test; close() stops and removes them."""

    def __init__(self, tmp_path: Path):
        if not in_world():
            missing("not inside the test world: run the tests through "
                    "tests/integration/run-in-world")
        require("ip", "iproute2")
        self.tmp_path = Path(tmp_path)
        self.hosts: dict[str, Host] = {}
        self.procs: list[Proc] = []

    def host(self, name: str) -> Host:
        """Create a host (network namespace) named `name` (unique per world)."""
        if name in self.hosts:
            raise ValueError(f"host {name!r} already exists")
        h = Host(self, name)
        self.hosts[name] = h
        return h

    def link(self, a: Host, b: Host, a_addr: str, b_addr: str) -> Link:
        return link(a, b, a_addr, b_addr)

    def logs(self, lines: int = 40) -> str:
        """Tail of every spawned process's output, for failure reports."""
        parts = ["(logs live in the world's private tmpfs; pass --basetemp=DIR to keep them)"]
        for p in self.procs:
            parts.append(f"===== {p.host.name}/{p.name} (pid {p.pid}, "
                         f"{'running' if p.alive() else f'exit {p.returncode}'}) "
                         f"{shlex.join(p.argv)}\n      log: {p.log_path}\n{p.tail(lines)}")
        return "\n".join(parts)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        for name in list(self.hosts):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
            del self.hosts[name]


# --------------------------------------------------------------------------
# DNS: dig client and dnsmasq peer
# --------------------------------------------------------------------------


class Answer(NamedTuple):
    name: str
    ttl: int
    rclass: str
    rtype: str
    data: str


class DigResult(NamedTuple):
    status: str | None      # "NOERROR", "NXDOMAIN", ...; None when no reply came
    flags: frozenset[str]   # header flags: qr aa tc rd ra ...
    answers: list[Answer]
    authority: list[Answer]
    output: str             # dig's raw output, for messages

    @property
    def addresses(self) -> list[str]:
        """The data of the A/AAAA answers."""
        return [a.data for a in self.answers if a.rtype in ("A", "AAAA")]

    @property
    def ttls(self) -> list[int]:
        return [a.ttl for a in self.answers]


_HEADER = re.compile(r"->>HEADER<<- opcode: \S+, status: ([A-Z0-9]+),")
_FLAGS = re.compile(r"^;; flags: ([^;]*);", re.MULTILINE)


def parse_dig(output: str) -> DigResult:
    """Parse the output of `dig +noall +comments +answer +authority`."""
    m = _HEADER.search(output)
    status = m.group(1) if m else None
    f = _FLAGS.search(output)
    flags = frozenset(f.group(1).split()) if f else frozenset()
    sections: dict[str, list[Answer]] = {"ANSWER": [], "AUTHORITY": []}
    current = None
    for line in output.splitlines():
        sm = re.match(r";; (\w+) SECTION:", line)
        if sm:
            current = sm.group(1)
            continue
        if not line.strip() or line.startswith(";"):
            continue
        if current in sections:
            fields = line.split(None, 4)
            if len(fields) == 5:
                sections[current].append(Answer(fields[0], int(fields[1]), fields[2],
                                                fields[3], fields[4]))
    return DigResult(status, flags, sections["ANSWER"], sections["AUTHORITY"], output)


def dig(host: Host, server: str, name: str, qtype: str = "A", *, port: int = 53,
        tcp: bool = False, timeout: float = 2, tries: int = 1,
        extra: Iterable[str] = ()) -> DigResult:
    """Ask `server`:`port` for `name`/`qtype` from inside `host` with dig.
    Returns the parsed reply; status is None when no reply came at all."""
    require("dig", "bind9-dnsutils")
    argv = ["dig", f"@{server}", "-p", str(port), "+noall", "+comments", "+answer",
            "+authority", f"+time={max(1, round(timeout))}", f"+tries={tries}",
            "+tcp" if tcp else "+notcp", *extra, name, qtype]
    result = host.run(argv, check=False, timeout=timeout * tries + 10)
    if result.returncode == 9:       # no reply from any server
        return DigResult(None, frozenset(), [], [], result.stdout + result.stderr)
    if result.returncode != 0:
        raise CommandFailed(host.name, argv, result)
    return parse_dig(result.stdout)


_QUERY_LINE = re.compile(r"\bquery\[(\w+)\] (\S+) from (\S+)")


class Query(NamedTuple):
    qtype: str
    name: str
    client: str


class Dnsmasq:
    """A real dnsmasq serving as a DNS peer (e.g. tunnels' upstream), started
    in `host` on `address`:`port`, running in the foreground as the world's
    root, logging every query it receives.

    records:       {name: ip or [ips]} -> address=/name/ip (name and subdomains)
    host_records:  {name: ip or [ips]} -> host-record=name,ip (exact name, + PTR)
    ttl:           TTL of those answers (--local-ttl)
    cache:         False -> --cache-size=0 (matters when it forwards)
    servers:       its own upstreams (server=...), e.g. ["10.0.0.9#5353"]
    local:         domains answered only from records (unknown names: NXDOMAIN);
                   without it, unknown names get REFUSED when there is no upstream.
    """

    PROBE = "harness-probe.invalid"   # readiness probe name, left out of queries()

    def __init__(self, host: Host, address: str, port: int = 53, *,
                 records: Mapping[str, Any] | None = None,
                 host_records: Mapping[str, Any] | None = None,
                 ttl: int = 60, cache: bool = False, servers: Iterable[str] = (),
                 local: Iterable[str] = (), extra_args: Iterable[str] = (),
                 ready_timeout: float = 10.0):
        self.host, self.address, self.port = host, address, port
        binary = require("/usr/sbin/dnsmasq", "dnsmasq-base")
        pidfile = host.world.tmp_path / f"{host.name}.dnsmasq-{port}.pid"
        argv = [binary, "--keep-in-foreground",
                # Only uid/gid 0 exist in the world: don't drop privileges
                # (dnsmasq would setuid to nobody and setgroups/setgid to dip).
                "--user=root", "--group=",
                f"--pid-file={pidfile}",
                "--no-resolv", "--no-hosts", "--no-poll",
                "--log-queries", "--log-facility=-",
                f"--listen-address={address}", "--bind-interfaces", f"--port={port}",
                f"--local-ttl={ttl}",
                f"--cache-size={150 if cache else 0}"]

        def as_list(v: Any) -> list[str]:
            return [v] if isinstance(v, str) else list(v)

        for name, ips in (records or {}).items():
            argv += [f"--address=/{name}/{ip}" for ip in as_list(ips)]
        for name, ips in (host_records or {}).items():
            argv.append(f"--host-record={name}," + ",".join(as_list(ips)))
        argv += [f"--server={s}" for s in servers]
        argv += [f"--local=/{d}/" for d in local]
        argv += list(extra_args)
        self.proc = host.spawn(argv, name=f"dnsmasq-{port}", line_buffered=False)
        wait_until(lambda: not self.proc.alive() or
                   dig(host, address, self.PROBE, port=port, timeout=1).status is not None,
                   timeout=ready_timeout, what=f"dnsmasq on {address}:{port} to answer")
        if not self.proc.alive():
            raise AssertionError(f"dnsmasq exited {self.proc.returncode}:\n{self.proc.tail()}")

    def query_log(self) -> list[Query]:
        """Every query it received (in order), as (qtype, name, client)."""
        return [Query(*m.groups()) for m in _QUERY_LINE.finditer(self.proc.output())
                if m.group(2) != self.PROBE]

    def queries(self, qtype: str | None = None) -> list[str]:
        """Names it was asked (optionally only of one qtype), in order."""
        return [q.name for q in self.query_log() if qtype is None or q.qtype == qtype]

    def stop(self) -> int:
        return self.proc.stop()
