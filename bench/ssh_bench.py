#!/usr/bin/python3
"""tunnels' ssh proxy against OpenSSH's own `ssh -D` (with curl speaking
SOCKS5 to it) and against sshuttle, all to the same sshd: bulk throughput
and new connections per second.

Run it through bench/run-ssh-bench.sh, which builds a Release tunnels,
installs what is missing and enters a private world (user + network + mount
+ PID namespaces, with more ids than root for sshd's privilege separation).
The topology is the engine benchmark's (bench/engine_bench.py), with an SSH
server on the far side:

  host "tun"  (10.1.1.2)  tunnels system -q, rule `.bench.test: vps` (ssh proxy);  ┐
                          curl / wrk by name                                        │ veth
  host "sshd" (10.1.2.2)  ssh -N -D 127.0.0.1:1080; curl --socks5-hostname to it    ├──► "srv"
  host "shu"  (10.1.3.2)  sshuttle -r root@10.0.0.1 10.9.0.0/24 (nft method);       │
                          curl / wrk to 10.9.0.1                                    ┘
  host "srv"  10.0.0.1 on lo: sshd :22 (ed25519 host key), dnsmasq :53 (every *.test
              name is 10.9.0.1); 10.9.0.1 on lo: nginx :80 (big.bin, small.html).

The web server has its own address so that sshuttle can route it without
catching its own SSH connection. Every client uses the same ed25519 client
key and the same sshd with its default algorithms.

Phases, contenders interleaved run by run (the order rotating), medians:
  throughput  curl -o /dev/null of big.bin (speed_download): tunnels, ssh -D, sshuttle
  conns/s     wrk -t1 -c50 -d8s -H 'Connection: close' on small.html: tunnels, sshuttle
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import world as w  # tests/integration/world.py, on PYTHONPATH (bench/lib.sh)
from benchlib import (arguments, bench_world, closing, cpu_delta, dpkg_version, enter, first_line,
                      loadavg, log, machine, median, mib_s, publish, rotate, star, star_dnsmasq,
                      world_cpu, write_random)
from peers import Nginx, Sshd, wait_for_port

BEGIN = "<!-- ssh-bench:begin -->"
END = "<!-- ssh-bench:end -->"
SRV_IP = "10.0.0.1"
WEB_IP = "10.9.0.1"
SOCKS_PORT = 1080
CLIENTS = {"tun": 1, "sshd": 2, "shu": 3}
THROUGHPUT = ("tunnels", "ssh-D", "ssh-D-aes", "sshuttle")
SOCKS_AES_PORT = 1081
CONNS = ("tunnels", "tunnels-ip", "sshuttle")
# The programs on the client's side of the tunnel, whose CPU time per GiB
# the throughput table shows beside sshd's. sshuttle's client is its Python
# process and the ssh it starts.
CLIENT_SIDE = {"tunnels": ("tunnels",), "ssh-D": ("ssh",), "ssh-D-aes": ("ssh",),
               "sshuttle": ("sshuttle", "ssh")}

# nginx as peers.Nginx starts it, with keep-alive kept up for the downloads.
NGINX_TUNING = dict(http="keepalive_requests 100000;", log_level="warn")


class Bench:
    def __init__(self, world: w.World, tunnels: Path, tmp: Path, big_size: int):
        self.world, self.tmp, self.big_size = world, tmp, big_size
        self.srv, self.hosts = star(world, [SRV_IP, WEB_IP], CLIENTS)
        self.dnsmasq = star_dnsmasq(self.srv, tmp, SRV_IP, WEB_IP)

        www = tmp / "www"
        www.mkdir(exist_ok=True)
        (www / "small.html").write_text("x" * 1000 + "\n")
        write_random(www / "big.bin", big_size)
        self.nginx = Nginx(self.srv, WEB_IP, 80, www, **NGINX_TUNING).proc

        keys = tmp / "keys"
        keys.mkdir(exist_ok=True)
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(keys / name)], check=True)
        host_pub = (keys / "host.pub").read_text().split()
        known = keys / "known_hosts"
        known.write_text(f"{SRV_IP} {host_pub[0]} {host_pub[1]}\n")
        fingerprint = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f",
                                      str(keys / "host.pub")], check=True, capture_output=True,
                                     text=True).stdout.split()[1]
        self.sshd = Sshd(self.srv, SRV_IP, 22, [keys / "host"],
                         (keys / "client.pub").read_text(), {"LogLevel": "ERROR"})
        ssh_cmd = ["ssh", "-i", str(keys / "client"), "-o", f"UserKnownHostsFile={known}",
                   "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]

        # tun: tunnels with the ssh proxy.
        tun = self.hosts["tun"]
        conf = tmp / "tunnels.yml"
        conf.write_text(
            f"upstreamDns: {SRV_IP}\ndnsBindAddress: 127.0.0.1\ndnsPort: 53\n"
            "overwriteResolvconf: false\nproxies:\n  vps:\n    type: ssh\n"
            f"    address: {SRV_IP}\n    username: root\n    privateKey: {keys / 'client'}\n"
            f"    ed25519Fingerprint: {fingerprint}\nrules:\n  .bench.test: vps\n"
            f"  .ip.test:\n    proxy: vps\n    forcedAddress: {WEB_IP}\n")
        self.tunnels = tun.spawn([str(tunnels), "system", "-v", str(conf)], name="tunnels",
                                 line_buffered=False)
        w.wait_for_log(self.tunnels, r"\[DNS\] listening on udp 127\.0\.0\.1:53", timeout=15)
        tun.use_nameserver("127.0.0.1")

        # sshd host: ssh -D.
        self.ssh_d = self.hosts["sshd"].spawn(
            [*ssh_cmd, "-v", "-N", "-D", f"127.0.0.1:{SOCKS_PORT}", f"root@{SRV_IP}"],
            name="ssh-D")
        wait_for_port(self.hosts["sshd"], "127.0.0.1", SOCKS_PORT, "ssh -D", self.ssh_d,
                      timeout=20)
        # The same, with the cipher tunnels prefers (on a CPU with AES
        # instructions), to tell the cipher's share from the rest.
        self.ssh_d_aes = self.hosts["sshd"].spawn(
            [*ssh_cmd, "-v", "-c", "aes128-gcm@openssh.com", "-N", "-D",
             f"127.0.0.1:{SOCKS_AES_PORT}", f"root@{SRV_IP}"], name="ssh-D-aes")
        wait_for_port(self.hosts["sshd"], "127.0.0.1", SOCKS_AES_PORT, "ssh -D -c aes128-gcm",
                      self.ssh_d_aes, timeout=20)

        # shu: sshuttle, transparently for the web address.
        self.sshuttle = self.hosts["shu"].spawn(
            ["sshuttle", "--method", "nft", "--ssh-cmd", " ".join(ssh_cmd),
             "-r", f"root@{SRV_IP}", f"{WEB_IP}/32"], name="sshuttle")
        w.wait_for_log(self.sshuttle, r"Connected to server", timeout=30)

        for who in THROUGHPUT:
            r = self.curl(who, "small.html", out="-")
            if r.stdout.strip() != "x" * 1000:
                raise AssertionError(f"{who}: wrong answer {r.stdout[:200]!r}\n{r.stderr}")
        self.ciphers = {
            "tunnels": _search(r"session up \([^,]*, ([^)]*)\)", self.tunnels.output()),
            "ssh-D": _search(r"kex: server->client cipher: (\S+)", self.ssh_d.output()),
            "ssh-D-aes": _search(r"kex: server->client cipher: (\S+)", self.ssh_d_aes.output()),
        }

    def where(self, who: str) -> tuple[w.Host, str, list[str]]:
        if who == "tunnels":
            return self.hosts["tun"], "http://big.bench.test/", []
        if who == "tunnels-ip":
            return self.hosts["tun"], "http://big.ip.test/", []
        if who == "ssh-D":
            return self.hosts["sshd"], "http://big.bench.test/", [
                "--socks5-hostname", f"127.0.0.1:{SOCKS_PORT}"]
        if who == "ssh-D-aes":
            return self.hosts["sshd"], "http://big.bench.test/", [
                "--socks5-hostname", f"127.0.0.1:{SOCKS_AES_PORT}"]
        if who == "sshuttle":
            return self.hosts["shu"], f"http://{WEB_IP}/", []
        raise ValueError(who)

    def curl(self, who: str, path: str, out: str = "/dev/null") -> subprocess.CompletedProcess:
        host, base, extra = self.where(who)
        argv = ["curl", "-sS", "--fail", "--max-time", "600", *extra, "-o", out,
                *(["-w", "%{speed_download} %{size_download}"] if out != "-" else []),
                base + path]
        return host.run(argv, timeout=630)

    def download(self, who: str) -> tuple[float, float, float]:
        """Speed, and the CPU seconds per GiB of the client's side (CLIENT_SIDE)
        and of sshd (user + system, /proc/PID/stat of every process of the
        world, read before and after)."""
        before = world_cpu()
        speed, size = self.curl(who, "big.bin").stdout.split()
        delta = cpu_delta(before, world_cpu())
        if int(size) != self.big_size:
            raise AssertionError(f"{who}: got {size} bytes of {self.big_size}")
        gib = self.big_size / (1 << 30)
        client = sum(delta.get(name, 0.0) for name in CLIENT_SIDE[who])
        return float(speed), client / gib, delta.get("sshd", 0.0) / gib

    def wrk(self, who: str, seconds: float, connections: int) -> tuple[float, int]:
        host, base, _ = self.where(who)
        base = base.replace("//big.", "//small.")
        r = host.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-H",
                      "Connection: close", base + "small.html"], timeout=seconds + 60)
        rps = re.search(r"Requests/sec:\s*([\d.]+)", r.stdout)
        if not rps:
            raise AssertionError(f"{who}: cannot read wrk's output:\n{r.stdout}\n{r.stderr}")
        errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)",
                                                 r.stdout))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
        return float(rps.group(1)), errors + (int(non2xx.group(1)) if non2xx else 0)

    def check_alive(self) -> None:
        for p in (self.tunnels, self.ssh_d, self.ssh_d_aes, self.sshuttle, self.sshd.proc,
                  self.nginx):
            if not p.alive():
                raise AssertionError(f"{p!r} died:\n{p.tail()}")


def _search(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    return m.group(1) if m else "?"


def report(tp: dict[str, list[float]], cpu: dict[str, list[tuple[float, float]]],
           conns: dict[str, list[tuple[float, int]]],
           args: argparse.Namespace, info: dict[str, str], ciphers: dict[str, str]) -> str:
    def paired(a: list[float], b: list[float]) -> str:
        ratios = sorted(x / y for x, y in zip(a, b) if y)
        if not ratios:
            return "–"
        return f"{median(ratios):.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f})"

    t = {k: median(v) for k, v in tp.items()}
    c = {k: median([r for r, _ in v]) for k, v in conns.items()}
    goals = [
        ("bulk throughput vs `curl --socks5-hostname` through `ssh -D`", 1.0,
         t["tunnels"] / t["ssh-D"], paired(tp["tunnels"], tp["ssh-D"])),
        ("bulk throughput vs `ssh -D -c aes128-gcm@openssh.com` (the same cipher as tunnels)",
         1.0, t["tunnels"] / t["ssh-D-aes"], paired(tp["tunnels"], tp["ssh-D-aes"])),
        ("bulk throughput vs sshuttle", 10.0, t["tunnels"] / t["sshuttle"],
         paired(tp["tunnels"], tp["sshuttle"])),
        ("new connections per second vs sshuttle, both to the server's address", 2.0,
         c["tunnels-ip"] / c["sshuttle"],
         paired([r for r, _ in conns["tunnels-ip"]], [r for r, _ in conns["sshuttle"]])),
        ("new connections per second vs sshuttle, tunnels by name (resolved by sshd)", 2.0,
         c["tunnels"] / c["sshuttle"],
         paired([r for r, _ in conns["tunnels"]], [r for r, _ in conns["sshuttle"]])),
    ]
    rows = [f"| {g} | ≥ {target:g}× | {ratio:.2f}× | {per_run} | "
            f"{'met' if ratio >= target else '**not met**'} |"
            for g, target, ratio, per_run in goals]
    tp_rows = [f"| {who} | {mib_s(t[who])} | "
               f"{median([a for a, _ in cpu[who]]):.2f} s ({', '.join(CLIENT_SIDE[who])}) | "
               f"{median([b for _, b in cpu[who]]):.2f} s | "
               f"{', '.join(f'{x / (1 << 20):,.0f}' for x in tp[who])} |" for who in THROUGHPUT]
    conn_rows = [f"| {who} | {c[who]:,.0f} | {sum(e for _, e in conns[who])} | "
                 f"{', '.join(f'{r:,.0f}' for r, _ in conns[who])} |" for who in CONNS]
    lines = [
        BEGIN,
        "## SSH proxy: tunnels against `ssh -D` and sshuttle",
        "",
        "Goals (from the project's issue), every contender talking to the same sshd:",
        "",
        "| goal | target | measured (ratio of the medians) | within each run: median (min–max) | |",
        "| --- | ---: | ---: | ---: | --- |",
        *rows,
        "",
        f"### Bulk throughput ({args.big_mib:,} MiB file, median of {args.runs} downloads each)",
        "",
        "| contender | median speed | CPU per GiB, client side | CPU per GiB, sshd | "
        "per run (MiB/s) |",
        "| --- | ---: | ---: | ---: | --- |",
        *tp_rows,
        "",
        "CPU per GiB: user + system time of the programs named (the tunnel's client "
        "side) and of sshd, from /proc/PID/stat before and after each download, "
        "medians; the kernel's network work is charged to whichever process was running "
        "when it happened.",
        "",
        f"### New connections per second (wrk -t1 -c{args.wrk_connections}, "
        f"`Connection: close`, median of {args.runs} runs of {args.seconds:g} s)",
        "",
        "| contender | median requests/s | errors, all runs | per run (requests/s) |",
        "| --- | ---: | ---: | --- |",
        *conn_rows,
        "",
        *outlier_lines(conns),
        "`tunnels` asks for `small.bench.test`, which sshd resolves for every channel "
        "(through dnsmasq); `tunnels-ip` asks for `small.ip.test`, a rule with "
        f"`forcedAddress: {WEB_IP}`, so that sshd connects to the address as sshuttle's "
        "server does (sshuttle is given the address: it carries no names). `ssh -D` has no "
        "row here: wrk speaks no SOCKS5. Every request is a new connection, so for tunnels "
        "each is a new direct-tcpip channel of the one session, opened and closed by sshd; "
        "sshuttle multiplexes its connections over one SSH channel to its own server-side "
        "Python.",
        "",
        "### Setup",
        "",
        "`bench/ssh_bench.py`, in a private world of namespaces (nothing leaves the machine):",
        "",
        f"- host `srv`: sshd (OpenSSH, ed25519 host key, default algorithms, LogLevel ERROR) "
        f"on {SRV_IP}:22; dnsmasq answering every `*.test` name with {WEB_IP}; nginx "
        f"(1 worker, sendfile) on {WEB_IP}:80 serving `big.bin` ({args.big_mib:,} MiB of "
        "random bytes on tmpfs) and `small.html` (1001 bytes). Each client host reaches both "
        "addresses through its own identical veth pair.",
        "- host `tun`: `tunnels system` with an ssh proxy (ed25519 client key, pinned "
        "ed25519 host key) and the rule `.bench.test: vps`; clients ask for "
        f"`big.bench.test` (a fake address; the name is resolved on the server's side). "
        f"Negotiated cipher: {ciphers.get('tunnels', '?')}.",
        f"- host `sshd`: `ssh -N -D 127.0.0.1:{SOCKS_PORT}` (OpenSSH client, same key), and "
        f"`curl --socks5-hostname 127.0.0.1:{SOCKS_PORT}`. Negotiated cipher: "
        f"{ciphers.get('ssh-D', '?')}. `ssh-D-aes`: the same with `-c aes128-gcm@openssh.com` "
        f"on port {SOCKS_AES_PORT} (cipher: {ciphers.get('ssh-D-aes', '?')}), the cipher tunnels "
        "prefers on a CPU with AES instructions.",
        f"- host `shu`: `sshuttle --method nft -r root@{SRV_IP} {WEB_IP}/32` (same ssh "
        f"client and key); clients connect to {WEB_IP}.",
        "- Throughput: `curl -sS --fail -o /dev/null -w '%{speed_download}' URL`; "
        f"connections: `wrk -t1 -c{args.wrk_connections} -d{args.seconds:g}s -H "
        "'Connection: close' URL`; one warm-up of each first; the order of the contenders "
        "rotates from run to run.",
        f"- **The machine's {info['nproc']} cores are shared** by the client, the SSH "
        "client side, sshd, nginx and the kernel's veth work, and with whatever else runs "
        "on the machine; nothing is pinned. The ratios, measured side by side, are the "
        "figures that count.",
        *closing(info, f"{first_line(['ssh', '-V'])}; sshuttle "
                 f"{first_line(['sshuttle', '--version'])}; libssh {dpkg_version('libssh-4')}.",
                 "ssh", END, load=f"Load average {args.loadavg}. "),
    ]
    return "\n".join(lines) + "\n"


def outlier_lines(conns: dict[str, list[tuple[float, int]]]) -> list[str]:
    """A sentence for each run far below its contender's median (a collapse,
    not noise), so that the per-run column is read right."""
    out = []
    for who, runs in conns.items():
        m = median([r for r, _ in runs])
        for i, (r, _) in enumerate(runs):
            if r < m / 4:
                out.append(f"{who}'s run {i + 1} collapsed to {r:,.0f} requests/s (no errors "
                           "reported by wrk); the median leaves it out, the paired ratio "
                           "range above does not.")
    return out + ([""] if out else [])


def main() -> int:
    p = arguments(__doc__, "ssh", runs=5, seconds=8, seconds_help="wrk -d")
    p.add_argument("--big-mib", type=int, default=512, help="downloaded file in MiB (default 512)")
    p.add_argument("--wrk-connections", type=int, default=50, help="wrk -c (default 50)")
    p.add_argument("--only", choices=THROUGHPUT,
                   help="for profiling: only RUNS downloads through this contender, no report")
    args = p.parse_args()
    tmp = enter("ssh_bench.py", "run-ssh-bench.sh", args.tunnels, ())
    if tmp is None:
        return 2
    load_before = loadavg()
    tp: dict[str, list[float]] = {who: [] for who in THROUGHPUT}
    cpu: dict[str, list[tuple[float, float]]] = {who: [] for who in THROUGHPUT}
    conns: dict[str, list[tuple[float, int]]] = {who: [] for who in CONNS}
    with bench_world(tmp) as world:
        bench = Bench(world, args.tunnels, tmp, args.big_mib << 20)
        if args.only:
            for run in range(args.runs):
                speed, client, sshd = bench.download(args.only)
                log(f"run {run + 1}/{args.runs} {args.only:10} {mib_s(speed):>12}, "
                    f"CPU per GiB: {client:.2f} s client side, {sshd:.2f} s sshd")
            return 0
        for who in THROUGHPUT:
            log(f"warm-up  {who:10} {mib_s(bench.download(who)[0]):>12}")
        for run in range(args.runs):
            for who in rotate(THROUGHPUT, run):
                speed, client, sshd = bench.download(who)
                tp[who].append(speed)
                cpu[who].append((client, sshd))
                log(f"run {run + 1}/{args.runs} {who:10} {mib_s(speed):>12}, CPU per GiB: "
                    f"{client:.2f} s client side, {sshd:.2f} s sshd")
            bench.check_alive()
        for who in CONNS:
            rps, errors = bench.wrk(who, 2, args.wrk_connections)
            log(f"warm-up  {who:10} {rps:>9,.0f} req/s ({errors} errors)")
        for run in range(args.runs):
            for who in rotate(CONNS, run):
                conns[who].append(bench.wrk(who, args.seconds, args.wrk_connections))
                log(f"run {run + 1}/{args.runs} {who:10} {conns[who][-1][0]:>9,.0f} req/s, "
                    f"{conns[who][-1][1]} errors")
            bench.check_alive()
        ciphers = bench.ciphers
    args.loadavg = f"{load_before} at the start, {loadavg()} at the end"
    publish("ssh_bench.py", report(tp, cpu, conns, args, machine(), ciphers), args, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
