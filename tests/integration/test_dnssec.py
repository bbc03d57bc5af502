"""The DNS server under pressure from one local client: TCP slots, and the
EDNS size it advertises. Same topology as test_resolver.py: host "client"
runs tunnels on 127.0.0.1 (port chosen by the kernel), dnsmasq upstream."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="module")
def server(tmp_path_factory, tunnels_bin):
    # One world for the whole file; tunnels_bin is function-scoped in
    # conftest.py, so it is looked up here the same way.
    wd = world.World(tmp_path_factory.mktemp("dnssec"))
    try:
        yield Setup(wd, tunnels_bin)
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
