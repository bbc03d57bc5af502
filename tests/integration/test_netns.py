"""netns::Interception in a real network namespace: the nftables table and
the local route it adds, what they do to connections to the fake range, and
that they are gone afterwards (also after SIGKILL, and when Create fails).

The C++ side is tests/netns/netns_probe (path in NETNS_PROBE): it opens an
IP_TRANSPARENT listener on 127.0.0.1, creates the Interception for it,
prints "ready port=N", then "accepted local=A:P peer=B:Q" per connection,
and "removed" after SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import world as w
from world import link, wait_for_log

RANGE = "198.18.0.0/15"
BLACKHOLE = "198.19.255.255"
TABLE = "tunnels_test"

# Runs in a host: tries one connection and prints what happened as JSON.
# The time is the connect() call alone, without Python's start-up.
CLIENT = r"""
import errno, json, socket, sys, time
kind, host, port, source = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
s.settimeout(3)
if source:
    s.bind((source, 0))
out = {}
start = time.monotonic()
try:
    s.connect((host, port))
    if kind == "udp":
        s.send(b"x")
        s.recv(1)   # the ICMP error shows up here as ECONNREFUSED
    out["ok"] = True
    out["local"] = "%s:%d" % s.getsockname()
except OSError as e:
    out["ok"] = False
    out["error"] = errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__
out["ms"] = (time.monotonic() - start) * 1000
print(json.dumps(out))
"""


@pytest.fixture
def probe() -> Path:
    path = w.built_executable("NETNS_PROBE", "tests/netns/netns_probe")
    w.require("nft", "nftables")
    return path


def connect(host: w.Host, address: str, port: int, kind: str = "tcp", source: str = "") -> dict:
    """One connection attempt from `host` (from `source` if given)."""
    r = host.run(["python3", "-c", CLIENT, kind, address, str(port), source], timeout=15)
    return json.loads(r.stdout)


def table(host: w.Host, name: str = TABLE) -> str | None:
    """`nft list table ip NAME`, or None when there is no such table."""
    r = host.run(["nft", "list", "table", "ip", name], check=False)
    return r.stdout if r.returncode == 0 else None


def range_routes(host: w.Host) -> list[str]:
    """The routes for the fake range in table local."""
    out = host.run(["ip", "-4", "route", "show", "table", "local"]).stdout
    return [line.strip() for line in out.splitlines() if line.split()[1:2] == [RANGE]
            or line.startswith(RANGE)]


def assert_clean(host: w.Host, name: str = TABLE) -> None:
    assert table(host, name) is None, f"table ip {name} is still there"
    assert range_routes(host) == []
    assert host.run(["nft", "list", "ruleset"]).stdout.strip() == ""


def start(host: w.Host, probe: Path, *args: str, name: str = TABLE) -> tuple[w.Proc, int]:
    # The probe flushes its lines itself; stdbuf's LD_PRELOAD would stop an
    # AddressSanitizer build ("ASan runtime does not come first").
    p = host.spawn([probe, "--table", name, *args], name="netns_probe", line_buffered=False)
    port = int(wait_for_log(p, r"^ready port=(\d+)$").group(1))
    return p, port


def stop(p: w.Proc) -> None:
    p.signal(signal.SIGTERM)
    assert p.popen.wait(10) == 0, p.tail()
    assert "removed" in p.output()


def test_intercepts_tcp_refuses_the_rest_and_cleans_up(world, probe):
    gw = world.host("gw")
    p, port = start(gw, probe)

    listing = table(gw)
    assert listing is not None
    assert "flags owner" in listing
    assert "type filter hook prerouting priority mangle; policy accept;" in listing
    # Packets for other addresses leave the chain at its first rule.
    assert listing.index(f"ip daddr != {RANGE} accept") < listing.index("tproxy")
    assert f"meta l4proto tcp tproxy to 127.0.0.1:{port}" in listing
    assert f"ip daddr {BLACKHOLE} tcp flags syn / fin,syn,rst,ack reject with tcp reset" in listing
    assert "meta l4proto udp reject" in listing
    assert range_routes(gw) == [f"local {RANGE} dev lo proto static scope host src 127.0.0.1"]

    # A connection to a fake address reaches the listener, which sees the
    # fake address and port as its local address.
    r = connect(gw, "198.18.1.2", 443)
    assert r["ok"], r
    assert r["local"].startswith("127.0.0.1:")
    wait_for_log(p, rf"^accepted local=198\.18\.1\.2:443 peer={r['local']}$")
    r = connect(gw, "198.19.0.1", 8080)
    assert r["ok"], r
    wait_for_log(p, r"^accepted local=198\.19\.0\.1:8080 ")
    # A client bound to a fake address gets the listener's SYN-ACK addressed
    # to a fake address: tproxy leaves it to the client's own socket, and
    # the resets, which match SYNs only, let it pass.
    r = connect(gw, "198.18.1.2", 443, source="198.18.9.9")
    assert r["ok"] and r["local"].startswith("198.18.9.9:"), r
    wait_for_log(p, rf"^accepted local=198\.18\.1\.2:443 peer={r['local']}$")

    # The blackhole is refused at once, also on the listener's own port.
    for port_ in (443, port):
        r = connect(gw, BLACKHOLE, port_)
        assert r == {"ok": False, "error": "ECONNREFUSED", "ms": r["ms"]}
        assert r["ms"] < 100
    assert "accepted local=198.19.255.255" not in p.output()

    # UDP to the range: ICMP port unreachable, so ECONNREFUSED at once.
    r = connect(gw, "198.18.1.2", 53, kind="udp")
    assert r["error"] == "ECONNREFUSED" and r["ms"] < 100, r

    # Addresses outside the range are left alone.
    r = connect(gw, "127.0.0.1", port)
    assert r["ok"], r

    stop(p)
    assert_clean(gw)


def test_descriptors_are_close_on_exec(world, probe):
    """A child that inherited the nftables socket would keep the owned table
    alive after tunnels died (libnftables opens it without O_CLOEXEC)."""
    gw = world.host("gw")
    p, _ = start(gw, probe)
    fds = {}
    for fd in os.listdir(f"/proc/{p.pid}/fd"):
        if int(fd) > 2:
            flags = Path(f"/proc/{p.pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
            fds[os.readlink(f"/proc/{p.pid}/fd/{fd}")] = int(flags, 8) & os.O_CLOEXEC != 0
    assert len([name for name in fds if name.startswith("socket:")]) >= 3, fds  # 2 netlink + listener
    assert all(fds.values()), fds
    stop(p)


def test_without_a_listener_connections_are_refused_at_once(world, probe):
    gw = world.host("gw")
    # A host service on 0.0.0.0 must not receive connections to the range.
    svc = gw.spawn(["python3", "-c", "import socket,time\n"
                    "s=socket.create_server(('0.0.0.0', 8443)); print('listening', flush=True)\n"
                    "c,a=s.accept(); print('GOT', c.getsockname(), flush=True); time.sleep(60)"],
                   name="service")
    wait_for_log(svc, "listening")
    p, _ = start(gw, probe, "--no-listen", "--port", "4444")
    for address, port in (("198.18.1.2", 443), ("198.18.1.2", 8443), (BLACKHOLE, 80)):
        r = connect(gw, address, port)
        assert r["error"] == "ECONNREFUSED" and r["ms"] < 100, (address, port, r)
    assert "GOT" not in svc.output()
    stop(p)
    assert_clean(gw)


def test_connections_from_another_host_are_dropped(world, probe):
    """Only this host's own programs are intercepted (issue 15, item 3): a
    neighbour routing the range via this host gets nothing, not even a
    reset, while local connections still reach the listener."""
    client, gw = world.host("client"), world.host("gw")
    l1 = link(client, gw, "10.1.0.1/30", "10.1.0.2/30")
    client.run(["ip", "route", "add", RANGE, "via", l1.b_ip])
    p, _ = start(gw, probe)
    r = connect(client, "198.18.7.7", 80)
    assert not r["ok"] and r["error"] not in ("ECONNREFUSED", "ECONNRESET"), r
    assert "peer=10.1.0.1" not in p.output()
    assert connect(gw, "198.18.7.7", 80)["ok"]
    stop(p)
    assert_clean(gw)


def test_after_sigkill_the_next_instance_replaces_the_leftovers(world, probe):
    gw = world.host("gw")
    first, _ = start(gw, probe)
    first.signal(signal.SIGKILL)
    first.popen.wait(10)
    # The kernel removed the owned table with its socket; the route stays.
    assert table(gw) is None
    assert len(range_routes(gw)) == 1

    second, port = start(gw, probe)
    assert "note: replaced the leftover route local 198.18.0.0/15 dev lo table local" \
        in second.output()
    assert len(range_routes(gw)) == 1
    assert f"tproxy to 127.0.0.1:{port}" in table(gw)
    r = connect(gw, "198.18.1.2", 443)
    assert r["ok"], r
    wait_for_log(second, r"^accepted local=198\.18\.1\.2:443 ")
    stop(second)
    assert_clean(gw)


def test_a_leftover_table_made_by_hand_is_replaced(world, probe):
    gw = world.host("gw")
    gw.run(["nft", f"add table ip {TABLE}; add chain ip {TABLE} junk"])
    p, port = start(gw, probe)
    assert f"note: replaced the leftover nftables table ip {TABLE}" in p.output()
    listing = table(gw)
    assert "junk" not in listing and f"tproxy to 127.0.0.1:{port}" in listing
    assert range_routes(gw) == [f"local {RANGE} dev lo proto static scope host src 127.0.0.1"]
    stop(p)
    assert_clean(gw)


def test_a_local_route_someone_else_made_is_left_alone(world, probe):
    # An AnyIP route of the administrator's for the range is not a leftover
    # of tunnels' (those carry tunnels' attributes): tunnels refuses to start
    # rather than delete it now and leave the machine without it at exit.
    gw = world.host("gw")
    gw.run(["ip", "route", "add", "local", RANGE, "dev", "lo", "table", "local"])
    r = gw.run([probe, "--table", TABLE], check=False)
    assert r.returncode == 1
    assert "ip route show table local" in r.stderr, r.stderr
    assert range_routes(gw) == [f"local {RANGE} dev lo scope host"]
    assert table(gw) is None


def test_a_running_instance_is_not_taken_over(world, probe):
    gw = world.host("gw")
    first, port = start(gw, probe)
    r = gw.run([probe, "--table", TABLE], check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"error: the nftables table ip {TABLE} belongs to the running process 'netns_probe', "
        "most likely another tunnels; stop it first, or set iptablesChain to another name")
    # The first one is untouched and still works.
    assert f"tproxy to 127.0.0.1:{port}" in table(gw)
    assert len(range_routes(gw)) == 1
    r = connect(gw, "198.18.1.2", 443)
    assert r["ok"], r
    stop(first)
    assert_clean(gw)


@pytest.mark.parametrize("name, message", ids=["keyword", "leading-digit"], argvalues=[
    ("tcp", "error: cannot read the nftables table ip tcp: syntax error, unexpected tcp, "
            "expecting string (nft cannot use 'tcp' as a table name, probably because it is a "
            "word of nft's language: set iptablesChain to another name, such as "
            "tunnels_redirects)"),
    ("0abc", "error: '0abc' cannot be an nftables table name: it takes up to 64 letters, "
             "digits, '_' or '-', starting with a letter or '_' (set iptablesChain, e.g. to "
             "tunnels_redirects)"),
])
def test_unusable_table_names_change_nothing(world, probe, name, message):
    gw = world.host("gw")
    r = gw.run([probe, "--table", name], check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == message
    assert_clean(gw, TABLE)


def test_a_conflicting_route_is_reported_and_the_table_rolled_back(world, probe):
    gw = world.host("gw")
    gw.run(["ip", "route", "add", "unicast", RANGE, "dev", "lo", "table", "local"])
    r = gw.run([probe, "--table", TABLE], check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"error: cannot add the route local {RANGE} dev lo table local: File exists (table "
        f"local has another route for {RANGE}, see `ip route show table local`; remove it, or "
        "change privateAddresses)")
    assert table(gw) is None
    assert gw.run(["nft", "list", "ruleset"]).stdout.strip() == ""


def test_without_cap_net_admin_nothing_changes(world, probe):
    gw = world.host("gw")
    setpriv = w.require("setpriv", "util-linux")
    r = gw.run([setpriv, "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--",
                probe, "--table", TABLE, "--no-listen", "--port", "4444"], check=False)
    assert r.returncode == 1, r
    assert r.stderr.strip() == (
        "error: cannot change routes and nftables in this network namespace: the process "
        "lacks CAP_NET_ADMIN (run tunnels as root, or give it that capability)")
    assert_clean(gw)
