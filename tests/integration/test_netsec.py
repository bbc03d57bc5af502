"""Hostile DNS answers against `direct`, and a hostile neighbour (issue 15,
items 3, 4 and 5).

Host "srv" runs dnsmasq answering names of a `direct` rule with loopback,
0.0.0.0 and a fake address; host "client" runs tunnels system and a
loopback-only HTTP service that such answers would otherwise reach."""

from __future__ import annotations

import sys

from sites import HELLO, SYSTEM_CONFIG, TwoHosts
from world import dig, wait_for_log

CONFIG = SYSTEM_CONFIG + """\
rules:
  .via-direct.test: direct
"""

# A loopback-only service on the client, on a port the kernel chooses.
SECRET_SERVER = r"""
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"secret\n")
s = socketserver.TCPServer(("127.0.0.1", 0), H)
print("port", s.server_address[1], flush=True)
s.serve_forever()
"""


# Opens argv[3] connections to argv[1]:argv[2], prints "held", and keeps
# them open until killed.
HOLDER = r"""
import resource, socket, sys, time
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for _ in range(int(sys.argv[3])):
    try:
        held.append(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5))
    except OSError:
        pass
print("held", flush=True)
while True:
    time.sleep(3600)
"""


class NetsecWorld(TwoHosts):
    def __init__(self, world, tunnels_bin, prefix=()):
        super().__init__(world, records={
            "loop.via-direct.test": ["127.0.0.1"],
            "zero.via-direct.test": ["0.0.0.0"],
            "fake.via-direct.test": ["198.18.0.1"],
            "fine.via-direct.test": ["10.0.0.1"],
        })
        self.secret = self.client.spawn([sys.executable, "-c", SECRET_SERVER], name="secret")
        self.secret_port = int(wait_for_log(self.secret, r"^port (\d+)").group(1))
        self.tunnels = self.start_system(tunnels_bin, CONFIG, prefix=prefix)


def test_direct_refuses_answers_that_reach_this_host(world, tunnels_bin):
    """One world for every case: loopback, 0.0.0.0 and the fake range are
    refused with a log line; an ordinary answer still connects."""
    nw = NetsecWorld(world, tunnels_bin)
    for name in ("loop", "zero", "fake"):
        r = nw.curl(f"http://{name}.via-direct.test:{nw.secret_port}/", check=False, timeout=20)
        assert r.returncode != 0 and "secret" not in r.stdout, name
        wait_for_log(nw.tunnels, rf"refused the upstream DNS server's answer for "
                                 rf"'{name}\.via-direct\.test'")
    assert nw.curl("http://fine.via-direct.test/").stdout == HELLO


def test_a_neighbour_routing_the_fake_range_here_is_not_relayed(world, tunnels_bin):
    """srv routes 198.18.0.0/15 via the client and connects to a fake
    address the client's tunnels handed out for a `direct` name: the packets
    are dropped (curl times out), while the client's own programs still get
    through."""
    nw = NetsecWorld(world, tunnels_bin)
    fake = dig(nw.client, "127.0.0.1", "fine.via-direct.test").addresses
    assert fake and fake[0].startswith("198.1")
    nw.srv.run(["ip", "route", "add", "198.18.0.0/15", "via", "10.0.0.2"])
    r = nw.srv.run(["curl", "-sS", "--connect-timeout", "2", f"http://{fake[0]}/"],
                   check=False, timeout=20)
    assert r.returncode != 0 and HELLO not in r.stdout
    assert nw.curl("http://fine.via-direct.test/").stdout == HELLO


def test_held_connections_leave_descriptors_for_dns(world, tunnels_bin):
    """With 1024 descriptors, 600 held connections would take 1200: the cap
    refuses the ones beyond it (one log line), and DNS forwarding goes on."""
    nw = NetsecWorld(world, tunnels_bin, prefix=["prlimit", "--nofile=1024:1024"])
    fake = dig(nw.client, "127.0.0.1", "fine.via-direct.test").addresses[0]
    holder = nw.client.spawn([sys.executable, "-c", HOLDER, fake, "80", "600"], name="holder")
    wait_for_log(holder, r"^held", timeout=60)
    r = dig(nw.client, "127.0.0.1", "other.test")  # no rule: forwarded upstream
    assert r.status == "NOERROR" and r.addresses == ["10.0.0.1"], r.output
    wait_for_log(nw.tunnels, r"refusing new connections")
    assert nw.tunnels.output().count("refusing new connections") == 1
