"""The fake-address DNS server against a real upstream (dnsmasq, logging every
query it receives) and a real client (dig), in a private world.

Topology: host "client" runs tunnels on 127.0.0.1 (port chosen by the kernel)
and dig; host "up" runs dnsmasq on 10.0.0.1:53, joined by a veth link."""

from __future__ import annotations

import ipaddress
import os
import re
import textwrap
import time

import pytest

from world import Dnsmasq, dig, wait_for_log

FAKE_NET = ipaddress.ip_network("198.18.0.0/15")
BLACKHOLE = "198.19.255.255"

RULES = """
proxies:
  tor: {type: socks5, address: 127.0.0.1:9050}
rules:
  "*.onion": tor
  .ruled.test: tor
  ads.plain.test: block
"""


class Setup:
    def __init__(self, world, tunnels_bin, extra: str = "", upstream: str = "10.0.0.1",
                 records=None, dnsmasq_args=(), start=True):
        self.client = world.host("client")
        self.up = world.host("up")
        world.link(self.client, self.up, "10.0.0.2/24", "10.0.0.1/24")
        self.dnsmasq = Dnsmasq(self.up, "10.0.0.1", local=["test"], extra_args=dnsmasq_args,
                               records=records or {"www.plain.test": "192.0.2.10",
                                                   "ads.plain.test": "192.0.2.66"})
        self.conf = world.tmp_path / "tunnels.yml"
        self.conf.write_text(textwrap.dedent(f"""
            upstreamDns: {upstream}
            dnsBindAddress: 127.0.0.1
            dnsPort: 0
            overwriteResolvconf: false
            addressCleanupTime: 400
            upstreamDnsTimeout: 2
        """) + extra + RULES)
        self.tunnels_bin = tunnels_bin
        self.world = world
        if start:
            self.start()

    def start(self, *args):
        self.proc = self.client.spawn([str(self.tunnels_bin), "system", "-v", *args,
                                       str(self.conf)], name="tunnels", line_buffered=False)
        m = wait_for_log(self.proc, r"\[DNS\] listening on udp 127\.0\.0\.1:(\d+)")
        self.port = int(m.group(1))
        wait_for_log(self.proc, r"\[DNS\] listening on tcp 127\.0\.0\.1:%d" % self.port)

    def ask(self, name, qtype="A", **kw):
        return dig(self.client, "127.0.0.1", name, qtype, port=self.port, **kw)

    def upstream_saw(self, fragment: str) -> list[str]:
        return [n for n in self.dnsmasq.queries() if fragment in n.lower()]


@pytest.fixture
def setup(world, tunnels_bin):
    return Setup(world, tunnels_bin)


def test_ruled_name_gets_a_stable_fake_address_with_quarter_ttl(setup):
    first = setup.ask("abc.onion")
    assert first.status == "NOERROR"
    assert len(first.addresses) == 1
    address = ipaddress.ip_address(first.addresses[0])
    assert address in FAKE_NET and str(address) != BLACKHOLE
    assert first.ttls == [100]  # addressCleanupTime 400 / 4
    assert setup.ask("abc.onion").addresses == first.addresses
    assert setup.ask("ABC.Onion.").addresses == first.addresses  # case and trailing dot
    other = setup.ask("www.ruled.test")
    assert other.addresses and other.addresses != first.addresses
    assert setup.ask("ruled.test").addresses[0] != other.addresses[0]
    # The name in the answer keeps the case of the question (DNS 0x20).
    assert setup.ask("MiXeD.onion").answers[0].name == "MiXeD.onion."
    assert setup.upstream_saw("onion") == [] and setup.upstream_saw("ruled") == []


def test_other_types_for_ruled_names_are_answered_empty_and_never_leak(setup):
    for qtype in ("AAAA", "MX", "TXT", "HTTPS", "SVCB", "SRV", "NS", "CAA"):
        r = setup.ask("abc.onion", qtype)
        assert (r.status, r.answers) == ("NOERROR", []), qtype
        r = setup.ask("x.ruled.test", qtype, tcp=True)
        assert (r.status, r.answers) == ("NOERROR", []), qtype
    assert setup.upstream_saw("onion") == [] and setup.upstream_saw("ruled") == []


def test_ptr_of_a_fake_address_names_it(setup):
    address = setup.ask("hidden.onion").addresses[0]
    r = setup.ask(ipaddress.ip_address(address).reverse_pointer, "PTR")
    assert r.status == "NOERROR"
    assert [a.data for a in r.answers] == ["hidden.onion."]
    unmapped = ipaddress.ip_address("198.18.200.7").reverse_pointer
    assert setup.ask(unmapped, "PTR").status == "NXDOMAIN"
    assert setup.upstream_saw("in-addr.arpa") == []


def test_unruled_names_are_forwarded_and_returned_unmodified(setup):
    direct = dig(setup.client, "10.0.0.1", "www.plain.test")
    via = setup.ask("www.plain.test")
    assert direct.status == via.status == "NOERROR"
    assert via.answers == direct.answers
    assert via.flags == direct.flags
    assert setup.ask("nothing.plain.test").status == "NXDOMAIN"
    assert setup.ask("www.plain.test", tcp=True).answers == direct.answers
    assert "www.plain.test" in setup.dnsmasq.queries()


def test_block_rule_answers_the_blackhole(setup):
    r = setup.ask("ads.plain.test")
    assert r.addresses == [BLACKHOLE]
    assert setup.ask("ads.plain.test", "AAAA").answers == []
    assert setup.upstream_saw("ads.plain") == []


def test_block_undefined_domains(world, tunnels_bin):
    s = Setup(world, tunnels_bin, extra="blockUndefinedDomains: true\n")
    assert s.ask("www.plain.test").addresses == [BLACKHOLE]
    assert s.ask("www.plain.test", "AAAA").answers == []
    assert s.ask("abc.onion").addresses[0] != BLACKHOLE
    assert s.dnsmasq.queries() == []


def test_failover_to_the_next_upstream_when_one_is_dead(world, tunnels_bin):
    # 10.0.0.1:5399 refuses at once (nothing listens); 10.0.0.77 does not
    # exist at all (no answer, the try times out); the real one answers.
    s = Setup(world, tunnels_bin, upstream="10.0.0.1:5399, 10.0.0.77, 10.0.0.1")
    for _ in range(6):  # the first server tried is chosen at random
        start = time.monotonic()
        r = s.ask("www.plain.test", timeout=5)
        assert r.addresses == ["192.0.2.10"], r.output
        assert time.monotonic() - start < 3.5


def test_servfail_when_every_upstream_is_dead(world, tunnels_bin):
    s = Setup(world, tunnels_bin, upstream="10.0.0.77, 10.0.0.1:5399")
    start = time.monotonic()
    r = s.ask("www.plain.test", timeout=5)
    assert r.status == "SERVFAIL"
    assert time.monotonic() - start < 4  # upstreamDnsTimeout is 2 s
    assert s.ask("abc.onion").status == "NOERROR"  # ruled names need no upstream


def test_truncated_udp_reply_and_tcp_retry(world, tunnels_bin):
    many = [f"192.0.2.{i}" for i in range(1, 61)]
    s = Setup(world, tunnels_bin, records={"big.plain.test": many, "www.plain.test": "192.0.2.10"})
    udp = s.ask("big.plain.test", extra=["+noedns", "+ignore"])
    assert "tc" in udp.flags
    tcp = s.ask("big.plain.test", tcp=True)
    assert sorted(tcp.addresses) == sorted(many)
    auto = s.ask("big.plain.test", extra=["+noedns"])  # dig retries over TCP itself
    assert len(auto.addresses) == 60


MALFORMED = r"""
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
def ask(data):
    s.sendto(data, ("127.0.0.1", port))
    try:
        return s.recv(65535)
    except socket.timeout:
        return None
header = bytes.fromhex("abcd01000001000000000000")
cases = {
    "empty": b"",
    "short": b"\x12\x34\x01",
    "garbage": bytes(range(256)) * 3,
    "pointer-loop": header + b"\xc0\x0c\x00\x01\x00\x01",
    "forward-pointer": header + b"\xc0\x20\x00\x01\x00\x01",
    "label-past-end": header + b"\x3fabc",
    "two-questions": bytes.fromhex("abcd01000002000000000000") + b"\x01a\x00\x00\x01\x00\x01" * 2,
    "response": bytes.fromhex("abcd81800001000000000000") + b"\x01a\x00\x00\x01\x00\x01",
    "count-lies": bytes.fromhex("abcd0100ffffffffffffffff") + b"\x01a\x00\x00\x01\x00\x01",
}
for name, data in cases.items():
    reply = ask(data)
    rcode = None if reply is None else reply[3] & 0x0F
    print(name, rcode)
"""


def test_malformed_queries_get_formerr_or_nothing_and_the_server_lives(setup):
    out = setup.client.run(["python3", "-c", MALFORMED, str(setup.port)]).stdout
    results = dict(line.split() for line in out.splitlines())
    assert results["empty"] == results["short"] == "None"
    assert results["response"] == "None"  # never answer a response: loops
    for case in ("pointer-loop", "forward-pointer", "label-past-end", "two-questions",
                 "count-lies"):
        assert results[case] in ("1", "None"), (case, results[case])  # FORMERR or dropped
    assert setup.ask("abc.onion").status == "NOERROR"
    assert setup.proc.alive()
    # The log says what was wrong and who sent it.
    assert re.search(r"\[DNS\] malformed query: .* \(from 127\.0\.0\.1:\d+\)",
                     setup.proc.output()), setup.proc.output()


def test_an_upstream_that_is_tunnels_itself_is_refused(world, tunnels_bin):
    client = world.host("client")
    conf = world.tmp_path / "loop.yml"
    conf.write_text("upstreamDns: 127.0.0.1:5353\ndnsPort: 5353\noverwriteResolvconf: false\n")
    r = client.run([str(tunnels_bin), "system", str(conf)], check=False, timeout=10)
    assert r.returncode == 1
    assert "is tunnels' own address; queries would loop" in r.stderr


def test_port_in_use_is_a_clear_setup_error(world, tunnels_bin):
    s = Setup(world, tunnels_bin)
    conf = world.tmp_path / "second.yml"
    conf.write_text(f"upstreamDns: 10.0.0.1\ndnsPort: {s.port}\noverwriteResolvconf: false\n")
    r = s.client.run([str(tunnels_bin), "system", str(conf)], check=False, timeout=10)
    assert r.returncode == 1
    assert re.search(r"cannot listen on udp 127\.0\.0\.1:\d+: Address already in use", r.stderr)


def test_silent_log_hides_modules(world, tunnels_bin):
    s = Setup(world, tunnels_bin, extra="silentLog: FAKEIP\n")
    s.ask("quiet.onion")
    s.ask("ads.plain.test")
    wait_for_log(s.proc, r"\[DNS\] blocked ads\.plain\.test")
    assert "[FAKEIP]" not in s.proc.output()


def test_sigterm_stops_cleanly(setup):
    import signal
    setup.proc.signal(signal.SIGTERM)
    wait_for_log(setup.proc, r"\[DNS\] stopping on SIGTERM")
    setup.proc.popen.wait(timeout=5)
    assert setup.proc.returncode == 0


SILENT_UPSTREAM = r"""
import signal, socket
# Takes queries over UDP and TCP and answers none; says when each arrived.
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("10.0.0.1", 5400))
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("10.0.0.1", 5400))
tcp.listen()
print("ready", flush=True)
udp.recv(65535)
print("udp query held", flush=True)
conn, _ = tcp.accept()
conn.recv(65535)
print("tcp query held", flush=True)
signal.pause()
"""


def test_sigterm_with_queries_in_flight_exits_cleanly(world, tunnels_bin):
    # A forwarded UDP query and a DNS client over TCP are both waiting for an
    # upstream that never answers when tunnels stops: their coroutines are
    # destroyed with the stack still there (the sanitizer build checks that
    # nothing is touched after it is freed), and tunnels exits 0 at once.
    import signal
    s = Setup(world, tunnels_bin, upstream="10.0.0.1:5400", start=False)
    s.conf.write_text(s.conf.read_text().replace("upstreamDnsTimeout: 2", "upstreamDnsTimeout: 30"))
    silent = s.up.spawn(["python3", "-c", SILENT_UPSTREAM], name="silent-upstream")
    wait_for_log(silent, "ready")
    s.start()
    s.client.spawn(["dig", "@127.0.0.1", "-p", str(s.port), "+tries=1", "+timeout=20",
                    "udp.plain.test"], name="dig-udp")
    wait_for_log(silent, "udp query held")
    s.client.spawn(["dig", "@127.0.0.1", "-p", str(s.port), "+tcp", "+tries=1", "+timeout=20",
                    "tcp.plain.test"], name="dig-tcp")
    wait_for_log(silent, "tcp query held")
    s.proc.signal(signal.SIGTERM)
    s.proc.popen.wait(timeout=5)
    assert s.proc.returncode == 0, s.proc.output()
    assert "Sanitizer" not in s.proc.output() and "runtime error" not in s.proc.output()


def test_upstream_reply_over_dns_packet_size_tells_the_client_to_use_tcp(world, tunnels_bin):
    # dnsPacketSize caps what is read: an upstream reply longer than that is
    # cut short by the read, and must not reach the client as a message
    # whose counts lie. The client gets TC (ask over TCP) instead.
    many = [f"192.0.2.{i}" for i in range(1, 61)]
    s = Setup(world, tunnels_bin, extra="dnsPacketSize: 512\n",
              records={"big.plain.test": many, "www.plain.test": "192.0.2.10"})
    r = s.ask("big.plain.test", extra=["+bufsize=4096", "+ignore"])
    assert r.status == "NOERROR", r.output
    assert "tc" in r.flags, r.output
    assert r.answers == [], r.output
    assert "malformed" not in r.output.lower() and "bad packet" not in r.output.lower()
    assert s.ask("www.plain.test").addresses == ["192.0.2.10"]  # small replies pass as before


REFUSING_UPSTREAM = r"""
import socket
# Refuses every query as some servers and middleboxes do: REFUSED, and no
# question section.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.0.0.1", 5401))
print("ready", flush=True)
while True:
    query, peer = s.recvfrom(65535)
    flags = 0x8000 | (query[2] & 0x01) << 8 | 0x0080 | 5  # QR, RD as asked, RA, REFUSED
    s.sendto(query[:2] + flags.to_bytes(2, "big") + bytes(8), peer)
"""


def test_an_error_reply_without_question_is_passed_on(world, tunnels_bin):
    s = Setup(world, tunnels_bin, upstream="10.0.0.1:5401", start=False)
    refusing = s.up.spawn(["python3", "-c", REFUSING_UPSTREAM], name="refusing-upstream")
    wait_for_log(refusing, "ready")
    s.start()
    start = time.monotonic()
    r = s.ask("www.plain.test", timeout=5)
    assert r.status == "REFUSED", r.output  # the upstream's word, not SERVFAIL
    assert time.monotonic() - start < 1.5  # at once, not after upstreamDnsTimeout (2 s)


HOLD_TCP = r"""
import signal, socket, sys
# Opens TCP connections to the DNS port and holds them, sending nothing.
held = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]
print("holding", len(held), flush=True)
signal.pause()
"""


def test_out_of_descriptors_the_tcp_server_waits_instead_of_spinning(world, tunnels_bin):
    # With its descriptors used up by TCP clients, accept() fails at once for
    # as long as a connection is queued; the server must back off, not retry
    # in a loop that eats a core, and fake answers must go on.
    s = Setup(world, tunnels_bin, start=False)
    s.start = lambda: None
    s.proc = s.client.spawn(["prlimit", "--nofile=48", str(tunnels_bin), "system", "-v",
                             str(s.conf)], name="tunnels", line_buffered=False)
    m = wait_for_log(s.proc, r"\[DNS\] listening on udp 127\.0\.0\.1:(\d+)")
    s.port = int(m.group(1))
    wait_for_log(s.proc, r"\[DNS\] listening on tcp")
    mark = s.proc.mark()
    s.client.spawn(["python3", "-c", HOLD_TCP, str(s.port), "80"], name="hold")
    wait_for_log(s.proc, r"accepting a TCP client: Too many open files", since=mark)
    pid = int(s.client.run(["pgrep", "-x", "tunnels"]).stdout.split()[0])

    def cpu() -> float:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before, started = cpu(), time.monotonic()
    # Fake answers need no descriptor (forwarding does: a socket per query).
    assert s.ask("abc.onion").status == "NOERROR"
    time.sleep(1)  # a window to measure CPU time over, not a wait for an event
    used = (cpu() - before) / (time.monotonic() - started)
    assert used < 0.3, f"tunnels used {used:.0%} of a core while out of descriptors"
