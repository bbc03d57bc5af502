"""The DNS server under pressure from one local client: TCP slots, and the
EDNS size it advertises. Same topology as test_resolver.py: host "client"
runs tunnels on 127.0.0.1 (port chosen by the kernel), dnsmasq upstream."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import world
from test_resolver import Setup
from world import wait_for_log

FILL_TCP = r"""
import socket, struct, sys

port, count = int(sys.argv[1]), int(sys.argv[2])


def query(sock, qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    sock.sendall(struct.pack(">H", len(q)) + q)


def answer(sock):
    data = b""
    while len(data) < 2 or len(data) < 2 + struct.unpack(">H", data[:2])[0]:
        try:
            chunk = sock.recv(65535)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return data[2:]


# Each client asks once and then sits idle, so all are known to be accepted;
# the first one has been idle the longest.
held = []
for i in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    query(s, i, "held%d.onion" % i)
    reply = answer(s)
    assert reply is not None and struct.unpack(">H", reply[:2])[0] == i, i
    held.append(s)
print("holding", len(held), flush=True)
new = socket.create_connection(("127.0.0.1", port))
new.settimeout(10)
query(new, 0xbeef, "newcomer.onion")
reply = answer(new)
print("newcomer", "answered" if reply and reply[:2] == b"\xbe\xef" else "closed", flush=True)


def closed(sock, wait):
    # Closed: EOF or reset at once. Open: nothing to read within `wait` (a
    # bound on an event that should not come, not a synchronisation).
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


print("oldest", "closed" if closed(held[0], 2) else "open", flush=True)
print("second", "closed" if closed(held[1], 0.2) else "open", flush=True)
"""


PRESSURE = r"""
import socket, struct, sys, time

port, count = int(sys.argv[1]), int(sys.argv[2])
q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x05quiet\x05onion\0" + struct.pack(">HH", 1, 1)
held = []
for i in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(15)
    s.sendall(struct.pack(">H", len(q)) + q)
    reply = s.recv(65535)
    assert reply[2:4] == b"\0\7" and reply[5] & 15 == 0, reply  # served, so accepted
    held.append(s)
start = time.monotonic()
assert held[-1].recv(1) == b""
print("closed after %.1f s" % (time.monotonic() - start), flush=True)
"""


def test_idle_tcp_clients_get_a_shorter_timeout_under_pressure(server):
    # Over half of the 256 slots taken: idle clients are closed after 2 s,
    # not the usual 10.
    r = server.client.run(["python3", "-c", PRESSURE, str(server.port), "160"])
    m = re.search(r"closed after ([0-9.]+) s", r.stdout)
    assert m, r.stdout + r.stderr
    assert 1.0 <= float(m.group(1)) < 5.0, r.stdout


PIPELINE = r"""
import socket, struct, sys, time


def query(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    return struct.pack(">H", len(q)) + q


buffered = b""


def answer(sock):
    global buffered
    while len(buffered) < 2 or len(buffered) < 2 + struct.unpack(">H", buffered[:2])[0]:
        chunk = sock.recv(65535)
        assert chunk, "closed"
        buffered += chunk
    n = 2 + struct.unpack(">H", buffered[:2])[0]
    reply, buffered = buffered[2:n], buffered[n:]
    return reply


s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(10)
start = time.monotonic()
s.sendall(query(1, "www.slow.test") + query(2, "fast.onion"))
first = answer(s)
print("first id %d after %.2f s" % (struct.unpack(">H", first[:2])[0], time.monotonic() - start))
second = answer(s)
print("second id %d rcode %d" % (struct.unpack(">H", second[:2])[0], second[3] & 15), flush=True)
"""


def test_pipelined_tcp_queries_are_answered_concurrently(server):
    # A fake answer must not wait behind a forward to an upstream that does
    # not answer: replies may come out of order, each with its query's ID.
    r = server.client.run(["python3", "-c", PIPELINE, str(server.port)])
    assert "first id 2 after 0." in r.stdout, r.stdout + r.stderr
    assert "second id 1 rcode 2" in r.stdout, r.stdout + r.stderr  # SERVFAIL, later


@pytest.fixture(scope="module")
def server(tmp_path_factory, tunnels_bin):
    # One world for the whole file; tunnels_bin is function-scoped in
    # conftest.py, so it is looked up here the same way.
    wd = world.World(tmp_path_factory.mktemp("dnssec"))
    try:
        # dnsmasq forwards slow.test to an address no host has, so a query
        # for it waits until tunnels' upstreamDnsTimeout (2 s).
        yield Setup(wd, tunnels_bin, dnsmasq_args=["--server=/slow.test/10.0.0.99"])
    finally:
        wd.close()


@pytest.fixture(scope="module")
def tunnels_bin():
    value = os.environ.get("TUNNELS_BIN")
    if not value or not os.access(value, os.X_OK):
        world.missing(f"TUNNELS_BIN={value} is not an executable file (build it first)")
    return Path(value)


def test_a_new_tcp_client_displaces_the_one_idle_the_longest(server):
    # 256 clients that hold their connections open must not lock everyone
    # else out of DNS over TCP: the newcomer is served and the client idle
    # the longest is closed, the others are left alone.
    mark = server.proc.mark()
    filler = server.client.spawn(["python3", "-c", FILL_TCP, str(server.port), "256"],
                                 name="fill-tcp")
    wait_for_log(filler, r"holding 256")
    wait_for_log(filler, r"second (open|closed)")
    out = filler.output()
    assert "newcomer answered" in out, out + server.proc.output()
    assert "oldest closed" in out, out
    assert "second open" in out, out
    wait_for_log(server.proc, r"too many TCP clients \(256\); closing the one idle the longest",
                 since=mark)


def test_replies_advertise_an_edns_size_of_1232(server):
    # dnsPacketSize is 65535 by default; what tunnels advertises is the DNS
    # flag day figure, so that answers are not sized to fragment.
    for name, tcp in (("size.onion", False), ("size.onion", True), ("www.plain.test", False)):
        r = server.ask(name, tcp=tcp, extra=["+bufsize=4096"])
        assert r.status == "NOERROR", r.output
        if name.endswith(".onion"):
            assert "udp: 1232" in r.output, r.output
