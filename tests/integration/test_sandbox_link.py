"""netns::SandboxLink in real network namespaces: the sandbox's link out
(veth pair, addresses, default route, NAT and forward rules, ip_forward),
what it lets through and what not, and that nothing is left afterwards
(also after SIGKILL, with CleanupStale).

The world: host "h" runs the C++ side, tests/netns/sandbox_link_probe (path
in SANDBOX_LINK_PROBE), as tunnels would run; host "srv", linked to h, runs
a TCP server that answers with the client's address as it sees it. The
probe forks a child into a new network namespace (the sandbox), creates the
SandboxLink for it and prints "ready sandbox_pid=N network=... caller=IF
...", and "removed" after SIGTERM. Commands run in the sandbox through
`nsenter --net=/proc/N/ns/net`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

import world as w
from world import link, wait_for_log, wait_until

GROUP = 7630444  # kSandboxLinkGroup

# Tries one TCP connection and prints what happened as JSON; on success
# also the server's one-line answer. The time is the connect() call alone.
CLIENT = r"""
import errno, json, socket, sys, time
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.settimeout(timeout)
out = {}
start = time.monotonic()
try:
    s.connect((host, port))
    out["ms"] = (time.monotonic() - start) * 1000
    out["ok"] = True
    out["answer"] = s.recv(100).decode().strip()
except OSError as e:
    out["ms"] = (time.monotonic() - start) * 1000
    out["ok"] = False
    out["error"] = errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__
print(json.dumps(out))
"""

# Answers each connection with "peer <client address>".
SERVER = r"""
import socket, sys
s = socket.create_server((sys.argv[1], 0))
print("listening", s.getsockname()[1], flush=True)
while True:
    c, a = s.accept()
    c.sendall(("peer %s\n" % a[0]).encode())
    c.close()
"""


@pytest.fixture
def probe() -> Path:
    path = w.built_executable("SANDBOX_LINK_PROBE", "tests/netns/sandbox_link_probe")
    w.require("nft", "nftables")
    w.require("nsenter", "util-linux")
    return path


class Net:
    """h with a default route to srv, srv with a server; the state directory."""

    def __init__(self, world: w.World):
        self.world = world
        self.h, self.srv = world.host("h"), world.host("srv")
        self.l = link(self.h, self.srv, "10.2.0.1/30", "10.2.0.2/30")
        self.h.run(["ip", "route", "add", "default", "via", self.l.b_ip])
        server = self.srv.spawn(["python3", "-c", SERVER, self.l.b_ip], name="server")
        self.port = int(wait_for_log(server, r"^listening (\d+)$").group(1))
        self.state_dir = world.tmp_path / "state"

    def forward(self) -> str:
        return self.h.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()

    def state_files(self) -> list[str]:
        if not self.state_dir.exists():
            return []
        return sorted(p.name for p in self.state_dir.glob("*.state"))

    def tables(self) -> str:
        return self.h.run(["nft", "list", "ruleset"]).stdout.strip()

    def links(self) -> list[str]:
        out = self.h.run(["ip", "-o", "link", "show"]).stdout
        return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]

    def assert_clean(self, forward: str = "0") -> None:
        assert self.tables() == ""
        assert [name for name in self.links() if name.startswith("tnl")] == []
        assert self.forward() == forward
        assert self.state_files() == []


class Sandbox:
    """One running probe and the sandbox it linked."""

    def __init__(self, net: Net, probe: Path, *args: str, name: str = "probe"):
        self.net = net
        # The probe flushes its lines itself; stdbuf's LD_PRELOAD would stop
        # an AddressSanitizer build ("ASan runtime does not come first").
        self.proc = net.h.spawn([probe, "--state-dir", net.state_dir, *args], name=name,
                                line_buffered=False)
        m = wait_for_log(self.proc, r"^ready (.*)$")
        self.info = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
        self.pid = int(self.info["sandbox_pid"])

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["nsenter", f"--net=/proc/{self.pid}/ns/net", "--", *argv],
                           capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise w.CommandFailed("sandbox", argv, r)
        return r

    def connect(self, host: str, port: int, timeout: float = 3) -> dict:
        r = self.run(["python3", "-c", CLIENT, host, str(port), str(timeout)])
        return json.loads(r.stdout)

    def kill(self) -> None:
        """SIGKILL to the probe alone (not its group), as a crash would."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.popen.wait(10)

    def stop(self) -> None:
        self.proc.signal(signal.SIGTERM)
        assert self.proc.popen.wait(10) == 0, self.proc.tail()
        assert "removed" in self.proc.output()


def connect_from(host: w.Host, address: str, port: int, timeout: float = 3) -> dict:
    r = host.run(["python3", "-c", CLIENT, address, str(port), str(timeout)], timeout=30)
    return json.loads(r.stdout)


def test_the_sandbox_reaches_a_server_by_ip_and_everything_goes_afterwards(world, probe):
    net = Net(world)
    assert net.forward() == "0"
    sb = Sandbox(net, probe)
    i = sb.info
    assert i["network"] == "100.64.0.0/30"
    assert (i["caller_ip"], i["sandbox_ip"]) == ("100.64.0.1", "100.64.0.2")
    host_if, sandbox_if = i["caller"], i["sandbox"]
    assert re.fullmatch(r"tnl\d+h", host_if) and sandbox_if == host_if[:-1] + "s"
    assert i["drops"] == "1"

    # The caller's side.
    shown = net.h.run(["ip", "-d", "link", "show", host_if]).stdout
    assert f"group {GROUP}" in shown and "veth" in shown and "state UP" in shown
    assert net.h.run(["ip", "-o", "-4", "addr", "show", host_if]).stdout.split()[3] == \
        "100.64.0.1/30"
    assert net.h.run(["ip", "-6", "addr", "show", host_if]).stdout.strip() == ""
    assert net.h.run(["cat", f"/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6"]).stdout == "1\n"
    table = net.h.run(["nft", "list", "table", "ip", f"tunnels_run_{sb.proc.pid}"]).stdout
    expected = [
        "flags owner",
        "type nat hook postrouting priority srcnat; policy accept;",
        f'ip saddr 100.64.0.0/30 oifname != "{host_if}" masquerade',
        "type filter hook forward priority filter; policy accept;",
        f"iifgroup {GROUP} oifgroup {GROUP} drop",
        f'iifname "{host_if}" accept',
        f'oifname "{host_if}" ct state established,related accept',
        f"iifgroup {GROUP} accept",
        f"oifgroup {GROUP} ct state established,related accept",
        "drop",
    ]
    lines = [line.strip() for line in table.splitlines()]
    assert [line for line in lines if line in expected] == expected, table
    assert net.forward() == "1"
    state = (net.state_dir / f"tnl{sb.proc.pid}.state").read_text()
    assert f"link={host_if}\n" in state and "ip_forward_before=0\n" in state

    # The sandbox's side: lo and its end up, the route out, no IPv6.
    assert "inet 127.0.0.1/8" in sb.run(["ip", "addr", "show", "lo"]).stdout
    assert "UP" in sb.run(["ip", "-br", "link", "show", "lo"]).stdout
    assert sb.run(["ip", "-o", "-4", "addr", "show", sandbox_if]).stdout.split()[3] == \
        "100.64.0.2/30"
    assert sb.run(["ip", "route"]).stdout.splitlines()[0].startswith(
        f"default via 100.64.0.1 dev {sandbox_if}")
    assert sb.run(["ip", "-6", "addr", "show", sandbox_if]).stdout.strip() == ""
    assert sb.run(["cat", f"/proc/sys/net/ipv6/conf/{sandbox_if}/disable_ipv6"]).stdout == "1\n"
    assert [r for r in sb.run(["ip", "-6", "route"]).stdout.splitlines() if " dev lo " not in r] \
        == []
    r = sb.connect("2001:db8::2", 80)
    assert r["error"] == "ENETUNREACH" and r["ms"] < 100, r

    # Out by IP, masqueraded behind h's address.
    r = sb.connect(net.l.b_ip, net.port)
    assert r["ok"] and r["answer"] == f"peer {net.l.a_ip}", r

    sb.stop()
    net.assert_clean()


def test_two_sandboxes_at_once(world, probe):
    net = Net(world)
    one = Sandbox(net, probe, "--prefix", "tnlone", "--table", "t_one", name="one")
    two = Sandbox(net, probe, "--prefix", "tnltwo", "--table", "t_two", name="two")
    assert (one.info["network"], two.info["network"]) == ("100.64.0.0/30", "100.64.0.4/30")
    assert two.info["sandbox_ip"] == "100.64.0.6" and two.info["drops"] == "1"
    assert net.state_files() == ["tnlone.state", "tnltwo.state"]
    for sb in (one, two):
        r = sb.connect(net.l.b_ip, net.port)
        assert r["ok"] and r["answer"] == f"peer {net.l.a_ip}", r
    # Sandboxes do not reach each other: dropped (without the rule, the
    # other sandbox's kernel would refuse at once, as nothing listens).
    r = one.connect(two.info["sandbox_ip"], 9, timeout=1)
    assert r["error"] == "TimeoutError", r

    one.stop()
    assert net.forward() == "1"  # two still needs it
    r = two.connect(net.l.b_ip, net.port)
    assert r["ok"], r
    two.stop()
    net.assert_clean()


def test_the_link_network_avoids_routes_and_addresses_of_the_caller(world, probe):
    net = Net(world)
    net.h.run(["ip", "route", "add", "blackhole", "100.64.0.0/24"])
    net.h.run(["ip", "addr", "add", "100.64.1.1/32", "dev", "lo"])
    net.h.run(["ip", "route", "add", "100.64.1.4/30", "dev", "lo", "table", "100"])
    sb = Sandbox(net, probe)
    assert sb.info["network"] == "100.64.1.8/30"
    r = sb.connect(net.l.b_ip, net.port)
    assert r["ok"], r
    sb.stop()
    # Every route of the range taken: nothing changes.
    net.h.run(["ip", "route", "add", "100.64.0.0/10", "dev", "lo", "table", "101"])
    p = net.h.spawn([probe, "--state-dir", net.state_dir], name="full", line_buffered=False)
    assert p.popen.wait(10) == 1
    assert "error: cannot choose an address for the sandbox's link: every /30 of " \
        "100.64.0.0/10 overlaps a route or an address here" in p.output()
    assert net.tables() == "" and net.forward() == "0" and net.state_files() == []


@pytest.mark.parametrize("keep_sandbox", [False, True], ids=["sandbox-dies", "sandbox-lives"])
def test_after_sigkill_cleanup_stale_restores_everything(world, probe, keep_sandbox):
    net = Net(world)
    sb = Sandbox(net, probe, *(["--keep-sandbox"] if keep_sandbox else []))
    host_if = sb.info["caller"]
    assert net.forward() == "1"
    sb.kill()
    # The kernel removed the owned table with its socket; ip_forward and the
    # state file stay. The veth pair goes with the sandbox's namespace.
    assert net.tables() == ""
    assert net.forward() == "1"
    assert net.state_files() == [f"tnl{sb.proc.pid}.state"]
    if keep_sandbox:
        assert host_if in net.links()
    else:
        wait_until(lambda: host_if not in net.links(), what=f"{host_if} to go with the sandbox")

    r = net.h.run([probe, "--cleanup", "--state-dir", net.state_dir])
    assert "cleaned" in r.stdout
    assert "note: set net.ipv4.ip_forward back to 0" in r.stdout
    assert (f"note: removed the veth pair {host_if}" in r.stdout) == keep_sandbox
    net.assert_clean()
    # Again: nothing to do.
    r = net.h.run([probe, "--cleanup", "--state-dir", net.state_dir])
    assert r.stdout == "cleaned\n"


def killed_sandbox(net: Net, probe: Path) -> None:
    """A probe (prefix tnldead, table t_dead) killed with SIGKILL, its
    sandbox kept alive: what a crash of tunnels run leaves behind."""
    Sandbox(net, probe, "--prefix", "tnldead", "--table", "t_dead", "--keep-sandbox",
            name="dead").kill()


def test_cleanup_stale_leaves_a_live_instance_alone(world, probe):
    net = Net(world)
    live = Sandbox(net, probe, "--prefix", "tnllive", "--table", "t_live", name="live")
    killed_sandbox(net, probe)
    r = net.h.run([probe, "--cleanup", "--state-dir", net.state_dir])
    assert "note: removed the veth pair tnldeadh" in r.stdout
    assert "ip_forward" not in r.stdout   # the live one needs it
    assert net.forward() == "1"
    assert net.state_files() == ["tnllive.state"]
    assert "tnlliveh" in net.links() and "tnldeadh" not in net.links()
    r = live.connect(net.l.b_ip, net.port)
    assert r["ok"], r
    live.stop()
    net.assert_clean()


def test_a_new_instance_cleans_up_after_a_killed_one(world, probe):
    net = Net(world)
    killed_sandbox(net, probe)
    sb = Sandbox(net, probe, "--prefix", "tnlnew", "--table", "t_new", name="new")
    assert "note: removed the veth pair tnldeadh" in sb.proc.output()
    # The killed one's /30 is free again, and forwarding never went off.
    assert sb.info["network"] == "100.64.0.0/30" and sb.info["drops"] == "1"
    assert net.state_files() == ["tnlnew.state"]
    sb.stop()
    net.assert_clean()


def test_strict_mode_has_no_route_out(world, probe):
    net = Net(world)
    sb = Sandbox(net, probe, "--strict")
    assert sb.info == {"sandbox_pid": str(sb.pid)}
    links = sb.run(["ip", "-br", "link"]).stdout.splitlines()
    assert len(links) == 1 and links[0].split()[:2] == ["lo", "UNKNOWN"], links
    assert sb.run(["ip", "-4", "route"]).stdout.strip() == ""
    r = sb.connect(net.l.b_ip, net.port)
    assert r["error"] == "ENETUNREACH" and r["ms"] < 100, r
    # Nothing on the caller's side.
    net.assert_clean()
    sb.stop()
    net.assert_clean()


@pytest.mark.parametrize("forward_before", ["0", "1"])
def test_forwarding_for_third_parties(world, probe, forward_before):
    """A client c behind h: routed through h to srv only if h forwarded
    before (then tunnels changes nothing about it)."""
    net = Net(world)
    c = world.host("c")
    lc = link(c, net.h, "10.3.0.1/30", "10.3.0.2/30")
    c.run(["ip", "route", "add", "10.2.0.0/30", "via", lc.b_ip])
    net.srv.run(["ip", "route", "add", "10.3.0.0/30", "via", net.l.a_ip])
    net.h.run(["sh", "-c", f"echo {forward_before} > /proc/sys/net/ipv4/ip_forward"])
    sb = Sandbox(net, probe)
    assert sb.info["drops"] == ("1" if forward_before == "0" else "0")
    assert net.forward() == "1"

    r = sb.connect(net.l.b_ip, net.port)
    assert r["ok"], r
    r = connect_from(c, net.l.b_ip, net.port, timeout=1)
    if forward_before == "0":
        assert r["error"] == "TimeoutError", r   # dropped in h's forward chain
    else:
        assert r["ok"] and r["answer"] == f"peer {lc.a_ip}", r   # not NATed either
    sb.stop()
    net.assert_clean(forward=forward_before)


def test_descriptors_are_close_on_exec(world, probe):
    """A child that inherited the nftables socket would keep the owned table
    alive after the probe died, and one that inherited the state file would
    keep it locked."""
    net = Net(world)
    sb = Sandbox(net, probe)
    fds = {}
    for fd in os.listdir(f"/proc/{sb.proc.pid}/fd"):
        if int(fd) > 2:
            flags = Path(f"/proc/{sb.proc.pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
            fds[os.readlink(f"/proc/{sb.proc.pid}/fd/{fd}")] = int(flags, 8) & os.O_CLOEXEC != 0
    assert any(name.endswith(".state") for name in fds), fds
    assert all(fds.values()), fds
    sb.stop()


def test_without_cap_net_admin_nothing_changes(world, probe):
    net = Net(world)
    setpriv = w.require("setpriv", "util-linux")
    r = net.h.run([setpriv, "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--",
                   probe, "--state-dir", net.state_dir], check=False)
    assert r.returncode == 1, r
    assert r.stderr.strip() == (
        "error: cannot change routes and nftables in this network namespace: the process "
        "lacks CAP_NET_ADMIN (run tunnels as root, or give it that capability)")
    net.assert_clean()
