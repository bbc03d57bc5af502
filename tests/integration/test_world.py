"""Self-tests of the integration harness: the world is private, hosts can talk
over veth links, dnsmasq works as a DNS peer, prerequisites are enforced."""

from __future__ import annotations

import os
import sys

import pytest

import world as w
from world import Dnsmasq, dig, link, require, wait_for_log, wait_until

# A tiny TCP echo server that binds port 0 and prints the port the kernel chose,
# the way tunnels reports its listeners.
ECHO_SERVER = r"""
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen()
print(f"[ECHO] listening on tcp {sys.argv[1]}:{s.getsockname()[1]}", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(c.recv(100))
    c.close()
"""

ECHO_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(b"hello world")
print(c.recv(100).decode())
"""


def outer_netdev() -> str:
    """The real host's /proc/net/dev, read through the handle that run-in-world
    opened before entering the world."""
    fd = int(os.environ["TUNNELS_OUTER_NETDEV_FD"])
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def ifnames(netdev: str) -> set[str]:
    return {line.split(":")[0].strip() for line in netdev.splitlines()[2:]}


def test_world_is_private_and_we_are_its_root(world):
    assert os.getuid() == 0 and os.getgid() == 0
    assert os.getpid() != 1 and os.getppid() == 1, "pytest runs under the world's PID 1"
    outer = os.environ["TUNNELS_OUTER_NETNS"]
    assert os.readlink("/proc/self/ns/net") != outer
    h = world.host("alpha")
    inner = h.run(["readlink", "/proc/self/ns/net"]).stdout.strip()
    assert inner not in (outer, os.readlink("/proc/self/ns/net"))


def test_hosts_linked_by_veth_reach_each_other(world):
    ping = require("ping", "iputils-ping")
    a, b = world.host("alpha"), world.host("bravo")
    ln = link(a, b, "10.1.0.1/30", "10.1.0.2/30")
    assert (ln.a_ip, ln.b_ip) == ("10.1.0.1", "10.1.0.2")
    a.run([ping, "-c", "1", "-W", "2", ln.b_ip])
    b.run([ping, "-c", "1", "-W", "2", ln.a_ip])
    # IPv6 on a second link between the same hosts is usable at once (nodad).
    ln6 = link(a, b, "fd00:1::1/64", "fd00:1::2/64")
    assert ln6.a_if != ln.a_if
    a.run([ping, "-6", "-c", "1", "-w", "5", ln6.b_ip])

    # TCP, with a server on a kernel-chosen port that it reports in its log.
    server = b.spawn([sys.executable, "-c", ECHO_SERVER, ln.b_ip], name="echo")
    port = int(wait_for_log(server, r"listening on tcp [\d.]+:(\d+)").group(1))
    assert port > 0
    out = a.run([sys.executable, "-c", ECHO_CLIENT, ln.b_ip, str(port)]).stdout
    assert out.strip() == "hello world"


def test_links_are_invisible_on_the_real_host(world):
    before = outer_netdev()
    assert ifnames(before), "the handle on the host's /proc/net/dev reads nothing"
    a, b = world.host("alpha"), world.host("bravo")
    ln = link(a, b, "10.1.0.1/30", "10.1.0.2/30")
    in_a = a.run(["cat", "/proc/net/dev"]).stdout
    assert ln.a_if in ifnames(in_a)
    after = ifnames(outer_netdev())
    assert ln.a_if not in after and ln.b_if not in after
    # The handle really shows another namespace: the world's own root
    # namespace has nothing but lo.
    with open("/proc/self/net/dev") as f:
        assert ifnames(f.read()) == {"lo"}
    assert ifnames(before) != {"lo"}


def test_dnsmasq_answers_and_logs_its_queries(world):
    client, dns = world.host("client"), world.host("dns")
    ln = link(client, dns, "10.2.0.1/24", "10.2.0.53/24")
    upstream = Dnsmasq(dns, ln.b_ip,
                       records={"wild.test": "192.0.2.10"},
                       host_records={"exact.test": ["192.0.2.20", "2001:db8::20"]},
                       ttl=120, local=["test"])

    r = dig(client, ln.b_ip, "exact.test")
    assert r.status == "NOERROR", r.output
    assert "aa" in r.flags
    assert r.addresses == ["192.0.2.20"] and r.ttls == [120]

    r = dig(client, ln.b_ip, "sub.wild.test", tcp=True)
    assert (r.status, r.addresses) == ("NOERROR", ["192.0.2.10"]), r.output

    r = dig(client, ln.b_ip, "exact.test", "AAAA")
    assert r.addresses == ["2001:db8::20"], r.output

    r = dig(client, ln.b_ip, "missing.test")
    assert r.status == "NXDOMAIN" and r.answers == [], r.output

    assert upstream.queries() == ["exact.test", "sub.wild.test", "exact.test", "missing.test"]
    assert upstream.queries("AAAA") == ["exact.test"]
    assert "never-asked.test" not in upstream.queries()
    assert all(q.client == ln.a_ip for q in upstream.query_log())

    # A per-host resolv.conf makes ordinary resolver clients use the peer.
    client.use_nameserver(ln.b_ip)
    out = client.run(["getent", "ahostsv4", "wild.test"]).stdout
    assert "192.0.2.10" in out

    # No reply at all is reported as status None, not as an exception.
    assert dig(client, ln.b_ip, "exact.test", port=5353).status is None


def test_dnsmasq_forwards_to_another_dnsmasq(world):
    client, fwd, auth = world.host("client"), world.host("fwd"), world.host("auth")
    l1 = link(client, fwd, "10.3.0.1/30", "10.3.0.2/30")
    l2 = link(fwd, auth, "10.3.1.1/30", "10.3.1.2/30")
    origin = Dnsmasq(auth, l2.b_ip, host_records={"far.test": "192.0.2.30"}, ttl=300)
    cache = Dnsmasq(fwd, l1.b_ip, servers=[l2.b_ip], cache=True)
    for _ in range(2):
        r = dig(client, l1.b_ip, "far.test")
        assert r.addresses == ["192.0.2.30"], r.output
    # The second question was answered from the forwarder's cache.
    assert origin.queries() == ["far.test"]
    assert cache.queries() == ["far.test", "far.test"]


def test_missing_prerequisite_fails_under_ci_and_skips_otherwise(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool-xyz"):
        require("no-such-tool-xyz", "some-package")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="some-package"):
        require("no-such-tool-xyz", "some-package")
    assert require("sh").endswith("/sh")


def test_world_close_stops_processes_and_removes_hosts(tmp_path):
    wd = w.World(tmp_path)
    h = wd.host("tmp")
    p = h.spawn(["sh", "-c", "sleep 600 & echo child $!; wait"], name="sleeper")
    child = int(wait_for_log(p, r"child (\d+)").group(1))
    wd.close()
    assert p.returncode is not None
    # The daemon's own child went with it (the whole process group is killed);
    # world PID 1 reaps it.
    wait_until(lambda: not os.path.exists(f"/proc/{child}"), what="the child to be gone")
    assert not os.path.exists("/run/netns/tmp")


def test_wait_helpers_report_what_they_waited_for(world):
    with pytest.raises(w.WaitTimeout, match="the moon to turn blue"):
        wait_until(lambda: False, timeout=0.1, what="the moon to turn blue")
    p = world.host("alpha").spawn(["sh", "-c", "echo starting; exit 3"], name="quitter")
    with pytest.raises(w.WaitTimeout, match="exited before printing") as e:
        wait_for_log(p, r"ready", timeout=5)
    assert "starting" in str(e.value)
