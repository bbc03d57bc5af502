#!/usr/bin/python3
"""The proxy engine of tunnels against redsocks, curl's own SOCKS5 and no
proxy at all: bulk throughput, new connections per second, CPU time per
connection and per gigabyte, memory per idle connection.

Run it through bench/run-engine-bench.sh, which builds a Release tunnels,
installs the peers and enters a private world (user + network + mount + PID
namespaces); inside, this script builds the topology with
tests/integration/world.py:

  host "tun"   (10.1.1.2)  tunnels system -q, its own resolver 127.0.0.1:53;  ┐
                           curl / wrk / Python clients by name                 │ veth
  host "red"   (10.1.2.2)  redsocks (type socks5 -> dante), nft `redirect`     │ each
                           of TCP to 10.0.0.1 (but :1080) to redsocks; curl / wrk ├──► host "srv"
  host "plain" (10.1.3.2)  curl --socks5-hostname to dante; curl to nginx      │
                           (no proxy, no transparent hop)                      ┘
  host "srv"   10.0.0.1 (on lo, reached through each veth):
                 dnsmasq :53 (every *.test name is 10.0.0.1, TTL 300 s, no query log),
                 nginx :80 (big.bin, small.html; one worker, sendfile),
                 dante :1080 (no auth, errors-only log),
                 a Python asyncio server :9000 that accepts and holds connections.

Every client namespace gets an identical veth to srv, so each contender has
the same path; the only difference is what sits on the client side.

Contenders:
  tunnels          `.bench.test: dante`: curl/wrk ask for NAME.bench.test, get a
                   fake address, the engine relays through dante by name.
  redsocks         Debian's redsocks 0.5 (`type = socks5`, to the same dante),
                   clients connect to 10.0.0.1, nft redirects them.
  curl-socks5      curl --socks5-hostname 10.0.0.1:1080: the client speaks SOCKS5
                   itself, no extra hop (the limit for a transparent relay).
  tunnels-direct   `.direct.test: direct`: the engine connects to nginx itself.
  no-proxy         curl straight to nginx.

Phases, each with every contender interleaved run by run (the order rotates
from run to run), medians over the runs:
  throughput   curl -o /dev/null of a 1 GiB file, speed_download;
               CPU of the relay process (tunnels / redsocks) per GiB.
  conns/s      wrk -t1 -c50 -d8s -H 'Connection: close' on a small file;
               CPU of the relay process per 1000 connections.
  memory       N idle connections held open through tunnels (direct rule, to the
               holding server), VmRSS of tunnels before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import world as w  # tests/integration/world.py, on PYTHONPATH (bench/lib.sh)
from benchlib import (CLK_TCK, DNSMASQ, GIB, arguments, bench_world, closing, command_line,
                      cpu_delta, dpkg_version, enter, loadavg, log, machine, median, mib_s,
                      publish, rotate, star, star_dnsmasq, update_doc, world_cpu, write_random)
from peers import Dante, Nginx, wait_for_port

BEGIN = "<!-- engine-bench:begin -->"
END = "<!-- engine-bench:end -->"

SRV_IP = "10.0.0.1"
DANTE_PORT = 1080
HOLD_PORT = 9000
REDSOCKS_PORT = 12345
CLIENTS = {"tun": 1, "red": 2, "plain": 3}   # host -> third octet of its link
PAGE = os.sysconf("SC_PAGE_SIZE")

THROUGHPUT = ("tunnels", "redsocks", "curl-socks5", "tunnels-direct", "no-proxy")
CONNS = ("tunnels", "redsocks", "tunnels-direct", "no-proxy")

TUNNELS_CONFIG = f"""\
upstreamDns: {SRV_IP}
dnsBindAddress: 127.0.0.1
dnsPort: 53
overwriteResolvconf: false
proxies:
  dante: {{type: socks5, address: {SRV_IP}:{DANTE_PORT}}}
rules:
  .bench.test: dante
  .direct.test: direct
"""

REDSOCKS_CONFIG = f"""\
base {{
  log_debug = off;
  log_info = off;
  log = stderr;
  daemon = off;
  redirector = iptables;
}}
redsocks {{
  local_ip = 127.0.0.1;
  local_port = {REDSOCKS_PORT};
  ip = {SRV_IP};
  port = {DANTE_PORT};
  type = socks5;
}}
"""

# As users set redsocks up: locally generated TCP to the target is redirected
# to redsocks's port, except redsocks's own connections to the proxy.
REDSOCKS_NFT = f"""\
table ip redsocks {{
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr {SRV_IP} tcp dport != {DANTE_PORT} redirect to :{REDSOCKS_PORT}
  }}
}}
"""

# nginx as peers.Nginx starts it, tuned for many short connections.
NGINX_TUNING = dict(main="worker_rlimit_nofile 20000;",
                    http="tcp_nopush on; keepalive_timeout 65;",
                    listen="backlog=4096 reuseport", connections=8192, log_level="warn")

# Accepts connections and holds them open (reads and drops whatever comes).
HOLD_SERVER = r"""
import asyncio, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def handle(r, w):
    while await r.read(65536):
        pass
    w.close()
async def main():
    server = await asyncio.start_server(handle, sys.argv[1], int(sys.argv[2]), backlog=4096)
    print("holding", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

# Opens N idle connections to ADDRESS:PORT, prints "opened N", holds them
# until its standard input closes or it is killed.
HOLD_CLIENT = r"""
import resource, socket, sys, time
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
address, port, n = socket.gethostbyname(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
held, errors = [], {}
for i in range(n):
    try:
        held.append(socket.create_connection((address, port), timeout=10))
    except OSError as e:
        errors[repr(e)] = errors.get(repr(e), 0) + 1
print(f"opened {len(held)} errors {errors}", flush=True)
while True:
    time.sleep(3600)
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def user_seconds(pid: int) -> float:
    """User CPU time of process `pid` so far (the rest is in the kernel)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files limit for {pid}")


# --------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------


class Bench:
    def __init__(self, world: w.World, tunnels: Path, tmp: Path, big_size: int):
        self.world = world
        self.tmp = tmp
        self.srv, self.hosts = star(world, [SRV_IP], CLIENTS)

        # srv: dnsmasq, nginx, dante, the holding server.
        # A TTL, as real names have (dnsmasq's own answers get 0 unless
        # told): tunnels' `direct` keeps an answer for its TTL.
        self.dnsmasq = star_dnsmasq(self.srv, tmp, SRV_IP, SRV_IP, ["--local-ttl=300"])

        www = tmp / "www"
        www.mkdir(exist_ok=True)
        (www / "small.html").write_text("x" * 1000 + "\n")
        write_random(www / "big.bin", big_size)
        self.big_size = big_size
        self.nginx = Nginx(self.srv, SRV_IP, 80, www, **NGINX_TUNING).proc
        self.dante = Dante(self.srv, SRV_IP, DANTE_PORT, log="error").proc
        self.holder = self.srv.spawn(["python3", "-c", HOLD_SERVER, SRV_IP, str(HOLD_PORT)],
                                     name="holder")
        wait_for_port(self.srv, SRV_IP, HOLD_PORT, "holder", self.holder, timeout=15)

        # tun: tunnels, and its DNS server as the namespace's resolver.
        tun = self.hosts["tun"]
        conf = tmp / "tunnels.yml"
        conf.write_text(TUNNELS_CONFIG)
        self.tunnels = tun.spawn([str(tunnels), "system", "-q", str(conf)], name="tunnels",
                                 line_buffered=False)
        # -q prints nothing when all is well: wait for the fake answers.
        fake = re.compile(r"198\.1[89]\.\d+\.\d+$")
        w.wait_until(lambda: self._fake_answer(tun, fake), timeout=15,
                     what="tunnels to answer with a fake address")
        tun.use_nameserver("127.0.0.1")
        check_comm(self.tunnels, "tunnels")

        # red: redsocks and its nft redirect.
        red = self.hosts["red"]
        (tmp / "redsocks.conf").write_text(REDSOCKS_CONFIG)
        (tmp / "redsocks.nft").write_text(REDSOCKS_NFT)
        red.run(["nft", "-f", str(tmp / "redsocks.nft")])
        self.redsocks = red.spawn(["redsocks", "-c", str(tmp / "redsocks.conf")],
                                  name="redsocks", line_buffered=False)
        wait_for_port(red, "127.0.0.1", REDSOCKS_PORT, "redsocks", self.redsocks, timeout=15)
        check_comm(self.redsocks, "redsocks")
        self.hosts["plain"].use_nameserver(SRV_IP)

        # Every path carries the small file before anything is measured.
        for who in THROUGHPUT:
            r = self.curl(who, "small.html", out="-")
            if r.stdout.strip() != "x" * 1000:
                raise AssertionError(f"{who}: wrong answer {r.stdout[:200]!r}\n{r.stderr}")

    def _fake_answer(self, host: w.Host, fake: re.Pattern) -> bool:
        if not self.tunnels.alive():
            raise AssertionError(f"tunnels exited:\n{self.tunnels.tail()}")
        r = w.dig(host, "127.0.0.1", "probe.bench.test", timeout=1)
        return bool(r.addresses) and bool(fake.match(r.addresses[0]))

    def relay_pid(self, who: str) -> int | None:
        if who.startswith("tunnels"):
            return self.tunnels.pid
        if who == "redsocks":
            return self.redsocks.pid
        return None

    def where(self, who: str) -> tuple[w.Host, str, list[str]]:
        """(host, base URL, extra curl args) of a contender."""
        if who == "tunnels":
            return self.hosts["tun"], "http://big.bench.test/", []
        if who == "tunnels-direct":
            return self.hosts["tun"], "http://big.direct.test/", []
        if who == "redsocks":
            return self.hosts["red"], f"http://{SRV_IP}/", []
        if who == "curl-socks5":
            return self.hosts["plain"], "http://big.bench.test/", [
                "--socks5-hostname", f"{SRV_IP}:{DANTE_PORT}"]
        if who == "no-proxy":
            return self.hosts["plain"], f"http://{SRV_IP}/", []
        raise ValueError(who)

    def curl_argv(self, who: str, path: str, out: str = "/dev/null") -> tuple[w.Host, list[str]]:
        host, base, extra = self.where(who)
        return host, ["curl", "-sS", "--fail", "--max-time", "300", *extra, "-o", out,
                      *(["-w", "%{speed_download} %{size_download}"] if out != "-" else []),
                      base + path]

    def curl(self, who: str, path: str, out: str = "/dev/null") -> subprocess.CompletedProcess:
        host, argv = self.curl_argv(who, path, out)
        return host.run(argv, timeout=330)

    def check_alive(self) -> None:
        for p in (self.tunnels, self.redsocks, self.dante, self.nginx, self.dnsmasq, self.holder):
            if not p.alive():
                raise AssertionError(f"{p!r} died:\n{p.tail()}")


def check_comm(proc: w.Proc, expected: str) -> None:
    """The spawned pid must be the program itself (the wrappers exec it), since
    its CPU time and memory are read from /proc/PID."""
    comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
    if comm != expected:
        raise AssertionError(f"pid {proc.pid} is {comm!r}, not {expected!r}")


# --------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------


class Download(NamedTuple):
    speed: float      # bytes per second, curl's speed_download
    size: int
    relay_cpu: float  # CPU seconds of the relay process during it (0 without one)
    procs: dict       # CPU seconds by program during it (see world_cpu)
    relay_user: float = 0.0  # the user-space part of relay_cpu


class WrkRun(NamedTuple):
    rps: float
    requests: int
    errors: int       # socket errors + non-2xx
    seconds: float
    relay_cpu: float
    procs: dict
    relay_user: float = 0.0


def download(bench: Bench, who: str) -> Download:
    pid = bench.relay_pid(who)
    all0 = world_cpu()
    cpu0 = cpu_seconds(pid) if pid else 0.0
    user0 = user_seconds(pid) if pid else 0.0
    r = bench.curl(who, "big.bin")
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
    user = (user_seconds(pid) - user0) if pid else 0.0
    procs = cpu_delta(all0, world_cpu())
    speed, size = r.stdout.split()
    if int(size) != bench.big_size:
        raise AssertionError(f"{who}: got {size} bytes of {bench.big_size}")
    return Download(float(speed), int(size), cpu, procs, user)


_WRK_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(\w+)")
_WRK_RPS = re.compile(r"Requests/sec:\s*([\d.]+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def wrk_argv(bench: Bench, who: str, args: argparse.Namespace, seconds: float) -> tuple[w.Host, list[str]]:
    host, base, _ = bench.where(who)
    base = base.replace("//big.", "//small.")
    return host, ["wrk", f"-t{args.wrk_threads}", f"-c{args.wrk_connections}", f"-d{seconds:g}s",
                  "-H", "Connection: close", base + "small.html"]


def run_wrk(bench: Bench, who: str, args: argparse.Namespace, seconds: float) -> WrkRun:
    host, argv = wrk_argv(bench, who, args, seconds)
    pid = bench.relay_pid(who)
    all0 = world_cpu()
    cpu0 = cpu_seconds(pid) if pid else 0.0
    user0 = user_seconds(pid) if pid else 0.0
    r = host.run(argv, timeout=seconds + 60)
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
    user = (user_seconds(pid) - user0) if pid else 0.0
    procs = cpu_delta(all0, world_cpu())
    out = r.stdout
    m = _WRK_REQUESTS.search(out)
    rps = _WRK_RPS.search(out)
    if not m or not rps:
        raise AssertionError(f"{who}: cannot read wrk's output:\n{out}\n{r.stderr}")
    unit = {"ms": 1e-3, "s": 1.0, "m": 60.0}.get(m.group(3), 1.0)
    errors = 0
    e = _WRK_ERRORS.search(out)
    if e:
        errors += sum(int(x) for x in e.groups())
    n = _WRK_NON2XX.search(out)
    if n:
        errors += int(n.group(1))
    return WrkRun(float(rps.group(1)), int(m.group(1)), errors, float(m.group(2)) * unit, cpu,
                  procs, user)


class Memory(NamedTuple):
    target: int
    opened: int
    established: int        # connections the holding server saw
    fds_per_conn: float
    fd_limit: int
    rss_before: int         # KiB
    rss_after: int          # KiB
    rss_closed: int         # KiB, after the clients closed
    via: str

    @property
    def per_conn_kib(self) -> float:
        return (self.rss_after - self.rss_before) / max(1, self.opened)


def established(host: w.Host, port: int) -> int:
    r = host.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"], timeout=60)
    return len(r.stdout.splitlines())


def settle_rss(pid: int) -> int:
    """VmRSS once it stops moving (three equal readings 0.5 s apart)."""
    readings: list[int] = []
    for _ in range(40):
        readings.append(rss_kib(pid))
        if len(readings) >= 3 and len(set(readings[-3:])) == 1:
            break
        time.sleep(0.5)
    return readings[-1]


def hold_connections(bench: Bench, n: int, name: str) -> tuple[w.Proc, int]:
    tun = bench.hosts["tun"]
    before = established(bench.srv, HOLD_PORT)
    client = tun.spawn(["python3", "-c", HOLD_CLIENT, name, str(HOLD_PORT), str(n)],
                       name=f"hold-client-{n}")
    m = w.wait_for_log(client, r"opened (\d+) errors (.*)$", timeout=600)
    opened = int(m.group(1))
    if m.group(2) != "{}":
        log(f"  holding client: {m.group(2)}")
    # Relayed = what reached the holding server through tunnels; wait until
    # all did, or the count stops growing for 10 s.
    relayed, last_change = 0, time.monotonic()
    while True:
        now = established(bench.srv, HOLD_PORT) - before
        if now != relayed:
            relayed, last_change = now, time.monotonic()
        if relayed >= opened or time.monotonic() - last_change > 10:
            break
        time.sleep(0.5)
    if relayed < opened:
        log(f"  only {relayed} of {opened} connections reached the holding server; "
            f"tunnels says:\n{bench.tunnels.tail(10)}")
    return client, min(opened, relayed)


def measure_memory(bench: Bench, target: int, via: str) -> Memory:
    pid = bench.tunnels.pid
    name = f"hold.{'direct' if via == 'direct' else 'bench'}.test"
    # A small probe first: how many descriptors an idle relayed connection
    # costs tunnels, so that the real count stays inside its limit.
    fds0 = open_fds(pid)
    probe, probe_n = hold_connections(bench, 100, name)
    fds_per_conn = (open_fds(pid) - fds0) / max(1, probe_n)
    probe.stop()
    w.wait_until(lambda: open_fds(pid) <= fds0 + 2, timeout=60,
                 what="tunnels to close the probe's connections")
    limit = fd_limit(pid)
    # Room for tunnels' other descriptors: the DNS server's, the resolver's
    # sockets for the direct rule's lookups, pooled pipes.
    room = (limit - open_fds(pid) - 150) // max(1.0, fds_per_conn)
    n = int(min(target, room))
    if n < target:
        log(f"  memory: {target} idle connections need {target * fds_per_conn:.0f} descriptors "
            f"in tunnels ({fds_per_conn:g} each); its limit is {limit}: holding {n}")
    rss_before = settle_rss(pid)
    client, opened = hold_connections(bench, n, name)
    rss_after = settle_rss(pid)
    est = established(bench.srv, HOLD_PORT)
    client.stop()
    w.wait_until(lambda: open_fds(pid) <= fds0 + 2, timeout=120,
                 what="tunnels to close the held connections")
    rss_closed = settle_rss(pid)
    return Memory(target, opened, est, fds_per_conn, limit, rss_before, rss_after, rss_closed,
                  via)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


BREAKDOWN = (("client", "client (curl / wrk)"), ("relay", "relay"), ("danted", "dante"),
             ("dnsmasq", "dnsmasq"), ("nginx", "nginx"), ("other", "other"), ("total", "total"))


def breakdown(procs: dict[str, float], who: str) -> dict[str, float]:
    """CPU seconds of one run by role (see BREAKDOWN)."""
    relay = "tunnels" if who.startswith("tunnels") else "redsocks" if who == "redsocks" else None
    out = {"client": procs.get("client", 0.0), "relay": procs.get(relay, 0.0) if relay else 0.0,
           "danted": procs.get("danted", 0.0), "dnsmasq": procs.get("dnsmasq", 0.0),
           "nginx": procs.get("nginx", 0.0)}
    total = sum(procs.values())
    out["other"] = max(0.0, total - sum(out.values()))
    out["total"] = total
    return out


def breakdown_rows(runs: dict[str, list], scale) -> list[str]:
    """One table row per contender: median CPU by role, each run's CPU
    divided by scale(run)."""
    rows = []
    for who, samples in runs.items():
        cells = []
        for key, _ in BREAKDOWN:
            value = median([breakdown(x.procs, who)[key] / scale(x) for x in samples])
            cells.append(f"{value:.3f}")
        rows.append(f"| {who} | " + " | ".join(cells) + " |")
    return rows


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def report(tp: dict[str, list[Download]], wrk: dict[str, list[WrkRun]], mem: Memory | None,
           args: argparse.Namespace, info: dict[str, str]) -> str:
    speed = {who: median([d.speed for d in runs]) for who, runs in tp.items()}
    gib_cpu = {who: median([d.relay_cpu / (d.size / GIB) for d in runs])
               for who, runs in tp.items() if who in ("tunnels", "redsocks", "tunnels-direct")}
    rps = {who: median([r.rps for r in runs]) for who, runs in wrk.items()}
    kconn_cpu = {who: median([r.relay_cpu / max(1, r.requests) * 1000 for r in runs])
                 for who, runs in wrk.items() if who in ("tunnels", "redsocks", "tunnels-direct")}

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    def paired(runs_a: list, runs_b: list, value) -> str:
        """Median (min–max) of the ratios within each run: contenders of one
        run ran minutes apart at most, so drift of the machine's load between
        runs cancels out."""
        rs = sorted(value(a) / value(b) for a, b in zip(runs_a, runs_b) if value(b))
        if not rs:
            return "—"
        return f"{median(rs):.2f}× ({rs[0]:.2f}–{rs[-1]:.2f})"

    per_gib_cpu = lambda d: d.relay_cpu / (d.size / GIB)  # noqa: E731
    per_kconn_cpu = lambda r: r.relay_cpu / max(1, r.requests)  # noqa: E731
    goals = []
    rows = []
    r1 = ratio(speed["tunnels"], speed["redsocks"])
    goals.append(("bulk throughput, tunnels / redsocks", "≥ 1.10×", r1, r1 >= 1.1,
                  paired(tp["tunnels"], tp["redsocks"], lambda d: d.speed)))
    r2 = ratio(speed["tunnels"], speed["curl-socks5"])
    goals.append(("bulk throughput, tunnels / curl --socks5-hostname", "≥ 0.90×", r2, r2 >= 0.9,
                  paired(tp["tunnels"], tp["curl-socks5"], lambda d: d.speed)))
    r3 = ratio(rps["tunnels"], rps["redsocks"])
    goals.append(("new connections per second, tunnels / redsocks", "≥ 1.50×", r3, r3 >= 1.5,
                  paired(wrk["tunnels"], wrk["redsocks"], lambda r: r.rps)))
    r4 = ratio(kconn_cpu["tunnels"], kconn_cpu["redsocks"])
    goals.append(("relay CPU per 1000 connections, tunnels / redsocks", "≤ 0.30×", r4, r4 <= 0.3,
                  paired(wrk["tunnels"], wrk["redsocks"], per_kconn_cpu)))
    r5 = ratio(gib_cpu["tunnels"], gib_cpu["redsocks"])
    goals.append(("relay CPU per GiB, tunnels / redsocks", "≤ 1.00×", r5, r5 <= 1.0,
                  paired(tp["tunnels"], tp["redsocks"], per_gib_cpu)))
    r6 = ratio(speed["tunnels-direct"], speed["no-proxy"])
    goals.append(("throughput, tunnels `direct` / no proxy", "≥ 0.90×", r6, r6 >= 0.9,
                  paired(tp["tunnels-direct"], tp["no-proxy"], lambda d: d.speed)))
    for what, goal, got, ok, pairs in goals:
        rows.append(f"| {what} | {goal} | **{got:.2f}×** | {pairs} | {verdict(ok)} |")
    if mem:
        per = mem.per_conn_kib
        full = mem.opened >= mem.target
        rows.append(f"| VmRSS per idle relayed connection ({mem.opened:,} open"
                    f"{'' if full else f', not {mem.target:,}: see below'}) | ≤ 16 KiB "
                    f"| **{per:.1f} KiB** | — | {verdict(per <= 16)} |")

    tp_rows = []
    for who in THROUGHPUT:
        runs = tp[who]
        cpu = f"{gib_cpu[who]:.3f} s" if who in gib_cpu else "—"
        per_run = ", ".join(f"{d.speed / (1 << 20):,.0f}" for d in runs)
        tp_rows.append(f"| {who} | {mib_s(speed[who])} | {cpu} | {per_run} |")
    wrk_rows = []
    for who in CONNS:
        runs = wrk[who]
        cpu = f"{kconn_cpu[who]:.3f} s" if who in kconn_cpu else "—"
        per_run = ", ".join(f"{r.rps:,.0f}" for r in runs)
        errors = sum(r.errors for r in runs)
        total = sum(r.requests for r in runs)
        wrk_rows.append(f"| {who} | {rps[who]:,.0f} | {cpu} | {total:,} | {errors:,} "
                        f"| {per_run} |")

    header = "| contender | " + " | ".join(label for _, label in BREAKDOWN) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in BREAKDOWN) + " |"
    cpu_lines = [
        "### Where the CPU time goes",
        "",
        "CPU seconds by program during the runs above (medians), user + system time from "
        "/proc/PID/stat of every process in the benchmark's namespaces (the client's from its "
        "rusage); the kernel's network work is charged to whichever process was running when "
        "it happened (on veth and loopback, mostly the sender), and work done in ksoftirqd is "
        "not counted.",
        "",
        "Per 1000 connections (wrk):",
        "",
        header,
        rule,
        *breakdown_rows(wrk, lambda r: max(1, r.requests) / 1000),
        "",
        "Per GiB downloaded:",
        "",
        header,
        rule,
        *breakdown_rows(tp, lambda d: d.size / GIB),
        "",
    ]

    def med_role(runs: list, who: str, key: str, scale) -> float:
        return median([breakdown(x.procs, who)[key] / scale(x) for x in runs])

    per_kconn = lambda r: max(1, r.requests) / 1000  # noqa: E731
    per_gib = lambda d: d.size / GIB  # noqa: E731
    t_user = median([r.relay_user / r.relay_cpu for r in wrk["tunnels"] if r.relay_cpu > 0])
    t_user_gib = median([d.relay_user / d.relay_cpu for d in tp["tunnels"] if d.relay_cpu > 0])
    tot_t = med_role(wrk["tunnels"], "tunnels", "total", per_kconn)
    tot_r = med_role(wrk["redsocks"], "redsocks", "total", per_kconn)
    dante_t = med_role(wrk["tunnels"], "tunnels", "danted", per_kconn)
    dante_r = med_role(wrk["redsocks"], "redsocks", "danted", per_kconn)
    g = {who: med_role(tp[who], who, "total", per_gib) for who in THROUGHPUT}
    hop = g["tunnels-direct"] - g["no-proxy"]
    cores = {who: speed[who] / GIB * g[who] for who in THROUGHPUT}
    reading = [
        "### Reading the figures",
        "",
        f"- **New connections per second are set by dante.** Through dante both relays run at "
        f"about dante's pace: within each run tunnels/redsocks was "
        f"{paired(wrk['tunnels'], wrk['redsocks'], lambda r: r.rps)}. Per 1000 connections "
        f"dante used {dante_t:.2f} s of CPU in the tunnels runs and {dante_r:.2f} s in the "
        f"redsocks runs (its pipeline of processes, negotiate, request and i/o children passing "
        f"descriptors between them, is also its latency), the relays {kconn_cpu['tunnels']:.2f} s "
        f"and {kconn_cpu['redsocks']:.2f} s, the whole path {tot_t:.2f} s and {tot_r:.2f} s. "
        f"Without dante (`direct` rule) the same tunnels carries {rps['tunnels-direct']:,.0f} "
        f"connections/s, {rps['tunnels-direct'] / rps['tunnels']:.1f}× its rate through dante: "
        "a 1.5× lead over another relay in front of the same dante would need dante to keep "
        "up, and it does not.",
        f"- **CPU per connection is mostly the kernel's TCP work.** "
        f"{(1 - t_user) * 100:.0f}% of tunnels' CPU time per connection is system time: "
        "accept, connect, the SOCKS5 exchange, splice, shutdown and close, whose packets on "
        "veth and loopback are processed inline, the receiving side's TCP (the peer's) "
        "included, in the sender's context. redsocks makes the same calls (it splices too), "
        "so no trimming of user space brings the ratio near 0.3×; tunnels makes fewer of them "
        "(see below).",
        f"- **Bulk throughput follows the CPU time of the whole path**, since the cores were "
        f"busy (with other jobs too: load average {args.loadavg}). Per GiB every program "
        f"together used {g['tunnels']:.2f} s through tunnels, {g['redsocks']:.2f} s through "
        f"redsocks, {g['curl-socks5']:.2f} s with curl speaking SOCKS5 itself, "
        f"{g['tunnels-direct']:.2f} s through tunnels' `direct` rule and {g['no-proxy']:.2f} s "
        f"with no proxy; speed × CPU per GiB, the cores the path got, is about the same for "
        f"all ({min(cores.values()):.2f}–{max(cores.values()):.2f}). The relay itself used {gib_cpu['tunnels']:.2f} s per GiB in tunnels "
        f"({(1 - t_user_gib) * 100:.0f}% of it in the kernel: the pages move by splice, never "
        f"copied) against {gib_cpu['redsocks']:.2f} s in redsocks. What a transparent relay "
        f"cannot avoid is the second TCP connection (over loopback) that the kernel has to "
        f"carry: `direct` costs {hop:.2f} s per GiB more than no proxy, where 0.9× of its speed "
        f"on busy cores would allow {g['no-proxy'] / 9:.2f} s. With idle cores the relay runs "
        "beside curl and nginx instead of taking their time, and the ratios against curl's "
        "SOCKS5 and against no proxy are no "
        "longer bound by CPU.",
        "",
        "What was optimised in the engine for these figures (proxies/relay.cc, "
        "proxies/engine.cc):",
        "",
        "- Pipes come from a per-thread pool and a direction holds one only while bytes are in "
        "it: no `pipe2` and four `close` per connection, and an idle connection costs two "
        "descriptors instead of six (which is what lets close to 10,000 of them fit under a "
        "20,000-descriptor limit at all).",
        "- A direction that has carried 256 KiB asks for a 1 MiB pipe (`F_SETPIPE_SZ`): bulk "
        "transfers move up to 1 MiB per pair of splice calls instead of 64 KiB.",
        "- The server-to-client direction waits for the server before its first read instead "
        "of trying a read that finds nothing.",
        "- Accepted sockets inherit `TCP_NODELAY` from the listener; nothing is formatted on the "
        "way of a relayed connection (log text only when logged).",
        "- A `direct` rule looks a name up once per TTL (proxies/name_resolver.cc keeps the "
        "answers, asks for A and AAAA at once, and lets concurrent connections share a lookup) "
        "instead of asking dnsmasq for A, then AAAA, for every connection: with answers of TTL "
        "300 s, 12,776 direct connections/s against 8,357 at 7ff3ef6, and 0.065 s of relay CPU "
        "per 1000 of them against 0.105 s.",
        "",
        "Together about 10% less CPU per connection than before (measured side by side with "
        "the previous build: about 100 µs against 112 µs per connection through dante), "
        "and about 32 system calls per connection against 37 (redsocks: about 60).",
        "",
    ]

    mem_lines: list[str] = []
    if mem:
        mem_lines = [
            "### Memory",
            "",
            "| idle connections held | tunnels VmRSS before | with them open | after they closed "
            "| per connection | descriptors per connection |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {mem.opened:,} (holding server saw {mem.established:,}) | "
            f"{mem.rss_before:,} KiB | {mem.rss_after:,} KiB | {mem.rss_closed:,} KiB | "
            f"**{mem.per_conn_kib:.1f} KiB** | {mem.fds_per_conn:g} |",
            "",
            f"A Python client in `tun` opens the connections one after another to "
            f"`hold.{'direct' if mem.via == 'direct' else 'bench'}.test:{HOLD_PORT}` and sends "
            f"nothing; they go through tunnels' "
            f"{'`direct` rule' if mem.via == 'direct' else 'dante rule'} to an asyncio server on "
            "srv that accepts and holds them. VmRSS (from /proc/PID/status) is read once it "
            "stopped moving, after the other phases (a warm process); per connection = "
            "(with them open − before) / connections. "
            + ("The `direct` rule is used because dante forks helper processes per batch of "
               "clients, and thousands of idle clients would measure dante, not tunnels; the "
               "relay (coroutines, sockets, pipes) is the same code for every connector. "
               if mem.via == "direct" else "")
            + (f"**{mem.target:,} connections cannot be held here:** tunnels needs "
               f"{mem.fds_per_conn:g} descriptors per relayed connection (its client socket and "
               f"its upstream socket) and the hard RLIMIT_NOFILE of every process on this "
               f"machine is {mem.fd_limit:,}, which cannot be raised (the sandbox withholds "
               f"CAP_SYS_RESOURCE); {mem.opened:,} is the most that fits beside tunnels' own "
               f"descriptors."
               if mem.opened < mem.target else ""),
            "",
        ]

    curl_cmd = ("curl -sS --fail -o /dev/null -w '%{speed_download} %{size_download}' URL")
    wrk_cmd = (f"wrk -t{args.wrk_threads} -c{args.wrk_connections} -d{args.seconds:g}s "
               "-H 'Connection: close' URL")
    lines = [
        BEGIN,
        "## Proxy engine: tunnels against redsocks, curl's SOCKS5 and no proxy",
        "",
        "Goals (from the project's issue), measured with the same dante upstream for every "
        "contender:",
        "",
        "| goal | target | measured (ratio of the medians) | within each run: median (min–max) | |",
        "| --- | ---: | ---: | ---: | --- |",
        *rows,
        "",
        "The verdict uses the ratio of the medians below; the ratios within each run (every "
        "contender measured once per run, minutes apart at most) show how much the machine's "
        "changing load moved them.",
        "",
        f"### Bulk throughput ({args.big_mib:,} MiB file, median of {args.runs} downloads each)",
        "",
        "| contender | median speed | relay CPU per GiB | per run (MiB/s) |",
        "| --- | ---: | ---: | --- |",
        *tp_rows,
        "",
        f"### New connections per second (wrk, `Connection: close`, median of {args.runs} "
        f"runs of {args.seconds:g} s)",
        "",
        "| contender | median requests/s | relay CPU per 1000 connections | requests, all runs "
        "| errors, all runs | per run (requests/s) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        *wrk_rows,
        "",
        "Every request is a new connection (`Connection: close`). Relay CPU is the user + "
        "system time of the relay process (tunnels or redsocks, all threads) from "
        "/proc/PID/stat, read before and after each download or wrk run; per GiB and per 1000 "
        "connections are medians of the per-run quotients (a tick is "
        f"{1000 // CLK_TCK} ms).",
        "",
        *cpu_lines,
        *reading,
        *mem_lines,
        "### Setup",
        "",
        "`bench/engine_bench.py`, in a private world of namespaces (nothing leaves the "
        "machine, nothing is changed outside the world):",
        "",
        f"- host `srv`, {SRV_IP} (on lo, reached through a veth pair from each client host): "
        f"dnsmasq (every `*.test` name is {SRV_IP}, TTL 300 s as real names have one), nginx 1 worker with sendfile serving "
        f"`big.bin` ({args.big_mib:,} MiB of random bytes on tmpfs) and `small.html` "
        f"(1001 bytes), dante on :{DANTE_PORT} (no authentication, errors-only log).",
        "- host `tun`: `tunnels system -q` with rules `.bench.test: dante` and "
        "`.direct.test: direct`, and its DNS server as the host's resolver; clients ask for "
        "`big.bench.test` / `small.bench.test` (a fake address; tunnels hands dante the name) "
        "or `*.direct.test`.",
        f"- host `red`: redsocks (`type = socks5` to {SRV_IP}:{DANTE_PORT}, `log_info = off`, "
        f"foreground) and the nft rule `ip daddr {SRV_IP} tcp dport != {DANTE_PORT} redirect "
        f"to :{REDSOCKS_PORT}` in a `nat` `output` chain; clients connect to {SRV_IP}.",
        f"- host `plain`: `curl --socks5-hostname {SRV_IP}:{DANTE_PORT}` (the client speaks "
        "SOCKS5 itself: no transparent hop) and curl straight to nginx (no proxy).",
        "- Every client host has the same veth to srv and `ip_local_port_range = 1024 65535`.",
        f"- Throughput: `{curl_cmd}`; connections: `{wrk_cmd}`; one warm-up download and one "
        "2 s wrk run per contender first. Each run measures every contender once, the order "
        "rotating from run to run.",
        f"- **The machine's {info['nproc']} cores are shared** by the client (curl or wrk), "
        "the relay (tunnels or redsocks), dante, nginx and the kernel's veth and loopback "
        "work, and with whatever else runs on the machine (see the load average above); "
        "nothing is pinned. Absolute numbers say more about this machine than about "
        "tunnels; the ratios, measured side by side, are the figures that count.",
        *closing(info, f"{info['versions']}.", "engine", END),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main() -> int:
    p = arguments(__doc__, "engine", runs=5, seconds=8, seconds_help="wrk -d")
    p.add_argument("--big-mib", type=int, default=1024,
                   help="size of the downloaded file in MiB (default 1024)")
    p.add_argument("--wrk-connections", type=int, default=50, help="wrk -c (default 50)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (default 1)")
    p.add_argument("--idle-connections", type=int, default=10000,
                   help="idle connections for the memory phase (default 10000)")
    p.add_argument("--memory-via", choices=["direct", "dante"], default="direct",
                   help="rule the idle connections use (default direct)")
    p.add_argument("--phase", action="append", choices=["throughput", "conns", "memory"],
                   help="only this phase (repeatable; default all)")
    p.add_argument("--keep-logs", type=Path, help="copy the processes' logs here at the end")
    p.add_argument("--raw-out", type=Path, help="also write every measurement here (JSON)")
    p.add_argument("--report-from", type=Path,
                   help="measure nothing: print (and with --update-doc write) the report of a "
                        "--raw-out file")
    args = p.parse_args()
    if args.report_from:
        raw = json.loads(args.report_from.read_text())
        tp = {k: [Download(**x) for x in v] for k, v in raw["throughput"].items()}
        wrk = {k: [WrkRun(**x) for x in v] for k, v in raw["conns"].items()}
        mem = Memory(**raw["memory"]) if raw.get("memory") else None
        for k, v in raw["args"].items():
            setattr(args, k, v)
        os.environ["TUNNELS_BENCH_COMMAND"] = raw["command"]
        section = report(tp, wrk, mem, args, raw["info"])
        print(section)
        if args.update_doc:
            update_doc(args.doc, section, BEGIN, END)
        return 0
    phases = args.phase or ["throughput", "conns", "memory"]

    full = set(phases) == {"throughput", "conns", "memory"}
    if args.update_doc and not full:
        log("engine_bench.py: --update-doc needs every phase")
        return 2
    tmp = enter("engine_bench.py", "run-engine-bench.sh", args.tunnels,
                ("curl", "wrk", "redsocks", "danted", "nft", "dig", "ss", DNSMASQ,
                 "/usr/sbin/nginx"))
    if tmp is None:
        return 2
    load_before = loadavg()
    tp: dict[str, list[Download]] = {who: [] for who in THROUGHPUT}
    wrk: dict[str, list[WrkRun]] = {who: [] for who in CONNS}
    mem = None
    with bench_world(tmp, args.keep_logs) as world:
        bench = Bench(world, args.tunnels, tmp, args.big_mib << 20)
        if "throughput" in phases:
            for who in THROUGHPUT:
                d = download(bench, who)
                log(f"warm-up  {who:15} {mib_s(d.speed):>12}")
            for run in range(args.runs):
                for who in rotate(THROUGHPUT, run):
                    d = download(bench, who)
                    tp[who].append(d)
                    log(f"run {run + 1}/{args.runs} {who:15} {mib_s(d.speed):>12}  relay CPU "
                        f"{d.relay_cpu:.2f} s")
                bench.check_alive()
        if "conns" in phases:
            for who in CONNS:
                r = run_wrk(bench, who, args, 2)
                log(f"warm-up  {who:15} {r.rps:>9,.0f} req/s")
            for run in range(args.runs):
                for who in rotate(CONNS, run):
                    r = run_wrk(bench, who, args, args.seconds)
                    wrk[who].append(r)
                    log(f"run {run + 1}/{args.runs} {who:15} {r.rps:>9,.0f} req/s, "
                        f"{r.requests} requests, {r.errors} errors, relay CPU {r.relay_cpu:.2f} s")
                bench.check_alive()
        if "memory" in phases:
            mem = measure_memory(bench, args.idle_connections, args.memory_via)
            log(f"memory: {mem}")
            log(f"memory: {mem.per_conn_kib:.2f} KiB per idle connection")
        bench.check_alive()

    if full:
        args.loadavg = f"{load_before} at the start, {loadavg()} at the end"
        info = machine(versions=", ".join(
            f"{p} {dpkg_version(p)}" for p in ("redsocks", "dante-server", "nginx-light", "curl",
                                               "wrk", "dnsmasq-base")))
        section = report(tp, wrk, mem, args, info)
        if args.raw_out:
            args.raw_out.write_text(json.dumps({
                "throughput": {k: [x._asdict() for x in v] for k, v in tp.items()},
                "conns": {k: [x._asdict() for x in v] for k, v in wrk.items()},
                "memory": mem._asdict() if mem else None,
                "args": {k: getattr(args, k) for k in ("runs", "seconds", "big_mib",
                                                       "wrk_threads", "wrk_connections",
                                                       "loadavg")},
                "info": info,
                "command": command_line("engine"),
            }, indent=1))
        publish("engine_bench.py", section, args, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
